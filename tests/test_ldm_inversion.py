"""LatentDiffusion beyond sampling (notebooks 05, 06): DDIM inversion, img2img, the timestep spacing passed on
to DDIM, and what eval/process.py measures on a model (the loss by timestep, the inversion error)."""

import dataclasses

import pytest
import torch

from minildm.data.datasets import ShapesDataset
from minildm.eval.process import inversion_error, loss_by_timestep
from minildm.ldm import GUIDANCE_SCALE, LatentDiffusion
from minildm.samplers import ddim_invert, ddim_sample, img2img
from minildm.train.profiles import get_profile

CI = get_profile("ci")
PROMPTS = ["a large red circle in the top left", "a small blue square in the center"]


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


def test_conditions_are_checked(ldm, batch):
    z0 = ldm.encode(batch["image"])
    raw = ldm.raw_condition(batch)
    with pytest.raises(ValueError, match="one condition per latent"):
        ldm.invert(z0, raw[:2])
    with pytest.raises(ValueError, match="one condition per latent"):
        ldm.img2img(batch["image"], None)


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
        want = ddim_sample(ldm.model_fn, ldm.diffusion, None, cond, uncond, GUIDANCE_SCALE, steps=6,
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
    assert model.img2img(batch["image"], None, strength=0.5, steps=4).shape == batch["image"].shape


# ---- eval.process on the model: loss by timestep, inversion error -------------------------------------------
def test_loss_by_timestep_is_training_loss_at_each_t_with_one_noise(ldm, batch):
    z0 = ldm.encode(batch["image"], torch.Generator().manual_seed(0))
    raw = ldm.raw_condition(batch)
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(1))
    ts = [0, 333, 999]
    got = loss_by_timestep(ldm, z0, raw, ts, noise=noise)
    cond = ldm.encode_condition(raw)
    with torch.no_grad():
        want = torch.stack([ldm.diffusion.training_loss(ldm.model_fn, z0, cond, t=t, noise=noise) for t in ts])
    assert got.shape == (3,) and got.device.type == "cpu"
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    # the same generator gives the same noise, so the same curve
    a = loss_by_timestep(ldm, z0, raw, ts, generator=torch.Generator().manual_seed(5))
    b = loss_by_timestep(ldm, z0, raw, ts, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_loss_by_timestep_of_an_untrained_model_is_the_target_power(ae, batch):
    ds = ShapesDataset("train", CI.data)
    fresh = LatentDiffusion(ae, CI.ldm, tokenizer=ds.tokenizer, num_classes=24, max_objects=2)
    fresh.set_scale_factor(batch["image"])
    z0 = fresh.encode(batch["image"], torch.Generator().manual_seed(0))
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(1))
    got = loss_by_timestep(fresh, z0, fresh.raw_condition(batch), [10, 900], noise=noise)
    for value, t in zip(got, (10, 900)):                  # zero output: L = mean(v²), v = √ᾱ ε − √(1−ᾱ) z0
        a = float(fresh.diffusion.alpha_bar[t])
        assert float(value) == pytest.approx(float((a ** 0.5 * noise - (1 - a) ** 0.5 * z0).pow(2).mean()), rel=1e-5)


@pytest.mark.slow
def test_inversion_error_is_the_round_trip_and_falls_with_steps(ldm, batch):
    z0 = ldm.encode(batch["image"], torch.Generator().manual_seed(0))
    raw = ldm.raw_condition(batch)
    x_T = ldm.invert(z0, raw, steps=10)
    back = ldm.sample(raw, x_T=x_T, steps=10, guidance_scale=1.0, decode=False)
    assert inversion_error(ldm, z0, raw, 10) == pytest.approx(float((back - z0).pow(2).sum() / z0.pow(2).sum()),
                                                               rel=1e-6)
    errors = [inversion_error(ldm, z0, raw, s) for s in (3, 10, 40)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05


def test_inversion_error_of_an_unconditional_model_needs_no_condition(ae, batch):
    model = LatentDiffusion(ae, dataclasses.replace(CI.ldm, cond="none"))
    model.set_scale_factor(batch["image"])
    assert inversion_error(model, model.encode(batch["image"]), None, steps=3) >= 0
