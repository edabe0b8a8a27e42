"""One trainer per run: a lease on a run directory, whatever starts the trainers.

Two sweeps on one directory, two Beam workers or a retried bundle may reach the same run at
once. Whoever holds the run's lease trains it (and writes its row); the others wait for it and
then find the run complete. How the lease is held depends on the filesystem:

- a local disk: an exclusive `fcntl.flock` on run_dir/.lease. The operating system drops it
  when its process dies (kill -9 included), so a dead trainer never blocks a rerun.
- ram:// (one process's memory): a lock of this process.
- any other filesystem (gs://, s3://, hdfs://: an object store has no lock and no atomic
  create-if-absent): a lease file holding the trainer's token and an expiry, which a
  heartbeat thread renews every TTL/3. A trainer takes the lease only when it is absent or
  expired: it writes its token (an object is written whole: a reader sees one token or the
  other, never a mix), waits SETTLE seconds for a rival's write to land, and reads it back.
  Before every checkpoint and before it publishes (metrics.json) the holder checks that the
  lease is still its own (`Lease.check`); one that lost it (a paused worker whose lease
  expired) stops with a RunDirError instead of writing over the new holder's run.

Within a process the lease is re-entrant for the thread that holds it (the sweep holds it
around train → NTK evaluation → row, the trainer inside it), and other threads wait.
"""
import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import tensorflow as tf

from lazy_feature.errors import RunDirError

logger = logging.getLogger("lazy_feature")

LEASE = ".lease"
LOCAL_SCHEMES = ("", "file")
IN_PROCESS_SCHEMES = ("ram",)
TTL, SETTLE, POLL = 120.0, 2.0, 1.0  # seconds: a lease file's life unrenewed, settling, polling


class Busy(Exception):
    """Another trainer holds the run's lease (`held(..., wait=False)`)."""


def scheme(path: str) -> str:
    return path.split("://", 1)[0] if "://" in path else ""


class Lease:
    """A held lease; `check()` raises RunDirError once it is no longer this trainer's."""

    def check(self) -> None:
        pass

    def release(self) -> None:
        pass


class _FlockLease(Lease):
    """An flock on a local lock file: held while its file is open."""

    def __init__(self, path: str, wait: bool, on_wait: Callable[[], None]):
        local = path[len("file://"):] if path.startswith("file://") else path
        self._fd = os.open(local, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                os.close(self._fd)
                raise Busy(path) from None
            on_wait()
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        os.close(self._fd)  # closing the file drops the lock


class FileLease(Lease):
    """A lease file with a token and an expiry, renewed by a heartbeat thread (object stores)."""

    def __init__(self, path: str, wait: bool, on_wait: Callable[[], None],
                 ttl: float = TTL, settle: float = SETTLE, poll: float = POLL):
        self.path, self.ttl = path, ttl
        self.token = uuid.uuid4().hex
        waited = False
        while not self._take(settle):
            if not wait:
                raise Busy(path)
            if not waited:
                on_wait()
                waited = True
            time.sleep(poll)
        self._stop = threading.Event()
        self._lost = False
        self._heartbeat = threading.Thread(target=self._renew, daemon=True)
        self._heartbeat.start()

    def _read(self) -> dict | None:
        try:
            with tf.io.gfile.GFile(self.path, "rb") as f:
                return json.loads(f.read().decode("utf-8"))
        except (tf.errors.NotFoundError, ValueError):  # absent, or half written by a rival
            return None

    def _write(self) -> None:
        with tf.io.gfile.GFile(self.path, "wb") as f:
            f.write(json.dumps(dict(token=self.token, expires=time.time() + self.ttl)).encode())

    def _take(self, settle: float) -> bool:
        held = self._read()
        if held is not None and held.get("expires", 0) > time.time():
            return False
        self._write()
        time.sleep(settle)
        held = self._read()
        return held is not None and held.get("token") == self.token

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            held = self._read()
            if held is None or held.get("token") != self.token:
                self._lost = True
                return
            self._write()

    def check(self) -> None:
        held = self._read()
        if self._lost or held is None or held.get("token") != self.token:
            self._lost = True
            raise RunDirError(f"another trainer took over {os.path.dirname(self.path)} (this "
                              "one's lease expired): its result is the run's; nothing was "
                              "written over it")

    def release(self) -> None:
        self._stop.set()
        self._heartbeat.join()
        if not self._lost and (self._read() or {}).get("token") == self.token:
            tf.io.gfile.remove(self.path)


class _Held:
    """This process's leases: the thread that holds each, how deeply, and its Lease."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.locks: dict[str, threading.RLock] = {}
        self.leases: dict[str, tuple[Lease, int]] = {}


_HELD = _Held()


def _lock(path: str) -> "threading.RLock":
    with _HELD.guard:
        return _HELD.locks.setdefault(path, threading.RLock())


@contextlib.contextmanager
def held(run_dir: str, wait: bool = True, file_lease: bool | None = None) -> Iterator[Lease]:
    """Hold the lease of `run_dir` (created if missing) for the block.

    `wait` False raises Busy at once when another trainer holds it; True waits, saying so in
    one line. `file_lease` forces the lease-file kind (True) or the lock kind (False); None
    picks by the filesystem (see the module docstring).
    """
    path = os.path.join(run_dir, LEASE)
    lock = _lock(path)
    if not lock.acquire(blocking=False):
        if not wait:
            raise Busy(path)
        _waiting(run_dir)
        lock.acquire()
    try:
        lease, depth = _HELD.leases.get(path, (None, 0))
        if lease is None:
            tf.io.gfile.makedirs(run_dir)
            kind = scheme(run_dir)
            if file_lease is None:
                file_lease = kind not in LOCAL_SCHEMES + IN_PROCESS_SCHEMES
            on_wait = lambda: _waiting(run_dir)  # noqa: E731
            lease = (FileLease(path, wait, on_wait) if file_lease
                     else Lease() if kind in IN_PROCESS_SCHEMES
                     else _FlockLease(path, wait, on_wait))
        _HELD.leases[path] = (lease, depth + 1)
        try:
            yield lease
        finally:
            lease, depth = _HELD.leases.pop(path)
            if depth > 1:
                _HELD.leases[path] = (lease, depth - 1)
            else:
                lease.release()
    finally:
        lock.release()


def _waiting(run_dir: str) -> None:
    logger.warning("%s: another trainer holds this run; waiting for it to finish", run_dir)
