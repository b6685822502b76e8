"""The datasets that feed training: the built-in captioned Shapes scenes (default), a folder of pictures, and
MNIST / Fashion-MNIST (torchvision's). Every dataset gives the same interface, so training and the notebooks
can swap them:

    ds[i]                                -> one sample with every annotation it has
    ds.batch(indices, device)            -> {"image": (B, 3, H, W) in [-1, 1], "label": (B,), ...} at once
    ds.random_batches(batch_size, seed)  -> an endless stream; batch k depends only on (seed, k)

and says which conditions it can give a model: `num_classes` (labels), `tokenizer` (captions) and
`max_objects` (boxes for layouts), None for those it lacks. Shapes scenes are rendered on the fly (sample i of a
split is a pure function of (seed, split, i)), so nothing is downloaded or cached. The paper trains on real
photographs (Sec. 4); ImageFolderDataset and MNIST bring real images at the profile's resolution. Nothing here
touches the network unless you pass `MNIST(download=True)`.
"""

from __future__ import annotations

import itertools
import numbers
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence
from urllib.error import URLError

import torch
import torch.nn.functional as F
from einops import repeat
from PIL import Image, ImageOps
from torchvision import datasets as tv_datasets
from torchvision.datasets.utils import extract_archive
from torchvision.transforms.functional import pil_to_tensor

from .shapes import NUM_CLASSES, Scene, ShapesTokenizer, render_scenes, sample_scene, semantic_map

__all__ = ["DataConfig", "ShapesDataset", "SPLIT_IDS", "collate", "make_dataset", "DATASETS", "MNIST",
           "ImageFolderDataset", "CorruptImageError", "load_image", "fit_mnist", "check_resolution", "to_model_range",
           "IMAGE_EXTENSIONS"]

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class DataConfig:
    """The built-in Shapes dataset of a profile."""

    resolution: int = 32          # square images, a multiple of 8
    max_objects: int = 2          # scenes hold 1..max_objects objects
    train_size: int = 50_000      # samples are rendered on the fly, so sizes cost no disk
    val_size: int = 1_000
    test_size: int = 1_000


def check_resolution(resolution: int) -> int:
    """A positive multiple of 8, so an f = 8 autoencoder (Sec. 4.1) still gets whole latent pixels."""
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral) or resolution <= 0 \
            or resolution % 8:
        nearest = max(8, 8 * round(resolution / 8)) if isinstance(resolution, numbers.Real) else 32
        raise ValueError(f"resolution must be a positive multiple of 8 (the autoencoders downsample by up to "
                         f"f=8), got {resolution!r}; use {nearest}")
    return int(resolution)


def to_model_range(x_uint8: torch.Tensor) -> torch.Tensor:
    """Pixels {0..255} -> floats in [-1, 1], the range the autoencoder is trained on (Sec. 3)."""
    return x_uint8.float() / 127.5 - 1.0  # x = 2 · (p / 255) − 1


def collate(items: Sequence[dict]) -> dict:
    """Stack dataset items into a batch: tensors stacked ((3, H, W) -> (B, 3, H, W)), ints into an int64 tensor,
    anything else into a list. Also the collate_fn of a torch DataLoader over `ds[i]` items."""
    out = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if torch.is_tensor(values[0]):
            out[key] = torch.stack(values)
        elif isinstance(values[0], int):
            out[key] = torch.tensor(values, dtype=torch.int64)
        else:
            out[key] = values
    return out


