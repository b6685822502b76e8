"""The Shapes judge: a small CNN that reads every attribute of a Shapes scene, cell by cell.

Its penultimate layer is the feature space of "Shapes-FID", and its per-cell reading (is there an object in
each of the 9 grid cells, and its shape, color and size) turns "does the image follow the prompt?" into a
number (accuracy.py). It is trained once on rendered scenes with random degradations that mimic generated
images (blur, resampling, JPEG-like blocks, noise, color shifts) and shipped as data/shapes_evaluator.pt
(`minildm train-evaluator` retrains it).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from tqdm.auto import tqdm

from ..data.datasets import ShapesDataset
from ..data.shapes import COLOR_NAMES, POSITIONS, SHAPES, SIZE_NAMES, render_scenes, sample_scene
from ..utils import get_device, load_checkpoint, save_checkpoint, seed_everything, warmup_cosine
from .metrics import extract_features

__all__ = ["EvaluatorConfig", "ShapesEvaluator", "train_evaluator", "load_evaluator", "run_evaluator", "predict_cells",
           "detect_objects", "attribute_accuracy", "scene_targets", "split_logits", "evaluator_loss", "degrade",
           "readable_scenes", "render_images", "ATTRIBUTES", "NUM_CELLS", "HEAD_WIDTH", "EVALUATOR_KIND",
           "DEFAULT_EVALUATOR_PATH"]

NUM_CELLS = 9                                                  # the 3×3 grid of data.py
ATTRIBUTES = {"shape": SHAPES, "color": COLOR_NAMES, "size": SIZE_NAMES}
HEAD_WIDTH = 1 + sum(len(v) for v in ATTRIBUTES.values())       # occupancy logit + 4 + 6 + 2 = 13 per cell
EVALUATOR_KIND = "shapes_evaluator"
DEFAULT_EVALUATOR_PATH = Path(__file__).resolve().parent.parent.parent / "data" / "shapes_evaluator.pt"
_HFLIP_CELLS = [3 * r + (2 - c) for r in range(3) for c in range(3)]   # cell index after a horizontal mirror


@dataclass(frozen=True)
class EvaluatorConfig:
    """Architecture, training data and degradations of the Shapes evaluator."""

    resolution: int = 32                                  # images of other sizes are resized to this
    widths: tuple[int, ...] = (24, 48, 64, 64, 64)        # 3×3 conv + BatchNorm + ReLU per entry
    strides: tuple[int, ...] = (2, 1, 2, 1, 2)            # 32 -> 16 -> 16 -> 8 -> 8 -> 4
    feature_dim: int = 256                                # penultimate layer = the Shapes-FID feature space
    # training data: scenes with 0..4 objects (rendered once into a pool, then degraded on the fly)
    pool_size: int = 16_000
    object_count_probs: tuple[float, ...] = (0.05, 0.40, 0.40, 0.10, 0.05)   # P(0 objects), ..., P(4)
    steps: int = 1_500
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    seed: int = 0
    calibration_images: int = 4_000       # clean pool images that set the feature scale after training
    # degradations that mimic generated images (each image draws its own strengths)
    clean_prob: float = 0.2               # fraction of training images left untouched
    hflip: bool = True                    # all four shapes are mirror-symmetric: flip + mirror the cells
    shift_px: int = 1                     # random translation of up to this many pixels
    contrast: float = 0.15                # contrast factor in [1 − c, 1 + c]
    brightness: float = 0.08              # additive shift in [−b, b] (units of the [-1, 1] range)
    channel_gain: float = 0.06            # per-channel factor in [1 − g, 1 + g]
    saturation: tuple[float, float] = (0.7, 1.1)   # factor on the distance from the per-pixel grey
    blur_prob: float = 0.5
    blur_sigma_max: float = 1.6           # Gaussian blur σ in pixels
    sharpen_prob: float = 0.3             # unsharp masking after the blur: rounded corners with crisp edges,
    sharpen_max: float = 1.5              # the look of an autoencoder's reconstructions; amount in [0, max]
    resample_prob: float = 0.4
    resample_min_scale: float = 0.3       # down to ≥ this fraction of the side, then back up (bilinear)
    jpeg_prob: float = 0.3
    jpeg_step_range: tuple[float, float] = (2.0, 14.0)   # base quantization step, in 1/255 units
    noise_prob: float = 0.5
    noise_std_max: float = 0.08           # additive Gaussian noise σ (units of the [-1, 1] range)

    def __post_init__(self):                  # a checkpoint's config may hold lists
        for name in ("widths", "strides", "object_count_probs", "jpeg_step_range", "saturation"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


class ShapesEvaluator(nn.Module):
    """CNN: image (B, 3, 32, 32) -> per-cell logits (B, 9, 13) = [occupied | shape 4 | color 6 | size 2];
    `features(x)` is the penultimate layer (B, 256), the Shapes-FID feature space. Positions follow from which
    cells are occupied, relations from the cells of two objects."""

    def __init__(self, config: EvaluatorConfig | None = None):
        super().__init__()
        self.config = cfg = config or EvaluatorConfig()
        layers, c_in, side = [], 3, cfg.resolution
        for c_out, s in zip(cfg.widths, cfg.strides):
            layers += [nn.Conv2d(c_in, c_out, 3, s, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in, side = c_out, (side - 1) // s + 1
        self.trunk = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, cfg.feature_dim), nn.ReLU())
        self.head = nn.Linear(cfg.feature_dim, NUM_CELLS * HEAD_WIDTH)
        # features() are multiplied by this constant, set after training so that real Shapes features have
        # unit mean per-dimension variance: Shapes-FID is then in units of that variance
        self.register_buffer("feature_scale", torch.ones(()))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Check images are (B, 3, H, W) in about [-1, 1]; resize to the evaluator's resolution; clamp."""
        if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"the Shapes evaluator expects RGB images (B, 3, H, W) in [-1, 1], got "
                             f"{tuple(images.shape) if torch.is_tensor(images) else type(images).__name__}")
        x = images.float()
        lo, hi = float(x.min()), float(x.max())
        if lo < -1.5 or hi > 1.5:
            raise ValueError(f"images should be in [-1, 1] (as data.py and the decoder produce them), got values "
                             f"in [{lo:.2f}, {hi:.2f}]; map [0, 1] images with x*2-1 and [0, 255] with x/127.5-1")
        r = self.config.resolution
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
        return x.clamp(-1, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.trunk(x)) * self.feature_scale    # (B, 3, 32, 32) -> (B, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(self.trunk(x))                             # (B, 3, 32, 32) -> (B, 256)
        return rearrange(self.head(h), "b (cell k) -> b cell k", cell=NUM_CELLS)


