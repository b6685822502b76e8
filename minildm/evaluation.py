"""How good are generated images? FID, KID, precision/recall, Inception Score, and prompt accuracy on Shapes.

The paper reports FID (Heusel et al. 2017), Inception Score and precision/recall (Kynkäänniemi et al. 2019)
for unconditional and class-conditional models (LDM Sec. 4.1, 4.3, Tab. 1-3) and FID/IS for text-to-image
(Sec. 4.3.1). All of these compare *features* of images. Here every metric takes feature tensors (N, D), so
any feature extractor plugs in; on Shapes the feature space is the penultimate layer of a small CNN, the
**Shapes evaluator**, trained once on rendered scenes (`shapes_features`, "Shapes-FID"). Inception-v3
features would be meaningless on 32×32 synthetic scenes and need a download.

The same evaluator reads every attribute of a scene (for each of the 9 grid cells: is there an object, and
its shape, color and size), which turns "does the image follow the prompt?" into a number:
`prompt_accuracy` (all conditions of the caption hold), `class_accuracy`, `layout_accuracy`.

Sections: 1. feature-space metrics  2. the Shapes evaluator (model, degradations, training, loading)
          3. Shapes metrics: features, real-vs-real floor, attribute / prompt / class / layout accuracy
          4. command line (`minildm train-evaluator`).

An FID means little without its floor: two disjoint sets of *real* images of the same size also have
FID > 0 (finite-sample noise). `shapes_fid_floor(n)` measures it; report it next to every FID.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .checkpoint import load_checkpoint, save_checkpoint
from .data import (COLOR_NAMES, GRID, POSITIONS, RELATIONS, SHAPES, SIZE_NAMES, ShapesDataset, parse_caption,
                   render_scenes, sample_scene)
from .utils import get_device, seed_everything

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]   # images (B, 3, H, W) in [-1, 1] -> (B, D)

# ==========================================================================================================
# 1. Feature-space metrics: each takes features (N, D), so any extractor plugs in
# ==========================================================================================================


def _check_features(*feats: torch.Tensor, what: str, min_n: int = 2) -> None:
    for f in feats:
        if not torch.is_tensor(f) or f.dim() != 2:
            raise ValueError(f"{what} expects feature tensors of shape (N, D), got "
                             f"{tuple(f.shape) if torch.is_tensor(f) else type(f).__name__}; "
                             "extract features first (e.g. shapes_features(images))")
        if f.shape[0] < min_n:
            raise ValueError(f"{what} needs at least {min_n} samples per set, got {f.shape[0]}")
        if not torch.isfinite(f).all():
            raise ValueError(f"{what} got non-finite features (NaN/inf); check the images fed to the extractor")
    if len({f.shape[1] for f in feats}) > 1:
        raise ValueError(f"{what}: feature dimensions differ: {[f.shape[1] for f in feats]}; "
                         "use the same extractor for both sets")


def _sqrt_psd(a: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a positive semi-definite matrix by eigendecomposition (tiny negatives -> 0)."""
    lam, q = torch.linalg.eigh((a + a.T) / 2)
    return (q * lam.clamp_min(0).sqrt()) @ q.T                   # Q·diag(√λ)·Qᵀ


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Fréchet (2-Wasserstein) distance between N(μ1, Σ1) and N(μ2, Σ2), the FID formula (Heusel et al. 2017).

        d² = ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2·(Σ1·Σ2)^½)

    Σ1·Σ2 is not symmetric, so its square root is unstable in general; instead we use
    Tr((Σ1·Σ2)^½) = Tr((√Σ1·Σ2·√Σ1)^½), whose argument is symmetric PSD: the sum of the square roots
    of its eigenvalues (tiny negative eigenvalues from round-off are clamped to 0). Computed in float64.
    """
    mu1, mu2 = mu1.double().flatten(), mu2.double().flatten()
    sigma1, sigma2 = sigma1.double(), sigma2.double()
    d = mu1.numel()
    if mu2.numel() != d or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"frechet_distance expects μ of shape (D,) and Σ of shape (D, D) for the same D; got "
                         f"μ1 {tuple(mu1.shape)}, Σ1 {tuple(sigma1.shape)}, μ2 {tuple(mu2.shape)}, "
                         f"Σ2 {tuple(sigma2.shape)}")
    s1 = _sqrt_psd(sigma1)
    m = s1 @ sigma2 @ s1                                           # √Σ1·Σ2·√Σ1, symmetric PSD
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()   # Tr((Σ1Σ2)^½)
    d2 = (mu1 - mu2).pow(2).sum() + torch.trace(sigma1) + torch.trace(sigma2) - 2 * tr_sqrt
    return float(d2.clamp_min(0))


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, Σ) of features (N, D) in float64; Σ is the unbiased sample covariance (divides by N − 1)."""
    _check_features(features, what="feature_statistics")
    f = features.double()
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (f.shape[0] - 1)


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID = Fréchet distance between Gaussians fitted to two feature sets (N1, D), (N2, D) (Heusel et al. 2017)."""
    _check_features(real, fake, what="fid_from_features")
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KID's kernel k(x, y) = (xᵀy / d + 1)³ for all pairs: (N, D), (M, D) -> (N, M)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD² with the polynomial kernel (Bińkowski et al. 2018), float64.

        MMD²_u = Σ_{i≠j} k(x_i, x_j)/(m(m−1)) + Σ_{i≠j} k(y_i, y_j)/(n(n−1)) − 2·Σ_{i,j} k(x_i, y_j)/(mn)
    """
    x, y = x.double(), y.double()
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
                 + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1)) - 2 * kxy.mean())


