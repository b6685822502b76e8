"""The training loops of both stages and the chores they share (train.loop.Run): resume, time cap, NaN guard, safe
checkpoints, callback.

Each test runs once per stage of the paper: the autoencoder (first stage) and the latent diffusion model
(second stage), through the package's own train_autoencoder / train_ldm.
"""

import time

import pytest
import torch

from minildm.autoencoder import build_autoencoder
from minildm.course.viz import SampleGrids
from minildm.ldm import LatentDiffusion
from minildm.losses import AutoencoderLoss
from minildm.train.loop import Run
from minildm.train.profiles import get_profile
from minildm.train.stages import AE_CHECKPOINT, LDM_CHECKPOINT, NonFiniteLossError, train_autoencoder, train_ldm
from minildm.utils import UnsafeWeightsError, load_checkpoint

STAGES = ("autoencoder", "ldm")
CI = get_profile("ci")
# short runs with a checkpoint every 2 steps (the autoencoder validates at the same steps)
PROFILE = CI.replace(ae_train=dict(steps=6, val_every=2, batch_size=4, val_images=8, ema_decay=0.9),
                     ae_loss=dict(disc_start=1), ldm_train=dict(steps=6, checkpoint_every=2, batch_size=4, cache_size=32))


def run(stage, out, ae_path, profile=PROFILE, **kw):
    kw.setdefault("progress", False)
    if stage == "autoencoder":
        return train_autoencoder(profile, out, device="cpu", random_lpips=True, lpips_download=False, **kw)
    return train_ldm(profile, ae_path, out, device="cpu", **kw)


def checkpoint_of(stage, out):
    return load_checkpoint(out / (AE_CHECKPOINT if stage == "autoencoder" else LDM_CHECKPOINT))


def poison(monkeypatch, stage, at_step, how):
    """Make the loss of 0-based step `at_step` NaN ("loss") or give it an infinite gradient ("grad")."""

    class InfGrad(torch.autograd.Function):   # value 0, gradient +inf: a finite loss, a broken update
        @staticmethod
        def forward(ctx, p):
            ctx.shape = p.shape
            return p.new_zeros(())

        @staticmethod
        def backward(ctx, g):
            return torch.full(ctx.shape, float("inf"))

    def spoil(loss, param):
        return loss * float("nan") if how == "loss" else loss + InfGrad.apply(param)

    if stage == "autoencoder":
        real = AutoencoderLoss.generator_loss

        def generator_loss(self, x, recon, reg, step, last_layer):
            loss, logs = real(self, x, recon, reg, step, last_layer)
            return (spoil(loss, last_layer) if step == at_step else loss), logs

        monkeypatch.setattr(AutoencoderLoss, "generator_loss", generator_loss)
    else:
        real_loss, calls = LatentDiffusion.training_step, []          # one call per step: the k-th is step k

        def training_step(self, z0, raw, generator=None, rows=None, **kw):
            loss = real_loss(self, z0, raw, generator, rows, **kw)
            calls.append(1)
            return spoil(loss, next(self.unet.parameters())) if len(calls) - 1 == at_step else loss

        monkeypatch.setattr(LatentDiffusion, "training_step", training_step)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.slow
def test_resume_is_bit_identical_to_an_uninterrupted_run(stage, tmp_path, ae_path):
    full = run(stage, tmp_path / "full", ae_path)
    first = run(stage, tmp_path / "split", ae_path, steps=3)
    assert first["step"] == 3 and not first["stopped_early"]
    rest = run(stage, tmp_path / "split", ae_path)
    assert rest["step"] == full["step"] == 6
    # every loss of every step, to the last bit (the split run also validated at its stop, step 3)
    drop_eval = lambda history: [{k: v for k, v in h.items() if k != "val_psnr"} for h in history]  # noqa: E731
    assert drop_eval(rest["history"]) == drop_eval(full["history"])
    a, b = checkpoint_of(stage, tmp_path / "full"), checkpoint_of(stage, tmp_path / "split")
    for key in ("state_dict", "ema"):
        sa = a[key]["shadow"] if key == "ema" else a[key]
        sb = b[key]["shadow"] if key == "ema" else b[key]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), key
    if stage == "autoencoder":
        assert any("d_loss" in h for h in full["history"]) and "val_psnr" in full["history"][-1]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.slow
