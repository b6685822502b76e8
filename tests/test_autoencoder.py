"""The first stage's claims: shapes for every f, the Gaussian posterior's KL, the VQ straight-through path."""

import dataclasses

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from minildm.autoencoder import (
    AEConfig,
    AutoencoderKL,
    AutoencoderVQ,
    DiagonalGaussian,
    Downsample,
    VectorQuantizer,
    CHECKPOINT_KIND,
    build_autoencoder,
    load_autoencoder,
)
from minildm.train.profiles import PROFILES
from minildm.utils import save_checkpoint

TINY = dict(ch=8, num_res_blocks=1, z_channels=3)


@pytest.mark.parametrize("kind", ["kl", "vq"])
@pytest.mark.parametrize("ch_mult,f", [((1,), 1), ((1, 2), 2), ((1, 2, 2), 4), ((1, 1, 2, 2), 8)])
def test_shapes_for_every_f(kind, ch_mult, f):
    torch.manual_seed(0)
    m = build_autoencoder(AEConfig(kind=kind, ch_mult=ch_mult, attn_resolutions=(f,), n_embed=16, **TINY))
    assert m.downsample_factor == f == m.config.downsample_factor
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    z = m.encode_latent(x)
    assert z.shape == (2, 3, 16 // f, 24 // f) and m.z_channels == 3
    assert m.decode(z).shape == x.shape
    out = m(x)
    assert out[0].shape == x.shape


def test_f16_shapes():
    m = build_autoencoder(AEConfig(ch_mult=(1, 1, 1, 1, 1), **TINY))
    assert m.downsample_factor == 16
    assert m.encode_latent(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 2, 2)


def test_bad_config_errors():
    with pytest.raises(ValueError, match="kind"):
        AEConfig(kind="vae")
    with pytest.raises(ValueError, match="factors, not pixel sizes"):
        build_autoencoder(AEConfig(ch_mult=(1, 2), attn_resolutions=(32,), **TINY))


def test_load_autoencoder_rebuilds_from_its_config_and_refuses_another_architecture(tmp_path):
    torch.manual_seed(0)
    config = AEConfig(ch_mult=(1, 2), **TINY)
    model = build_autoencoder(config)
    old_style = {**dataclasses.asdict(config), "steps": 1, "lr": 1e-3, "disc_start": 5}   # before the configs were split
    save_checkpoint({"kind": CHECKPOINT_KIND, "config": old_style, "state_dict": model.state_dict()}, tmp_path / "ae.pt")
    loaded = load_autoencoder(tmp_path / "ae.pt", "cpu", config=config)
    assert loaded.config == config
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(ValueError, match=r"z_channels: checkpoint=3 current=4"):
        load_autoencoder(tmp_path / "ae.pt", config=dataclasses.replace(config, z_channels=4))


def test_downsample_is_asymmetric_pad_then_stride2_conv():
    d = Downsample(2)
    x = torch.randn(1, 2, 8, 10)
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 1, 0, 1)), d.conv.weight, d.conv.bias, stride=2)
    assert torch.equal(d(x), ref) and ref.shape[-2:] == (4, 5)


def test_profile_latent_is_8x8x4_at_32():
    for name in ("ci", "cpu", "gpu"):
        cfg = PROFILES[name].ae
        assert cfg.downsample_factor == 4 and cfg.z_channels == 4


# ---------------------------------------------------------------- KL


def test_kl_matches_torch_distributions():
    torch.manual_seed(1)
    moments = torch.randn(3, 8, 4, 5, dtype=torch.float64) * 2
    post = DiagonalGaussian(moments)
    mu, logvar = moments[:, :4], moments[:, 4:]
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(dim=(1, 2, 3))
    assert post.kl().shape == (3,)
    torch.testing.assert_close(post.kl(), expected, rtol=1e-10, atol=1e-10)


def test_logvar_is_clamped():
    moments = torch.cat([torch.zeros(1, 1, 2, 2), torch.tensor([-100.0, 100.0, 0.0, 5.0]).view(1, 1, 2, 2)], 1)
    post = DiagonalGaussian(moments)
    assert post.logvar.flatten().tolist() == [-30.0, 20.0, 0.0, 5.0]


def test_seeded_sampling_is_reproducible_and_mode_is_mean():
    post = DiagonalGaussian(torch.randn(2, 6, 3, 3))
    a = post.sample(torch.Generator().manual_seed(7))
    b = post.sample(torch.Generator().manual_seed(7))
    c = post.sample(torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(post.mode(), post.mean)
    # z = μ + σ·ε with the generator's ε
    eps = torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, post.mean + post.std * eps)


def test_encode_latent_kl_is_a_posterior_sample():
    torch.manual_seed(0)
    m = AutoencoderKL(AEConfig(ch_mult=(1, 2), **TINY)).eval()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    z1 = m.encode_latent(x, torch.Generator().manual_seed(3))
    z2 = m.encode_latent(x, torch.Generator().manual_seed(3))
    assert torch.equal(z1, z2) and not torch.equal(z1, m.encode(x).mode())
    recon, post = m(x, sample_posterior=False)
    assert torch.equal(recon, m.decode(post.mean))


# ---------------------------------------------------------------- VQ


