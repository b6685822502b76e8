"""How good are images? Reconstruction metrics and the generative metrics of the paper's tables.

    reconstructions (LDM Tab. 8)   psnr, ssim, lpips per image; reconstruction_metrics over a dataset;
                                   latent_statistics (and the scale factor 1/std(z)); radial power spectra
    baselines and readings         bicubic_roundtrip at an equal number of values (side_for_values);
                                   peak_in_boxes: does a map (a latent, an attention map) peak on an object?
    generated images (Tab. 1-3)    FID (Heusel et al. 2017), KID (Bińkowski et al. 2018), improved
                                   precision/recall (Kynkäänniemi et al. 2019), Inception Score

Image functions take images in [-1, 1], shape (B, 3, H, W), and return one value per image unless noted.
The generative metrics compare *features* (N, D), so any feature extractor plugs in: on Shapes the Shapes
judge's ("Shapes-FID", accuracy.shapes_features; Inception-v3 would be meaningless on 32×32 synthetic scenes),
on other data features.py's. An FID means little without its floor: two disjoint sets of *real* images also
have FID > 0 (finite-sample noise); accuracy.py says how minildm reports it (and why a floor must be of the
same kind, paired or unpaired, as the FID next to it).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from ..autoencoder import reconstruct
from ..perceptual import LPIPS, random_backbone_requested

__all__ = ["psnr", "ssim", "lpips", "radial_power_spectrum", "log_spectrum_distance", "latent_statistics",
           "side_for_values", "bicubic_roundtrip", "peak_in_boxes", "reconstruction_psnr",
           "reconstruction_metrics", "frechet_distance", "feature_statistics", "fid_from_features", "mmd2_unbiased",
           "kid_from_features", "knn_radii", "precision_recall", "inception_score", "extract_features",
           "metrics_from_features", "binomial_interval", "bootstrap_std", "edge_sharpness", "object_color_error"]

SSIM_WINDOW, SSIM_SIGMA = 11, 1.5     # Wang et al. 2004
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check_pair(x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"{what} expects two image batches of the same shape (B, C, H, W), "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR = 10·log10(R² / MSE) per image (B,), R = 2 for images in [-1, 1] (same as R = 1 on [0, 1])."""
    _check_pair(x, y, "psnr")
    mse = (x.double() - y.double()).pow(2).mean(dim=(1, 2, 3))
    return (10.0 * torch.log10(2.0**2 / mse.clamp_min(1e-20))).float()


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image (B,) (Wang et al. 2004): Gaussian window 11, σ 1.5, K1 0.01, K2 0.03, 'valid' windows.

        SSIM = (2·μx·μy + C1)(2·σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)),  C_i = (K_i·R)²

    computed per channel on local Gaussian-weighted statistics, averaged over positions and channels.
    SSIM is not shift-invariant (the C1 term), so images in [-1, 1] are first mapped to [0, 1] (R = 1),
    the usual convention.
    """
    _check_pair(x, y, "ssim")
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"ssim needs images at least {SSIM_WINDOW}×{SSIM_WINDOW} for its window, "
                         f"got {tuple(x.shape[-2:])}")
    x, y = (x.double() + 1) / 2, (y.double() + 1) / 2             # [-1, 1] -> [0, 1]: R = 1
    C = x.shape[1]
    i = torch.arange(SSIM_WINDOW, dtype=x.dtype, device=x.device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-i.pow(2) / (2 * SSIM_SIGMA**2))                # g(i) ∝ exp(−(i − c)² / 2σ²), normalized:
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(C, 1, SSIM_WINDOW, SSIM_WINDOW)   # separable 2-D Gaussian, per channel

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=C)                      # (B, C, H, W) -> (B, C, H−10, W−10)

    c1, c2 = SSIM_K1**2, SSIM_K2**2                               # C_i = (K_i·R)², R = 1
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2                                 # σx² = E[x²] − μx²
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y                               # σxy = E[xy] − μx·μy
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3)).float()


_lpips_cache: dict = {}


def lpips(x: torch.Tensor, y: torch.Tensor, net: str = "alex", download: bool = True,
          random_backbone: bool | None = None) -> torch.Tensor:
    """LPIPS distance per image (B,) (Zhang et al. 2018), lower is better; the network is built once and cached.

    See perceptual.LPIPS for how the pretrained backbone is found; with a random backbone the number is not a
    meaningful perceptual metric.
    """
    rb = random_backbone_requested() if random_backbone is None else bool(random_backbone)
    key = (net, rb, x.device)
    if key not in _lpips_cache:
        _lpips_cache[key] = LPIPS(net, download=download, random_backbone=rb).to(x.device)
    with torch.no_grad():
        return _lpips_cache[key](x, y)


def _luminance(images: torch.Tensor) -> torch.Tensor:
    x = (images.double() + 1) / 2                                         # [-1, 1] -> [0, 1]
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]            # (B, H, W)


@torch.no_grad()
def radial_power_spectrum(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially averaged power spectrum of images (B, 3, H, W) in [-1, 1] -> (frequencies, power), both (K,).

    The luminance Y = 0.299 R + 0.587 G + 0.114 B of each image, minus its mean and times a 2-D Hann window
    (so the jump between opposite borders, which the FFT treats as neighbours, adds no false detail), is
    Fourier transformed; |F(u, v)|² / (H·W) is averaged over the rings of radius k = round(√(u² + v²)),
    k = 1 … min(H, W)/2, and over the batch. Frequencies are k / min(H, W) in cycles per pixel (0.5 is the
    finest pattern a pixel grid can hold). Blur shows up as missing power at high frequencies.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
    y = _luminance(images)
    y = y - y.mean(dim=(1, 2), keepdim=True)                              # the mean (k = 0) is not a frequency
    H, W = y.shape[-2:]
    y = y * (torch.hann_window(H, periodic=False, dtype=y.dtype)[:, None]
             * torch.hann_window(W, periodic=False, dtype=y.dtype)[None, :])
    power = torch.fft.fft2(y).abs().pow(2).mean(0) / (H * W)              # (H, W), averaged over the batch
    u = torch.fft.fftfreq(H, d=1.0 / H).abs()                             # integer frequencies 0 … H/2
    v = torch.fft.fftfreq(W, d=1.0 / W).abs()
    k = torch.sqrt(u[:, None] ** 2 + v[None, :] ** 2).round().long()     # ring index per (u, v)
    n = min(H, W) // 2
    rings = torch.arange(1, n + 1)
    radial = torch.stack([power[k == r].mean() for r in rings])
    return (rings.double() / min(H, W)).float(), radial.float()


def log_spectrum_distance(images: torch.Tensor, reference: torch.Tensor, min_frequency: float = 0.0) -> float:
    """Mean |log10 P_images(f) − log10 P_reference(f)| over the rings f ≥ min_frequency (cycles per pixel):
    how far apart two sets' radial power spectra are (0: the same spectrum; 1: a factor 10 on average)."""
    f, a = radial_power_spectrum(images)
    _, b = radial_power_spectrum(reference)
    keep = f >= min_frequency
    return float((a[keep].log10() - b[keep].log10()).abs().mean())


