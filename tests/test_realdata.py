"""Real-image loaders: image folders, IDX files, checked downloads, MNIST. Offline: every file is made here."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import struct
import urllib.error
import urllib.request
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from minildm.data import realdata
from minildm.data.realdata import (
    MNIST,
    ChecksumError,
    CorruptImageError,
    IDXFormatError,
    ImageFolderDataset,
    OfflineError,
    download_file,
    read_idx,
)

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
# IDX files
# ---------------------------------------------------------------------------------------------------------

def write_idx(path, arr: np.ndarray, code: int) -> bytes:
    """Our own IDX writer: 00 00 code ndim, big-endian uint32 dims, big-endian data."""
    big = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    raw = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(big).tobytes()
    path.write_bytes(gzip.compress(raw) if str(path).endswith(".gz") else raw)
    return raw


@pytest.mark.parametrize("code,dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16),
                                        (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, code, dtype, suffix):
    rng = np.random.default_rng(code)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, size=(3, 4, 5), endpoint=True).astype(dtype)
    else:
        arr = rng.standard_normal((3, 4, 5)).astype(dtype) * 1e3
    write_idx(tmp_path / f"x.idx{suffix}", arr, code)
    out = read_idx(tmp_path / f"x.idx{suffix}")
    assert out.dtype == np.dtype(dtype) and out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out, arr)
    torch.from_numpy(out)  # native byte order, usable by torch


def test_idx_hand_written_bytes(tmp_path):
    # int16, 2 dims of 2: values 1, -1, 256, 32767 written out byte by byte
    raw = bytes.fromhex("00000b02" "00000002" "00000002" "0001" "ffff" "0100" "7fff")
    (tmp_path / "h.idx").write_bytes(raw)
    assert read_idx(tmp_path / "h.idx").tolist() == [[1, -1], [256, 32767]]


def test_idx_truncated_and_too_long(tmp_path):
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    raw = write_idx(tmp_path / "t.idx", arr, 0x08)
    assert len(raw) == 16 + 2 * 784
    (tmp_path / "t.idx").write_bytes(raw[:-100])
    with pytest.raises(IDXFormatError, match=r"t\.idx(.|\n)*truncated(.|\n)*1584(.|\n)*1484(.|\n)*[Dd]elete"):
        read_idx(tmp_path / "t.idx")
    (tmp_path / "t.idx").write_bytes(raw[:10])                   # cut inside the header
    with pytest.raises(IDXFormatError, match=r"truncated(.|\n)*16(.|\n)*10 bytes"):
        read_idx(tmp_path / "t.idx")
    (tmp_path / "t.idx").write_bytes(raw + b"\x00" * 7)
    with pytest.raises(IDXFormatError, match=r"longer(.|\n)*1584(.|\n)*1591"):
        read_idx(tmp_path / "t.idx")
    gz = gzip.compress(raw)
    (tmp_path / "t.idx.gz").write_bytes(gz[: len(gz) // 2])      # an interrupted download of a .gz
    with pytest.raises(IDXFormatError, match=rf"t\.idx\.gz(.|\n)*{len(gz) // 2}(.|\n)*[Dd]elete"):
        read_idx(tmp_path / "t.idx.gz")


def test_idx_bad_magic(tmp_path):
    (tmp_path / "page.gz").write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(IDXFormatError, match=r"page\.gz(.|\n)*not an IDX file(.|\n)*[Dd]elete"):
        read_idx(tmp_path / "page.gz")
    (tmp_path / "code.idx").write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))  # 0x07 is no IDX dtype
    with pytest.raises(IDXFormatError, match="not an IDX file"):
        read_idx(tmp_path / "code.idx")
    (tmp_path / "empty.idx").write_bytes(b"")
    with pytest.raises(IDXFormatError, match="empty"):
        read_idx(tmp_path / "empty.idx")


# ---------------------------------------------------------------------------------------------------------
# Downloads (file:// URLs and a patched urlopen; never the network)
# ---------------------------------------------------------------------------------------------------------

def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_writes_file_when_checksum_matches(tmp_path):
    payload = bytes(range(256)) * 1000
    (tmp_path / "src.bin").write_bytes(payload)
    dest = tmp_path / "out" / "file.bin"
    assert download_file((tmp_path / "src.bin").as_uri(), dest, sha(payload), progress=False) == dest
    assert dest.read_bytes() == payload
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]   # no temporary files left


def test_download_checksum_mismatch_leaves_nothing(tmp_path):
    payload = b"the wrong file"
    (tmp_path / "src.bin").write_bytes(payload)
    dest = tmp_path / "out" / "file.bin"
    expected = sha(b"the right file")
    with pytest.raises(ChecksumError) as err:
        download_file((tmp_path / "src.bin").as_uri(), dest, expected, progress=False)
    assert expected in str(err.value) and sha(payload) in str(err.value)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_download_tries_mirrors_in_order(tmp_path):
    payload = b"digits" * 100
    (tmp_path / "good.bin").write_bytes(payload)
    urls = [(tmp_path / "missing.bin").as_uri(), (tmp_path / "good.bin").as_uri()]
    dest = download_file(urls, tmp_path / "out" / "f.bin", sha(payload), progress=False)
    assert dest.read_bytes() == payload


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    calls = []

    def offline(url, timeout=None):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    dest = tmp_path / "out" / "f.bin"
    with pytest.raises(OfflineError, match=r"offline(.|\n)*place it at") as err:
        download_file(["https://a.example/f.bin", "https://b.example/f.bin"], dest, "0" * 64, progress=False)
    assert str(dest) in str(err.value) and calls == ["https://a.example/f.bin", "https://b.example/f.bin"]
    assert not dest.exists() and list(dest.parent.iterdir()) == []

    dest.write_bytes(b"already here")                          # a correct file on disk needs no network
    assert download_file("https://a.example/f.bin", dest, sha(b"already here")) == dest


# ---------------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST from small IDX files written here
# ---------------------------------------------------------------------------------------------------------

def write_mnist(folder, prefix, images, labels, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, 0x08)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, 0x08)


def digits(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8)


def test_mnist_pads_to_32_and_keeps_values(tmp_path):
    images, labels = digits()
    write_mnist(tmp_path / "mnist", "train", images, labels)
    ds = MNIST(root=tmp_path, split="train", resolution=32)
    assert len(ds) == 5
    for i in range(5):
        item = ds[i]
        x = item["image"]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1
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
    images[0] = 255                                    # a constant image stays constant under resizing
    images[1] = 0
    write_mnist(tmp_path / "mnist", "train", images, labels)
    for r in (16, 64):
        ds = MNIST(root=tmp_path, resolution=r)
        assert ds[2]["image"].shape == (3, r, r)
        assert torch.allclose(ds[0]["image"], torch.ones(3, r, r))
        assert torch.allclose(ds[1]["image"], -torch.ones(3, r, r))
        x = ds.batch(range(5))["image"]
        assert x.min() >= -1 and x.max() <= 1
    with pytest.raises(ValueError, match="multiple of 8"):
        MNIST(root=tmp_path, resolution=28)


def test_fashion_test_split_reads_uncompressed_files(tmp_path):
    images, labels = digits(4, seed=1)
    labels = np.array([9, 0, 8, 5], dtype=np.uint8)
    write_mnist(tmp_path / "fashion-mnist", "t10k", images, labels, gz=False)
    ds = MNIST(root=tmp_path, split="test", variant="fashion")
    assert [ds[i]["caption"] for i in range(4)] == ["ankle boot", "t-shirt", "bag", "sandal"]
    assert ds.batch([0, 3])["label"].tolist() == [9, 5]


def test_mnist_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="split"):
        MNIST(root=tmp_path, split="val")
    with pytest.raises(ValueError, match="variant"):
        MNIST(root=tmp_path, variant="kmnist")
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\.gz(.|\n)*download=True") as err:
        MNIST(root=tmp_path)
    assert str(tmp_path / "mnist") in str(err.value) and "train-labels-idx1-ubyte.gz" in str(err.value)
    images, _ = digits()
    write_mnist(tmp_path / "mnist", "train", images, np.array([0, 1, 2, 3, 12], dtype=np.uint8))
    with pytest.raises(IDXFormatError, match="labels in 0..9"):
        MNIST(root=tmp_path)


def test_mnist_download_offline_fails_fast(tmp_path, monkeypatch):
    calls = []

    def offline(url, timeout=None):
        calls.append(url)
        raise urllib.error.URLError("Network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(OfflineError) as err:
        MNIST(root=tmp_path, download=True)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and "train-labels-idx1-ubyte.gz" in msg
    assert str(tmp_path / "mnist") in msg
    assert len(calls) == len(realdata.MNIST_MIRRORS["mnist"])           # one try per mirror, then stop
    assert not (tmp_path / "mnist").exists() or list((tmp_path / "mnist").iterdir()) == []


def test_mnist_download_from_a_fake_mirror(tmp_path, monkeypatch):
    images, labels = digits(3)
    served = {}
    for name, arr in (("train-images-idx3-ubyte.gz", images), ("train-labels-idx1-ubyte.gz", labels)):
        write_idx(tmp_path / name, arr, 0x08)
        served[name] = (tmp_path / name).read_bytes()
        monkeypatch.setitem(realdata.MNIST_FILES["mnist"], name, sha(served[name]))

    class Response(io.BytesIO):
        headers = {}

    def fake_urlopen(url, timeout=None):
        assert url.startswith(realdata.MNIST_MIRRORS["mnist"][0])
        return Response(served[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    ds = MNIST(root=tmp_path / "data", download=True)
    assert len(ds) == 3 and ds[2]["label"] == 2
    saved = tmp_path / "data" / "mnist" / "train-images-idx3-ubyte.gz"
    assert saved.read_bytes() == served["train-images-idx3-ubyte.gz"]


def test_official_checksum_table_is_complete():
    for variant, files in realdata.MNIST_FILES.items():
        assert sorted(files) == sorted(f"{p}-{k}-idx{d}-ubyte.gz" for p in ("train", "t10k")
                                       for k, d in (("images", 3), ("labels", 1)))
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in files.values())
    hashes = [h for files in realdata.MNIST_FILES.values() for h in files.values()]
    assert len(set(hashes)) == 8


def test_random_batches_resume_and_cover_each_epoch(tmp_path):
    images, labels = digits(10)
    write_mnist(tmp_path / "mnist", "train", images, labels)
    ds = MNIST(root=tmp_path)
    it = ds.random_batches(5, seed=1)
    run = [next(it)["label"] for _ in range(4)]
    for k in range(2):                                     # each epoch is a permutation: every item once
        assert sorted(torch.cat(run[2 * k: 2 * k + 2]).tolist()) == list(range(10))
    resumed = ds.random_batches(5, seed=1, start=3)        # batch k depends only on (seed, k)
    assert torch.equal(next(resumed)["label"], run[3])
    other = ds.random_batches(5, seed=2)                   # another seed, another order
    assert torch.cat([next(other)["label"] for _ in range(2)]).tolist() != torch.cat(run[:2]).tolist()
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
    from minildm.data.datasets import DataConfig, ShapesDataset, make_dataset

    assert isinstance(make_dataset("shapes", "val"), ShapesDataset) and make_dataset("shapes", "val").split == "val"
    write_mnist(tmp_path / "mnist", "train", *digits(4))
    write_mnist(tmp_path / "mnist", "t10k", *digits(3, seed=1))
    train, test = (make_dataset("mnist", s, DataConfig(resolution=32), root=tmp_path) for s in ("train", "val"))
    assert (len(train), len(test), train.num_classes) == (4, 3, 10) and train.tokenizer is None
    folder = make_dataset(f"folder:{make_folder(tmp_path)}", config=DataConfig(resolution=16))
    assert isinstance(folder, ImageFolderDataset) and folder[0]["image"].shape == (3, 16, 16)
    with pytest.raises(FileNotFoundError, match="fashion train files not found.*place them in.*fashion-mnist"):
        make_dataset("fashion-mnist", root=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*folder:PATH"):
        make_dataset("cifar")