def kid_from_features(real: torch.Tensor, fake: torch.Tensor, subset_size: int = 1000, num_subsets: int = 100,
                      seed: int = 0) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): mean and std of the unbiased MMD² over random subsets -> (kid, kid_std).

    Each subset draws min(subset_size, N1, N2) samples without replacement from each set (seeded).
    Unlike FID, KID is unbiased, so it is ≈ 0 (and may be slightly negative) for equal distributions.
    """
    _check_features(real, fake, what="kid_from_features")
    if subset_size < 2 or num_subsets < 1:
        raise ValueError(f"kid needs subset_size ≥ 2 and num_subsets ≥ 1, got {subset_size} and {num_subsets}")
    m = min(subset_size, real.shape[0], fake.shape[0])
    g = torch.Generator().manual_seed(seed)
    vals = torch.tensor([mmd2_unbiased(real[torch.randperm(real.shape[0], generator=g)[:m]],
                                       fake[torch.randperm(fake.shape[0], generator=g)[:m]])
                         for _ in range(num_subsets)], dtype=torch.float64)
    return float(vals.mean()), float(vals.std()) if num_subsets > 1 else 0.0


def _pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (N, M) in float64 via ‖a‖² + ‖b‖² − 2·aᵀb (clamped at 0)."""
    d2 = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T
    return d2.clamp_min(0).sqrt()


def _rows_per_chunk(n_cols: int, max_bytes: int) -> int:
    return max(1, max_bytes // (8 * max(n_cols, 1)))


def knn_radii(features: torch.Tensor, k: int = 3, max_bytes: int = 256 * 2**20) -> torch.Tensor:
    """Distance from each sample to its k-th nearest neighbour in the same set (itself excluded), (N,)."""
    f = features.double()
    n = f.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N−1] = [1, {n - 1}], got k={k}; use more samples or a smaller k")
    rows = _rows_per_chunk(n, max_bytes)
    radii = [_pairwise_distances(f[i:i + rows], f).topk(k + 1, dim=1, largest=False).values[:, k]
             for i in range(0, n, rows)]                         # the 0-th neighbour is the sample itself
    return torch.cat(radii)


