"""What notebooks 05 (training the LDM) and 06 (DDIM sampling) add to the package:

  train.SampleSnapshots     the same prompts and seed sampled at chosen steps, kept across resumption
  train.loss_trend          first-tenth vs last-tenth mean loss (the claim "the loss falls")
  LatentDiffusion.loss_by_timestep, invert, inversion_error, img2img, and sample(spacing=...)
"""

import dataclasses

import pytest
import torch

from minildm.autoencoder import build_autoencoder
from minildm.data.datasets import ShapesDataset
from minildm.ldm import LatentDiffusion
from minildm.samplers import ddim_invert, ddim_sample, img2img
from minildm.train.profiles import get_profile
from minildm.train.stages import AE_CHECKPOINT, LDM_CHECKPOINT, SampleSnapshots, loss_trend, train_ldm
from minildm.utils import save_checkpoint

CI = get_profile("ci")
PROMPTS = ["a large red circle in the top left", "a small blue square in the center"]


@pytest.fixture(scope="module")
def ae():
    torch.manual_seed(0)
    return build_autoencoder(CI.ae).eval()


@pytest.fixture(scope="module")
def batch():
    return ShapesDataset("val", CI.data).batch(range(4))


@pytest.fixture(scope="module")
def ldm(ae, batch):
    """A ci text model whose (normally zero-initialized) output layer is random, so that its prediction depends
    on x_t, t and the caption, as a trained model's does."""
    ds = ShapesDataset("train", CI.data)
    model = LatentDiffusion(ae, CI.ldm, tokenizer=ds.tokenizer, num_classes=ds.num_classes,
                            max_objects=ds.max_objects)
    model.set_scale_factor(batch["image"], torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.unet.out.parameters():
            p.normal_(0, 0.05)
    return model.eval()


# ---- train.SampleSnapshots and loss_trend -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ae_path(tmp_path_factory, ae):
    path = tmp_path_factory.mktemp("ae") / AE_CHECKPOINT
    save_checkpoint({"kind": "autoencoder", "config": ae.config, "state_dict": ae.state_dict()}, path)
    return path


def test_snapshots_are_taken_with_the_ema_weights_at_the_chosen_steps_and_survive_a_resume(tmp_path, ae_path):
    profile = CI.replace(ldm=dict(steps=4, checkpoint_every=2, batch_size=4, cache_size=16))
    file = tmp_path / "snapshots.pt"
    seen = []

    class Spy(SampleSnapshots):
        def take(self, step, model):
            seen.append((step, model.unet.training))
            return super().take(step, model)

    snaps = Spy(PROMPTS, [1, 2, 4], file, seed=3, steps=3)
    train_ldm(profile, ae_path, tmp_path, device="cpu", steps=2, progress=False, callback=snaps)
    assert seen == [(1, False), (2, False)]               # sampled in eval mode, at the chosen steps only
    resumed = Spy(PROMPTS, [1, 2, 4], file, seed=3, steps=3)
    assert sorted(resumed.images) == [1, 2]               # read back from the file
    assert all(torch.equal(resumed.images[k], snaps.images[k]) for k in (1, 2))
    train_ldm(profile, ae_path, tmp_path, device="cpu", progress=False, callback=resumed)
    assert [s for s, _ in seen] == [1, 2, 4]              # steps 1 and 2 are not sampled again
    # the snapshot of the last step is the EMA model of the checkpoint, sampled from the same seed
    final = LatentDiffusion.from_checkpoint(tmp_path / LDM_CHECKPOINT, "cpu")
    again = SampleSnapshots(PROMPTS, [4], None, seed=3, steps=3).take(4, final)
    torch.testing.assert_close(again, resumed.images[4], atol=1e-5, rtol=0)
    assert resumed.images[4].shape == (2, 3, 32, 32)
    # other prompts or another seed: the file's snapshots are not theirs
    assert SampleSnapshots(PROMPTS[:1], [1], file, seed=3, steps=3).images == {}
    assert SampleSnapshots(PROMPTS, [1], file, seed=4, steps=3).images == {}
    assert SampleSnapshots(PROMPTS, [1], file, seed=3, steps=5).images == {}


def test_loss_trend_compares_the_first_and_the_last_tenth():
    history = [{"step": i + 1, "loss": float(v)} for i, v in enumerate(range(100, 0, -1))]
    first, last = loss_trend(history)
    assert first == pytest.approx(sum(range(91, 101)) / 10) and last == pytest.approx(sum(range(1, 11)) / 10)
    assert loss_trend(history[:3], fraction=0.1) == (100.0, 98.0)      # at least one record each
    assert loss_trend([{"loss": 2.0}, {"step": 2}, {"loss": 4.0}], fraction=0.5) == (2.0, 4.0)
    with pytest.raises(ValueError, match="records"):
        loss_trend([{"step": 1}])
    with pytest.raises(ValueError, match="fraction"):
        loss_trend(history, fraction=0)


# ---- LatentDiffusion: loss by timestep ---------------------------------------------------------------------
def test_loss_by_timestep_is_training_loss_at_each_t_with_one_noise(ldm, batch):
    z0 = ldm.encode(batch["image"], torch.Generator().manual_seed(0))
    raw = ldm.raw_condition(batch)
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(1))
    ts = [0, 333, 999]
    got = ldm.loss_by_timestep(z0, raw, ts, noise=noise)
    cond = ldm.encode_condition(raw)
    with torch.no_grad():
        want = torch.stack([ldm.diffusion.training_loss(ldm.model_fn, z0, cond, t=t, noise=noise) for t in ts])
    assert got.shape == (3,) and got.device.type == "cpu"
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    # the same generator gives the same noise, so the same curve
    a = ldm.loss_by_timestep(z0, raw, ts, generator=torch.Generator().manual_seed(5))
    b = ldm.loss_by_timestep(z0, raw, ts, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_loss_by_timestep_of_an_untrained_model_is_the_target_power(ae, batch):
    ds = ShapesDataset("train", CI.data)
    fresh = LatentDiffusion(ae, CI.ldm, tokenizer=ds.tokenizer, num_classes=24, max_objects=2)
    fresh.set_scale_factor(batch["image"])
    z0 = fresh.encode(batch["image"], torch.Generator().manual_seed(0))
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(1))
    got = fresh.loss_by_timestep(z0, fresh.raw_condition(batch), [10, 900], noise=noise)
    for value, t in zip(got, (10, 900)):                  # zero output: L = mean(v²), v = √ᾱ ε − √(1−ᾱ) z0
        a = float(fresh.diffusion.alpha_bar[t])
        assert float(value) == pytest.approx(float((a ** 0.5 * noise - (1 - a) ** 0.5 * z0).pow(2).mean()), rel=1e-5)


