"""A stage binary's console: TensorFlow's start-up lines hidden, the log levels of
--verbosity, and the stream a stage of many runs shows its progress on.

`quiet_tensorflow` runs first in each binary, before its imports load TensorFlow: it hides
TensorFlow's C++ INFO and WARNING lines (TF_CPP_MIN_LOG_LEVEL=2, unless set already; the
binaries' --verbosity=1 lets them through again in processes they start, Beam's workers).
TF_CPP_MIN_LOG_LEVEL does not reach the lines TensorFlow 2.21 writes through an absl log not
initialized yet while it loads, on CPUs where oneDNN's custom operations are on by default
(AVX512_VNNI/BF16, AMX: "oneDNN custom operations are on", twice, each after absl's "All log
messages before absl::InitializeLog() ..."), so where INFO lines are hidden TensorFlow is
imported with those lines dropped (`quiet_import_lines`), every other line it writes kept.
This module imports neither TensorFlow nor the library.
"""
import contextlib
import logging
import os
import re
import sys
import tempfile

from absl import logging as absl_logging

_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
# The lines TensorFlow's import writes past TF_CPP_MIN_LOG_LEVEL (module docstring).
_UNQUIETABLE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called "
                          r"are written to STDERR|I\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN "
                          r"custom operations are on\..*")
_tf_cpp_quieted = False  # whether quiet_tensorflow set TF_CPP_MIN_LOG_LEVEL itself


def quiet_tensorflow():
    """Hide TensorFlow's C++ INFO and WARNING lines and import TensorFlow without the lines
    that setting cannot hide (module docstring). Call it before anything imports TensorFlow."""
    global _tf_cpp_quieted  # pylint: disable=global-statement
    _tf_cpp_quieted = _LEVEL not in os.environ
    os.environ.setdefault(_LEVEL, "2")
    if os.environ[_LEVEL] not in ("", "0") and "tensorflow" not in sys.modules:
        _import_tensorflow_quietly()


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


class StatusFormatter(logging.Formatter):
    """A log line as its message alone (a status line, not absl's "I1207 07:49:25.408979
    140199424441216 runner.py:152]" before it); a warning or an error prefixed by its level."""

    def format(self, record):
        message = super().format(record)
        if record.levelno <= logging.INFO:
            return message
        return f"{record.levelname.lower()}: {message}"


def set_verbosity(verbosity, progress):
    """The log levels of --verbosity: 0 shows errors only (and, but for a stage of many runs
    (`progress`), the package's INFO lines), 1 INFO logs and TensorFlow's C++ lines in the
    processes started from here, 2 and more absl's debug levels (set by absl itself) with
    absl's prefix on each line, which the lower levels leave out (`StatusFormatter`)."""
    if verbosity <= 1:
        absl_logging.get_absl_handler().setFormatter(StatusFormatter())
        logging.root.setLevel(logging.INFO if verbosity == 1 else logging.ERROR)
    if verbosity >= 1 and _tf_cpp_quieted:
        os.environ[_LEVEL] = "0"
    if verbosity >= 1 or not progress:
        logging.getLogger("lazy_feature").setLevel(logging.INFO)


@contextlib.contextmanager
def progress_stream(quiet):
    """Yield a stream on stderr; while `quiet`, file descriptor 2 (inherited by subprocesses
    started meanwhile) points to os.devnull and the stream to the console's stderr."""
    if not quiet:
        yield sys.stderr
        return
    sys.stderr.flush()
    console = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        with os.fdopen(console, "w", closefd=False) as stream:
            yield stream
    finally:
        sys.stderr.flush()
        os.dup2(console, 2)
        os.close(console)
