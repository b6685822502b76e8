"""Reconstruction metrics against closed forms and an independent float64 implementation; the bicubic baseline
at an equal number of values, and where a map peaks."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from minildm.eval.accuracy import real_images
from minildm.eval.metrics import (
    bicubic_roundtrip,
    latent_statistics,
    lpips,
    peak_in_boxes,
    psnr,
    radial_power_spectrum,
    side_for_values,
    ssim,
)


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


# --- the baseline at an equal number of values, and where a map peaks (notebook 02) ---------------------------


@pytest.mark.parametrize("values, channels, side", [(256, 3, 9), (243, 3, 9), (242, 3, 8), (3, 3, 1), (768, 3, 16),
                                                    (64, 1, 8)])
def test_side_for_values_is_the_largest_image_that_fits(values, channels, side):
    assert side_for_values(values, channels) == side
    assert channels * side**2 <= values < channels * (side + 1) ** 2

def test_side_for_values_rejects_too_few_values():
    with pytest.raises(ValueError, match="values ≥ channels"):
        side_for_values(2, 3)

def test_bicubic_roundtrip_keeps_the_size_is_exact_at_full_size_and_loses_more_when_smaller():
    x = real_images(16)
    assert torch.allclose(bicubic_roundtrip(x, 32), x, atol=1e-5)               # nothing to compress
    quality = [float(psnr(x, bicubic_roundtrip(x, s)).mean()) for s in (4, 8, 16)]
    assert quality[0] < quality[1] < quality[2]
    y = bicubic_roundtrip(x, 9)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    with pytest.raises(ValueError, match="side must be between 1 and"):
        bicubic_roundtrip(x, 33)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        bicubic_roundtrip(x[:, :1], 8)

def test_bicubic_roundtrip_blurs_high_frequencies():
    x = real_images(32)
    f, p = radial_power_spectrum(x)
    _, pb = radial_power_spectrum(bicubic_roundtrip(x, 9))
    assert (pb[f > 0.3] < 0.2 * p[f > 0.3]).all()                                 # above 9/32/2 cycles: gone

def test_peak_in_boxes_by_hand():
    maps = torch.zeros(3, 4, 4)
    maps[0, 0, 0] = 1.0                                    # cell centre (1/8, 1/8)
    maps[1, 3, 2] = 1.0                                    # (5/8, 7/8)
    maps[2, 3, 2] = 1.0
    boxes = torch.tensor([[[0.0, 0.0, 0.25, 0.25], [-1, -1, -1, -1]],
                          [[0.0, 0.0, 0.25, 0.25], [0.5, 0.75, 0.75, 1.0]],
                          [[-1, -1, -1, -1], [0.0, 0.0, 1.0, 1.0]]])
    boxes[2, 1] = torch.tensor([0.0, 0.0, 0.5, 0.5])        # the peak (5/8, 7/8) is outside
    assert peak_in_boxes(maps, boxes).tolist() == [True, True, False]
    with pytest.raises(ValueError, match=r"maps \(N, h, w\) and boxes \(N, K, 4\)"):
        peak_in_boxes(maps, boxes[:2])

def test_random_maps_peak_in_boxes_at_the_covered_share():
    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5]]]).expand(4000, 1, 4)      # a quarter of an 8×8 grid
    share = float(peak_in_boxes(torch.rand(4000, 8, 8, generator=g), boxes).float().mean())
    assert abs(share - 0.25) < 0.03


# --------------------------------------------------------------------------- blur and colour on Shapes scenes


def _square_scene(blur: int = 0, shift: float = 0.0):
    """One 16×16 image: a red square (segmentation 1) on black, optionally box-blurred or colour-shifted."""
    img = torch.full((1, 3, 16, 16), -1.0)
    img[0, 0, 4:12, 4:12] = 1.0                                          # red channel of the square at +1
    seg = torch.zeros(1, 16, 16, dtype=torch.long)
    seg[0, 4:12, 4:12] = 1
    out = img.clone()
    if blur:
        out = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(img, (blur,) * 4, mode="replicate"),
                                             2 * blur + 1, stride=1)
    out[:, 1] += 2 * shift                                               # green up by `shift` in [0, 1] units
    return out, img, seg


def test_edge_sharpness_is_one_for_a_copy_and_falls_with_blur():
    from minildm.eval.metrics import edge_sharpness
    same, img, seg = _square_scene()
    assert float(edge_sharpness(same, img, seg)) == pytest.approx(1.0)
    b1, _, _ = _square_scene(blur=1)
    b2, _, _ = _square_scene(blur=2)
    s1, s2 = float(edge_sharpness(b1, img, seg)), float(edge_sharpness(b2, img, seg))
    # a 3-pixel box blur turns a unit step into thirds: each boundary pixel's difference drops to about 1/3
    assert s2 < s1 < 0.5 and s1 == pytest.approx(1 / 3, abs=0.1)


def test_object_color_error_sees_a_colour_shift_and_not_a_blur():
    from minildm.eval.metrics import object_color_error
    shifted, img, seg = _square_scene(shift=0.25)
    assert float(object_color_error(shifted, img, seg)) == pytest.approx(0.25, abs=1e-9)   # ‖(0, 0.25, 0)‖
    blurred, _, _ = _square_scene(blur=1)
    assert float(object_color_error(blurred, img, seg)) < 0.1          # the interior (eroded by 1) barely moves
