"""Reconstruction metrics against closed forms and an independent float64 implementation."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from minildm.eval.metrics import latent_statistics, lpips, psnr, ssim


def test_psnr_closed_form():
    x = torch.rand(2, 3, 8, 8) * 1.6 - 0.8
    y = x + torch.tensor([0.1, 0.02]).view(2, 1, 1, 1)             # MSE = c²
    expected = torch.tensor([10 * math.log10(4 / 0.1**2), 10 * math.log10(4 / 0.02**2)])
    torch.testing.assert_close(psnr(x, y), expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, y[:1])


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 written out with explicit windows in float64 (images in [0, 1], one image (C, H, W))."""
    i = np.arange(11) - 5
    g = np.exp(-(i**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for c in range(x.shape[0]):
        for r in range(x.shape[1] - 10):
            for s in range(x.shape[2] - 10):
                a, b = x[c, r:r + 11, s:s + 11], y[c, r:r + 11, s:s + 11]
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
                cov = (w * (a - ma) * (b - mb)).sum()
                vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_independent_float64_implementation():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 14, 15) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    got = ssim(x, y)
    for k in range(2):
        ref = _ssim_reference(((x[k] + 1) / 2).double().numpy(), ((y[k] + 1) / 2).double().numpy())
        assert got[k].item() == pytest.approx(ref, abs=1e-6)


def test_ssim_identity_and_constant_images_closed_form():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    # constant images a, b (in [0, 1]): σ = 0, so SSIM = (2ab + C1)/(a² + b² + C1)
    a, b = 0.2, 0.7
    xa, yb = torch.full((1, 3, 12, 12), 2 * a - 1), torch.full((1, 3, 12, 12), 2 * b - 1)
    c1 = 0.01**2
    assert ssim(xa, yb).item() == pytest.approx((2 * a * b + c1) / (a**2 + b**2 + c1), rel=1e-6)
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_lpips_wrapper_random_backbone():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.all(lpips(x, x, net="alex", download=False, random_backbone=True) == 0)
    assert torch.all(lpips(x, -x, net="alex", download=False, random_backbone=True) > 0)


class _AffineEncoder(nn.Module):
    """A stand-in autoencoder whose latent is a known affine map of the image."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([2.0, 0.5, 1.0]))

    def encode_latent(self, x, generator=None):
        return x * self.w.view(1, 3, 1, 1) + torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1)


def test_latent_statistics_per_channel_and_scale_factor():
    torch.manual_seed(0)
    batches = [torch.randn(4, 3, 5, 5) for _ in range(3)]
    ae = _AffineEncoder()
    stats = latent_statistics(ae, [{"image": b} for b in batches[:2]] + batches[2:])
    z = torch.cat([ae.encode_latent(b) for b in batches]).detach().double()
    per_c = z.transpose(0, 1).flatten(1)
    torch.testing.assert_close(stats["mean"], per_c.mean(1).float())
    torch.testing.assert_close(stats["std"], per_c.std(1).float())
    assert stats["scale_factor"] == pytest.approx(1.0 / z.flatten().std().item(), rel=1e-9)
    with pytest.raises(ValueError, match="no batches"):
        latent_statistics(ae, [])
