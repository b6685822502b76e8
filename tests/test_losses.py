"""The autoencoder objective: LPIPS plumbing, PatchGAN, GAN losses, the adaptive weight, who gets gradients."""

import math
import urllib.error

import pytest
import torch
from torch import nn

from minildm import perceptual
from minildm.autoencoder import AEConfig, AutoencoderKL
from minildm.losses import (
    AutoencoderLoss,
    LossConfig,
    NLayerDiscriminator,
    adaptive_weight,
    generator_loss,
    hinge_d_loss,
    vanilla_d_loss,
)
from minildm.perceptual import LPIPS, LPIPSWeightsMissingError

SMALL = dict(ch=8, ch_mult=(1, 2), z_channels=3)
SMALL_LOSS = dict(disc_ndf=8, disc_layers=2, lpips_net="alex")


@pytest.fixture(scope="module")
def random_lpips():
    return LPIPS("alex", download=False, random_backbone=True)


# ---------------------------------------------------------------- GAN losses on known logits


def test_hinge_and_vanilla_on_known_logits():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # ½·(mean(relu(1 − [2, .5])) + mean(relu(1 + [−2, 0]))) = ½·(0.25 + 0.5)
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.375)
    sp = lambda v: math.log1p(math.exp(v))                       # softplus
    expected = 0.5 * ((sp(-2.0) + sp(-0.5)) / 2 + (sp(-2.0) + sp(0.0)) / 2)
    assert vanilla_d_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)
    assert generator_loss(torch.tensor([[1.0, 3.0]])).item() == pytest.approx(-2.0)


def test_adaptive_weight_matches_formula_on_toy_decoder():
    torch.manual_seed(0)
    W = torch.randn(3, 4, requires_grad=True)                    # the "last layer"
    a, b, t = torch.randn(4), torch.randn(4), torch.randn(3)
    rec = ((W @ a - t) ** 2).sum()                                # ∇_W rec = 2(Wa − t)aᵀ
    g = (W @ b).sum() * 0.5                                       # ∇_W g = ½·1bᵀ
    grad_rec = 2 * torch.outer((W @ a - t).detach(), a)
    grad_g = 0.5 * torch.outer(torch.ones(3), b)
    expected = 0.7 * grad_rec.norm() / (grad_g.norm() + 1e-4)
    lam = adaptive_weight(rec, g, W, disc_weight=0.7)
    assert not lam.requires_grad
    torch.testing.assert_close(lam, expected)
    # clamp at 1e4 when the GAN gradient vanishes
    lam0 = adaptive_weight(rec, (W * 0).sum(), W, disc_weight=1.0)
    assert lam0.item() == pytest.approx(1e4)


# ---------------------------------------------------------------- PatchGAN


def test_patchgan_layout_and_init():
    torch.manual_seed(0)
    d = NLayerDiscriminator(3, ndf=64, n_layers=3)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in d.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert all(c.kernel_size == (4, 4) and c.padding == (1, 1) for c in convs)
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert len(norms) == len(convs) - 2                           # BN after all but the first (and the output)
    assert all(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2
               for m in d.modules() if isinstance(m, nn.LeakyReLU))
    w = torch.cat([c.weight.flatten() for c in convs])
    assert abs(w.mean().item()) < 1e-3 and w.std().item() == pytest.approx(0.02, rel=0.02)
    nw = torch.cat([n.weight.flatten() for n in norms])
    assert nw.mean().item() == pytest.approx(1.0, abs=0.005) and nw.std().item() == pytest.approx(0.02, rel=0.15)
    assert d(torch.randn(2, 3, 32, 32)).shape == (2, 1, 2, 2)      # one logit per patch


# ---------------------------------------------------------------- who gets gradients


def _setup(random_lpips, disc_start=0):
    torch.manual_seed(0)
    cfg = LossConfig(disc_start=disc_start, **SMALL_LOSS)
    ae = AutoencoderKL(AEConfig(**SMALL))
    loss_fn = AutoencoderLoss(cfg, lpips_download=False, random_backbone=True)
    loss_fn.perceptual = random_lpips
    return cfg, ae, loss_fn, torch.rand(2, 3, 32, 32) * 2 - 1


def test_discriminator_step_leaves_autoencoder_untouched(random_lpips):
    _, ae, loss_fn, x = _setup(random_lpips)
    recon, _ = ae(x)
    d_loss, _ = loss_fn.discriminator_loss(x, recon)
    d_loss.backward()
    assert all(p.grad is None for p in ae.parameters())
    assert all(p.grad is not None for p in loss_fn.discriminator.parameters())


