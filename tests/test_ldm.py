"""LatentDiffusion: scale factor, conditioning dropout, every mode, checkpoints, input errors, word influence.

(The training loop's resume, time cap and NaN guard are tested for both stages in test_train.py.)"""

import dataclasses

import pytest
import torch

from minildm.data.datasets import ShapesDataset
from minildm.ldm import LatentDiffusion
from minildm.train.profiles import get_profile
from minildm.train.stages import train_ldm
from minildm.utils import load_checkpoint

load_ldm = LatentDiffusion.from_checkpoint

CI = get_profile("ci")


def make(ae, **changes):
    cfg = dataclasses.replace(CI.ldm, **changes)
    ds = ShapesDataset("train", CI.data)
    return LatentDiffusion(ae, cfg, tokenizer=ds.tokenizer, num_classes=ds.num_classes, max_objects=ds.max_objects)


def test_scale_factor_gives_unit_variance_and_decode_divides(ae, batch):
    ldm = make(ae)
    with pytest.raises(RuntimeError, match="scale factor"):
        ldm.encode(batch["image"])
    g = torch.Generator().manual_seed(0)
    s = ldm.set_scale_factor(batch["image"], g)
    mean, std = ldm.latent_moments(batch["image"])
    z = ldm.encode(batch["image"], torch.Generator().manual_seed(0))
    assert z.std().item() == pytest.approx(1.0, rel=1e-4)  # same draw as the measurement
    assert torch.allclose(z / s, mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(0)),
                          atol=1e-5)
    assert torch.allclose(ldm.decode(z), ae.decode(z / s).clamp(-1, 1), atol=1e-6)
    assert not any(p.requires_grad for p in ldm.autoencoder.parameters())  # the first stage is frozen


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction"])
def test_initial_loss_is_the_target_variance(ae, batch, ptype):
    ldm = make(ae, prediction_type=ptype)
    ldm.set_scale_factor(batch["image"])
    z0 = ldm.encode(batch["image"])
    g = torch.Generator().manual_seed(1)
    loss = ldm.training_step(z0, ldm.raw_condition(batch), g)
    # the zero-initialized U-Net predicts 0, so L_simple = mean(target²) for the same draws of t and ε
    g = torch.Generator().manual_seed(1)
    torch.bernoulli(torch.full((8,), 0.1), generator=g)  # conditioning dropout consumes the generator first
    t = torch.randint(0, 1000, (8,), generator=g)
    eps = torch.randn(z0.shape, generator=g)
    ab = ldm.diffusion.alpha_bar[t].float().view(-1, 1, 1, 1)
    target = eps if ptype == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * z0  # v = √ᾱ ε − √(1−ᾱ) x0
    assert loss.item() == pytest.approx(target.pow(2).mean().item(), rel=1e-5)


def test_conditioning_dropout_feeds_the_null_condition(ae, batch, monkeypatch):
    ldm = make(ae)
    ldm.set_scale_factor(batch["image"])
    seen = {}
    original = ldm.cond_encoder.forward

    def spy(tokens):
        seen["tokens"] = tokens.clone()
        return original(tokens)

    monkeypatch.setattr(ldm.cond_encoder, "forward", spy)
    ldm.training_step(ldm.encode(batch["image"]), batch["tokens"], torch.Generator().manual_seed(0), cond_drop_prob=1.0)
    assert torch.equal(seen["tokens"], ldm.tokenizer.encode_batch([""] * 8))


@pytest.mark.parametrize("cond", ["text", "class", "layout", "sr", "none"])
def test_every_conditioning_mode_trains_and_samples(ae, batch, cond):
    ldm = make(ae, cond=cond)
    ldm.set_scale_factor(batch["image"])
    raw = ldm.raw_condition(batch)
    loss = ldm.training_step(ldm.encode(batch["image"]), raw, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None for p in ldm.unet.parameters())
    steps = []
    kw = dict(raw=raw[:2] if raw is not None else None, num_samples=2 if raw is None else None, steps=3)
    out = ldm.sample(**kw, callback=lambda i, t, x, x0: steps.append(t), generator=torch.Generator().manual_seed(0))
    z = ldm.sample(**kw, decode=False, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 32, 32) and z.shape == (2, 4, 8, 8) and torch.isfinite(z).all()
    assert torch.equal(out, ldm.decode(z))                      # the images are the decoded sampled latents
    assert len(steps) == 3 and steps == sorted(steps, reverse=True)


