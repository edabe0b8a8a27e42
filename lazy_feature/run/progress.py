"""A progress display for many runs: runs done of total, failures, elapsed time and ETA.

`Counter` counts finished items from the files they leave behind (one JSON file per
finished item, written atomically: a sweep's rows, an ensemble member's metrics.json), so
it counts whichever process ran them (Beam workers too), and items finished before a
resume count as done from the start. `Display` shows the count from a polling thread on
a stream it is given (the library never prints on its own): a bar redrawn in place on a
terminal, plain lines otherwise (at each completion and every `every` seconds).
"""
import contextlib
import threading
import time

from lazy_feature.run import artifact


def _not_done(record):
    return record.get("status", "done") != "done"


class Counter:
    """The items marked finished by `paths`; a finished item whose JSON `failed(record)`
    (by default: a `status` other than "done", e.g. "diverged") is a failure."""

    def __init__(self, paths, failed=_not_done):
        self.paths = list(paths)
        self.failed = failed
        self._failed = {}  # path -> whether that finished item failed

    @property
    def total(self):
        return len(self.paths)

    def poll(self):
        """(done, failed): the items finished so far and how many of them failed."""
        for path in self.paths:
            if path not in self._failed and artifact.exists(path):
                self._failed[path] = bool(self.failed(artifact.read_json(path)))
        return len(self._failed), sum(self._failed.values())


def duration(seconds):
    """`seconds` as h:mm:ss, or m:ss under an hour."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class Display:
    """Shows a Counter on `stream` while in its `with` block, ending with a final line.

    On a terminal (stream.isatty()) one line is redrawn every `poll` seconds behind a
    carriage return; otherwise a plain line is written when the count changes and every
    `every` seconds. The ETA extrapolates the rate of the items finished since the start.
    """

    BAR = 20

    def __init__(self, counter, stream, label="runs", every=60.0, poll=1.0,
                 clock=time.monotonic, failures="failed"):
        self.counter, self.stream, self.label, self.failures = counter, stream, label, failures
        self.every, self.poll, self.clock = every, poll, clock
        self.tty = stream.isatty()
        self._text, self._width = None, 0  # the text last written; the bar's width, to blank it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def line(self, done, failed, elapsed, final=False):
        """The status text: counts, elapsed time and, while runs are left, the ETA."""
        total = self.counter.total
        text = (f"{done}/{total} {self.label}, {failed} {self.failures}, "
                f"{duration(elapsed)} elapsed")
        if not final and done < total:
            new = done - self._done0
            eta = duration((total - done) * elapsed / new) if new else "?"
            text += f", ETA {eta}"
        if self.tty:
            filled = self.BAR * done // max(total, 1)
            text = f"[{'#' * filled}{'.' * (self.BAR - filled)}] {text}"
        return text

    def __enter__(self):
        self._start = self.clock()
        self._done0 = self.counter.poll()[0]
        self._shown, self._last = None, -float("inf")
        self.update()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        done, failed = self.counter.poll()
        self._write(self.line(done, failed, self.clock() - self._start, final=True))
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _loop(self):
        while not self._stop.wait(self.poll):
            self.update()

    def update(self):
        """Write the current count if it is due (the thread calls this every `poll` seconds)."""
        now = self.clock()
        done, failed = self.counter.poll()
        if self.tty or (done, failed) != self._shown or now - self._last >= self.every:
            self._write(self.line(done, failed, now - self._start))
            self._shown, self._last = (done, failed), now

    def _write(self, text):
        if text == self._text:
            return
        self._text = text
        if self.tty:
            self.stream.write(f"\r{text:<{self._width}}")
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def shown(paths, stream, label="runs", failed=_not_done, failures="failed"):
    """A `with` context displaying the items finished by `paths` on `stream`; None: nothing.

    `failed(record)` says which finished items count as `failures` (the word shown).
    """
    return counted(Counter(paths, failed), stream, label, failures)


def counted(counter, stream, label="runs", failures="failed"):
    """A `with` context displaying `counter` (a `Counter`, or anything with its `total` and
    `poll()`) on `stream`; None: nothing."""
    if stream is None:
        return contextlib.nullcontext()
    return Display(counter, stream, label, failures=failures)