def split_logits(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, 9, 13) -> {"occupied": (B, 9), "shape": (B, 9, 4), "color": (B, 9, 6), "size": (B, 9, 2)}."""
    out, i = {"occupied": logits[..., 0]}, 1
    for name, values in ATTRIBUTES.items():
        out[name] = logits[..., i:i + len(values)]
        i += len(values)
    return out


def scene_targets(scenes: Sequence) -> dict[str, torch.Tensor]:
    """Per-cell targets of scenes: occupied (B, 9) float, shape/color/size (B, 9) int64 (−1 in empty cells)."""
    t = {"occupied": torch.zeros(len(scenes), NUM_CELLS)}
    t.update({name: torch.full((len(scenes), NUM_CELLS), -1, dtype=torch.int64) for name in ATTRIBUTES})
    for b, s in enumerate(scenes):
        for o in s.objects:
            cell = 3 * o.row + o.col
            t["occupied"][b, cell] = 1.0
            for name, values in ATTRIBUTES.items():
                t[name][b, cell] = values.index(getattr(o, name))
    return t


def evaluator_loss(logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """BCE on occupancy over all cells + cross-entropy on shape, color, size over the occupied cells."""
    parts = split_logits(logits)
    loss = F.binary_cross_entropy_with_logits(parts["occupied"], targets["occupied"])
    for name in ATTRIBUTES:
        loss = loss + F.cross_entropy(rearrange(parts[name], "b cell k -> (b cell) k"),
                                      targets[name].flatten(), ignore_index=-1)
    return loss


# --- degradations: what separates a generated image from a rendered one -------------------------------------


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Blur each image with its own σ (B,) (σ = 0 leaves it unchanged); separable, reflect padding."""
    B, C, H, W = x.shape
    i = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-i**2 / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))   # g(i) ∝ exp(−i²/2σ²), (B, 2r+1)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)             # (B·C, 2r+1), one kernel per channel
    y = rearrange(x, "b c h w -> 1 (b c) h w")
    y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k[:, None, :, None], groups=B * C)                    # vertical pass
    y = F.conv2d(y, k[:, None, None, :], groups=B * C)                    # horizontal pass
    return rearrange(y, "1 (b c) h w -> b c h w", b=B)