@torch.no_grad()
def edge_sharpness(recon: torch.Tensor, original: torch.Tensor, segmentation: torch.Tensor) -> torch.Tensor:
    """Per image: the mean luminance gradient of `recon` on the objects' boundaries divided by the original's
    there (B,). 1 keeps the edges as steep as the originals'; blur spreads an edge over several pixels and lowers
    it (a 2-pixel ramp halves the step a 1-pixel gradient sees). Boundary pixels: where the segmentation (B, H, W)
    differs from the right or lower neighbour; gradients are those forward differences, |Δx| + |Δy|."""
    def grads(images):
        y = _luminance(images)
        return (y[:, :-1, 1:] - y[:, :-1, :-1]).abs() + (y[:, 1:, :-1] - y[:, :-1, :-1]).abs()   # (B, H−1, W−1)
    s = segmentation
    edge = ((s[:, :-1, 1:] != s[:, :-1, :-1]) | (s[:, 1:, :-1] != s[:, :-1, :-1])).double()
    mass = edge.sum((1, 2)).clamp_min(1)
    return (grads(recon) * edge).sum((1, 2)) / mass / ((grads(original) * edge).sum((1, 2)) / mass).clamp_min(1e-8)


@torch.no_grad()
def object_color_error(recon: torch.Tensor, original: torch.Tensor, segmentation: torch.Tensor) -> torch.Tensor:
    """Per image: the mean over its objects of ‖mean RGB of the object in `recon` − in `original`‖ (B,), in [0, 1]
    units, over each object's interior (its pixels whose four neighbours belong to it too), so edges, which blur
    moves, do not count: a colour shift, not a blur. Objects with no interior pixel are skipped."""
    x, r = (original.double() + 1) / 2, (recon.double() + 1) / 2
    s = F.pad(segmentation[:, None].double(), (1, 1, 1, 1), value=-1)[:, 0]
    out = torch.zeros(len(x), dtype=torch.float64)
    for b in range(len(x)):
        errors = []
        for k in segmentation[b].unique().tolist():
            if k == 0:
                continue
            mine = s[b] == k
            inner = mine[1:-1, 1:-1] & mine[:-2, 1:-1] & mine[2:, 1:-1] & mine[1:-1, :-2] & mine[1:-1, 2:]
            if inner.any():
                errors.append(float((r[b][:, inner].mean(1) - x[b][:, inner].mean(1)).norm()))
        out[b] = sum(errors) / len(errors) if errors else float("nan")
    return out