def test_latent_inputs_are_checked(ldm, batch):
    z0 = ldm.encode(batch["image"])
    raw = ldm.raw_condition(batch)
    with pytest.raises(ValueError, match="scaled latents"):
        ldm.loss_by_timestep(batch["image"], raw, [0])
    with pytest.raises(ValueError, match="one condition per latent"):
        ldm.invert(z0, raw[:2])
    with pytest.raises(ValueError, match="one condition per latent"):
        ldm.img2img(batch["image"], None)


# ---- LatentDiffusion: inversion and img2img ----------------------------------------------------------------
def test_invert_is_ddim_invert_under_the_encoded_condition(ldm, batch):
    z0 = ldm.encode(batch["image"], torch.Generator().manual_seed(0))
    raw = ldm.raw_condition(batch)
    cond = ldm.encode_condition(raw)
    torch.testing.assert_close(ldm.invert(z0, raw, steps=7),
                               ddim_invert(ldm.model_fn, ldm.diffusion, z0, steps=7, cond=cond), atol=0, rtol=0)
    uncond = ldm.encode_condition(ldm.null_condition(raw))
    guided = ddim_invert(ldm.model_fn, ldm.diffusion, z0, steps=7, cond=cond, uncond=uncond, guidance_scale=2.0)
    torch.testing.assert_close(ldm.invert(z0, raw, steps=7, guidance_scale=2.0), guided, atol=0, rtol=0)
    x_T, trajectory = ldm.invert(z0, raw, steps=7, return_intermediates=True)
    assert len(trajectory["timesteps"]) == 7 and trajectory["timesteps"][-1] == 999


def test_inversion_error_is_the_round_trip_and_falls_with_steps(ldm, batch):
    z0 = ldm.encode(batch["image"], torch.Generator().manual_seed(0))
    raw = ldm.raw_condition(batch)
    x_T = ldm.invert(z0, raw, steps=10)
    back = ldm.sample(raw, x_T=x_T, steps=10, guidance_scale=1.0, decode=False)
    assert ldm.inversion_error(z0, raw, 10) == pytest.approx(float((back - z0).pow(2).sum() / z0.pow(2).sum()),
                                                              rel=1e-6)
    errors = [ldm.inversion_error(z0, raw, s) for s in (3, 10, 40)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05


def test_img2img_encodes_runs_the_tail_of_ddim_and_decodes(ldm, batch):
    images, raw = batch["image"], ldm.prompt_condition(prompts=[PROMPTS[0]] * 4)
    kept = ldm.img2img(images, raw, strength=0.0, steps=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(kept, ldm.decode(ldm.encode(images, torch.Generator().manual_seed(0))))
    g = torch.Generator().manual_seed(0)
    z0 = ldm.encode(images, g)
    cond, uncond = ldm.encode_condition(raw), ldm.encode_condition(ldm.null_condition(raw))
    want = img2img(ldm.model_fn, ldm.diffusion, z0, strength=0.5, steps=10, cond=cond, uncond=uncond,
                   guidance_scale=3.0, generator=g)
    got = ldm.img2img(images, raw, strength=0.5, steps=10, guidance_scale=3.0, decode=False,
                      generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    with pytest.raises(ValueError, match="strength"):
        ldm.img2img(images, raw, strength=1.5)


def test_sample_passes_the_timestep_spacing_to_ddim(ldm, batch):
    raw = ldm.raw_condition(batch)
    x_T = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond, uncond = ldm.encode_condition(raw), ldm.encode_condition(ldm.null_condition(raw))
    for spacing in ("trailing", "leading", "linspace"):
        got = ldm.sample(raw, x_T=x_T, steps=6, spacing=spacing, decode=False)
        want = ddim_sample(ldm.model_fn, ldm.diffusion, None, cond, uncond, ldm.config.guidance_scale, steps=6,
                           spacing=spacing, x_T=x_T)
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert not torch.equal(ldm.sample(raw, x_T=x_T, steps=6, decode=False),
                           ldm.sample(raw, x_T=x_T, steps=6, spacing="leading", decode=False))
    with pytest.raises(ValueError, match="unknown timestep spacing"):
        ldm.sample(raw, x_T=x_T, steps=6, spacing="uniform")


def test_an_unconditional_model_inverts_without_a_condition(ae, batch):
    ds = ShapesDataset("train", CI.data)
    model = LatentDiffusion(ae, dataclasses.replace(CI.ldm, cond="none"), tokenizer=ds.tokenizer)
    model.set_scale_factor(batch["image"])
    z0 = model.encode(batch["image"])
    assert model.invert(z0, None, steps=3).shape == z0.shape
    assert model.inversion_error(z0, None, steps=3) >= 0
    assert model.img2img(batch["image"], None, strength=0.5, steps=4).shape == batch["image"].shape