def _inside_manifold(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor,
                     max_bytes: int) -> torch.Tensor:
    """(Q,) bool: query q lies in ∪_i Ball(support_i, radius_i), computed in row chunks."""
    q, s = queries.double(), support.double()
    rows = _rows_per_chunk(s.shape[0], max_bytes)
    return torch.cat([(_pairwise_distances(q[i:i + rows], s) <= radii[None]).any(1)
                      for i in range(0, q.shape[0], rows)])


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3,
                     max_bytes: int = 256 * 2**20) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) from features (N, D), (M, D).

    Each set's manifold is the union of balls around its samples, the radius being the distance to the
    sample's k-th nearest neighbour in its own set (k = 3 as in the paper).
        precision = fraction of generated samples inside the real manifold     (fidelity)
        recall    = fraction of real samples inside the generated manifold     (coverage)
    Distances are computed in row chunks of at most `max_bytes`, so 10k × 10k runs in bounded memory.
    """
    _check_features(real, fake, what="precision_recall", min_n=k + 1)
    r_real, r_fake = knn_radii(real, k, max_bytes), knn_radii(fake, k, max_bytes)
    precision = _inside_manifold(fake, real, r_real, max_bytes).double().mean()
    recall = _inside_manifold(real, fake, r_fake, max_bytes).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception Score from classifier logits (N, K) (Salimans et al. 2016) -> (mean, std) over splits.

        IS = exp(E_x KL(p(y|x) ‖ p(y))),  p(y) = mean of p(y|x) over the split

    It is 1 when every prediction is the same (or uniform) and K when predictions are confident and
    spread evenly over K classes. The samples are cut into `splits` consecutive chunks.
    """
    if not torch.is_tensor(logits) or logits.dim() != 2:
        raise ValueError(f"inception_score expects logits of shape (N, K), got "
                         f"{tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__}")
    n = logits.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f"splits must be in [1, N] = [1, {n}], got {splits}")
    log_p = F.log_softmax(logits.double(), dim=1)                 # log p(y|x), (N, K)
    scores = []
    for chunk in torch.tensor_split(log_p, splits):
        log_py = torch.logsumexp(chunk, 0) - math.log(chunk.shape[0])     # log p(y) = log mean_x p(y|x)
        kl = (chunk.exp() * (chunk - log_py)).sum(1)                      # KL(p(y|x) ‖ p(y)) per sample
        scores.append(kl.mean().exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std()) if splits > 1 else 0.0


@torch.no_grad()
def extract_features(images: torch.Tensor, extractor: FeatureExtractor, batch_size: int = 500) -> torch.Tensor:
    """Run `extractor` over images (N, 3, H, W) in batches -> features (N, D) on the CPU."""
    if not torch.is_tensor(images) or images.dim() != 4:
        raise ValueError(f"expected images (N, 3, H, W), got "
                         f"{tuple(images.shape) if torch.is_tensor(images) else type(images).__name__}")
    return torch.cat([extractor(images[i:i + batch_size]).float().cpu() for i in range(0, len(images), batch_size)])


def generative_metrics(real_images: torch.Tensor, fake_images: torch.Tensor,
                       extractor: FeatureExtractor | None = None, k: int = 3, kid_subset_size: int = 1000,
                       kid_subsets: int = 100, seed: int = 0) -> dict[str, float]:
    """FID, KID (mean, std), precision and recall of fake vs real images in one extractor's feature space
    (default: `shapes_features`, i.e. Shapes-FID)."""
    extractor = extractor or shapes_features
    fr, ff = extract_features(real_images, extractor), extract_features(fake_images, extractor)
    return _metrics_from_features(fr, ff, k, kid_subset_size, kid_subsets, seed)


def _metrics_from_features(fr: torch.Tensor, ff: torch.Tensor, k: int, kid_subset_size: int, kid_subsets: int,
                           seed: int) -> dict[str, float]:
    kid, kid_std = kid_from_features(fr, ff, kid_subset_size, kid_subsets, seed)
    return {"fid": fid_from_features(fr, ff), "kid": kid, "kid_std": kid_std, **precision_recall(fr, ff, k),
            "num_real": fr.shape[0], "num_fake": ff.shape[0]}


def fid(real_images: torch.Tensor, fake_images: torch.Tensor, extractor: FeatureExtractor | None = None) -> float:
    """FID between two image sets (N, 3, H, W) in [-1, 1] in an extractor's feature space (default Shapes)."""
    extractor = extractor or shapes_features
    return fid_from_features(extract_features(real_images, extractor), extract_features(fake_images, extractor))


