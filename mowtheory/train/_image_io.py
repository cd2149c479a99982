"""Reading image files with Pillow (a dependency of matplotlib), kept apart so that the rest of
``mowtheory.train.data`` imports without it.

:func:`read_square_image` returns one image as a ``uint8`` array ``(3, size, size)``: converted
to RGB, center-cropped to a square, resized with a Lanczos (antialiasing) filter.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _pil():
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - Pillow comes with matplotlib
        raise ImportError(
            "reading image folders (celeba, ffhq) needs Pillow: pip install pillow"
        ) from e
    return Image


def find_images(root: Path) -> list[Path]:
    """All ``.png``/``.jpg``/``.jpeg`` files (any case) under ``root``, at any depth, sorted by
    their path relative to ``root`` so the order does not depend on the file system."""
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def read_square_image(path: Path, size: int) -> np.ndarray:
    """Read ``path`` as RGB, center-crop to a square, resize to ``size``×``size``.

    Returns ``uint8`` ``(3, size, size)``. A file Pillow cannot decode gives a ``ValueError``
    naming it.
    """
    Image = _pil()
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            left, top = (w - s) // 2, (h - s) // 2
            im = im.crop((left, top, left + s, top + s))
            if s != size:
                im = im.resize((size, size), Image.Resampling.LANCZOS)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:
        # PIL.UnidentifiedImageError is an OSError; truncated data raises OSError too.
        raise ValueError(
            f"{path}: cannot read as an image (expected a PNG or JPEG file): {e}"
        ) from e
    return np.ascontiguousarray(arr.transpose(2, 0, 1))