def test_sampling_errors(ae, batch):
    ldm = make(ae)
    ldm.set_scale_factor(batch["image"])
    with pytest.raises(ValueError, match="unknown word"):
        ldm.prompt_condition(prompts=["a red dragon"])
    raw = ldm.prompt_condition(prompts=["a small red circle in the center"])
    with pytest.raises(ValueError):
        ldm.sample(raw, steps=0)
    with pytest.raises(ValueError):
        ldm.sample(raw, steps=1001)
    with pytest.raises(ValueError, match="labels"):
        make(ae, cond="class").prompt_condition(prompts=["a red circle"])
    with pytest.raises(ValueError, match="cond must be one of"):
        make(ae, cond="audio")


def test_input_that_would_silently_mean_no_condition_is_refused(ae, batch):
    ldm = make(ae)
    for prompt in ("   ", "...", "", "?!"):
        with pytest.raises(ValueError, match="has no words would mean 'no condition'"):
            ldm.prompt_condition(prompts=["a red circle in the center", prompt])
    with pytest.raises(ValueError, match="a list of captions"):
        ldm.prompt_condition(prompts="a red circle in the center")
    cls = make(ae, cond="class")
    for labels in ([24], [-1], [3, 99]):
        with pytest.raises(ValueError, match=r"class labels must be in 0..23"):
            cls.prompt_condition(labels=labels)
    assert cls.prompt_condition(labels=[0, 23]).tolist() == [0, 23]


def test_sampling_is_seeded_and_guidance_one_skips_uncond(ae, batch):
    ldm = make(ae)
    ldm.set_scale_factor(batch["image"])
    torch.manual_seed(0)
    for p in ldm.unet.out.parameters():  # make the output depend on the input
        torch.nn.init.normal_(p, std=0.02)
    raw = ldm.prompt_condition(prompts=["a small red circle in the center"] * 2)
    a = ldm.sample(raw, steps=4, generator=torch.Generator().manual_seed(5))
    b = ldm.sample(raw, steps=4, generator=torch.Generator().manual_seed(5))
    c = ldm.sample(raw, steps=4, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    calls = []
    orig = ldm.unet.forward
    ldm.unet.forward = lambda x, t, **kw: calls.append(x.shape[0]) or orig(x, t, **kw)
    ldm.sample(raw, steps=2, guidance_scale=1.0)
    ldm.sample(raw, steps=2, guidance_scale=3.0)
    assert calls == [2, 2, 4, 4]  # s = 1: conditional batch only; s ≠ 1: one doubled batch per step


@pytest.mark.slow
def test_a_checkpoint_rebuilds_the_whole_model(ae, tmp_path):
    """from_checkpoint needs nothing but the file: autoencoder, tokenizer, resolution and weights come back,
    and the rebuilt model samples exactly what the trained one does."""
    from minildm.utils import save_checkpoint

    ae_path = tmp_path / "ae.pt"
    save_checkpoint({"kind": "autoencoder", "config": ae.config, "state_dict": ae.state_dict()}, ae_path)
    run = train_ldm("ci", ae_path, tmp_path / "run", steps=4, progress=False)
    m1, m2 = load_ldm(run["path"]), load_ldm(run["path"], use_ema=False)
    assert m1.resolution == CI.data.resolution and m1.tokenizer.vocab == ShapesDataset("train").tokenizer.vocab
    assert not m1.training and not any(p.requires_grad for p in m1.autoencoder.parameters())
    ckpt = load_checkpoint(run["path"], kind="ldm")
    for k, v in m2.denoiser_modules().state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k]), k
    for k, v in m1.denoiser_modules().state_dict().items():
        assert torch.equal(v, ckpt["ema"]["shadow"][k]), k
    raw = m1.prompt_condition(prompts=["a large blue star in the top left"])
    assert torch.equal(m1.sample(raw, steps=3, generator=torch.Generator().manual_seed(0)),
                       load_ldm(run["path"]).sample(raw, steps=3, generator=torch.Generator().manual_seed(0)))
    # resuming into a different architecture is a clear error
    other = get_profile("ci").replace(ldm={"model_channels": 32})
    with pytest.raises(ValueError, match="model_channels: checkpoint=16 current=32"):
        train_ldm(other, ae_path, tmp_path / "run", steps=8, progress=False)


def test_lr_schedule_warmup_then_cosine_to_zero():
    """Linear warm-up to the base rate, then constant (reference) or ½(1 + cos(π·progress)) down to 0."""
    import math

    from minildm.utils import warmup_cosine

    f = lambda k: warmup_cosine(k, 10, 110, cosine=True)  # noqa: E731
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5)                                  # half-way through the decay
    assert f(35) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert f(110) == pytest.approx(0.0, abs=1e-12)
    assert f(500) == pytest.approx(0.0, abs=1e-12)                      # never negative after the end
    assert [warmup_cosine(k, 10, 110, cosine=False) for k in (0, 9, 60, 500)] == pytest.approx([0.1, 1.0, 1.0, 1.0])
    from minildm.train.configs import LDMTrainConfig

    with pytest.raises(ValueError, match="lr_schedule"):
        LDMTrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="loss_weighting must be 'simple' or 'min_snr'"):
        LDMTrainConfig(loss_weighting="snr")