@torch.no_grad()
def latent_statistics(autoencoder: torch.nn.Module, batches: Iterable, generator: torch.Generator | None = None
                      ) -> dict[str, torch.Tensor | float]:
    """Per-channel mean/std of z = encode_latent(x) over `batches`, and scale_factor = 1/std(z) over all
    elements (the reference's `scale_by_std`, Sec. 4.3.2 / App. G). `batches` yields image tensors or dicts
    with an "image" key."""
    device = next(autoencoder.parameters()).device
    was_training = autoencoder.training
    autoencoder.eval()
    n, s1, s2 = 0, None, None
    for b in batches:
        x = (b["image"] if isinstance(b, dict) else b).to(device)
        z = autoencoder.encode_latent(x, generator=generator).double()   # (B, c, h, w)
        per_c = z.transpose(0, 1).flatten(1)                               # (c, B·h·w)
        s1 = per_c.sum(1) if s1 is None else s1 + per_c.sum(1)
        s2 = per_c.pow(2).sum(1) if s2 is None else s2 + per_c.pow(2).sum(1)
        n += per_c.shape[1]
    autoencoder.train(was_training)
    if n == 0:
        raise ValueError("latent_statistics got no batches; pass at least one batch of images")
    mean = s1 / n
    var = (s2 / n - mean**2).clamp_min(0) * n / max(n - 1, 1)            # unbiased per channel
    total_mean = s1.sum() / (n * len(s1))
    total_var = (s2.sum() / (n * len(s1)) - total_mean**2) * (n * len(s1)) / max(n * len(s1) - 1, 1)
    std_all = math.sqrt(max(float(total_var), 1e-24))
    return {"mean": mean.float(), "std": var.sqrt().float(), "std_all": std_all, "mean_all": float(total_mean),
            "scale_factor": 1.0 / std_all}