def _dct_matrix(n: int = 8) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n, n): coefficients = D·X·Dᵀ for an n×n block X."""
    u, x = torch.arange(n, dtype=torch.float64)[:, None], torch.arange(n, dtype=torch.float64)[None]
    d = torch.cos(math.pi * (2 * x + 1) * u / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.float()


_RGB_TO_YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def _jpeg_like(x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """JPEG-style compression: YCbCr, 8×8 block DCT, quantization whose step grows with frequency.

    step (B,) is the base step in 1/255 units; the step of coefficient (u, v) is step·(1 + (u + v)/2),
    doubled for the two chroma channels. Gives blocking and ringing like a real codec (not bit-exact JPEG).
    """
    B, C, H, W = x.shape
    ph, pw = (-H) % 8, (-W) % 8
    y = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    m = _RGB_TO_YCBCR.to(x)
    y = torch.einsum("kc,bchw->bkhw", m, (y + 1) / 2)                     # [-1, 1] RGB -> YCbCr in [0, 1]
    blocks = rearrange(y, "b c (h p) (w q) -> b c h w p q", p=8, q=8)
    d = _dct_matrix().to(x)
    coef = d @ blocks @ d.T                                                # 2-D DCT of every 8×8 block
    uv = torch.arange(8, device=x.device, dtype=x.dtype)
    q = (1 + (uv[:, None] + uv[None]) / 2) / 255                           # (8, 8) frequency ramp
    chroma = torch.tensor([1.0, 2.0, 2.0], device=x.device, dtype=x.dtype)
    q = step[:, None, None, None, None, None] * chroma[None, :, None, None, None, None] * q   # (B, 3, 1, 1, 8, 8)
    coef = torch.round(coef / q) * q                                       # the lossy step
    y = rearrange(d.T @ coef @ d, "b c h w p q -> b c (h p) (w q)")
    y = torch.einsum("kc,bchw->bkhw", torch.linalg.inv(m), y) * 2 - 1
    return y[:, :, :H, :W]


def degrade(x: torch.Tensor, cfg: EvaluatorConfig, generator: torch.Generator) -> torch.Tensor:
    """Random degradations per image (color jitter, blur + sharpening, down/up-sampling, JPEG-like, noise, shift)
    so the evaluator also reads imperfect, generated-looking images. x: (B, 3, H, W) in [-1, 1]."""
    B, _, H, W = x.shape

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(B, *shape, generator=generator)

    def chosen(p: float) -> torch.Tensor:
        return torch.rand(B, generator=generator) < p

    keep = chosen(cfg.clean_prob)
    y = x.clone()
    # color: contrast about the image mean, brightness, per-channel gain
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * u(1 - cfg.contrast, 1 + cfg.contrast, 1, 1, 1) + mean
    y = y * u(1 - cfg.channel_gain, 1 + cfg.channel_gain, 3, 1, 1) + u(-cfg.brightness, cfg.brightness, 1, 1, 1)
    grey = y.mean(1, keepdim=True)
    y = grey + (y - grey) * u(*cfg.saturation, 1, 1, 1)
    # blur with σ ~ U(0, σ_max), then (sometimes) unsharp masking y + a·(y − G_σ=1 * y)
    sigma = u(0, cfg.blur_sigma_max) * chosen(cfg.blur_prob)
    y = torch.where((sigma > 0.05)[:, None, None, None], _gaussian_blur(y, sigma), y)
    amount = u(0, cfg.sharpen_max) * chosen(cfg.sharpen_prob)
    y = y + amount[:, None, None, None] * (y - _gaussian_blur(y, torch.ones(B)))
    # down- then up-sampling (the detail an autoencoder with f = 4 has to invent)
    idx = chosen(cfg.resample_prob).nonzero().flatten()
    if len(idx):
        scale = float(u(cfg.resample_min_scale, 1.0)[0])            # one scale per batch
        small = F.interpolate(y[idx], size=(round(H * scale), round(W * scale)), mode="bilinear", antialias=True,
                              align_corners=False)
        y[idx] = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)
    # JPEG-like block compression
    idx = chosen(cfg.jpeg_prob).nonzero().flatten()
    if len(idx):
        y[idx] = _jpeg_like(y[idx], u(*cfg.jpeg_step_range)[idx])
    # additive Gaussian noise
    std = u(0, cfg.noise_std_max) * chosen(cfg.noise_prob)
    y = y + std[:, None, None, None] * torch.randn(y.shape, generator=generator)
    # translation by up to shift_px pixels (edge pixels repeated)
    s = cfg.shift_px
    if s > 0:
        dx, dy = (int(v) for v in torch.randint(-s, s + 1, (2,), generator=generator))
        y = F.pad(y, (s, s, s, s), mode="replicate")[:, :, s + dy:s + dy + H, s + dx:s + dx + W]
    return torch.where(keep[:, None, None, None], x, y.clamp(-1, 1))


# --- training -----------------------------------------------------------------------------------------------


def _training_scenes(cfg: EvaluatorConfig, n: int) -> list:
    """n scenes with 0..4 objects from the *train* seed space of data.py (never the val/test scenes)."""
    g = torch.Generator().manual_seed(cfg.seed)
    counts = torch.multinomial(torch.tensor(cfg.object_count_probs), n, replacement=True, generator=g)
    # data.py seeds sample i of split s (dataset seed d) with (3d + s) << 40 | i; split id 0 = train
    base = (3 * (1000 + cfg.seed)) << 40
    return [sample_scene(base | i, int(c), int(c)) for i, c in enumerate(counts.tolist())]


def render_images(scenes: Sequence, resolution: int) -> torch.Tensor:
    """Render scenes (N, 3, resolution, resolution) in [-1, 1], 500 at a time (bounded memory)."""
    return torch.cat([render_scenes(scenes[i:i + 500], resolution)[0] for i in range(0, len(scenes), 500)])


def _render_pool(cfg: EvaluatorConfig, progress: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Render the training pool once: images as uint8 (N, 3, H, W) and their per-cell targets."""
    scenes = _training_scenes(cfg, cfg.pool_size)
    chunks = []
    for i in tqdm(range(0, len(scenes), 500), desc="rendering pool", disable=not progress, mininterval=2.0):
        img, _ = render_scenes(scenes[i:i + 500], cfg.resolution)
        chunks.append(((img + 1) * 127.5).round().to(torch.uint8))
    return torch.cat(chunks), scene_targets(scenes)