# ------------------------------------------------------------------------------ word influence probe


def test_word_influence_is_zero_for_a_model_that_ignores_the_prompt(ae, batch):
    from minildm.eval.probes import word_influence

    ldm = make(ae)
    ldm.set_scale_factor(batch["image"])
    rows = word_influence(ldm, ("circle", "square"), n=6, timesteps=(0, 500, 999))   # zero-init U-Net: ε̂ = v̂ = 0
    assert [r["t"] for r in rows] == [0, 500, 999]
    for r in rows:
        assert r["influence"] == pytest.approx(0.0, abs=1e-6) and r["p_a"] == pytest.approx(r["p_b"], abs=1e-6)
    assert rows[0]["snr"] > rows[1]["snr"] > rows[2]["snr"]


@pytest.mark.parametrize("words", [("circle", "square"), ("red", "blue"), ("small", "large")])
def test_word_influence_measures_where_the_prediction_lands(ae, batch, words):
    """An oracle whose x̂_0 is λ·z_a + (1 − λ)·z_b, with λ set by the caption, has influence λ_a − λ_b exactly."""
    from minildm.eval.probes import word_influence, word_pair_latents

    ldm = make(ae)
    ldm.set_scale_factor(batch["image"])
    z_a, z_b, caps_a, caps_b = word_pair_latents(ldm, words, n=5)
    # the pair differs in exactly that one word, and so do the images
    for a, b in zip(caps_a, caps_b):
        diff = [(x, y) for x, y in zip(a.split(), b.split()) if x != y]
        assert diff == [words] and len(a.split()) == len(b.split())
    assert ((z_a - z_b).flatten(1).norm(dim=1) > 0).all()
    ctx_a = ldm.encode_condition(ldm.prompt_condition(prompts=caps_a))["context"]
    lam = {"a": 0.9, "b": 0.25}
    D = ldm.diffusion

    def oracle(x_t, t, cond):
        which = "a" if torch.equal(cond["context"], ctx_a) else "b"
        x0 = lam[which] * z_a + (1 - lam[which]) * z_b
        a, s = D.coefficient("sqrt_alpha_bar", t, x_t), D.coefficient("sqrt_one_minus_alpha_bar", t, x_t)
        return (a * x_t - x0) / s                                   # the v that gives this x̂_0

    ldm.model_fn = oracle
    for r in word_influence(ldm, words, n=5, timesteps=(10, 400, 900)):
        assert r["p_a"] == pytest.approx(0.9, abs=1e-3) and r["p_b"] == pytest.approx(0.25, abs=1e-3)
        assert r["influence"] == pytest.approx(0.65, abs=1e-3)


def test_word_influence_errors(ae, batch):
    from minildm.eval.probes import word_influence

    ldm = make(ae)
    ldm.set_scale_factor(batch["image"])
    for words in [("circle", "red"), ("circle", "circle"), ("circle", "hexagon")]:
        with pytest.raises(ValueError, match="same attribute"):
            word_influence(ldm, words, n=2)
    with pytest.raises(ValueError, match="positive int"):
        word_influence(ldm, n=0)
    with pytest.raises(ValueError, match="text-conditional"):
        word_influence(make(ae, cond="class"), n=2)
    ldm.unet.train()
    word_influence(ldm, n=2, timesteps=(5,))
    assert ldm.unet.training                        # the probe leaves the model in the mode it found it


def test_an_sr_condition_lands_on_the_latent_grid_whatever_f_and_the_sr_factor():
    """latent side = H/f, low-res side = H/sr: LowResConcat resizes by sr/f when no grid is given (f = 2, ×4 SR:
    an 8×8 input onto a 16×16 latent; the shipped f = sr = 4 cannot tell sr/f from f/sr)."""
    from minildm.autoencoder import build_autoencoder
    ae = build_autoencoder(dataclasses.replace(CI.ae, ch_mult=(1, 2))).eval()
    assert ae.downsample_factor == 2
    ldm = LatentDiffusion(ae, dataclasses.replace(CI.ldm, cond="sr", sr_factor=4))
    low = ldm.raw_condition({"image": ShapesDataset("train", CI.data).batch(range(2))["image"]},
                            torch.Generator().manual_seed(0))
    assert low.shape[-1] == 32 // 4
    assert ldm.encode_condition(low)["concat"].shape == (2, 3, 16, 16) and ldm.latent_size(32) == 16