def side_for_values(values: int, channels: int = 3) -> int:
    """The largest side s with channels·s² ≤ values: a (channels, s, s) image stores no more numbers than a
    latent of `values` = h·w·c numbers (e.g. 8·8·4 = 256 -> s = 9, 243 numbers), for a fair baseline."""
    if values < channels or channels < 1:
        raise ValueError(f"need values ≥ channels ≥ 1 to keep at least a 1×1 image, got values={values}, "
                         f"channels={channels}")
    return math.isqrt(values // channels)                         # s = ⌊√(values / channels)⌋


@torch.no_grad()
def bicubic_roundtrip(images: torch.Tensor, side: int) -> torch.Tensor:
    """Compress images (B, 3, H, W) in [-1, 1] to side×side by antialiased bicubic down-sampling and bring them
    back to H×W by bicubic up-sampling, clamped to [-1, 1]: the classic compressor that keeps 3·side² numbers
    per image, the baseline an autoencoder with as many latent numbers has to beat."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
    H, W = images.shape[-2:]
    if not 1 <= side <= min(H, W):
        raise ValueError(f"side must be between 1 and the image size {min(H, W)}, got {side}")
    x = images.float()
    small = F.interpolate(x, size=(side, side), mode="bicubic", antialias=True, align_corners=False)  # (B, 3, s, s)
    return F.interpolate(small, size=(H, W), mode="bicubic", align_corners=False).clamp(-1, 1)       # (B, 3, H, W)


def peak_in_boxes(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(N,) bool: does each map (N, h, w) have its maximum inside one of its image's boxes?

    boxes (N, K, 4) are [x0, y0, x1, y1] in [0, 1] image coordinates (a layout's last four columns; rows with
    a negative entry are padding). A map's cell (i, j) sits at ((j + ½)/w, (i + ½)/h). With random maps the
    fraction that comes out True is the share of cells the boxes cover: the chance level.
    """
    if maps.dim() != 3 or boxes.dim() != 3 or boxes.shape[-1] != 4 or len(maps) != len(boxes):
        raise ValueError(f"expected maps (N, h, w) and boxes (N, K, 4), got {tuple(maps.shape)} and "
                         f"{tuple(boxes.shape)}")
    _, h, w = maps.shape
    peak = maps.flatten(1).argmax(1)                               # (N,) index of the maximum
    cx, cy = ((peak % w).float() + 0.5) / w, ((peak // w).float() + 0.5) / h   # its cell centre in [0, 1]
    b = boxes.float().to(maps.device)
    inside = (cx[:, None] >= b[..., 0]) & (cx[:, None] <= b[..., 2]) & (cy[:, None] >= b[..., 1]) \
        & (cy[:, None] <= b[..., 3]) & (b >= 0).all(-1)          # (N, K)
    return inside.any(1)


@torch.no_grad()
def reconstruction_psnr(model: torch.nn.Module, images: list[torch.Tensor], device: torch.device) -> float:
    """Mean PSNR (dB) of an autoencoder's reconstructions over a list of image batches (validation)."""
    was = model.training
    model.eval()
    vals = [psnr(x.to(device), reconstruct(model, x.to(device)).clamp(-1, 1)) for x in images]
    model.train(was)
    return float(torch.cat(vals).mean())


@torch.no_grad()
def reconstruction_metrics(model: torch.nn.Module, dataset, lpips_net: str = "alex", random_lpips: bool | None = None
                           ) -> dict[str, float]:
    """Mean PSNR (dB), SSIM and LPIPS of an autoencoder's reconstructions over every image of `dataset`, 100 at a
    time."""
    device = next(model.parameters()).device
    model.eval()
    p, s, lp = [], [], []
    for i in range(0, len(dataset), 100):
        x = dataset.batch(range(i, min(i + 100, len(dataset))), device=device)["image"].to(device)
        xr = reconstruct(model, x).clamp(-1, 1)
        p.append(psnr(x, xr))
        s.append(ssim(x, xr))
        lp.append(lpips(x, xr, net=lpips_net, random_backbone=random_lpips))
    return {"psnr": float(torch.cat(p).mean()), "ssim": float(torch.cat(s).mean()),
            "lpips": float(torch.cat(lp).mean()), "images": len(dataset)}


# --- Generated images: metrics on features (N, D), so any extractor plugs in --------------------------------


def _check_features(*feats: torch.Tensor, what: str, min_n: int = 2) -> None:
    shapes = [tuple(f.shape) if torch.is_tensor(f) else type(f).__name__ for f in feats]
    if not all(torch.is_tensor(f) and f.dim() == 2 for f in feats):
        raise ValueError(f"{what} expects feature tensors of shape (N, D), got {shapes}; extract features first "
                         "(e.g. shapes_features(images))")
    if len({f.shape[1] for f in feats}) > 1:
        raise ValueError(f"{what}: feature dimensions differ: {shapes}; use the same extractor for both sets")
    if min(f.shape[0] for f in feats) < min_n or not all(torch.isfinite(f).all() for f in feats):
        raise ValueError(f"{what} needs at least {min_n} finite (not NaN/inf) samples per set, got {shapes}")


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
    s1 = _sqrt_psd(sigma1)
    m = s1 @ sigma2 @ s1                                           # √Σ1·Σ2·√Σ1, symmetric PSD
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()   # Tr((Σ1Σ2)^½)
    d2 = (mu1 - mu2).pow(2).sum() + torch.trace(sigma1) + torch.trace(sigma2) - 2 * tr_sqrt
    return float(d2.clamp_min(0))


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, Σ) of features (N, D) in float64; Σ is the unbiased sample covariance (divides by N − 1)."""
    f = features.double()
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (f.shape[0] - 1)


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID = Fréchet distance between Gaussians fitted to two feature sets (N1, D), (N2, D) (Heusel et al. 2017)."""
    _check_features(real, fake, what="fid_from_features")
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD² with KID's polynomial kernel k(a, b) = (aᵀb / d + 1)³ (Bińkowski et al. 2018), float64.

        MMD²_u = Σ_{i≠j} k(x_i, x_j)/(m(m−1)) + Σ_{i≠j} k(y_i, y_j)/(n(n−1)) − 2·Σ_{i,j} k(x_i, y_j)/(mn)
    """
    x, y = x.double(), y.double()
    m, n = x.shape[0], y.shape[0]
    k = lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3             # noqa: E731  (N, D), (M, D) -> (N, M)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
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


def _by_rows(a: torch.Tensor, b: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor],
             max_bytes: int) -> torch.Tensor:
    """reduce(distances (rows, M) from a chunk of a's rows to all of b), chunk after chunk, concatenated: the
    float64 distances of one chunk take at most `max_bytes`, so 10k × 10k runs in bounded memory."""
    a, b = a.double(), b.double()
    rows = max(1, max_bytes // (8 * max(b.shape[0], 1)))
    return torch.cat([reduce(_pairwise_distances(a[i:i + rows], b)) for i in range(0, a.shape[0], rows)])


def knn_radii(features: torch.Tensor, k: int = 3, max_bytes: int = 256 * 2**20) -> torch.Tensor:
    """Distance from each sample to its k-th nearest neighbour in the same set (itself excluded), (N,)."""
    # the 0-th neighbour is the sample itself
    return _by_rows(features, features, lambda d: d.topk(k + 1, dim=1, largest=False).values[:, k], max_bytes)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3,
                     max_bytes: int = 256 * 2**20) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) from features (N, D), (M, D).

    Each set's manifold is the union of balls around its samples, the radius being the distance to the
    sample's k-th nearest neighbour in its own set (k = 3 as in the paper).
        precision = fraction of generated samples inside the real manifold     (fidelity)
        recall    = fraction of real samples inside the generated manifold     (coverage)
    """
    _check_features(real, fake, what="precision_recall", min_n=k + 1)

    def inside(queries: torch.Tensor, support: torch.Tensor) -> float:    # share of queries in ∪ Ball(s_i, r_i)
        radii = knn_radii(support, k, max_bytes)
        return float(_by_rows(queries, support, lambda d: (d <= radii[None]).any(1), max_bytes).double().mean())

    return {"precision": inside(fake, real), "recall": inside(real, fake)}


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception Score from classifier logits (N, K) (Salimans et al. 2016) -> (mean, std) over splits.

        IS = exp(E_x KL(p(y|x) ‖ p(y))),  p(y) = mean of p(y|x) over the split

    It is 1 when every prediction is the same (or uniform) and K when predictions are confident and
    spread evenly over K classes. The samples are cut into `splits` consecutive chunks.
    """
    if logits.dim() != 2 or not 1 <= splits <= len(logits):
        raise ValueError(f"inception_score expects logits (N, K) and 1 ≤ splits ≤ N, got {tuple(logits.shape)} "
                         f"and splits={splits}")
    log_p = F.log_softmax(logits.double(), dim=1)                 # log p(y|x), (N, K)
    scores = []
    for chunk in torch.tensor_split(log_p, splits):
        log_py = torch.logsumexp(chunk, 0) - math.log(chunk.shape[0])     # log p(y) = log mean_x p(y|x)
        kl = (chunk.exp() * (chunk - log_py)).sum(1)                      # KL(p(y|x) ‖ p(y)) per sample
        scores.append(kl.mean().exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std()) if splits > 1 else 0.0


@torch.no_grad()
def extract_features(images: torch.Tensor, extractor: Callable[[torch.Tensor], torch.Tensor],
                     batch_size: int = 500) -> torch.Tensor:
    """Run `extractor` (images (B, 3, H, W) in [-1, 1] -> (B, D)) over images in batches -> (N, D) on the CPU."""
    return torch.cat([extractor(images[i:i + batch_size]).float().cpu() for i in range(0, len(images), batch_size)])


def metrics_from_features(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """FID, KID (mean, std), precision and recall of two feature sets (N1, D), (N2, D)."""
    kid, kid_std = kid_from_features(real, fake)
    return {"fid": fid_from_features(real, fake), "kid": kid, "kid_std": kid_std, **precision_recall(real, fake),
            "num_real": real.shape[0], "num_fake": fake.shape[0]}


# --- The noise of a measured number: what a finding must clear its bar by -----------------------------------


def binomial_interval(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (95 % with z = 1.96): (low, high). Unlike p ± z·√(p(1−p)/n) it
    stays inside [0, 1] and is not empty at k = 0 or k = n (Wilson 1927; Brown, Cai & DasGupta 2001)."""
    if n <= 0:
        raise ValueError(f"binomial_interval needs n ≥ 1 trials, got n = {n}")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_std(statistic: Callable[[torch.Tensor], float], n: int, n_boot: int = 200, seed: int = 0) -> float:
    """Standard deviation of statistic(idx) over n_boot resamples idx of range(n) drawn with replacement (Efron's
    bootstrap): the sampling noise of a number computed from n items (images, prompts). Seeded, CPU."""
    g = torch.Generator().manual_seed(seed)
    values = torch.tensor([float(statistic(torch.randint(0, n, (n,), generator=g))) for _ in range(n_boot)],
                          dtype=torch.float64)
    return float(values.std())
