"""Training the first stage: it learns, checkpoints round-trip, the wrong config or missing LPIPS weights are loud.

(Resume, the time cap and the NaN guard are tested for both stages in test_train.py.)"""

import pytest
import torch

from minildm import perceptual
from minildm.autoencoder import AEConfig, build_autoencoder, load_autoencoder
from minildm.data.datasets import ShapesDataset
from minildm.losses import AutoencoderLoss, LossConfig
from minildm.perceptual import LPIPSWeightsMissingError
from minildm.train.configs import AETrainConfig
from minildm.train.profiles import PROFILES
from minildm.train.stages import AE_CHECKPOINT as CHECKPOINT_NAME
from minildm.train.stages import train_autoencoder
from minildm.utils import load_checkpoint, save_checkpoint

CI = PROFILES["ci"]


def _profile(kind="kl", **train):
    base = dict(steps=4, val_every=2, batch_size=4, val_images=8)
    base.update(train)
    return CI.replace(ae={"kind": kind}, ae_loss={"disc_start": 1}, ae_train=base)


def _train(profile, out, **kw):
    return train_autoencoder(profile, out, device="cpu", random_lpips=True, lpips_download=False,
                             progress=False, **kw)


def test_a_few_steps_on_a_fixed_batch_lower_the_loss():
    torch.manual_seed(0)
    cfg = AEConfig(ch=8, ch_mult=(1, 2, 2), z_channels=4)
    ae = build_autoencoder(cfg)
    loss_fn = AutoencoderLoss(LossConfig(disc_start=10**6, lpips_net="alex"), lpips_download=False,
                              random_backbone=True)
    x = ShapesDataset("train", config=CI.data).batch(range(4))["image"]
    opt = torch.optim.Adam(ae.parameters(), lr=1e-3, betas=(0.5, 0.9))
    values = []
    for step in range(12):
        recon, post = ae(x)
        loss, _ = loss_fn.generator_loss(x, recon, post.kl(), step, ae.last_layer)
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < 0.6 * values[0]                          # measured: ≈ 0.35


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_checkpoint_round_trip_is_exact(tmp_path, kind):
    hist = _train(_profile(kind=kind, steps=2), tmp_path)["history"]
    assert [h["step"] for h in hist] == [1, 2] and "val_psnr" in hist[-1]
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME, kind="autoencoder")
    assert ckpt["config"]["kind"] == kind and ckpt["step"] == 2
    model = load_autoencoder(tmp_path / CHECKPOINT_NAME, device="cpu")
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k]), k
    assert model.config == CI.ae.__class__(**ckpt["config"]) and not model.training


@pytest.mark.slow
def test_loading_into_a_different_config_is_a_clear_error(tmp_path):
    profile = _profile(steps=2)
    _train(profile, tmp_path)
    with pytest.raises(ValueError, match=r"ch: checkpoint=8 current=16"):
        _train(profile.replace(ae={"ch": 16}), tmp_path)
    with pytest.raises(ValueError, match=r"z_channels: checkpoint=4 current=3"):
        load_autoencoder(tmp_path / CHECKPOINT_NAME, config=AEConfig(**{**profile.ae.__dict__, "z_channels": 3}))
    # a longer run of the same config resumes fine
    assert _train(profile.replace(ae_train={"steps": 3}), tmp_path)["step"] == 3


def test_a_checkpoint_with_the_configs_stored_together_still_loads_and_resumes(tmp_path):
    """Before the configs were split, "config" held the architecture, loss and training fields in one dict."""
    profile = _profile(steps=2)
    _train(profile, tmp_path)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME, kind="autoencoder")
    ckpt["config"] = {**ckpt.pop("config"), **ckpt.pop("loss_config"), **ckpt.pop("train_config")}
    assert {"lr", "disc_start", "z_channels"} <= set(ckpt["config"])
    save_checkpoint(ckpt, tmp_path / CHECKPOINT_NAME)
    assert load_autoencoder(tmp_path / CHECKPOINT_NAME, config=profile.ae).config == profile.ae
    with pytest.raises(ValueError, match=r"disc_weight: checkpoint=0.5 current=1.0"):    # not resumable: the loss
        _train(profile.replace(ae_loss={"disc_weight": 1.0}), tmp_path)
    with pytest.raises(ValueError, match=r"ch: checkpoint=8 current=16"):
        _train(profile.replace(ae={"ch": 16}), tmp_path)
    assert _train(profile.replace(ae_train={"steps": 3, "val_every": 3}), tmp_path)["step"] == 3


def test_missing_lpips_weights_stop_training_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(perceptual.RANDOM_BACKBONE_ENV, raising=False)
    with pytest.raises(LPIPSWeightsMissingError, match="alexnet-owt-7be5be79.pth"):
        train_autoencoder(_profile(), tmp_path / "run", device="cpu", random_lpips=None, lpips_download=False,
                          progress=False)


@pytest.mark.slow
def test_lr_decay_falls_linearly_to_zero_over_the_last_fraction_in_both_optimizers(tmp_path):
    # lr_decay 0.5 of 8 steps: full rate for steps 0-4, then (8 - k) / 4 of it: 0.75, 0.5, 0.25 (issue 15: the
    # cpu autoencoder's decay over its last 30 % gained ~1 dB validation PSNR at the same steps)
    lr = 1e-3
    out = _train(_profile(steps=8, lr=lr, lr_decay=0.5), tmp_path / "run")
    assert [r["lr"] / lr for r in out["history"]] == pytest.approx([1, 1, 1, 1, 1, 0.75, 0.5, 0.25])
    ckpt = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME, kind="autoencoder")
    for opt in ("opt_ae", "opt_d"):                              # the GAN is on from step 1: D decays too
        assert ckpt[opt]["param_groups"][0]["lr"] == pytest.approx(0.25 * lr)
    constant = _train(_profile(steps=3, lr=lr), tmp_path / "constant")             # the reference: lr_decay 0
    assert [r["lr"] for r in constant["history"]] == [lr] * 3
    with pytest.raises(ValueError, match="lr_decay"):
        AETrainConfig(lr_decay=1.0)
