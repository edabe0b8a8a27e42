"""What every stage binary shares: logging to stderr and one-line errors with a non-zero exit."""
import logging
import sys

from absl import app

from lazy_feature import errors


def main(stage, fn):
    """Run `fn()` as the stage `stage`; a library error becomes one line and exit status 1.

    An interrupt exits with status 130 after the run has saved its checkpoint, so the
    same command resumes it.
    """
    def _main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.getLogger("lazy_feature").setLevel(logging.INFO)
        try:
            fn()
        except errors.USER_ERRORS as e:
            print(f"{stage}: error: {e}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print(f"{stage}: interrupted; run the same command again to resume", file=sys.stderr)
            sys.exit(130)
    app.run(_main)
