"""What notebooks 01 (perceptual compression) and 02 (the latent space) need from the package: the baseline at an
equal number of values (side_for_values, bicubic_roundtrip), the evaluator's "is this a scene?" reading
(readable_scenes), the scale factor two ways, the exercises' formulas against the package, and the messages
a student sees for bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from minildm.autoencoder import AEConfig, build_autoencoder
from minildm.eval.accuracy import real_images
from minildm.eval.judge import predict_cells, readable_scenes
from minildm.eval.metrics import (
    bicubic_roundtrip,
    latent_statistics,
    peak_in_boxes,
    psnr,
    radial_power_spectrum,
    side_for_values,
)
from minildm.ldm import LatentDiffusion, LDMConfig
from minildm.losses import adaptive_weight, hinge_d_loss
from minildm.utils import slerp

TINY = AEConfig(ch=8, ch_mult=(1, 2, 2), z_channels=4)


# ------------------------------------------------------------------------------ equal-size baseline


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


# ------------------------------------------------------------------------------ the evaluator's reading


def test_real_scenes_are_readable_and_noise_is_not():
    x = real_images(200)
    assert readable_scenes(predict_cells(x)).float().mean() > 0.97
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(200, 3, 32, 32, generator=g) * 2 - 1
    blobs = F.interpolate(torch.rand(200, 3, 8, 8, generator=g) * 2 - 1, size=32, mode="bilinear")
    assert readable_scenes(predict_cells(noise)).float().mean() < 0.05
    assert readable_scenes(predict_cells(blobs)).float().mean() < 0.1


def test_readable_scenes_follows_its_definition():
    """Hand-made readings: one confident object is readable; an unsure cell, a third object, or an unsure
    color is not."""
    logits = torch.full((4, 9, 13), -10.0)                 # all cells confidently empty, attributes uniform
    logits[:, 4, 0] = 10.0                                 # one object in the centre …
    logits[:, 4, 1], logits[:, 4, 5], logits[:, 4, 11] = 10.0, 10.0, 10.0   # … with a sure shape, color, size
    logits[1, 0, 0] = 0.0                                  # image 1: a cell at p = 0.5
    logits[2, [0, 1], 0] = 10.0                            # image 2: three objects (attributes uniform, too)
    logits[3, 4, 5] = -10.0                                # image 3: the color is a coin toss
    p = logits[..., 0].sigmoid()
    cells = {"p_occupied": p, "occupied": p > 0.5, "logits": logits}
    assert readable_scenes(cells).tolist() == [True, False, False, False]
    assert readable_scenes(cells, max_objects=4, confidence=0.6).tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="confidence"):
        readable_scenes(cells, confidence=0.3)


# ------------------------------------------------------------------------------ scale factor, slerp


def test_scale_factor_by_hand_by_latent_statistics_and_by_the_ldm_agree():
    torch.manual_seed(0)
    ae = build_autoencoder(TINY).eval()
    x = real_images(16)
    stats = latent_statistics(ae, [x], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        z = ae.encode(x).sample(torch.Generator().manual_seed(3))                 # z = μ + σ·ε
    assert stats["scale_factor"] == pytest.approx(1 / float(z.std()), rel=1e-5)
    ldm = LatentDiffusion(ae, LDMConfig(cond="none", model_channels=16, channel_mult=(1, 2), num_heads=2))
    scale = ldm.set_scale_factor(x, torch.Generator().manual_seed(3))
    assert scale == pytest.approx(stats["scale_factor"], rel=1e-5)
    assert float((z * scale).std()) == pytest.approx(1.0, abs=1e-5)


def test_slerp_by_its_formula():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = 0.3
    fa, fb = a.flatten(1), b.flatten(1)
    omega = torch.acos((fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)))
    mine = (torch.sin((1 - t) * omega)[:, None] * fa + torch.sin(t * omega)[:, None] * fb) / torch.sin(omega)[:, None]
    assert torch.allclose(slerp(a, b, t), mine.view_as(a), atol=1e-5)


# ------------------------------------------------------------------------------ the GAN's two formulas


def test_hinge_loss_and_adaptive_weight_by_hand():
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(4, 1, 3, 3, generator=g), torch.randn(4, 1, 3, 3, generator=g)
    by_hand = 0.5 * (torch.clamp(1 - real, min=0).mean() + torch.clamp(1 + fake, min=0).mean())
    assert torch.allclose(hinge_d_loss(real, fake), by_hand)
    w = torch.randn(3, 5, generator=g, requires_grad=True)
    inp = torch.randn(7, 3, generator=g)
    out = inp @ w
    rec, gan = out.abs().sum(), -(out**2).mean()
    gr, = torch.autograd.grad(rec, w, retain_graph=True)
    gg, = torch.autograd.grad(gan, w, retain_graph=True)
    lam = (gr.norm() / (gg.norm() + 1e-4)).clamp(0, 1e4) * 0.5
    assert torch.allclose(adaptive_weight(rec, gan, w, 0.5), lam)


# ------------------------------------------------------------------------------ bad input a student will type


def test_messages_for_bad_input():
    ae = build_autoencoder(TINY).eval()
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\), got \(1, 3, 8, 8\); an image\? encode it first"):
        ae.decode(torch.randn(1, 3, 8, 8))                  # an image where a latent belongs
    with pytest.raises(ValueError, match=r"batch dimension"):
        ae.decode(torch.randn(4, 8, 8))
    with pytest.raises(ValueError, match="not divisible by the autoencoder's downsampling factor f=4; use 28 or 32"):
        ae.encode(torch.zeros(1, 3, 30, 30))
    with pytest.raises(ValueError, match="pixel_loss must be 'l1' or 'l2'"):
        AEConfig(pixel_loss="l3")
    with torch.no_grad():
        assert math.isfinite(float(ae.decode(torch.randn(1, 4, 8, 8)).mean()))


# ------------------------------------------------------------------------------ LPIPS built once, copied after


def test_lpips_instances_are_copies_of_one_build_equal_but_independent():
    from minildm.perceptual import LPIPS

    a, b = LPIPS("alex", download=False, random_backbone=True), LPIPS("alex", download=False, random_backbone=True)
    x, y = real_images(2), real_images(2, start=2)
    assert torch.equal(a(x, y), b(x, y))
    wa, wb = a.model.net.slice1[0].weight, b.model.net.slice1[0].weight
    assert wa.data_ptr() != wb.data_ptr()                   # no shared storage: changing one leaves the other
    with torch.no_grad():
        wa.add_(1.0)
    assert not torch.equal(wa, wb) and not any(p.requires_grad for p in b.parameters())


# ------------------------------------------------------------------------------ where a map peaks


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
