"""absl binaries, one per stage: train, ntk_eval, ensemble, sweep, report (and kfp_pipeline).

Importing the package (`python -m pipelines.<stage>` does, before TensorFlow loads) hides
TensorFlow's C++ INFO and WARNING lines, unless TF_CPP_MIN_LOG_LEVEL is set already; the
binaries' --verbosity=1 lets them through again in processes they start (Beam's workers).
TF_CPP_MIN_LOG_LEVEL does not reach the lines TensorFlow 2.21 writes through an absl log not
initialized yet while it loads, on CPUs where oneDNN's custom operations are on by default
(AVX512_VNNI/BF16, AMX: "oneDNN custom operations are on", twice, each after absl's
"All log messages before absl::InitializeLog() ..."), so where INFO lines are hidden TensorFlow
is imported here with those lines dropped (`quiet_import_lines`), every other line it
writes kept.
"""
import os
import re
import sys
import tempfile

TF_CPP_QUIETED = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The lines TensorFlow's import writes past TF_CPP_MIN_LOG_LEVEL (module docstring).
_UNQUIETABLE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called "
                          r"are written to STDERR|I\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN "
                          r"custom operations are on\..*")


def quiet_import_lines(text):
    """`text` (what importing TensorFlow wrote to stderr) without the lines that
    TF_CPP_MIN_LOG_LEVEL cannot hide (module docstring)."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if not _UNQUIETABLE.fullmatch(line.rstrip("\n")))


def _import_tensorflow_quietly():
    """Import TensorFlow with file descriptor 2 captured, then write what it wrote there
    to stderr but the lines `quiet_import_lines` drops."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write(quiet_import_lines(captured.read().decode(errors="replace")))
            sys.stderr.flush()


if os.environ["TF_CPP_MIN_LOG_LEVEL"] not in ("", "0") and "tensorflow" not in sys.modules:
    _import_tensorflow_quietly()
