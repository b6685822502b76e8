"""Datasets that feed training: the built-in captioned Shapes scenes (default), and real images.

Every dataset gives the same interface, so the training code and the notebooks can swap them:

    ds[i]                                -> one sample with every annotation it has
    ds.batch(indices, device)            -> {"image": (B, 3, H, W) in [-1, 1], ...} rendered or loaded at once
    ds.random_batches(batch_size, seed)  -> an endless stream; batch k depends only on (seed, k)

and describes the conditions it can give a model: `num_classes` (labels for class conditioning, or None),
`tokenizer` (captions for text conditioning, or None) and `max_objects` (boxes for layouts, or None).

ShapesDataset: sample i of a split is a pure function of (seed, split, i) (the scene is drawn by
`shapes.sample_scene`, then rendered). Rendering thousands of images per second on a laptop CPU means the
data is never the bottleneck and nothing needs to be downloaded or cached. Real images (any folder of
pictures, MNIST, Fashion-MNIST) come from realdata.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .shapes import NUM_CLASSES, Scene, ShapesTokenizer, render_scenes, sample_scene

__all__ = ["DataConfig", "ShapesDataset", "SPLIT_IDS", "shapes_collate", "benchmark", "make_dataset", "DATASETS",
           "MNIST", "ImageFolderDataset"]

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class DataConfig:
    """The built-in Shapes dataset of a profile."""

    resolution: int = 32          # square images, a multiple of 8
    max_objects: int = 2          # scenes hold 1..max_objects objects
    train_size: int = 50_000      # samples are rendered on the fly, so sizes cost no disk
    val_size: int = 1_000
    test_size: int = 1_000


class ShapesDataset(torch.utils.data.Dataset):
    """Procedural captioned Shapes: sample i of a split is a pure function of (seed, split, i).

    Use `ds[i]` for one sample with every annotation, `ds.batch(indices)` for a batch rendered at once,
    and `ds.random_batches(batch_size, seed)` for an endless stream of random training batches.
    """

    def __init__(self, split: str = "train", config: DataConfig | None = None, *, size: int | None = None,
                 resolution: int | None = None, max_objects: int | None = None, min_objects: int = 1,
                 seed: int = 0):
        config = config or DataConfig()
        if split not in SPLIT_IDS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_IDS)}")
        self.split = split
        self.resolution = int(resolution if resolution is not None else config.resolution)
        self.max_objects = int(max_objects if max_objects is not None else config.max_objects)
        self.min_objects = int(min_objects)
        default_size = {"train": config.train_size, "val": config.val_size, "test": config.test_size}[split]
        self.size = int(size if size is not None else default_size)
        self.seed = int(seed)
        if self.resolution < 8 or self.resolution % 8:
            lo = max(8, self.resolution // 8 * 8)
            raise ValueError(f"resolution must be a positive multiple of 8 (e.g. 32 or 64), got {self.resolution}; "
                             f"use {lo} or {lo + 8}")
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

    def _annotations(self, scenes: Sequence[Scene]) -> dict:
        layout = []  # one row per object slot: [class_id, x0, y0, x1, y1]; padding rows are all -1
        for s in scenes:
            rows = [[o.class_id, *(min(max(v, 0.0), 1.0) for v in o.bbox)] for o in s.objects]
            layout.append(rows + [[-1.0] * 5] * (self.max_objects - len(rows)))
        captions = [s.caption for s in scenes]
        return {
            "caption": captions,
            "tokens": self.tokenizer.encode_batch(captions),
            "label": torch.tensor([s.label for s in scenes], dtype=torch.int64),
            "layout": torch.tensor(layout, dtype=torch.float32),
            "num_objects": torch.tensor([len(s.objects) for s in scenes], dtype=torch.int64),
        }

    def batch(self, indices: Sequence[int] | torch.Tensor, device: torch.device | str | None = None) -> dict:
        """Render many samples at once -> dict of batched tensors (image, segmentation, tokens, label, layout...)."""
        if torch.is_tensor(indices):
            indices = indices.tolist()
        scenes = [self.scene(int(i)) for i in indices]
        image, seg = render_scenes(scenes, self.resolution, device)
        out = self._annotations(scenes)
        if device is not None:
            out = {k: v.to(device) if torch.is_tensor(v) else v for k, v in out.items()}
        out.update(image=image, segmentation=seg, index=torch.tensor(list(indices), dtype=torch.int64))
        return out

    def __getitem__(self, index: int) -> dict:
        s = self.scene(index)
        image, seg = render_scenes([s], self.resolution)
        b = self._annotations([s])
        return {"image": image[0], "segmentation": seg[0], "caption": b["caption"][0],
                "tokens": b["tokens"][0], "label": int(b["label"][0]), "layout": b["layout"][0],
                "objects": [o.to_dict(self.resolution) for o in s.objects], "relation": s.relation}

    def random_batches(self, batch_size: int, seed: int = 0, start: int = 0, device: torch.device | str | None = None,
                       rows: slice | None = None) -> Iterator[dict]:
        """Endless random training batches; batch k depends only on (seed, k), so a resumed run passes
        `start=k` and sees exactly the batches an uninterrupted run would have seen. `rows`: render only these
        rows of every batch (one process's share, distributed.py)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        k = start
        while True:
            g = torch.Generator().manual_seed(seed * 1_000_003 + k)
            idx = torch.randint(self.size, (batch_size,), generator=g)
            yield self.batch(idx[rows if rows is not None else slice(None)], device)
            k += 1


def shapes_collate(samples: Sequence[dict]) -> dict:
    """collate_fn for a torch DataLoader over `ShapesDataset.__getitem__` samples."""
    out = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        if torch.is_tensor(vals[0]):
            out[key] = torch.stack(vals)
        elif isinstance(vals[0], int):
            out[key] = torch.tensor(vals, dtype=torch.int64)
        else:
            out[key] = vals
    return out


def benchmark(resolution: int = 32, batch_size: int = 256, seconds: float = 3.0,
              device: torch.device | str | None = None) -> float:
    """Images per second of `random_batches` (scene drawing + rendering + tokenizing)."""
    ds = ShapesDataset("train", resolution=resolution, size=1_000_000)
    it = ds.random_batches(batch_size, seed=0, device=device)
    next(it)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += batch_size
    return n / (time.perf_counter() - t0)


# Real images for users who have them (image folders, MNIST / Fashion-MNIST) live in realdata.py.
from .realdata import MNIST, ImageFolderDataset  # noqa: E402

DATASETS = ("shapes", "mnist", "fashion-mnist", "folder:PATH")


def make_dataset(name: str, split: str = "train", config: DataConfig | None = None,
                 root: str | Path = "data/downloads", on_error: str = "skip", download: bool = False):
    """A dataset by name, as the commands take it (--data): "shapes" (the default, every split), "mnist" and
    "fashion-mnist" (train; "val" and "test" read the test files) from `root` (downloaded, checksum-verified,
    only with download=True), and "folder:PATH" (any folder of
    images; every split is that folder, labelled by its subfolders when it has them; unreadable files are
    skipped with a warning unless on_error="raise")."""
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
