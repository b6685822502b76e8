"""The first stage as notebooks 01 and 02 use it: the scale factor measured three ways, and LPIPS built once
and copied."""

import pytest
import torch

from minildm.autoencoder import AEConfig, build_autoencoder
from minildm.eval.accuracy import real_images
from minildm.eval.metrics import latent_statistics
from minildm.ldm import LatentDiffusion, LDMConfig
from minildm.perceptual import LPIPS

TINY = AEConfig(ch=8, ch_mult=(1, 2, 2), z_channels=4)


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


def test_lpips_instances_are_copies_of_one_build_equal_but_independent():
    a, b = LPIPS("alex", download=False, random_backbone=True), LPIPS("alex", download=False, random_backbone=True)
    x, y = real_images(2), real_images(2, start=2)
    assert torch.equal(a(x, y), b(x, y))
    wa, wb = a.model.net.slice1[0].weight, b.model.net.slice1[0].weight
    assert wa.data_ptr() != wb.data_ptr()                   # no shared storage: changing one leaves the other
    with torch.no_grad():
        wa.add_(1.0)
    assert not torch.equal(wa, wb) and not any(p.requires_grad for p in b.parameters())