def train_evaluator(out_path: str | os.PathLike = DEFAULT_EVALUATOR_PATH, steps: int | None = None,
                    seed: int | None = None, max_minutes: float | None = None,
                    device: str | torch.device | None = None, progress: bool = True) -> dict[str, Any]:
    """Train the Shapes evaluator on degraded renders and save it (fp16 weights, with its config and
    test accuracy) to `out_path`; returns the checkpoint's "metrics" and "train" records."""
    cfg = EvaluatorConfig(**{k: int(v) for k, v in (("steps", steps), ("seed", seed)) if v is not None})
    device = get_device(device)
    t0 = time.perf_counter()
    g = seed_everything(cfg.seed)
    pool, targets = _render_pool(cfg, progress)
    t_pool = time.perf_counter() - t0
    model = ShapesEvaluator(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: warmup_cosine(k, cfg.warmup_steps, cfg.steps))
    deadline = None if max_minutes is None else t0 + 60 * max_minutes
    bar = tqdm(range(cfg.steps), desc="Shapes evaluator", disable=not progress, mininterval=2.0)
    step, loss = 0, torch.tensor(float("nan"))
    for step in bar:
        if deadline is not None and time.perf_counter() > deadline:
            break
        idx = torch.randint(len(pool), (cfg.batch_size,), generator=g)
        x = pool[idx].float() / 127.5 - 1                          # uint8 -> [-1, 1]
        t = {k: v[idx] for k, v in targets.items()}
        if cfg.hflip:                                             # mirror image and cells for half the batch
            flip = torch.rand(cfg.batch_size, generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            t = {k: torch.where(flip[:, None], v[:, _HFLIP_CELLS], v) for k, v in t.items()}
        x = degrade(x, cfg, g)
        loss = evaluator_loss(model(x.to(device)), {k: v.to(device) for k, v in t.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)
    else:
        step = cfg.steps
    train_seconds = time.perf_counter() - t0
    state, metrics = _finalize(model, pool[:cfg.calibration_images].float() / 127.5 - 1)
    record = {"steps": step, "seconds": round(train_seconds, 1), "pool_seconds": round(t_pool, 1),
              "final_loss": float(loss.detach()), "device": str(device), "threads": torch.get_num_threads()}
    save_checkpoint({"kind": EVALUATOR_KIND, "config": cfg, "state_dict": state,
                     "metrics": {"test_split_max_objects_2": metrics}, "train": record}, out_path)
    _EVALUATORS.clear()
    return {"metrics": metrics, "train": record, "path": str(out_path)}


def _finalize(model: ShapesEvaluator, clean_images: torch.Tensor) -> tuple[dict, dict[str, float]]:
    """Round the weights to fp16 (the stored form) and continue with exactly those: calibrate the feature
    scale on clean renders, then measure accuracy on the test split -> (fp16 state_dict, metrics)."""
    model.eval()
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    model.load_state_dict(state)                                   # copied into the fp32 parameters
    model.feature_scale.fill_(1.0)
    features = run_evaluator(clean_images, model, features=True).double()
    model.feature_scale.fill_(float(features.var(0).mean().rsqrt()))   # 1/√(mean over dimensions of Var[feature])
    state["feature_scale"] = model.feature_scale.detach().clone()          # kept in fp32
    cfg = model.config
    test = ShapesDataset("test", max_objects=2, resolution=cfg.resolution)
    scenes = [test.scene(i) for i in range(len(test))]
    return state, attribute_accuracy(render_images(scenes, cfg.resolution), scenes, evaluator=model)


_EVALUATORS: dict[tuple[str, str], ShapesEvaluator] = {}


def load_evaluator(path: str | os.PathLike | None = None, device: str | torch.device | None = None) -> ShapesEvaluator:
    """The trained Shapes evaluator (default: data/shapes_evaluator.pt), in eval mode, fp32; cached per device."""
    path = Path(path) if path is not None else DEFAULT_EVALUATOR_PATH
    device = get_device(device)
    key = (str(path.resolve()), str(device))
    if key not in _EVALUATORS:
        if not path.is_file():
            raise FileNotFoundError(f"no Shapes evaluator at {path}; it is committed with minildm as "
                                    "data/shapes_evaluator.pt, or train one with `minildm train-evaluator`")
        ckpt = load_checkpoint(path, kind=EVALUATOR_KIND)
        known = {f.name for f in dataclasses.fields(EvaluatorConfig)}
        cfg = EvaluatorConfig(**{k: v for k, v in ckpt["config"].items() if k in known})
        model = ShapesEvaluator(cfg)
        model.load_state_dict(ckpt["state_dict"])                  # fp16 weights into fp32 parameters
        _EVALUATORS[key] = model.to(device).eval().requires_grad_(False)
    return _EVALUATORS[key]


@torch.no_grad()
def run_evaluator(images: torch.Tensor, evaluator: ShapesEvaluator | None = None,
                  features: bool = False) -> torch.Tensor:
    """The evaluator (default: the shipped one) over images (N, 3, H, W) in [-1, 1], 500 at a time: per-cell
    logits (N, 9, 13), or with `features` the Shapes-FID features (N, 256); on the CPU."""
    ev = evaluator if evaluator is not None else load_evaluator()
    dev = next(ev.parameters()).device
    run = ev.features if features else ev
    return extract_features(images, lambda x: run(ev.prepare(x.to(dev))))


def predict_cells(images: torch.Tensor, evaluator: ShapesEvaluator | None = None) -> dict[str, torch.Tensor]:
    """Read scenes cell by cell: occupied (N, 9) bool (p_occupied > 0.5), p_occupied (N, 9), shape/color/size
    (N, 9) indices into data.SHAPES / COLOR_NAMES / SIZE_NAMES (meaningful where occupied), and the raw logits."""
    logits = run_evaluator(images, evaluator)
    parts = split_logits(logits)
    p = parts["occupied"].sigmoid()
    out = {"occupied": p > 0.5, "p_occupied": p, "logits": logits}
    out.update({name: parts[name].argmax(-1) for name in ATTRIBUTES})
    return out


def detect_objects(images: torch.Tensor, evaluator: ShapesEvaluator | None = None) -> list[list[dict]]:
    """Per image, the objects the evaluator sees: [{"shape", "color", "size", "row", "col", "position", "p"}]."""
    c = predict_cells(images, evaluator)
    out = []
    for b in range(len(images)):
        objs = []
        for cell in c["occupied"][b].nonzero().flatten().tolist():
            row, col = divmod(cell, 3)
            objs.append({**{name: values[c[name][b, cell]] for name, values in ATTRIBUTES.items()}, "row": row,
                         "col": col, "position": POSITIONS[cell], "p": float(c["p_occupied"][b, cell])})
        out.append(objs)
    return out


def attribute_accuracy(images: torch.Tensor, scenes: Sequence, evaluator: ShapesEvaluator | None = None
                       ) -> dict[str, float]:
    """How well the evaluator reads known scenes: per-attribute accuracy over true objects (position =
    its cell detected as occupied), cell occupancy accuracy over all 9 cells, count and whole-scene accuracy."""
    if len(images) != len(scenes):
        raise ValueError(f"got {len(images)} images but {len(scenes)} scenes; pass one scene per image")
    c = predict_cells(images, evaluator)
    t = scene_targets(scenes)
    occ = t["occupied"] > 0
    out = {"position": float(c["occupied"][occ].float().mean())}
    right = c["occupied"] == occ                                   # (N, 9) cell read correctly
    for name in ATTRIBUTES:
        ok = c[name] == t[name]
        out[name] = float(ok[occ].float().mean())
        right &= ok | ~occ
    out["occupancy"] = float((c["occupied"] == occ).float().mean())
    out["count"] = float((c["occupied"].sum(1) == occ.sum(1)).float().mean())
    out["scene"] = float(right.all(1).float().mean())              # every cell and every attribute right
    out["images"] = len(images)
    return out


def readable_scenes(cells: dict[str, torch.Tensor], min_objects: int = 1, max_objects: int = 2,
                    confidence: float = 0.9) -> torch.Tensor:
    """(N,) bool: does the Shapes evaluator read a well-formed scene in `cells` = predict_cells(images)? (Real
    scenes: always; decoded noise: almost never.) An image is readable when
        every cell is confidently empty or occupied     p_occupied ≥ confidence or ≤ 1 − confidence
        the count is one the world allows               min_objects ≤ #occupied ≤ max_objects
        every object has a confident shape, color, size  max softmax ≥ confidence in each occupied cell
    """
    p, occupied = cells["p_occupied"], cells["occupied"]          # (N, 9), (N, 9)
    sure = ((p >= confidence) | (p <= 1 - confidence)).all(1)     # (N,)
    count = occupied.sum(1)
    ok = sure & (count >= min_objects) & (count <= max_objects)
    parts = split_logits(cells["logits"])
    for name in ATTRIBUTES:
        top = parts[name].softmax(-1).amax(-1)                    # (N, 9) probability of the chosen value
        ok &= ((top >= confidence) | ~occupied).all(1)
    return ok