def test_vq_nearest_code_and_index_range():
    torch.manual_seed(0)
    vq = VectorQuantizer(n_embed=10, dim=3)
    lo, hi = vq.embedding.weight.min(), vq.embedding.weight.max()
    assert -0.1 <= lo and hi <= 0.1                               # U(−1/n, 1/n)
    z = torch.randn(2, 3, 4, 5) * 0.1
    zq, _, info = vq(z)
    idx = info["indices"]
    assert idx.shape == (2, 4, 5) and idx.min() >= 0 and idx.max() < 10
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3).double()
    brute = torch.cdist(flat, vq.embedding.weight.double()).argmin(1)
    assert torch.equal(idx.flatten(), brute)
    torch.testing.assert_close(zq, vq.embedding.weight[idx].permute(0, 3, 1, 2))


def test_vq_loss_has_beta_on_the_commitment_term():
    """L = ‖sg[z] − e‖² + β‖z − sg[e]‖²: ∂L/∂z = β·2(z − e)/N, ∂L/∂e_k = Σ_{i→k} 2(e_k − z_i)/N."""
    torch.manual_seed(0)
    vq = VectorQuantizer(n_embed=6, dim=2, beta=0.25)
    z = (torch.randn(1, 2, 3, 3) * 0.2).requires_grad_()
    _, loss, info = vq(z)
    loss.backward()
    e = vq.embedding.weight.detach()[info["indices"]].permute(0, 3, 1, 2)
    N = z.numel()
    torch.testing.assert_close(loss, (1 + 0.25) * ((z.detach() - e) ** 2).mean())
    torch.testing.assert_close(z.grad, 0.25 * 2 * (z.detach() - e) / N)
    expected = torch.zeros(6, 2)
    zi = z.detach().permute(0, 2, 3, 1).reshape(-1, 2)
    for i, k in enumerate(info["indices"].flatten().tolist()):
        expected[k] += 2 * (vq.embedding.weight.detach()[k] - zi[i]) / N
    torch.testing.assert_close(vq.embedding.weight.grad, expected)


def test_vq_gradients_encoder_via_straight_through_codebook_via_vq_loss():
    torch.manual_seed(0)
    m = AutoencoderVQ(AEConfig(kind="vq", ch_mult=(1, 2), n_embed=8, **TINY))
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    recon, vq_loss, _ = m(x)
    recon.abs().mean().backward(retain_graph=True)                # reconstruction only
    assert m.encoder.conv_in.weight.grad.abs().sum() > 0           # straight-through reaches the encoder
    assert m.quantize.embedding.weight.grad is None                # the codebook is not moved by rec. loss
    m.zero_grad(set_to_none=True)
    vq_loss.backward()
    assert m.quantize.embedding.weight.grad.abs().sum() > 0        # ... but by the codebook term
    assert m.encoder.conv_in.weight.grad.abs().sum() > 0           # and the commitment term moves E


def test_vq_diffusion_latent_is_pre_quantization_and_decode_quantizes():
    torch.manual_seed(0)
    m = AutoencoderVQ(AEConfig(kind="vq", ch_mult=(1, 2), n_embed=8, **TINY)).eval()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    h = m.encode_latent(x)
    assert torch.equal(h, m.encode(x))
    zq, _, _ = m.quantize(h)
    assert not torch.equal(zq, h)
    torch.testing.assert_close(m.decode(h), m.decode(zq, force_not_quantize=True))
    torch.testing.assert_close(m(x)[0], m.decode(h))


def test_perplexity_and_usage():
    vq = VectorQuantizer(n_embed=8, dim=2)
    same = vq.code_statistics(torch.zeros(4, 2, 2, dtype=torch.long))
    assert same["perplexity"].item() == pytest.approx(1.0) and same["usage"].item() == pytest.approx(1 / 8)
    uniform = vq.code_statistics(torch.arange(8).view(2, 2, 2))
    assert uniform["perplexity"].item() == pytest.approx(8.0) and uniform["usage"].item() == 1.0


def test_config_is_kept_on_the_model():
    cfg = dataclasses.replace(AEConfig(**TINY), kind="vq")
    m = build_autoencoder(cfg)
    assert m.config is cfg and isinstance(m, AutoencoderVQ)


def test_posterior_is_fp32_for_half_precision_moments():
    post = DiagonalGaussian(torch.randn(1, 4, 2, 2).bfloat16())
    assert post.mean.dtype == post.kl().dtype == torch.float32


def test_pixel_space_is_the_identity_first_stage():
    """f = 1 (the paper's LDM-1): encode and decode are the identity, nothing to train."""
    from minildm.autoencoder import AEConfig, PixelSpace, build_autoencoder
    from minildm.train.stages import train_autoencoder

    ps = build_autoencoder(AEConfig(kind="pixel", ch_mult=(1,), z_channels=3))
    assert isinstance(ps, PixelSpace) and ps.downsample_factor == 1 and ps.z_channels == 3
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(ps.decode(ps.encode(x)), x)
    assert sum(p.numel() for p in ps.parameters()) == 0
    with pytest.raises(ValueError, match="z_channels=3"):
        build_autoencoder(AEConfig(kind="pixel", ch_mult=(1,), z_channels=4))
    with pytest.raises(ValueError, match="nothing to train"):
        train_autoencoder(AEConfig(kind="pixel", ch_mult=(1,), z_channels=3), "/nonexistent")


def test_an_image_size_that_f_does_not_divide_is_a_clear_error():
    """Strided convolutions would silently crop a 30×30 image; encode says so and how to fix it."""
    ae = build_autoencoder(AEConfig(ch=8, ch_mult=(1, 2, 2), z_channels=4))
    with pytest.raises(ValueError, match=r"not divisible by the autoencoder's downsampling factor f=4.*e\.g\. 28"):
        ae.encode(torch.zeros(1, 3, 30, 30))
    assert ae.encode(torch.zeros(1, 3, 32, 32)).mean.shape == (1, 4, 8, 8)