def kid(real_images: torch.Tensor, fake_images: torch.Tensor, extractor: FeatureExtractor | None = None,
        subset_size: int = 1000, num_subsets: int = 100, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std) between two image sets in an extractor's feature space (default Shapes)."""
    extractor = extractor or shapes_features
    return kid_from_features(extract_features(real_images, extractor), extract_features(fake_images, extractor),
                             subset_size, num_subsets, seed)


# ==========================================================================================================
# 2. The Shapes evaluator: a small CNN that reads every attribute of a scene, cell by cell
# ==========================================================================================================

NUM_CELLS = 9                                                  # the 3×3 grid of data.py
ATTRIBUTES = {"shape": SHAPES, "color": COLOR_NAMES, "size": SIZE_NAMES}
HEAD_WIDTH = 1 + sum(len(v) for v in ATTRIBUTES.values())       # occupancy logit + 4 + 6 + 2 = 13 per cell
EVALUATOR_KIND = "shapes_evaluator"
DEFAULT_EVALUATOR_PATH = Path(__file__).resolve().parent.parent / "data" / "shapes_evaluator.pt"
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

    def __post_init__(self):
        if len(self.widths) != len(self.strides) or not self.widths:
            raise ValueError(f"EvaluatorConfig.widths and strides must be non-empty and of equal length, got "
                             f"{self.widths} and {self.strides}")
        if len(self.object_count_probs) != 5 or abs(sum(self.object_count_probs) - 1) > 1e-6:
            raise ValueError(f"object_count_probs must be 5 probabilities (0..4 objects) summing to 1, "
                             f"got {self.object_count_probs}")
        for name in ("widths", "strides", "object_count_probs", "jpeg_step_range", "saturation"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


class ShapesEvaluator(nn.Module):
    """CNN: image (B, 3, 32, 32) -> per-cell logits (B, 9, 13) = [occupied | shape 4 | color 6 | size 2].

    Positions follow from which cells are occupied, relations from the cells of two objects.
    `features(x)` is the penultimate layer (B, feature_dim): the Shapes-FID feature space.
    """

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
        """(B, 3, 32, 32) -> (B, feature_dim), scaled by `feature_scale`."""
        return self.embed(self.trunk(x)) * self.feature_scale    # (B, 3, 32, 32) -> (B, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 32, 32) -> (B, 9, 13) logits per cell."""
        h = self.embed(self.trunk(x))                             # (B, 3, 32, 32) -> (B, 256)
        return rearrange(self.head(h), "b (cell k) -> b cell k", cell=NUM_CELLS)


@torch.no_grad()
def calibrate_feature_scale(model: ShapesEvaluator, images: torch.Tensor) -> float:
    """Set model.feature_scale = 1/√(mean over dimensions of Var[feature]) on real images; returns it."""
    model.feature_scale.fill_(1.0)
    dev = model.feature_scale.device
    f = torch.cat([model.features(images[i:i + 500].to(dev)).cpu() for i in range(0, len(images), 500)]).double()
    scale = float(f.var(0).mean().rsqrt())
    model.feature_scale.fill_(scale)
    return scale


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


# --- degradations: what separates a generated image from a rendered one ------------------------------------


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


# --- training ----------------------------------------------------------------------------------------------


def _training_scenes(cfg: EvaluatorConfig, n: int) -> list:
    """n scenes with 0..4 objects from the *train* seed space of data.py (never the val/test scenes)."""
    g = torch.Generator().manual_seed(cfg.seed)
    counts = torch.multinomial(torch.tensor(cfg.object_count_probs), n, replacement=True, generator=g)
    # data.py seeds sample i of split s (dataset seed d) with (3d + s) << 40 | i; split id 0 = train
    base = (3 * (1000 + cfg.seed)) << 40
    return [sample_scene(base | i, int(c), int(c)) for i, c in enumerate(counts.tolist())]


def _render_pool(cfg: EvaluatorConfig, progress: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Render the training pool once: images as uint8 (N, 3, H, W) and their per-cell targets."""
    from tqdm.auto import tqdm

    scenes = _training_scenes(cfg, cfg.pool_size)
    chunks = []
    for i in tqdm(range(0, len(scenes), 500), desc="rendering pool", disable=not progress, mininterval=2.0):
        img, _ = render_scenes(scenes[i:i + 500], cfg.resolution)
        chunks.append(((img + 1) * 127.5).round().to(torch.uint8))
    return torch.cat(chunks), scene_targets(scenes)


def train_evaluator(out_path: str | os.PathLike = DEFAULT_EVALUATOR_PATH, steps: int | None = None,
                    seed: int | None = None, max_minutes: float | None = None,
                    config: EvaluatorConfig | None = None, device: str | torch.device | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """Train the Shapes evaluator on degraded renders and save it (fp16 weights, with its config and
    test accuracy) to `out_path`; returns the checkpoint's "metrics" and "train" records."""
    from tqdm.auto import tqdm

    cfg = config or EvaluatorConfig()
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=int(steps))
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=int(seed))
    device = get_device(device)
    t0 = time.perf_counter()
    g = seed_everything(cfg.seed)
    pool, targets = _render_pool(cfg, progress)
    t_pool = time.perf_counter() - t0
    model = ShapesEvaluator(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_factor(step: int) -> float:                           # linear warm-up, then cosine decay to 0
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
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
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    calibrate_feature_scale(model, clean_images)
    state["feature_scale"] = model.feature_scale.detach().clone()          # kept in fp32
    cfg = model.config
    test = ShapesDataset("test", max_objects=2, resolution=cfg.resolution)
    scenes = [test.scene(i) for i in range(len(test))]
    images = torch.cat([render_scenes(scenes[i:i + 500], cfg.resolution)[0] for i in range(0, len(scenes), 500)])
    return state, attribute_accuracy(images, scenes, evaluator=model)


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
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
        _EVALUATORS[key] = model.to(device).eval().requires_grad_(False)
    return _EVALUATORS[key]


# ==========================================================================================================
# 3. Shapes metrics: features, the real-vs-real floor, and reading the attributes back
# ==========================================================================================================


def _get_evaluator(evaluator: ShapesEvaluator | None) -> ShapesEvaluator:
    return evaluator if evaluator is not None else load_evaluator()


@torch.no_grad()
def shapes_features(images: torch.Tensor, evaluator: ShapesEvaluator | None = None,
                    batch_size: int = 500) -> torch.Tensor:
    """Shapes-FID features: the evaluator's penultimate layer, images (N, 3, H, W) in [-1, 1] -> (N, 256)."""
    ev = _get_evaluator(evaluator)
    dev = next(ev.parameters()).device
    return torch.cat([ev.features(ev.prepare(images[i:i + batch_size].to(dev))).cpu()
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def predict_cells(images: torch.Tensor, evaluator: ShapesEvaluator | None = None, threshold: float = 0.5,
                  batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Read scenes cell by cell: occupied (N, 9) bool, p_occupied (N, 9), shape/color/size (N, 9) indices
    into data.SHAPES / COLOR_NAMES / SIZE_NAMES (meaningful where occupied), and the raw logits."""
    ev = _get_evaluator(evaluator)
    dev = next(ev.parameters()).device
    logits = torch.cat([ev(ev.prepare(images[i:i + batch_size].to(dev))).cpu()
                        for i in range(0, len(images), batch_size)])
    parts = split_logits(logits)
    p = parts["occupied"].sigmoid()
    out = {"occupied": p > threshold, "p_occupied": p, "logits": logits}
    out.update({name: parts[name].argmax(-1) for name in ATTRIBUTES})
    return out


def detect_objects(images: torch.Tensor, evaluator: ShapesEvaluator | None = None,
                   threshold: float = 0.5) -> list[list[dict]]:
    """Per image, the objects the evaluator sees: [{"shape", "color", "size", "row", "col", "position", "p"}]."""
    c = predict_cells(images, evaluator, threshold)
    out = []
    for b in range(len(images)):
        objs = []
        for cell in c["occupied"][b].nonzero().flatten().tolist():
            row, col = divmod(cell, 3)
            objs.append({"shape": SHAPES[c["shape"][b, cell]], "color": COLOR_NAMES[c["color"][b, cell]],
                         "size": SIZE_NAMES[c["size"][b, cell]], "row": row, "col": col,
                         "position": POSITIONS[cell], "p": float(c["p_occupied"][b, cell])})
        out.append(objs)
    return out


@torch.no_grad()
def shapes_class_logits(images: torch.Tensor, evaluator: ShapesEvaluator | None = None) -> torch.Tensor:
    """(N, 24) log p(shape × color) of the most confidently detected object, for `inception_score` on Shapes."""
    c = predict_cells(images, evaluator)
    parts = split_logits(c["logits"])
    cell = c["p_occupied"].argmax(1)                              # (N,) most confident cell
    pick = torch.arange(len(cell))
    log_shape = F.log_softmax(parts["shape"][pick, cell], -1)     # (N, 4)
    log_color = F.log_softmax(parts["color"][pick, cell], -1)     # (N, 6)
    # class id = shape_index·6 + color_index (data.class_id)
    return rearrange(log_shape[:, :, None] + log_color[:, None, :], "n s c -> n (s c)")


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


def _real_images(num_samples: int, split: str, max_objects: int, resolution: int, start: int = 0,
                 batch_size: int = 500) -> torch.Tensor:
    ds = ShapesDataset(split, size=start + num_samples, max_objects=max_objects, resolution=resolution)
    return torch.cat([ds.batch(range(i, min(i + batch_size, start + num_samples)))["image"]
                      for i in range(start, start + num_samples, batch_size)])


def shapes_generative_metrics(fake_images: torch.Tensor, split: str = "test", max_objects: int = 2,
                              evaluator: ShapesEvaluator | None = None, with_floor: bool = True, k: int = 3,
                              kid_subset_size: int = 1000, kid_subsets: int = 100, seed: int = 0
                              ) -> dict[str, float]:
    """Shapes-FID, KID, precision, recall of generated images against as many real images of a split, and
    (with_floor) the same metrics between two disjoint real sets of that size: the floor to report with them.

    The real set is images [0, n) of the split, the floor's second set [n, 2n). Reconstructions of those same
    test images are a *paired* comparison (rFID): it can fall below the unpaired floor.
    """
    n = len(fake_images)
    res = fake_images.shape[-1]
    real = _real_images(2 * n if with_floor else n, split, max_objects, res)
    fr = shapes_features(real[:n], evaluator)
    out = _metrics_from_features(fr, shapes_features(fake_images, evaluator), k, kid_subset_size, kid_subsets, seed)
    if with_floor:
        floor = _metrics_from_features(fr, shapes_features(real[n:], evaluator), k, kid_subset_size,
                                       kid_subsets, seed)
        out.update({f"{key}_floor": floor[key] for key in ("fid", "kid", "precision", "recall")})
    return out


def shapes_fid_floor(num_samples: int, split: str = "test", max_objects: int = 2, resolution: int = 32,
                     evaluator: ShapesEvaluator | None = None, return_all: bool = False) -> float | dict[str, float]:
    """Real-vs-real Shapes-FID at a sample count: images [0, n) vs [n, 2n) of a split (disjoint, same
    distribution). Finite-sample noise alone gives this much FID; report it next to every FID.
    return_all gives KID, precision and recall of the same two sets too."""
    if num_samples < 2:
        raise ValueError(f"the FID floor needs num_samples ≥ 2 per set, got {num_samples}")
    real = _real_images(2 * num_samples, split, max_objects, resolution)
    fa, fb = shapes_features(real[:num_samples], evaluator), shapes_features(real[num_samples:], evaluator)
    if not return_all:
        return fid_from_features(fa, fb)
    return _metrics_from_features(fa, fb, 3, 1000, 100, 0)


# --- prompt, class and layout accuracy -----------------------------------------------------------------------

_RELATION_HOLDS = {                                 # a <relation> b, from grid cells (as data.py draws them)
    "to the left of": lambda a, b: a["col"] < b["col"],
    "to the right of": lambda a, b: a["col"] > b["col"],
    "above": lambda a, b: a["row"] < b["row"],
    "below": lambda a, b: a["row"] > b["row"],
}
assert set(_RELATION_HOLDS) == set(RELATIONS)


def _match(prompt: dict, seen: list[dict]) -> tuple[list[dict], bool | None]:
    """Assign detected objects to the prompt's objects (one each, or none) so that as many conditions as
    possible hold; -> (per prompt object: which of shape/color/size/position hold, relation holds or None)."""
    objs, rel = prompt["objects"], prompt["relation"]

    def checks(p: dict, o: dict | None) -> dict:
        c = {a: o is not None and o[a] == p[a] for a in ("shape", "color", "size")}
        if p["position"] is not None:
            c["position"] = o is not None and o["position"] == p["position"]
        return c

    best_score, result = -1, None
    for assign in itertools.product([None, *range(len(seen))], repeat=len(objs)):
        used = [j for j in assign if j is not None]
        if len(used) != len(set(used)):                          # one detected object per prompt object
            continue
        per = [checks(p, seen[j] if j is not None else None) for p, j in zip(objs, assign)]
        holds = None
        if rel is not None:
            a, b = assign
            holds = a is not None and b is not None and _RELATION_HOLDS[rel](seen[a], seen[b])
        score = sum(sum(c.values()) for c in per) + bool(holds)
        if score > best_score:
            best_score, result = score, (per, holds)
    return result


def prompt_accuracy(images: torch.Tensor, captions: Sequence[str], evaluator: ShapesEvaluator | None = None,
                    exact_count: bool = True) -> dict[str, Any]:
    """Fraction of images in which EVERY condition of their prompt holds (shape, color, size of each object,
    its position or the relation between the two), read by the Shapes evaluator; with `exact_count` the
    image must also hold exactly as many objects as the prompt names. Broken down by prompt type
    ("one_object", "two_objects_relation", "objects_with_positions") and by attribute; "correct" is (N,) bool.
    """
    if isinstance(captions, str):
        raise TypeError("prompt_accuracy expects one caption per image (a list of strings), got a single string")
    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions; pass one caption per image")
    prompts = [parse_caption(c) for c in captions]
    seen = detect_objects(images, evaluator)
    correct, types = [], []
    tallies: dict[str, list[bool]] = {a: [] for a in ("shape", "color", "size", "position", "relation", "count")}
    for p, s in zip(prompts, seen):
        per, holds = _match(p, s)
        for c in per:
            for a, ok in c.items():
                tallies[a].append(ok)
        if holds is not None:
            tallies["relation"].append(holds)
        count_ok = len(s) == len(p["objects"])
        tallies["count"].append(count_ok)
        correct.append(all(all(c.values()) for c in per) and holds is not False and (count_ok or not exact_count))
        types.append("one_object" if len(p["objects"]) == 1 else
                     "two_objects_relation" if p["relation"] is not None else "objects_with_positions")
    correct_t = torch.tensor(correct, dtype=torch.bool)
    by_type = {}
    for name in ("one_object", "two_objects_relation", "objects_with_positions"):
        sel = torch.tensor([t == name for t in types], dtype=torch.bool)
        if sel.any():
            by_type[name] = {"accuracy": float(correct_t[sel].float().mean()), "n": int(sel.sum())}
    return {"accuracy": float(correct_t.float().mean()), "n": len(correct), "by_type": by_type,
            "by_attribute": {a: sum(v) / len(v) for a, v in tallies.items() if v}, "correct": correct_t}


def class_accuracy(images: torch.Tensor, labels: torch.Tensor | Sequence[int],
                   evaluator: ShapesEvaluator | None = None, exact_count: bool = True) -> dict[str, Any]:
    """Class-conditional samples: fraction whose (most confident) object has the label's shape and color
    (class = shape_index·6 + color_index, data.class_id); with `exact_count`, exactly one object must be seen."""
    labels = torch.as_tensor(labels, dtype=torch.int64).flatten()
    if len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels; pass one label per image")
    if (labels < 0).any() or (labels >= len(SHAPES) * len(COLOR_NAMES)).any():
        raise ValueError(f"labels must be classes in [0, {len(SHAPES) * len(COLOR_NAMES)}) (one-object scenes); "
                         f"got values in [{int(labels.min())}, {int(labels.max())}]")
    c = predict_cells(images, evaluator)
    cell = c["p_occupied"].argmax(1)
    pick = torch.arange(len(cell))
    shape_ok = c["shape"][pick, cell] == labels // len(COLOR_NAMES)
    color_ok = c["color"][pick, cell] == labels % len(COLOR_NAMES)
    count_ok = c["occupied"].sum(1) == 1
    correct = shape_ok & color_ok & (count_ok | (not exact_count))
    return {"accuracy": float(correct.float().mean()), "shape": float(shape_ok.float().mean()),
            "color": float(color_ok.float().mean()), "count": float(count_ok.float().mean()),
            "n": len(labels), "correct": correct}


def layout_accuracy(images: torch.Tensor, layout: torch.Tensor, evaluator: ShapesEvaluator | None = None,
                    exact_count: bool = True) -> dict[str, Any]:
    """Layout-conditional samples: each layout object [class_id, x0, y0, x1, y1] (rows with class −1 are
    padding) must be seen in the grid cell of its box centre with its class (shape and color).
    "accuracy": images with every object right (and, with `exact_count`, no extra objects);
    "object_accuracy", "position", "class": per layout object."""
    if not torch.is_tensor(layout) or layout.dim() != 3 or layout.shape[-1] != 5 or len(layout) != len(images):
        raise ValueError(f"layout must be (N, max_objects, 5) rows [class_id, x0, y0, x1, y1] for N = {len(images)} "
                         f"images, got {tuple(layout.shape) if torch.is_tensor(layout) else type(layout).__name__}")
    layout = layout.float().cpu()
    c = predict_cells(images, evaluator)
    valid = layout[..., 0] >= 0                                    # (N, K)
    cls = layout[..., 0].clamp_min(0).long()
    grid = torch.tensor(GRID)
    cx, cy = (layout[..., 1] + layout[..., 3]) / 2, (layout[..., 2] + layout[..., 4]) / 2
    col = (cx[..., None] - grid).abs().argmin(-1)                  # nearest cell centre, (N, K)
    row = (cy[..., None] - grid).abs().argmin(-1)
    cell = 3 * row + col
    take = lambda t: torch.gather(t, 1, cell)                      # noqa: E731  (N, 9) -> (N, K) at each cell
    pos_ok = take(c["occupied"])
    cls_ok = (take(c["shape"]) == cls // len(COLOR_NAMES)) & (take(c["color"]) == cls % len(COLOR_NAMES))
    obj_ok = pos_ok & cls_ok
    count_ok = c["occupied"].sum(1) == valid.sum(1)
    correct = (obj_ok | ~valid).all(1) & (count_ok | (not exact_count))
    v = valid.float().sum()
    return {"accuracy": float(correct.float().mean()), "object_accuracy": float((obj_ok & valid).sum() / v),
            "position": float((pos_ok & valid).sum() / v), "class": float((cls_ok & pos_ok & valid).sum() / v),
            "count": float(count_ok.float().mean()), "n": len(images), "correct": correct}


# ==========================================================================================================
# 4. Command line: `minildm train-evaluator`
# ==========================================================================================================


def _cmd_train_evaluator(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    res = train_evaluator(args.out, steps=args.steps, seed=args.seed, max_minutes=args.minutes, device=args.device,
                          progress=not args.no_progress)
    m, t = res["metrics"], res["train"]
    print(f"trained {t['steps']} steps in {t['seconds']:.0f} s ({t['pool_seconds']:.0f} s rendering) -> {res['path']}")
    print("test split (max_objects=2): " + "  ".join(f"{k} {v:.4f}" for k, v in m.items() if k != "images"))
    return 0


def register_cli(subparsers: Any) -> None:
    """Add `train-evaluator` to the `minildm` command."""
    p = subparsers.add_parser("train-evaluator", help="train the Shapes evaluator (Shapes-FID features, "
                                                      "prompt accuracy)")
    p.add_argument("--out", default=str(DEFAULT_EVALUATOR_PATH), help="checkpoint path (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help=f"training steps (default {EvaluatorConfig.steps})")
    p.add_argument("--seed", type=int, default=None, help=f"seed (default {EvaluatorConfig.seed})")
    p.add_argument("--minutes", type=float, default=None, help="stop early after this many minutes")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train_evaluator)
