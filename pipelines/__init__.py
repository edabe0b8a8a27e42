"""absl binaries, one per stage: train, ntk_eval, ensemble, sweep, report (and kfp_pipeline).

Importing the package (`python -m pipelines.<stage>` does, before TensorFlow loads) hides
TensorFlow's C++ INFO and WARNING lines, unless TF_CPP_MIN_LOG_LEVEL is set already; the
binaries' --verbosity=1 lets them through again in processes they start (Beam's workers).
"""
import os

TF_CPP_QUIETED = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
