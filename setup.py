"""lazy_feature: place a network in the lazy- or feature-training regime and measure which.

Install for development with ``pip install -e .[test]``. On a GPU machine choose the GPU
build of TensorFlow instead of the default CPU wheel:
``LAZY_FEATURE_TF='tensorflow[and-cuda]' pip install -e .[test]``.
"""
import os
import re

import setuptools

# The version lives in lazy_feature/run/config.py alone; read it without importing TensorFlow.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "lazy_feature", "run",
                       "config.py"), encoding="utf-8") as f:
    _VERSION = re.search(r'^VERSION = "([^"]+)"', f.read(), re.M).group(1)

# The CPU wheel is the default; the GPU build ("tensorflow[and-cuda]") has the same API under
# another distribution name, chosen by LAZY_FEATURE_TF at install time (never both).
_TF = os.environ.get("LAZY_FEATURE_TF", "tensorflow-cpu") + "==2.21.0"

setuptools.setup(
    name="lazy_feature",
    version=_VERSION,
    description=(
        "Lazy vs feature training of deep networks (Geiger, Spigler, Jacot, Wyart): "
        "alpha-scaled models, adaptive gradient flow, empirical NTK, sweeps and figures."
    ),
    packages=setuptools.find_packages(include=["lazy_feature", "lazy_feature.*", "pipelines",
                                               "pipelines.*"]),
    python_requires=">=3.10",
    install_requires=[
        _TF,
        "keras>=3.10,<4",
        "numpy>=1.26",
        "absl-py>=2.1",
        "tensorboard",  # tf.summary needs it; TensorFlow 2.21 no longer pulls it in
        "apache-beam>=2.60",  # sweeps fan out on Beam (DirectRunner multi-processing here)
        "pandas>=2.0",  # the sweep's tidy results table
        "matplotlib>=3.7",  # the report's figures
    ],
    extras_require={
        # The suite runs on 2 processes (-n 2), compiles the Kubeflow pipeline, type-checks
        # the package (mypy, settings in setup.cfg) and checks the activations' changes
        # against 40-digit arithmetic (mpmath).
        "test": ["pytest>=8", "pytest-xdist>=3.5", "kfp>=2.7,<3", "mypy>=1.10", "mpmath>=1.3"],
        # pipelines/kfp_pipeline.py: the sweep as a Kubeflow Pipelines (v2) pipeline.
        "kfp": ["kfp>=2.7,<3"],
        # TFDS reads data sets a user already prepared; it needs importlib_resources,
        # which nothing else pulls in.
        "tfds": ["tensorflow-datasets>=4.9", "importlib_resources"],
    },
)
