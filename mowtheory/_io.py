"""The one writer of every file the package writes, and the parse-time checks of output paths.

Atomic writes: the content goes to a temporary file ``.NAME.*.tmp`` in the destination's
folder (so that ``os.replace`` is a rename within one file system), is flushed and
fsync'ed, then renamed over ``NAME``; the folder is fsync'ed so the rename survives a power
loss. A process killed at any moment (SIGKILL included) leaves the previous file or the new
one, never a partial one; at worst a stale temporary, which :func:`remove_stale_temporaries`
deletes (call it when no writer runs, e.g. holding :mod:`mowtheory.train._lock`).

JSON has one NaN policy: a non-finite float (NaN, +-inf) is written as ``null``
(:func:`json_safe`), so every JSON file the package writes is standard JSON.

:func:`check_output_file` / :func:`check_output_dir` check an output path before any work:
not empty, not too long, not a folder where a file is wanted (or the reverse), not under a
file, and in a folder this process may write to. They raise ``ValueError`` naming the option
and the path.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "json_safe", "remove_stale_temporaries", "check_output_file", "check_output_dir",
           "describe_os_error"]


@contextmanager
def atomic_open(path, mode: str = "wb"):
    """``with atomic_open(path) as fh: ...`` writes ``path`` atomically (module docstring):
    ``fh`` is a temporary file beside ``path``, renamed over it when the block ends without an
    exception and deleted otherwise. ``mode``: ``"wb"`` or ``"w"`` (UTF-8 text)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w'; got mode={mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)        # mkstemp makes 0600; use the usual mode
        kw = {"encoding": "utf-8"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kw) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno is not None and not exc.filename:
            exc.filename = str(path)          # a failed write() names no file: name it
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``Path(path)``."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``Path(path)``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj):
    """``obj`` with every non-finite float replaced by None, tuples by lists, tensors/arrays
    by (nested) lists and any other object (a path, a ``torch.dtype``) by its ``str``: what
    :func:`atomic_write_json` writes."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):       # torch / numpy
        return json_safe(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):           # numpy scalars
        return json_safe(obj.item())
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)                                            # torch.dtype, torch.device...


def json_dumps(obj, *, indent=None) -> str:
    """Standard JSON of ``obj`` (:func:`json_safe`: NaN and infinities as null)."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False, ensure_ascii=False)


def atomic_write_json(path, obj, *, indent: int = 1) -> Path:
    """Write ``obj`` as JSON (NaN/inf as null) to ``path`` atomically."""
    return atomic_write_text(path, json_dumps(obj, indent=indent) + "\n")


def remove_stale_temporaries(path) -> list:
    """Delete the ``.NAME.*.tmp`` files that writers of ``path`` killed mid-write left beside
    it (call it when no writer runs); returns the deleted paths."""
    path = Path(path)
    gone = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            tmp.unlink()
            gone.append(tmp)
        except OSError:
            pass
    return gone


def _fsync_dir(folder: Path) -> None:
    """fsync a directory (makes a rename in it durable); a no-op where not supported."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


# ----------------------------------------------------------------------------- path checks
def _name_max(folder: str) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _path_max(folder: str) -> int:
    try:
        return os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        return 4096


def _check_path(name: str, path, want: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike); got {name}={path!r}")
    text = os.fspath(path)
    if isinstance(text, bytes) or text.strip() == "":
        raise ValueError(f"{name} must be a non-empty path; got {name}={path!r}")
    if "\0" in text:
        raise ValueError(f"{name} must not contain a NUL byte; got {name}={path!r}")
    p = Path(text).expanduser()
    absp = Path(os.path.abspath(p))
    # the nearest existing ancestor must be a writable folder; nothing on the way is a file
    anc = absp
    while not os.path.lexists(anc) and anc != anc.parent:
        anc = anc.parent
    if anc != absp and not anc.is_dir():
        raise ValueError(f"{name}={text!r} is under {str(anc)!r}, which is a file, not a folder")
    nmax, pmax = _name_max(str(anc if anc.is_dir() else anc.parent)), \
        _path_max(str(anc if anc.is_dir() else anc.parent))
    long = [part for part in absp.parts if len(os.fsencode(part)) > nmax]
    if long:
        raise ValueError(f"{name}={text!r} has a component of {len(os.fsencode(long[0]))} "
                         f"bytes; this file system allows at most {nmax}")
    if len(os.fsencode(str(absp))) >= pmax:
        raise ValueError(f"{name}={text!r} is {len(os.fsencode(str(absp)))} bytes long; "
                         f"paths must be shorter than {pmax}")
    if want == "file":
        if absp.is_dir():
            raise ValueError(f"{name}={text!r} is a folder; give a file path")
        if os.path.lexists(absp) and not absp.is_file():
            raise ValueError(f"{name}={text!r} exists and is not a regular file")
    else:
        if os.path.lexists(absp) and not absp.is_dir():
            raise ValueError(f"{name}={text!r} is a file; give a folder path")
    if anc.is_dir() and anc == absp and want == "dir":
        target = anc
    else:
        target = anc if anc != absp else absp.parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise ValueError(f"{name}={text!r}: cannot write in {str(target)!r} (permission denied)")
    return p


def check_output_file(name: str, path) -> Path:
    """Check that ``path`` can be written as a file (module docstring); returns it as a
    Path. Raises ValueError/TypeError naming ``name`` and the path."""
    return _check_path(name, path, "file")


def check_output_dir(name: str, path) -> Path:
    """Check that ``path`` is, or can be created as, a folder this process can write in;
    returns it as a Path. Raises ValueError/TypeError naming ``name`` and the path."""
    return _check_path(name, path, "dir")


def describe_os_error(exc: OSError, *, kept: str = "") -> str:
    """One line for an ``OSError`` (disk full, read-only, permission...): what failed on
    which file, and what was kept."""
    import errno
    what = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
            errno.EFBIG: "file too large (file-size limit)",
            errno.ENAMETOOLONG: "file name too long"}.get(exc.errno, exc.strerror or str(exc))
    where = exc.filename if exc.filename else ""
    line = f"{what} writing {where}" if where else what
    return line + (f"; {kept}" if kept else "")


class WriteError(OSError):
    """An I/O error while writing an output, with a one-line message that names the file and
    what was kept (:func:`describe_os_error`)."""

    def __init__(self, message: str, errno_: int | None = None):
        super().__init__(errno_, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def atomic_savefig(fig, path, **kwargs) -> Path:
    """``fig.savefig`` (a matplotlib figure) to ``path`` atomically; the format is the
    suffix's (``.png`` when there is none)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format=fmt, **kwargs)
    return Path(path)