def test_generator_step_does_not_touch_the_discriminator(random_lpips):
    _, ae, loss_fn, x = _setup(random_lpips)
    before = {k: v.clone() for k, v in loss_fn.discriminator.state_dict().items()}
    recon, post = ae(x)
    loss, logs = loss_fn.generator_loss(x, recon, post.kl(), step=0, last_layer=ae.last_layer)
    loss.backward()
    assert logs["g"].item() != 0 and logs["d_weight"].item() > 0
    assert all(p.grad is None for p in loss_fn.discriminator.parameters())
    assert all(p.requires_grad for p in loss_fn.discriminator.parameters())    # unfrozen again
    assert all(torch.equal(v, before[k]) for k, v in loss_fn.discriminator.state_dict().items())
    assert all(p.grad is not None for p in ae.parameters())


def test_gan_terms_are_zero_before_disc_start(random_lpips):
    cfg, ae, loss_fn, x = _setup(random_lpips, disc_start=5)
    recon, post = ae(x)
    loss, logs = loss_fn.generator_loss(x, recon, post.kl(), step=4, last_layer=ae.last_layer)
    assert logs["g"].item() == 0 and logs["d_weight"].item() == 0 and not loss_fn.gan_active(4)
    # loss = Σ_CHW(|x − x̃| + w_p·LPIPS)/B + w_kl·mean KL, computed independently
    p = random_lpips(x, recon).detach()
    rec = ((x - recon).abs() + cfg.perceptual_weight * p.view(-1, 1, 1, 1)).sum() / x.shape[0]
    torch.testing.assert_close(loss, rec + cfg.kl_weight * post.kl().mean())
    assert loss_fn.gan_active(5)


# ---------------------------------------------------------------- LPIPS


def test_lpips_zero_on_identical_positive_otherwise_grad_to_input(random_lpips):
    torch.manual_seed(0)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_()
    assert torch.all(random_lpips(x, x) == 0)
    d = random_lpips(x, y)
    assert d.shape == (3,) and torch.all(d > 0)
    d.sum().backward()
    assert y.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in random_lpips.parameters())
    random_lpips.train()
    assert not random_lpips.model.training                       # stays in eval mode


def test_lpips_is_fp32_under_autocast(random_lpips):
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = random_lpips(x.bfloat16(), y.bfloat16())
    assert d.dtype == torch.float32
    torch.testing.assert_close(d, random_lpips(x.bfloat16().float(), y.bfloat16().float()))


def test_missing_pretrained_weights_give_a_helpful_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(perceptual.RANDOM_BACKBONE_ENV, raising=False)
    with pytest.raises(LPIPSWeightsMissingError) as e:
        LPIPS("vgg", download=False)
    msg = str(e.value)
    assert "vgg16-397923af.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "random_backbone=True" in msg and perceptual.RANDOM_BACKBONE_ENV in msg

    def offline(net, path):
        raise urllib.error.URLError("no network in tests")
    monkeypatch.setattr(perceptual, "_download_backbone", offline)
    with pytest.raises(LPIPSWeightsMissingError, match="download failed: URLError"):
        LPIPS("alex", download=True)


def test_random_backbone_opt_in_by_env_prints_one_notice(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(perceptual.RANDOM_BACKBONE_ENV, "1")
    monkeypatch.setattr(perceptual, "_random_notice_shown", set())
    a, b = LPIPS("alex", download=False), LPIPS("alex", download=False)
    out = capsys.readouterr().out
    assert out.count("RANDOM alex backbone") == 1 and "NOT a meaningful" in out
    assert a.random_backbone and torch.equal(a.model.net.slice1[0].weight, b.model.net.slice1[0].weight)


@pytest.mark.slow
def test_pretrained_backbone_file_is_loaded_into_the_trunk(tmp_path, monkeypatch):
    from torchvision import models as tv

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(123)
    state = tv.alexnet(weights=None).state_dict()
    path = perceptual.backbone_path("alex")
    assert path == tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    m = LPIPS("alex", download=False, random_backbone=False)
    trunk = m.model.net
    assert torch.equal(trunk.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(getattr(trunk.slice5, "10").bias, state["features.10.bias"])
    assert not m.random_backbone