def test_time_cap_stops_early_with_a_checkpoint(stage, tmp_path, ae_path):
    def slow(step, record, run_):
        time.sleep(0.05)

    r = run(stage, tmp_path, ae_path, steps=10_000, max_minutes=0.2 / 60, callback=slow)
    assert r["stopped_early"] and 1 <= r["step"] < 100
    assert checkpoint_of(stage, tmp_path)["step"] == r["step"]
    if stage == "autoencoder":                                    # the cap's last step is still validated
        assert "val_psnr" in r["history"][-1]


@pytest.mark.parametrize("stage", STAGES)
def test_nan_loss_stops_before_the_update_and_names_the_last_checkpoint(stage, tmp_path, ae_path, monkeypatch):
    poison(monkeypatch, stage, at_step=3, how="loss")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3: loss=nan.*last checkpoint \(step 2\)"):
        run(stage, tmp_path, ae_path)
    ckpt = checkpoint_of(stage, tmp_path)
    assert ckpt["step"] == 2 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


@pytest.mark.parametrize("stage", STAGES)
def test_nan_loss_before_any_checkpoint_says_none_was_written(stage, tmp_path, ae_path, monkeypatch):
    poison(monkeypatch, stage, at_step=0, how="loss")
    with pytest.raises(NonFiniteLossError, match="step 0.*no checkpoint was written"):
        run(stage, tmp_path, ae_path)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.slow
def test_a_diverged_update_never_overwrites_the_last_good_checkpoint(stage, tmp_path, ae_path, monkeypatch):
    """An infinite gradient at step 3 (finite loss) turns the weights into NaN; the checkpoint due after step 4
    is refused, and the one from step 2 stays on disk, bit for bit."""
    run(stage, tmp_path / "good", ae_path, steps=2)
    good = checkpoint_of(stage, tmp_path / "good")
    poison(monkeypatch, stage, at_step=3, how="grad")
    expected = r"diverged after step 4: .*NaN/inf.*Nothing was written.*previous checkpoint is from step 2"
    with pytest.raises(UnsafeWeightsError, match=expected):
        run(stage, tmp_path / "bad", ae_path)
    kept = checkpoint_of(stage, tmp_path / "bad")
    assert kept["step"] == 2
    assert all(torch.equal(kept["state_dict"][k], v) for k, v in good["state_dict"].items())


