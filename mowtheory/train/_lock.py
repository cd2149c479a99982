"""An exclusive lock on a training run's output folder, so that one run writes it at a time.

``OUT/.lock`` is locked with ``fcntl.flock(LOCK_EX | LOCK_NB)`` and holds the PID of its
holder. The lock belongs to the open file: it is released when the holder exits, however it
exits (SIGKILL included), so a stale lock file never blocks a new run. A second writer is
refused with a ``ValueError`` naming the holder's PID (two runs on one ``--out`` would append
every metrics row twice, delete each other's checkpoint temporaries, or, with ``--overwrite``,
wipe a live run).

:func:`probe` checks the lock without creating anything (for the checks before any work);
:class:`OutputLock` takes it (creating the folder) just before the first write.
"""
from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock (documented)
    fcntl = None

LOCK_NAME = ".lock"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return pid or "unknown"


def _refusal(folder, path: Path) -> ValueError:
    return ValueError(f"out={str(folder)!r} is in use by another run (PID {_holder(path)} holds "
                      f"{path}); wait for it to finish or choose another --out")


def probe(folder) -> None:
    """Raise ValueError (naming the holder's PID) when a live run holds ``folder``'s lock;
    creates and writes nothing."""
    path = Path(folder) / LOCK_NAME
    if fcntl is None or not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _refusal(folder, path) from None
    finally:
        os.close(fd)                 # closing releases a lock this probe may have taken


class OutputLock:
    """``with OutputLock(out): ...`` holds ``out``'s lock (``out`` is created); raises
    ValueError naming the holder's PID when another process holds it."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd = None

    def acquire(self) -> "OutputLock":
        if fcntl is None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _refusal(self.folder, self.path) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
