"""The errors a user can cause and fix; stage binaries report them in one line."""


class Error(Exception):
    """Base of lazy_feature's user-facing errors; the message says how to fix it."""


class ConfigError(Error, ValueError):
    """An impossible setting (α ≤ 0, width < 1, an unknown name, a precision too low)."""


class DataError(Error, ValueError):
    """A data set is missing, corrupt or too small."""


class RunDirError(Error, ValueError):
    """An output or run directory does not hold what it should."""


class DivergenceError(Error, RuntimeError):
    """The gradient flow cannot take a step: dt collapsed or the loss is not finite."""


# OSError: an unreadable input or unwritable output path is the user's to fix too.
USER_ERRORS = (Error, OSError)
