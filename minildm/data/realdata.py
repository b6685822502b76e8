"""Real images for users who have them: any folder of pictures, and the MNIST / Fashion-MNIST digits.

The paper trains its autoencoders and LDMs on real photographs (CelebA-HQ, FFHQ, LSUN, ImageNet; Sec. 4).
These loaders give the same interface as the built-in Shapes dataset so every notebook can swap them in:

    ds[i]            -> {"image": (3, H, W) float32 in [-1, 1], "label": int, ...}
    ds.batch(idx)    -> {"image": (B, 3, H, W), "label": (B,), ...}
    ds.random_batches(batch_size, seed) -> an endless iterator of such batches

Nothing here touches the network unless you call `download_file` or pass `MNIST(download=True)`.
"""

from __future__ import annotations

import gzip
import hashlib
import numbers
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from tqdm.auto import tqdm

__all__ = [
    "ImageFolderDataset", "MNIST", "read_idx", "download_file", "load_image", "fit_mnist", "check_resolution",
    "to_model_range", "sha256_of", "CorruptImageError", "IDXFormatError", "DownloadError", "ChecksumError",
    "OfflineError", "IMAGE_EXTENSIONS", "IDX_DTYPES", "MNIST_FILES", "MNIST_MIRRORS", "MNIST_CLASSES",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_BICUBIC = getattr(Image, "Resampling", Image).BICUBIC  # Pillow >= 9.1 moved the filter names


def check_resolution(resolution: int) -> int:
    """A positive multiple of 8, so an f = 8 autoencoder (Sec. 4.1) still gets whole latent pixels."""
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral) or resolution <= 0 \
            or resolution % 8:
        nearest = max(8, 8 * round(resolution / 8)) if isinstance(resolution, numbers.Real) else 32
        raise ValueError(
            f"resolution must be a positive multiple of 8 (the autoencoders downsample by up to f=8), "
            f"got {resolution!r}; use {nearest}"
        )
    return int(resolution)


def to_model_range(x_uint8: torch.Tensor) -> torch.Tensor:
    """Pixels {0..255} -> floats in [-1, 1], the range the autoencoder is trained on (Sec. 3)."""
    return x_uint8.float() / 127.5 - 1.0  # x = 2 · (p / 255) − 1


class _BatchingDataset(Dataset):
    """A Dataset with `batch` and `random_batches` on top of `__getitem__`, like the Shapes dataset."""

    num_classes: int | None = None   # labels for class conditioning (None: unlabelled)
    tokenizer = None                 # captions for text conditioning: a Shapes feature
    max_objects: int | None = None   # boxes for layout conditioning: a Shapes feature

    def batch(self, indices: Sequence[int] | torch.Tensor, device: torch.device | str | None = None) -> dict:
        """Stack items into {"image": (B, 3, H, W), "label": (B,), <other keys>: list}."""
        items = [self[int(i)] for i in indices]
        out: dict = {}
        for key in items[0]:
            values = [item[key] for item in items]
            if key == "image":
                out[key] = torch.stack(values).to(device)               # B × (3, H, W) -> (B, 3, H, W)
            elif key == "label":
                out[key] = torch.tensor(values, dtype=torch.long, device=device)
            else:
                out[key] = values
        return out

    def random_batches(self, batch_size: int, seed: int = 0, start: int = 0, device: torch.device | str | None = None,
                       rows: slice | None = None) -> Iterator[dict]:
        """Endless shuffled batches, each epoch a fresh permutation; batch k depends only on (seed, k), so a
        resumed run passes `start=k` and sees what an uninterrupted run would have seen. `rows`: only these rows
        of every batch (one process's share, distributed.py)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        n = len(self)
        per_epoch = n // batch_size
        k = start
        while True:
            if per_epoch == 0:  # fewer items than one batch: draw with replacement
                g = torch.Generator().manual_seed(seed * 1_000_003 + k)
                idx = torch.randint(n, (batch_size,), generator=g)
            else:               # batch k is slice k mod per_epoch of epoch k // per_epoch's permutation
                g = torch.Generator().manual_seed(seed * 1_000_003 + k // per_epoch)
                j = (k % per_epoch) * batch_size
                idx = torch.randperm(n, generator=g)[j:j + batch_size]
            yield self.batch(idx[rows if rows is not None else slice(None)].tolist(), device=device)
            k += 1


# --- Any folder of images -----------------------------------------------------------------------------------

class CorruptImageError(ValueError):
    """An image file that PIL cannot read."""


def load_image(path: str | os.PathLike, resolution: int) -> torch.Tensor:
    """Open, RGB, resize the short side to `resolution` and center-crop: (3, resolution, resolution) in [-1, 1]."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)  # phone photos store their rotation in EXIF
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")       # transparent pixels become white, not their hidden color
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        img = img.convert("RGB")
        w, h = img.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        # Resizing the short side to r and then center-cropping r × r == resizing the central s × s square to
        # r × r; PIL does it in one antialiased resampling step through `box` (no rounding of the long side).
        img = img.resize((resolution, resolution), _BICUBIC, box=(left, top, left + s, top + s))
        pixels = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
    return to_model_range(rearrange(pixels, "h w c -> c h w"))  # (H, W, 3) -> (3, H, W)


