"""How good is an autoencoder? Reconstruction metrics (LDM Tab. 8: PSNR, SSIM, rFID) and latent statistics.

All functions take images in [-1, 1], shape (B, 3, H, W), and return one value per image unless noted.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F

SSIM_WINDOW, SSIM_SIGMA = 11, 1.5     # Wang et al. 2004
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check_pair(x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"{what} expects two image batches of the same shape (B, C, H, W), "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """PSNR = 10·log10(R² / MSE) per image (B,), R = 2 for images in [-1, 1] (same as R = 1 on [0, 1])."""
    _check_pair(x, y, "psnr")
    mse = (x.double() - y.double()).pow(2).mean(dim=(1, 2, 3))
    return (10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-20))).float()


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalized 1-D Gaussian g(i) ∝ exp(−(i − c)² / 2σ²) over `size` taps."""
    i = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-i.pow(2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Mean SSIM per image (B,) (Wang et al. 2004): Gaussian window 11, σ 1.5, K1 0.01, K2 0.03, 'valid' windows.

        SSIM = (2·μx·μy + C1)(2·σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)),  C_i = (K_i·R)²

    computed per channel on local Gaussian-weighted statistics, averaged over positions and channels.
    SSIM is not shift-invariant (the C1 term), so images in [-1, 1] are first mapped to [0, 1] (R = 1),
    the usual convention.
    """
    _check_pair(x, y, "ssim")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"ssim needs images at least {window}×{window} for its window, got {tuple(x.shape[-2:])}")
    x, y = (x.double() + 1) / 2, (y.double() + 1) / 2             # [-1, 1] -> [0, 1]
    data_range = 1.0
    C = x.shape[1]
    g = _gaussian_window(window, sigma, x.dtype, x.device)
    kernel = (g[:, None] * g[None, :]).expand(C, 1, window, window)   # separable 2-D Gaussian, per channel

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=C)                      # (B, C, H, W) -> (B, C, H−10, W−10)

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
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

    See losses.LPIPS for how the pretrained backbone is found; with a random backbone the number is not a
    meaningful perceptual metric.
    """
    from .losses import LPIPS, _env_random_backbone

    rb = _env_random_backbone() if random_backbone is None else bool(random_backbone)
    key = (net, rb, x.device)
    if key not in _lpips_cache:
        _lpips_cache[key] = LPIPS(net, download=download, random_backbone=rb).to(x.device)
    with torch.no_grad():
        return _lpips_cache[key](x, y)


@torch.no_grad()
def latent_statistics(autoencoder: torch.nn.Module, batches: Iterable, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> dict[str, torch.Tensor | float]:
    """Per-channel mean/std of z = encode_latent(x) over `batches`, and scale_factor = 1/std(z) over all
    elements (the reference's `scale_by_std`, Sec. 4.3.2 / App. G). `batches` yields image tensors or dicts
    with an "image" key."""
    if device is None:
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
