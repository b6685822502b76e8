"""Real images: folders of pictures and MNIST / Fashion-MNIST through torchvision. Offline: every file is made
here (tiny PNG folders, tiny IDX files where torchvision looks for them), and the network is never touched."""

from __future__ import annotations

import gzip
import struct
import urllib.error
import urllib.request
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from minildm.data.datasets import MNIST, CorruptImageError, DataConfig, ImageFolderDataset, ShapesDataset, make_dataset

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def as_model(rgb) -> torch.Tensor:
    """An RGB triple in 0..255 as the [-1, 1] vector the dataset should return."""
    return torch.tensor(rgb, dtype=torch.float64) / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------------------

def make_folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    # wide 64 × 48, red with a green 16 × 16 square in the middle
    a = Image.new("RGB", (64, 48), RED)
    a.paste(Image.new("RGB", (16, 16), GREEN), (24, 16))
    a.save(root / "a_wide.png")
    # 96 × 32: blue | green | blue thirds; the center crop must keep only the green third
    b = Image.new("RGB", (96, 32), BLUE)
    b.paste(Image.new("RGB", (32, 32), GREEN), (32, 0))
    b.save(root / "b_thirds.png")
    # tall JPEG in a subfolder, upper-case extension
    Image.new("RGB", (40, 80), (10, 200, 30)).save(root / "sub" / "c_tall.JPG", quality=95)
    # grayscale and fully transparent RGBA
    Image.new("L", (50, 50), 128).save(root / "d_gray.png")
    Image.new("RGBA", (33, 41), (0, 0, 0, 0)).save(root / "e_transparent.png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_image_folder_shapes_range_order_and_recursion(tmp_path):
    root = make_folder(tmp_path)
    ds = ImageFolderDataset(root, resolution=32)
    names = [p.relative_to(root).as_posix() for p in ds.paths]
    assert names == ["a_wide.png", "b_thirds.png", "d_gray.png", "e_transparent.png", "sub/c_tall.JPG"]
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
        assert item["image"].min() >= -1.0 and item["image"].max() <= 1.0
        assert item["label"] == -1 and item["path"] == str(ds.paths[i])
    gray = ds[2]["image"].double()
    assert torch.allclose(gray, torch.full_like(gray, 128 / 127.5 - 1), atol=1e-6)   # L -> equal RGB channels
    white = ds[3]["image"].double()
    assert torch.allclose(white, torch.ones_like(white))                             # transparent -> white
    tall = ds[4]["image"].double()                                                   # JPEG: approximately
    assert torch.allclose(tall.mean((1, 2)), as_model((10, 200, 30)), atol=0.05)
    assert ImageFolderDataset(root, resolution=16)[0]["image"].shape == (3, 16, 16)


def test_center_crop_keeps_the_center(tmp_path):
    ds = ImageFolderDataset(make_folder(tmp_path), resolution=32)
    wide = ds[0]["image"].double()          # 64 × 48 -> central 48 × 48 -> 32 × 32; green square ≈ 10.7 px
    assert torch.allclose(wide[:, 16, 16], as_model(GREEN), atol=0.02)
    assert torch.allclose(wide[:, 0, 0], as_model(RED), atol=0.02)
    assert torch.allclose(wide[:, 31, 31], as_model(RED), atol=0.02)
    thirds = ds[1]["image"].double()        # 96 × 32 -> the central 32 × 32, no scaling: exactly green
    assert torch.allclose(thirds[:, :, 1:31], as_model(GREEN)[:, None, None].expand(3, 32, 30), atol=1e-6)


def test_missing_and_empty_folders_and_bad_resolution(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no pictures")
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(tmp_path / "empty")
    root = make_folder(tmp_path)
    for bad in (30, 0, -8, 12.0, True):
        with pytest.raises(ValueError, match="multiple of 8"):
            ImageFolderDataset(root, resolution=bad)
    with pytest.raises(ValueError, match="on_error"):
        ImageFolderDataset(root, on_error="ignore")


def test_corrupt_file_raise_and_skip(tmp_path):
    root = make_folder(tmp_path)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(CorruptImageError, match=r"broken\.png(.|\n)*on_error='skip'"):
        ImageFolderDataset(root)
    with pytest.warns(UserWarning, match=r"broken\.png"):
        ds = ImageFolderDataset(root, on_error="skip")
    assert len(ds) == 5 and all(p.name != "broken.png" for p in ds.paths)
    assert [p for p, _ in ds.skipped] == [str(root / "broken.png")]


def test_file_that_fails_only_when_decoded(tmp_path):
    """A truncated JPEG passes PIL's verify(); decoding it is the first sign of trouble."""
    root = tmp_path / "jpgs"
    root.mkdir()
    for name, color in (("a.jpg", RED), ("b.jpg", GREEN), ("c.jpg", BLUE)):
        rng = np.random.default_rng(0)  # noisy content so the file is long enough to cut
        arr = np.clip(np.array(color) + rng.integers(-20, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(root / name, quality=95)
    data = (root / "b.jpg").read_bytes()
    (root / "b.jpg").write_bytes(data[: len(data) // 2])

    strict = ImageFolderDataset(root, on_error="raise")
    with pytest.raises(CorruptImageError, match=r"b\.jpg(.|\n)*on_error='skip'"):
        strict[1]

    lenient = ImageFolderDataset(root, on_error="skip")
    assert len(lenient) == 3
    with pytest.warns(UserWarning, match=r"b\.jpg"):
        item = lenient[1]
    assert item["path"].endswith("c.jpg")                        # the next readable image, in order
    with warnings.catch_warnings():
        warnings.simplefilter("error")                           # warned once: the second time is silent
        assert lenient[1]["path"].endswith("c.jpg")
        assert lenient[0]["path"].endswith("a.jpg")


def test_batches_are_stacked_and_seeded(tmp_path):
    ds = ImageFolderDataset(make_folder(tmp_path), resolution=8)
    b = ds.batch([0, 2])
    assert b["image"].shape == (2, 3, 8, 8) and b["label"].tolist() == [-1, -1]
    assert torch.equal(b["image"][1], ds[2]["image"])
    first = [next(ds.random_batches(2, seed=3))["path"] for _ in range(2)]
    assert first[0] == first[1]


# ---------------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST: tiny IDX files in torchvision's layout, <root>/MNIST/raw/train-images-idx3-ubyte, ...
# ---------------------------------------------------------------------------------------------------------

def write_idx(path, arr: np.ndarray, gz: bool = False) -> None:
    """uint8 IDX: 00 00 08 ndim, big-endian uint32 dims, the bytes."""
    raw = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def digits(n=5, seed=0, labels=None):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.array(labels or range(n), dtype=np.uint8)


def write_mnist(root, train=None, test=None, folder="MNIST", gz=False):
    """All four files (torchvision wants both splits on disk): images and labels of train and t10k."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, (images, labels) in (("train", train or digits()), ("t10k", test or digits(3, seed=1))):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return raw


@pytest.fixture
def offline(monkeypatch):
    """Every URL fails as on a machine without network; -> the list of URLs tried."""
    calls = []

    def urlopen(url, *args, **kwargs):
        calls.append(getattr(url, "full_url", url))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def test_mnist_pads_to_32_and_keeps_values(tmp_path):
    images, labels = digits()
    write_mnist(tmp_path, train=(images, labels))
    ds = MNIST(root=tmp_path, split="train", resolution=32)
    assert len(ds) == 5 and ds.num_classes == 10 and ds.tokenizer is None and ds.max_objects is None
    for i in range(5):
        item = ds[i]
        x = item["image"]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])          # gray replicated to RGB
        expected = images[i].astype(np.float64) / 255 * 2 - 1              # p/255 in [0, 1] -> [-1, 1]
        np.testing.assert_allclose(x[0, 2:30, 2:30].numpy(), expected, atol=1e-6)
        border = torch.ones(32, 32, dtype=torch.bool)
        border[2:30, 2:30] = False
        assert torch.all(x[0][border] == -1.0)                              # padding is black
        assert item["label"] == int(labels[i]) and item["caption"] == ds.classes[labels[i]]
    assert [ds[i]["caption"] for i in range(3)] == ["zero", "one", "two"]
    b = ds.batch([4, 0])
    assert b["image"].shape == (2, 3, 32, 32) and b["label"].tolist() == [4, 0]
    assert torch.equal(b["image"][0], ds[4]["image"]) and b["caption"] == ["four", "zero"]


def test_mnist_other_resolutions_resize(tmp_path):
    images, labels = digits()
    images[0], images[1] = 255, 0                      # a constant image stays constant under resizing
    write_mnist(tmp_path, train=(images, labels))
    for r in (16, 64):
        ds = MNIST(root=tmp_path, resolution=r)
        assert torch.allclose(ds[0]["image"], torch.ones(3, r, r))
        assert torch.allclose(ds[1]["image"], -torch.ones(3, r, r))
        x = ds.batch(range(5))["image"]
        assert x.shape == (5, 3, r, r) and x.min() >= -1 and x.max() <= 1
    with pytest.raises(ValueError, match="multiple of 8"):
        MNIST(root=tmp_path, resolution=28)


def test_fashion_test_split_from_gzipped_files_put_there_by_hand(tmp_path):
    raw = write_mnist(tmp_path, test=digits(4, seed=1, labels=[9, 0, 8, 5]), folder="FashionMNIST", gz=True)
    ds = MNIST(root=tmp_path, split="test", variant="fashion")
    assert [ds[i]["caption"] for i in range(4)] == ["ankle boot", "t-shirt/top", "bag", "sandal"]
    assert ds.batch([0, 3])["label"].tolist() == [9, 5]
    assert (raw / "t10k-images-idx3-ubyte").is_file()                     # extracted next to the .gz


def test_mnist_bad_arguments_missing_and_damaged_files(tmp_path, offline):
    with pytest.raises(ValueError, match="split"):
        MNIST(root=tmp_path, split="val")
    with pytest.raises(ValueError, match="variant"):
        MNIST(root=tmp_path, variant="kmnist")
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\.gz(.|\n)*download=True") as err:
        MNIST(root=tmp_path)
    assert str(tmp_path / "MNIST" / "raw") in str(err.value) and offline == []   # download=False: no network
    raw = write_mnist(tmp_path, train=digits(5, labels=[0, 1, 2, 3, 12]))
    with pytest.raises(ValueError, match=r"damaged mnist(.|\n)*labels in 0..9(.|\n)*download them again"):
        MNIST(root=tmp_path)
    write_mnist(tmp_path)
    (raw / "train-images-idx3-ubyte").write_bytes((raw / "train-images-idx3-ubyte").read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"damaged mnist files in .*MNIST"):   # an interrupted copy
        MNIST(root=tmp_path, download=True)
    assert offline == []                                                  # on disk: download=True asks nothing


def test_mnist_download_offline_is_a_clear_error(tmp_path, offline):
    with pytest.raises(RuntimeError, match=r"could not download fashion(.|\n)*offline") as err:
        MNIST(root=tmp_path, variant="fashion", download=True)
    msg = str(err.value)
    assert "train-labels-idx1-ubyte.gz" in msg and str(tmp_path / "FashionMNIST" / "raw") in msg
    assert offline and all(u.startswith("http://fashion-mnist.s3") for u in offline)


def test_random_batches_resume_and_cover_each_epoch(tmp_path):
    write_mnist(tmp_path, train=digits(10))
    ds = MNIST(root=tmp_path)
    it = ds.random_batches(5, seed=1)
    run = [next(it)["label"] for _ in range(4)]
    for k in range(2):                                     # each epoch is a permutation: every item once
        assert sorted(torch.cat(run[2 * k: 2 * k + 2]).tolist()) == list(range(10))
    resumed = ds.random_batches(5, seed=1, start=3)        # batch k depends only on (seed, k)
    assert torch.equal(next(resumed)["label"], run[3])
    other = ds.random_batches(5, seed=2)                   # another seed, another order
    assert torch.cat([next(other)["label"] for _ in range(2)]).tolist() != torch.cat(run[:2]).tolist()
    rows = ds.random_batches(5, seed=1, start=3, rows=slice(1, 3))   # one process's share of batch 3
    assert torch.equal(next(rows)["label"], run[3][1:3])
    tiny = ds.random_batches(16, seed=0)                   # more than the dataset: drawn with replacement
    assert next(tiny)["image"].shape == (16, 3, 32, 32)


# ---------------------------------------------------------------------------------------------------------
# Labels from subfolders, and datasets by name (the commands' --data)
# ---------------------------------------------------------------------------------------------------------

def test_class_subfolders_become_labels(tmp_path):
    root = tmp_path / "pets"
    for name, color, n in (("dog", RED, 2), ("cat", BLUE, 3)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (40, 40), color).save(root / name / f"{i}.png")
    ds = ImageFolderDataset(root, resolution=32)
    assert ds.classes == ("cat", "dog") and ds.num_classes == 2             # sorted folder names
    b = ds.batch(range(len(ds)))
    assert b["label"].tolist() == [0, 0, 0, 1, 1] and b["caption"] == ["cat"] * 3 + ["dog"] * 2
    assert torch.allclose(b["image"][0, :, 0, 0].double(), as_model(BLUE), atol=1e-6)   # cats are blue
    plain = ImageFolderDataset(make_folder(tmp_path), resolution=32)                     # images at the top too
    assert plain.classes is None and plain.num_classes is None and plain[0]["label"] == -1


def test_datasets_by_name(tmp_path):
    assert isinstance(make_dataset("shapes", "val"), ShapesDataset) and make_dataset("shapes", "val").split == "val"
    write_mnist(tmp_path, train=digits(4), test=digits(3, seed=1))
    train, test = (make_dataset("mnist", s, DataConfig(resolution=32), root=tmp_path) for s in ("train", "val"))
    assert (len(train), len(test), train.num_classes) == (4, 3, 10) and train.tokenizer is None
    folder = make_dataset(f"folder:{make_folder(tmp_path)}", config=DataConfig(resolution=16))
    assert isinstance(folder, ImageFolderDataset) and folder[0]["image"].shape == (3, 16, 16)
    with pytest.raises(FileNotFoundError, match="fashion files not found.*FashionMNIST.*--download"):
        make_dataset("fashion-mnist", root=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*folder:PATH"):
        make_dataset("cifar")