class ImageFolderDataset(_BatchingDataset):
    """Every image under `root` (recursively, sorted by relative path), center-cropped to a square.

    Labels: when every image sits in a first-level subfolder and there are at least two of them
    (root/cat/1.png, root/dog/2.png, …), the subfolders are the classes (sorted by name: `classes`,
    `num_classes`) and each image's label and caption are its folder's; otherwise the folder is unlabelled
    (label −1, num_classes None), for unconditional models.

    Unreadable files: every file is checked once at construction (PIL's `verify()`, which reads headers and,
    for PNG, chunk checksums). With on_error="raise" a CorruptImageError lists every file that fails; with
    "skip" they are left out of the dataset with one warning that names them, and `ds.skipped` lists them. A
    file that passes `verify()` but fails to decode later (e.g. a truncated JPEG) is reported the same
    way when loaded: "raise" raises, "skip" warns once and returns the next readable image in order, so
    `len(ds)` never changes and the same index always gives the same image.
    """

    def __init__(self, root: str | os.PathLike, resolution: int = 32, on_error: str = "raise",
                 extensions: Sequence[str] = IMAGE_EXTENSIONS):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.root = Path(root)
        self.resolution = check_resolution(resolution)
        self.on_error = on_error
        if not self.root.is_dir():
            what = "is a file, not a folder" if self.root.exists() else "does not exist"
            raise FileNotFoundError(f"image folder {str(self.root)!r} {what}; pass the folder that holds your images")
        exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        candidates = sorted(
            (p for p in self.root.rglob("*")
             if p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")),
            key=lambda p: p.relative_to(self.root).as_posix(),
        )
        if not candidates:
            raise ValueError(
                f"no images with extensions {', '.join(exts)} found under {str(self.root)!r}; "
                "put some pictures there or pass extensions=(...)"
            )
        self.paths: list[Path] = []
        self.skipped: list[tuple[str, str]] = []  # (path, reason)
        for p in candidates:
            reason = _verify_image(p)
            if reason is None:
                self.paths.append(p)
            else:
                self.skipped.append((str(p), reason))
        if self.skipped:
            listing = "\n  ".join(f"{p}: {r}" for p, r in self.skipped[:20])
            more = f"\n  ... and {len(self.skipped) - 20} more" if len(self.skipped) > 20 else ""
            if on_error == "raise":
                raise CorruptImageError(
                    f"{len(self.skipped)} unreadable image file(s) under {str(self.root)!r}:\n  {listing}{more}\n"
                    "Delete or replace them, or pass on_error='skip' to leave them out."
                )
            warnings.warn(f"skipping {len(self.skipped)} unreadable image file(s):\n  {listing}{more}", stacklevel=2)
        if not self.paths:
            raise ValueError(f"none of the {len(candidates)} image files under {str(self.root)!r} could be read")
        self._bad_at_load: set[int] = set()
        folders = [p.relative_to(self.root).parts for p in self.paths]
        names = sorted({parts[0] for parts in folders})
        labelled = all(len(parts) >= 2 for parts in folders) and len(names) >= 2
        self.classes: tuple[str, ...] | None = tuple(names) if labelled else None
        self.num_classes = len(names) if labelled else None
        self._labels = [names.index(parts[0]) for parts in folders] if labelled else [-1] * len(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        """{"image": (3, H, W) float32 in [-1, 1], "path": str, "label": class index or −1, "caption": str}."""
        n, i = len(self.paths), int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for an ImageFolderDataset of {n} images")
        i %= n
        for j in (k % n for k in range(i, i + n)):  # the item itself, else the next readable one
            if j in self._bad_at_load:
                continue
            path = self.paths[j]
            try:
                image = load_image(path, self.resolution)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                if self.on_error == "raise":
                    raise CorruptImageError(
                        f"cannot decode image {str(path)!r} ({type(e).__name__}: {e}); delete or replace it, "
                        "or pass on_error='skip' to use the next readable image instead"
                    ) from e
                self._bad_at_load.add(j)
                warnings.warn(f"skipping unreadable image {str(path)!r} ({type(e).__name__}: {e})", stacklevel=2)
                continue
            label = self._labels[j]
            return {"image": image, "path": str(path), "label": label,
                    "caption": self.classes[label] if label >= 0 else path.name}
        raise CorruptImageError(f"none of the {n} images under {str(self.root)!r} could be decoded")


def _verify_image(path: Path) -> str | None:
    """None when PIL accepts the file, else the reason it does not."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, struct.error, ...) for bad files
        return f"{type(e).__name__}: {e}"
    return None


# --- IDX files (the format of MNIST and Fashion-MNIST) ------------------------------------------------------

class IDXFormatError(ValueError):
    """An IDX file that is truncated, has extra bytes, or does not start with an IDX header."""


# The third header byte says the element type; all multi-byte values are big-endian.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_REDOWNLOAD = "Delete the file and download it again (MNIST(..., download=True) fetches missing files)."


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a native-endian numpy array of its stored shape.

    Layout: bytes 0-1 are zero, byte 2 the dtype code, byte 3 the number of dimensions d; then d big-endian
    uint32 sizes; then prod(sizes) elements in C order.
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip magic: decompress transparently, whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError) as e:
            raise IDXFormatError(
                f"{str(path)!r} is a damaged gzip file ({e}); it has {len(raw)} compressed bytes, probably an "
                f"interrupted download. {_REDOWNLOAD}"
            ) from e
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_DTYPES:
        found = raw[:4].hex(" ") if raw else "an empty file"
        raise IDXFormatError(
            f"{str(path)!r} is not an IDX file: expected the header 00 00 <dtype in "
            f"{', '.join(f'{c:02x}' for c in IDX_DTYPES)}> <ndim>, found {found}. "
            f"It may be an HTML error page saved by a failed download. {_REDOWNLOAD}"
        )
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(
            f"{str(path)!r} is truncated: expected at least {header} header bytes for {ndim} dimensions, "
            f"got {len(raw)} bytes. {_REDOWNLOAD}"
        )
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "longer than its header says"
        raise IDXFormatError(
            f"{str(path)!r} is {problem}: header says shape {shape} of {dtype.name}, i.e. {expected} bytes "
            f"(uncompressed), but the file holds {len(raw)} bytes. {_REDOWNLOAD}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # native byte order (a copy), so torch.from_numpy works


# --- Downloads: mirrors in order, written to a temporary file, renamed only after the SHA-256 matches -------

class DownloadError(RuntimeError):
    """No mirror delivered the file."""


class ChecksumError(DownloadError):
    """A file was downloaded but its SHA-256 is not the expected one."""


class OfflineError(DownloadError):
    """No mirror could be reached at all (no network, DNS failure, firewall)."""


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download_file(url: str | Sequence[str], dest: str | os.PathLike, sha256: str, timeout: float = 30.0,
                  progress: bool = True) -> Path:
    """Fetch `url` (or the first mirror of a list that works) to `dest`, atomically and checksum-verified.

    Bytes go to a temporary file next to `dest`; it is renamed onto `dest` only when its SHA-256 equals
    `sha256`, so `dest` is either absent or complete. A file already at `dest` with the right hash is kept.
    Raises OfflineError when no mirror can be reached, ChecksumError when every mirror that answered sent
    different bytes, DownloadError otherwise; each message lists every attempt.
    """
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise ValueError("download_file needs at least one URL")
    dest, sha256 = Path(dest), sha256.lower()
    if dest.is_file() and sha256_of(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempts, reached = [], False
    for u in urls:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(u, timeout=timeout) as response:
                reached = True
                headers = getattr(response, "headers", None)
                total = headers.get("Content-Length") if headers is not None else None
                with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, mininterval=0.5,
                          desc=dest.name, disable=not progress, leave=False) as bar:
                    for block in iter(lambda: response.read(1 << 16), b""):
                        out.write(block)
                        h.update(block)
                        bar.update(len(block))
            got = h.hexdigest()
            if got != sha256:
                attempts.append((u, f"SHA-256 mismatch: expected {sha256}, got {got}", True))
                continue
            os.replace(tmp, dest)  # atomic on one filesystem: readers never see a partial file
            return dest
        except (urllib.error.URLError, OSError, ValueError) as e:  # HTTPError and timeouts are URLError/OSError
            reached = reached or isinstance(e, urllib.error.HTTPError)
            attempts.append((u, f"{type(e).__name__}: {getattr(e, 'reason', e)}", False))
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    listing = "\n  ".join(f"{u}: {why}" for u, why, _ in attempts)
    if any(bad_hash for *_, bad_hash in attempts):
        raise ChecksumError(
            f"downloaded {dest.name} but its content is not the expected file (nothing was written to {dest}):\n"
            f"  {listing}\nThe mirror may serve a changed or damaged file; try again later or place a correct "
            f"copy at {dest} yourself."
        )
    if not reached:
        raise OfflineError(
            f"could not reach any mirror for {dest.name} (is this machine offline?):\n  {listing}\n"
            f"Download it on another machine and place it at {dest}."
        )
    raise DownloadError(f"could not download {dest.name}:\n  {listing}")


# --- MNIST and Fashion-MNIST --------------------------------------------------------------------------------

# SHA-256 of the official .gz files. Source: tensorflow/datasets, tensorflow_datasets/url_checksums/mnist.txt
# and fashion_mnist.txt (which also list the sizes below); the same values appear in several independent
# projects' download scripts. torchvision lists only MD5s.
MNIST_FILES = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",  # 9912422 B
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",  # 28881 B
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",   # 1648877 B
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",   # 4542 B
    },
    "fashion": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",  # 26421880 B
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",  # 29515 B
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",   # 4422102 B
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",   # 5148 B
    },
}
MNIST_MIRRORS = {  # tried in order; the MNIST ones are torchvision's
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "fashion": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
MNIST_FOLDERS = {"mnist": "mnist", "fashion": "fashion-mnist"}  # the two variants share file names
MNIST_CLASSES = {
    "mnist": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "fashion": ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                "ankle boot"),
}
MNIST_SIZE = 28


def fit_mnist(digits: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B, 28, 28) uint8 -> (B, 3, r, r) in [-1, 1]: pad 2 black pixels per side for r = 32, else resize."""
    x = to_model_range(digits)[:, None]                                   # (B, 28, 28) -> (B, 1, 28, 28)
    if resolution == MNIST_SIZE + 4:
        x = F.pad(x, (2, 2, 2, 2), value=-1.0)                            # -> (B, 1, 32, 32), border = black
    elif resolution != MNIST_SIZE:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True,
                          align_corners=False).clamp(-1.0, 1.0)          # -> (B, 1, r, r)
    return repeat(x, "b 1 h w -> b c h w", c=3)                           # gray -> RGB for the autoencoder


class MNIST(_BatchingDataset):
    """MNIST or Fashion-MNIST as 3-channel images in [-1, 1] with labels and class-name captions.

    Files are looked up in `<root>/mnist/` or `<root>/fashion-mnist/` under their official names, gzipped
    (`train-images-idx3-ubyte.gz`) or not (`train-images-idx3-ubyte`). With download=True the missing ones
    are fetched from the mirrors in MNIST_MIRRORS and checked against MNIST_FILES' SHA-256 sums.
    At resolution 32 the 28 × 28 digits are padded by 2 black pixels per side (no resampling blur);
    at other multiples of 8 they are resized with antialiased bilinear interpolation.
    """

    def __init__(self, root: str | os.PathLike = "data/downloads", split: str = "train", variant: str = "mnist",
                 resolution: int = 32, download: bool = False):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if variant not in MNIST_FILES:
            raise ValueError(f"variant must be one of {', '.join(map(repr, MNIST_FILES))}, got {variant!r}")
        self.split, self.variant = split, variant
        self.resolution = check_resolution(resolution)
        self.folder = Path(root) / MNIST_FOLDERS[variant]
        self.classes = MNIST_CLASSES[variant]
        self.num_classes = len(self.classes)
        prefix = "train" if split == "train" else "t10k"
        names = (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")
        images_path, labels_path = (self._find_or_download(names, n, download) for n in names)
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or images.shape[1:] != (MNIST_SIZE, MNIST_SIZE) or images.dtype != np.uint8:
            raise IDXFormatError(
                f"{str(images_path)!r} should hold (N, 28, 28) uint8 images, got {images.shape} {images.dtype}"
            )
        if labels.shape != (len(images),) or labels.size and labels.max() >= len(self.classes):
            raise IDXFormatError(
                f"{str(labels_path)!r} should hold {len(images)} labels in 0..{len(self.classes) - 1}, "
                f"got shape {labels.shape}" + (f" with max {labels.max()}" if labels.size else "")
            )
        self.images = torch.from_numpy(images)                 # (N, 28, 28) uint8, converted per batch
        self.labels = torch.from_numpy(labels.astype(np.int64))  # (N,)

    def _local(self, name: str) -> Path | None:
        """The file on disk, gzipped (`name`) or not (`name` without .gz), or None."""
        return next((p for p in (self.folder / name, self.folder / name[: -len(".gz")]) if p.is_file()), None)

    def _find_or_download(self, names: Sequence[str], name: str, download: bool) -> Path:
        local = self._local(name)
        if local is not None:
            return local
        urls = [m + name for m in MNIST_MIRRORS[self.variant]]
        missing = [n for n in names if self._local(n) is None]
        manual = (
            f"Download {', '.join(missing)} from {MNIST_MIRRORS[self.variant][0]} and place them in "
            f"{str(self.folder)!r} (gzipped or not)"
        )
        if not download:
            raise FileNotFoundError(f"{self.variant} {self.split} files not found: {manual}, or pass download=True "
                                    "(on the command line: --download).")
        try:
            return download_file(urls, self.folder / name, MNIST_FILES[self.variant][name])
        except OfflineError as e:  # fail fast: the other files would fail the same way
            raise OfflineError(f"{e}\n{manual}.") from None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        """{"image": (3, r, r) float32 in [-1, 1], "label": int, "caption": class name}."""
        label = int(self.labels[i])
        return {"image": fit_mnist(self.images[i][None], self.resolution)[0], "label": label,
                "caption": self.classes[label]}

    def batch(self, indices: Sequence[int] | torch.Tensor, device: torch.device | str | None = None) -> dict:
        """Vectorized: {"image": (B, 3, r, r), "label": (B,), "caption": list[str]}."""
        idx = torch.as_tensor(indices if torch.is_tensor(indices) else list(indices), dtype=torch.long)
        labels = self.labels[idx]
        return {"image": fit_mnist(self.images[idx], self.resolution).to(device), "label": labels.to(device),
                "caption": [self.classes[int(c)] for c in labels]}