@pytest.mark.parametrize("stage", STAGES)
def test_an_absurd_learning_rate_never_saves_absurd_weights(stage, tmp_path, ae_path):
    """lr = 1e8 with a checkpoint after every step: Adam's first step moves each weight by ~1e8, still finite,
    so only the size check stands between it and the disk."""
    change = ({"ae_train": {"lr": 1e8, "val_every": 1}} if stage == "autoencoder"
              else {"ldm_train": {"lr": 1e8, "warmup_steps": 1, "checkpoint_every": 1}})
    expected = r"diverged after step 1: .*max \|w\| = \d(\.\d+)?e\+0[678].*Nothing was written"
    with pytest.raises(UnsafeWeightsError, match=expected):
        run(stage, tmp_path, ae_path, profile=PROFILE.replace(**change))
    assert not (tmp_path / (AE_CHECKPOINT if stage == "autoencoder" else LDM_CHECKPOINT)).exists()


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.slow
def test_stale_temporary_files_of_killed_writes_are_removed(stage, tmp_path, ae_path):
    name = AE_CHECKPOINT if stage == "autoencoder" else LDM_CHECKPOINT
    tmp_path.mkdir(exist_ok=True)
    stale = [tmp_path / f".{name}.k1ll3d.tmp", tmp_path / f".{name}.x.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    other = tmp_path / ".notes.txt.tmp"
    other.write_text("not ours")
    run(stage, tmp_path, ae_path, steps=1)
    assert not any(p.exists() for p in stale) and other.exists()


@pytest.mark.parametrize("stage", STAGES)
def test_callback_sees_every_step_with_its_record_and_the_run(stage, tmp_path, ae_path):
    seen = []
    r = run(stage, tmp_path, ae_path, steps=3, callback=lambda step, record, run_: seen.append((step, record, run_)))
    assert [s for s, _, _ in seen] == [1, 2, 3]
    assert [rec for _, rec, _ in seen] == r["history"] and all("loss" in rec for _, rec, _ in seen)
    assert isinstance(seen[0][2], Run) and isinstance(seen[0][2].model, torch.nn.Module)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("steps", [0, -5, 2.5])
def test_a_step_count_that_is_not_positive_is_a_clear_error(stage, steps, tmp_path, ae_path):
    with pytest.raises(ValueError, match="steps must be a positive number of training steps"):
        run(stage, tmp_path, ae_path, steps=steps)
    assert not any(tmp_path.iterdir())                            # nothing was written


def test_a_nan_autoencoder_is_named_before_the_diffusion_model_trains(tmp_path):
    ae = build_autoencoder(CI.ae)
    with torch.no_grad():
        next(ae.decoder.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="autoencoder given to train_ldm has diverged weights.*decoder"):
        train_ldm(PROFILE, ae, tmp_path, device="cpu", progress=False)
    assert not (tmp_path / LDM_CHECKPOINT).exists()


def test_an_autoencoder_with_nan_latents_is_named(tmp_path):
    ae = build_autoencoder(CI.ae)        # finite weights, but an encoder whose output is NaN for these images
    ae.quant_conv.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    with pytest.raises(ValueError, match="autoencoder's latents are not finite"):
        train_ldm(PROFILE, ae, tmp_path, device="cpu", progress=False)
    assert not (tmp_path / LDM_CHECKPOINT).exists()


@pytest.mark.slow
def test_sample_grids_during_training_use_the_ema_and_change_nothing(tmp_path, ae_path):
    """The SampleGrids callback writes a grid with the EMA weights swapped in; afterwards training goes on exactly
    as without the grids (the raw weights are put back bit for bit and sampling draws no training randomness)."""
    a = run("ldm", tmp_path / "grids", ae_path, callback=SampleGrids(2, tmp_path / "grids"))
    b = run("ldm", tmp_path / "plain", ae_path)
    assert sorted(p.name for p in (tmp_path / "grids").glob("samples_*.png")) == [
        "samples_000002.png", "samples_000004.png", "samples_000006.png"]
    assert not list((tmp_path / "plain").glob("samples_*.png"))
    assert a["history"] == b["history"]
    ca, cb = checkpoint_of("ldm", tmp_path / "grids"), checkpoint_of("ldm", tmp_path / "plain")
    assert all(torch.equal(ca["state_dict"][k], cb["state_dict"][k]) for k in cb["state_dict"])


def test_ema_weights_swaps_in_the_shadow_and_restores_the_raw_weights(tmp_path, ae_path):
    seen = {}

    def look(step, record, run_):
        if step == 3:
            raw = {k: v.clone() for k, v in run_.trained.state_dict().items()}
            with run_.ema_weights() as ldm:
                seen["inside"] = {k: v.clone() for k, v in ldm.denoiser_modules().state_dict().items()}
                seen["eval"] = not ldm.unet.training
            seen["after"] = {k: v.clone() for k, v in run_.trained.state_dict().items()}
            seen["raw"], seen["shadow"] = raw, {k: v.clone() for k, v in run_.ema.shadow.items()}
            seen["train"] = run_.trained.training

    run("ldm", tmp_path, ae_path, steps=3, callback=look)
    assert all(torch.equal(seen["inside"][k], seen["shadow"][k]) for k in seen["shadow"])
    assert all(torch.equal(seen["after"][k], seen["raw"][k]) for k in seen["raw"])
    assert any(not torch.equal(seen["raw"][k], seen["shadow"][k]) for k in seen["raw"])
    assert seen["eval"] and seen["train"]