class _BatchingDataset(torch.utils.data.Dataset):
    """What every dataset here shares: `random_batches`, and `batch` stacking `__getitem__` items (Shapes renders
    its batches at once), and the conditions it can give (class attributes, None when it has none)."""

    num_classes: int | None = None   # labels for class conditioning (None: unlabelled)
    tokenizer = None                 # captions for text conditioning: a Shapes feature
    max_objects: int | None = None   # boxes for layout conditioning: a Shapes feature
    with_replacement = False         # random batches drawn with replacement rather than epoch by epoch

    def batch(self, indices: Sequence[int] | torch.Tensor, device: torch.device | str | None = None) -> dict:
        """Stack items (`collate`) into {"image": (B, 3, H, W), "label": (B,), <other keys>: list}."""
        out = collate([self[int(i)] for i in indices])
        return {key: v.to(device) if torch.is_tensor(v) else v for key, v in out.items()}

    def batch_indices(self, batch_size: int, seed: int, k: int) -> torch.Tensor:
        """Batch k of `random_batches`: slice k mod E of epoch k // E's permutation (E batches per epoch, every
        item once an epoch), or drawn with replacement when there are fewer items than one batch (or always,
        for Shapes: scenes are plentiful)."""
        n, per_epoch = len(self), len(self) // batch_size
        if per_epoch == 0 or self.with_replacement:
            return torch.randint(n, (batch_size,), generator=torch.Generator().manual_seed(seed * 1_000_003 + k))
        g, j = torch.Generator().manual_seed(seed * 1_000_003 + k // per_epoch), (k % per_epoch) * batch_size
        return torch.randperm(n, generator=g)[j:j + batch_size]

    def random_batches(self, batch_size: int, seed: int = 0, start: int = 0, device: torch.device | str | None = None,
                       rows: slice | None = None) -> Iterator[dict]:
        """Endless random training batches; batch k depends only on (seed, k) (`batch_indices`), so a resumed
        run passes `start=k` and sees exactly the batches an uninterrupted run would have seen. `rows`: only
        these rows of every batch (one process's share, distributed.py)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        for k in itertools.count(start):
            yield self.batch(self.batch_indices(batch_size, seed, k)[rows if rows is not None else slice(None)],
                             device)


class ShapesDataset(_BatchingDataset):
    """Procedural captioned Shapes: sample i of a split is a pure function of (seed, split, i).

    Use `ds[i]` for one sample with every annotation, `ds.batch(indices)` for a batch rendered at once,
    and `ds.random_batches(batch_size, seed)` for an endless stream of random training batches.
    """

    with_replacement = True

    def __init__(self, split: str = "train", config: DataConfig | None = None, *, size: int | None = None,
                 resolution: int | None = None, max_objects: int | None = None, min_objects: int = 1,
                 seed: int = 0):
        config = config or DataConfig()
        if split not in SPLIT_IDS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_IDS)}")
        self.split = split
        self.resolution = check_resolution(resolution if resolution is not None else config.resolution)
        self.max_objects = int(max_objects if max_objects is not None else config.max_objects)
        self.min_objects = int(min_objects)
        self.size = int(size if size is not None else getattr(config, f"{split}_size"))
        self.seed = int(seed)
        if self.min_objects < 1:
            raise ValueError(f"scenes need at least one object: min_objects must be ≥ 1, got {self.min_objects}")
        if not self.min_objects <= self.max_objects <= 4:
            raise ValueError(f"max_objects must be between min_objects ({self.min_objects}) and 4 "
                             f"(more do not fit a 3×3 grid without overlap), got {self.max_objects}")
        if self.size < 1:
            raise ValueError(f"dataset size must be ≥ 1, got {self.size}")
        self.tokenizer = ShapesTokenizer(self.max_objects)   # what a text-conditional model reads
        self.num_classes = NUM_CLASSES                        # shape × color of one-object scenes

    def __len__(self) -> int:
        return self.size

    def scene(self, index: int) -> Scene:
        """The scene of sample `index` (no rendering)."""
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for a {self.split} split of {self.size} samples")
        index %= self.size
        return sample_scene((self.seed * 3 + SPLIT_IDS[self.split]) << 40 | index, self.min_objects,
                            self.max_objects)

    def batch(self, indices: Sequence[int] | torch.Tensor, device: torch.device | str | None = None) -> dict:
        """Render many samples at once -> {"image", "segmentation" (0: background, k + 1: object k), "semantic" (the
        class id of the object covering each pixel, shapes.BACKGROUND_ID elsewhere: `shapes.semantic_map`),
        "caption", "tokens", "label" (−1 for scenes of several objects), "layout" (one row per object slot:
        [class_id, x0, y0, x1, y1], padding rows all −1), "num_objects", "index"}."""
        indices = indices.tolist() if torch.is_tensor(indices) else list(indices)
        scenes = [self.scene(int(i)) for i in indices]
        layout = []
        for s in scenes:
            rows = [[o.class_id, *(min(max(v, 0.0), 1.0) for v in o.bbox)] for o in s.objects]
            layout.append(rows + [[-1.0] * 5] * (self.max_objects - len(rows)))
        captions = [s.caption for s in scenes]
        image, seg = render_scenes(scenes, self.resolution, device)
        out = {"image": image, "segmentation": seg, "semantic": semantic_map(seg, scenes), "caption": captions,
               "tokens": self.tokenizer.encode_batch(captions),
               "label": torch.tensor([s.label for s in scenes], dtype=torch.int64),
               "layout": torch.tensor(layout, dtype=torch.float32),
               "num_objects": torch.tensor([len(s.objects) for s in scenes], dtype=torch.int64)}
        out = {k: v.to(device) if torch.is_tensor(v) else v for k, v in out.items()}
        return {**out, "index": torch.tensor(indices, dtype=torch.int64)}

    def __getitem__(self, index: int) -> dict:
        """One sample: the batch of one, with the label as an int and the objects (as dicts) and relation."""
        s, b = self.scene(index), self.batch([index])
        return {**{k: b[k][0] for k in ("image", "segmentation", "semantic", "caption", "tokens", "layout")},
                "label": s.label,
                "objects": [o.to_dict(self.resolution) for o in s.objects], "relation": s.relation}


# --- Real images: a folder of pictures, MNIST / Fashion-MNIST ----------------------------------------------

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_BICUBIC = getattr(Image, "Resampling", Image).BICUBIC  # Pillow >= 9.1 moved the filter names


class CorruptImageError(ValueError):
    """An image file that PIL cannot read."""


def load_image(path: str | Path, resolution: int) -> torch.Tensor:
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
        return to_model_range(pil_to_tensor(img))                          # (3, r, r) uint8 -> [-1, 1]


def _unreadable(path: Path) -> str | None:
    """None when PIL accepts the file (headers and, for PNG, chunk checksums), else the reason it does not."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, struct.error, ...) for bad files
        return f"{type(e).__name__}: {e}"
    return None


class ImageFolderDataset(_BatchingDataset):
    """Every image under `root` (recursively, sorted by relative path), center-cropped to a square.

    A thin wrapper rather than torchvision's ImageFolder, which needs one subfolder per class: a plain folder
    of pictures is the common case for an unconditional model. Labels: when every image sits in a first-level
    subfolder and there are at least two (root/cat/1.png, root/dog/2.png, …), the subfolders are the classes
    (sorted: `classes`, `num_classes`, the caption of each image); otherwise label −1 and num_classes None.

    Unreadable files are found once at construction (PIL's `verify()`): on_error="raise" raises a
    CorruptImageError that lists them, "skip" leaves them out with one warning (`ds.skipped`). A file that
    passes `verify()` but fails to decode later (e.g. a truncated JPEG) raises then, or with "skip" warns once
    and gives the next readable image, so `len(ds)` never changes and an index always gives the same image.
    """

    def __init__(self, root: str | Path, resolution: int = 32, on_error: str = "raise"):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.root, self.resolution, self.on_error = Path(root), check_resolution(resolution), on_error
        if not self.root.is_dir():
            what = "is a file, not a folder" if self.root.exists() else "does not exist"
            raise FileNotFoundError(f"image folder {str(self.root)!r} {what}; pass the folder that holds your images")
        candidates = sorted((p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                             and not p.name.startswith(".")), key=lambda p: p.relative_to(self.root).as_posix())
        if not candidates:
            raise ValueError(f"no images with extensions {', '.join(IMAGE_EXTENSIONS)} found under "
                             f"{str(self.root)!r}; put some pictures there")
        reasons = [(p, _unreadable(p)) for p in candidates]
        self.paths = [p for p, why in reasons if why is None]
        self.skipped = [(str(p), why) for p, why in reasons if why is not None]   # (path, reason)
        if self.skipped:
            listing = "\n  ".join(f"{p}: {r}" for p, r in self.skipped[:20])
            more = f"\n  ... and {len(self.skipped) - 20} more" if len(self.skipped) > 20 else ""
            if on_error == "raise":
                raise CorruptImageError(f"{len(self.skipped)} unreadable image file(s) under {str(self.root)!r}:\n"
                                        f"  {listing}{more}\nDelete or replace them, or pass on_error='skip' to "
                                        "leave them out.")
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
        for j in (k % n for k in range(i % n, i % n + n)):  # the item itself, else the next readable one
            if j in self._bad_at_load:
                continue
            path, label = self.paths[j], self._labels[j]
            try:
                image = load_image(path, self.resolution)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                if self.on_error == "raise":
                    raise CorruptImageError(f"cannot decode image {str(path)!r} ({type(e).__name__}: {e}); delete "
                                            "or replace it, or pass on_error='skip' to use the next readable "
                                            "image instead") from e
                self._bad_at_load.add(j)
                warnings.warn(f"skipping unreadable image {str(path)!r} ({type(e).__name__}: {e})", stacklevel=2)
                continue
            return {"image": image, "path": str(path), "label": label,
                    "caption": self.classes[label] if label >= 0 else path.name}
        raise CorruptImageError(f"none of the {n} images under {str(self.root)!r} could be decoded")


# MNIST and Fashion-MNIST: torchvision finds, downloads (its mirrors, MD5-checked) and parses the IDX files.
MNIST_VARIANTS = {"mnist": tv_datasets.MNIST, "fashion": tv_datasets.FashionMNIST}
MNIST_FILES = tuple(f"{s}-{k}-ubyte" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1"))
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
    """MNIST or Fashion-MNIST (torchvision.datasets) as 3-channel images in [-1, 1], labels, class-name captions.

    The files are where torchvision keeps them: `<root>/MNIST/raw/` or `<root>/FashionMNIST/raw/`, the four
    files of both splits (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-…); `.gz` copies put there by
    hand are extracted. download=True lets torchvision fetch what is missing. At resolution 32 the 28 × 28
    digits are padded by 2 black pixels per side (no resampling blur); at other multiples of 8 they are resized
    with antialiased bilinear interpolation.
    """

    def __init__(self, root: str | Path = "data/downloads", split: str = "train", variant: str = "mnist",
                 resolution: int = 32, download: bool = False):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if variant not in MNIST_VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(map(repr, MNIST_VARIANTS))}, got {variant!r}")
        self.split, self.variant, self.resolution = split, variant, check_resolution(resolution)
        source = MNIST_VARIANTS[variant]
        self.folder = Path(root) / source.__name__ / "raw"
        no_timeout = socket.getdefaulttimeout()
        try:
            socket.setdefaulttimeout(60)   # torchvision downloads without one: a firewalled network would hang
            for name in MNIST_FILES:
                gz = self.folder / f"{name}.gz"
                if gz.is_file() and not (self.folder / name).is_file():
                    extract_archive(str(gz))
            data = source(str(root), train=split == "train", download=download)
            if data.data.shape[1:] != (MNIST_SIZE, MNIST_SIZE) or data.targets.shape != data.data.shape[:1] \
                    or len(data.targets) and int(data.targets.max()) >= len(data.classes):
                raise ValueError(f"expected (N, 28, 28) images and N labels in 0..{len(data.classes) - 1}, got "
                                 f"{tuple(data.data.shape)} and {tuple(data.targets.shape)}")
        except (AssertionError, RuntimeError, ValueError, TypeError, KeyError, EOFError, OSError, URLError) as e:
            missing = [n for n in MNIST_FILES if not (self.folder / n).is_file()]
            if not missing:  # the files are there but torchvision cannot parse them
                raise ValueError(f"damaged {variant} files in {str(self.folder)!r} ({type(e).__name__}: {e}); "
                                 "delete them and download them again (download=True, or --download)") from e
            manual = (f"put {', '.join(f'{n}.gz' for n in missing)} (from {source.mirrors[0]}, gzipped or not) "
                      f"in {str(self.folder)!r}")
            if not download:
                raise FileNotFoundError(f"{variant} files not found: {manual}, or pass download=True (on the "
                                        "command line: --download)") from None
            raise RuntimeError(f"could not download {variant} (is this machine offline?): {e}\nOn a machine "
                               f"with network, download them and {manual}.") from e
        finally:
            socket.setdefaulttimeout(no_timeout)
        self.classes = tuple(c.split(" - ")[-1].lower() for c in data.classes)   # "0 - zero" -> "zero"
        self.num_classes = len(self.classes)
        self.images, self.labels = data.data, data.targets     # (N, 28, 28) uint8, converted per batch; (N,)

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


DATASETS = ("shapes", "mnist", "fashion-mnist", "folder:PATH")


def make_dataset(name: str, split: str = "train", config: DataConfig | None = None,
                 root: str | Path = "data/downloads", on_error: str = "skip", download: bool = False):
    """A dataset by name, as the commands take it (--data): "shapes" (the default, every split), "mnist" and
    "fashion-mnist" (train; "val" and "test" read the test files) from `root` (downloaded by torchvision only
    with download=True), and "folder:PATH" (any folder of images; every split is that folder, labelled by its
    subfolders when it has them; unreadable files are skipped with a warning unless on_error="raise")."""
    config = config or DataConfig()
    if name == "shapes":
        return ShapesDataset(split, config)
    if name in ("mnist", "fashion-mnist"):
        return MNIST(root, split="train" if split == "train" else "test",
                     variant="mnist" if name == "mnist" else "fashion", resolution=config.resolution, download=download)
    if name.startswith("folder:") and len(name) > len("folder:"):
        return ImageFolderDataset(Path(name[len("folder:"):]).expanduser(), resolution=config.resolution,
                                  on_error=on_error)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} (e.g. folder:~/pictures)")
