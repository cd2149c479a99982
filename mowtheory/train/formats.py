"""Readers of the on-disk dataset formats, safe on untrusted files: IDX image files (MNIST,
Fashion-MNIST; raw or gzip-compressed) and CIFAR-10 python batches (unpickled with an
allow-list: a data file cannot run code). :mod:`mowtheory.train.data` finds the files of a
dataset and calls these.
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np

_IDX_MAGIC_UBYTE_3D = 0x00000803


def read_maybe_gzip(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped when they start with the gzip magic bytes (a name
    ending in ``.gz`` must hold gzip data); ValueError naming the file otherwise."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise ValueError(f"{path}: corrupt gzip data ({e}); expected a gzip-compressed "
                             f"IDX file") from e
    if path.suffix == ".gz":
        raise ValueError(f"{path}: not gzip data (no gzip magic bytes 1f 8b) although the name "
                         f"ends in .gz")
    return raw


def read_idx_images(path, *, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read an IDX file of unsigned-byte images (magic ``0x00000803``), raw or gzip.

    Returns ``uint8`` ``(N, rows, cols)``. ``shape`` requires ``(rows, cols)``. The header is
    big-endian: magic, N, rows, cols (4 bytes each), then ``N·rows·cols`` bytes of pixels.
    Raises ``ValueError`` naming the file on a wrong magic number, a truncated header or body,
    trailing bytes or an unexpected image size.
    """
    path = Path(path)
    data = read_maybe_gzip(path)
    if len(data) < 16:
        raise ValueError(f"{path}: truncated IDX file: expected a 16-byte header "
                         f"(magic, count, rows, cols), found {len(data)} bytes")
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != _IDX_MAGIC_UBYTE_3D:
        raise ValueError(
            f"{path}: not an IDX image file: magic number 0x{magic:08x}, expected 0x00000803 "
            f"(unsigned bytes, 3 dimensions: count x rows x cols)"
        )
    if shape is not None and (rows, cols) != tuple(shape):
        raise ValueError(f"{path}: IDX images are {rows}x{cols}, expected "
                         f"{shape[0]}x{shape[1]}")
    expected = n * rows * cols
    found = len(data) - 16
    if found != expected:
        what = "truncated IDX file" if found < expected else "IDX file longer than its header says"
        raise ValueError(f"{path}: {what}: header says {n}×{rows}×{cols} = {expected} bytes of "
                         f"data, found {found}")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols)


#: the largest file read as a CIFAR-10 batch (a real one is about 31 MB)
CIFAR_MAX_BYTES = 256 * 1024 ** 2


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays only: a data file cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
            return getattr(np, name)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in (
                "_reconstruct", "scalar"):
            try:
                from numpy._core import multiarray
            except ImportError:  # numpy < 2
                from numpy.core import multiarray
            return getattr(multiarray, name)
        if (module, name) == ("_codecs", "encode"):
            import codecs
            return codecs.encode
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file")



def safe_unpickle(raw: bytes):
    """Unpickle ``raw`` allowing dicts, lists, bytes and numpy arrays only (bytes keys, as
    the CIFAR-10 batches were written by Python 2)."""
    return _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()

def read_cifar_batch(path) -> np.ndarray:
    """Read one CIFAR-10 python batch: a pickled dict with ``b"data"`` ``uint8`` ``N×3072``
    (rows are R, G, B planes of 32×32). Returns ``uint8`` ``(N, 3, 32, 32)``.

    Only plain containers and numpy arrays are unpickled (a restricted ``Unpickler``), so a
    malicious file cannot execute code. Raises ``ValueError`` naming the file when the content
    is not such a dict.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > CIFAR_MAX_BYTES:
        raise ValueError(f"{path}: not a CIFAR-10 python batch: {size} bytes, more than "
                         f"{CIFAR_MAX_BYTES} (a batch of 10,000 images is about 31 MB)")
    try:
        # from memory: a length field in random bytes can ask for at most what the file holds
        obj = safe_unpickle(path.read_bytes())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, struct.error, MemoryError, OverflowError) as e:
        raise ValueError(f"{path}: not a CIFAR-10 python batch (expected a pickled dict with "
                         f"b'data': uint8 array N×3072): cannot unpickle: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a CIFAR-10 python batch: unpickled a "
                         f"{type(obj).__name__}, expected a dict with b'data'")
    data = obj.get(b"data", obj.get("data"))
    if data is None:
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise ValueError(f"{path}: not a CIFAR-10 python batch: no b'data' key "
                         f"(keys: {keys or 'none'})")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        desc = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise ValueError(f"{path}: b'data' must be a uint8 array N×3072 (3×32×32 images); "
                         f"got {desc}")
    return data.reshape(-1, 3, 32, 32)
