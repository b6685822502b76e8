"""Flow matching beside the paper's diffusion: the straight path and its velocity, how ε, x_0, v and the velocity
relate, Euler and Heun on the exact velocity of Gaussian data, a flow LDM that trains, samples and round-trips
through its checkpoint, the 2-D warm-up, and errors at the public boundary."""

import math

import pytest
import torch

from minildm.course.toy2d import TOY2D, flow_vs_diffusion_2d, straightness, two_moons
from minildm.diffusion import GaussianDiffusion, RectifiedFlow, flow_time
from minildm.ldm import LatentDiffusion, LDMConfig
from minildm.samplers import (FLOW_SAMPLERS, flow_euler_sample, flow_euler_step, flow_heun_sample, flow_timesteps,
                              guided_model_output)
from minildm.tools.cli import main
from minildm.train.profiles import get_profile
from minildm.train.stages import LDM_CHECKPOINT, train_ldm
from minildm.utils import load_checkpoint, save_checkpoint

MU, S = 0.5, 0.3                     # data x_0 ~ N(μ, s²·I): the ideal velocity and the ODE's solution are known
FLOW = get_profile("ci").replace(ldm={"process": "flow"}, ldm_train={"steps": 4, "checkpoint_every": 2,
                                                                     "batch_size": 4, "cache_size": 32})


def draws(shape=(6, 4, 2, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


# ---- the path and its target -------------------------------------------------------------------------------
def test_the_path_is_straight_from_data_at_t0_to_noise_at_t1_and_its_velocity_is_eps_minus_x0():
    flow, (x0, eps) = RectifiedFlow(), draws()
    assert torch.equal(flow.add_noise(x0, eps, 0.0), x0) and torch.equal(flow.add_noise(x0, eps, 1.0), eps)
    t = torch.rand(6, dtype=torch.float64)
    x_t = flow.add_noise(x0, eps, t)
    tt = t.view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, (1 - tt) * x0 + tt * eps, rtol=0, atol=1e-15)
    u = flow.training_target(x0, eps)
    assert torch.equal(u, eps - x0)
    # dx_t/dt = u for every t: the path is a straight line run at constant speed
    torch.testing.assert_close((flow.add_noise(x0, eps, 0.7) - flow.add_noise(x0, eps, 0.2)) / 0.5, u,
                               rtol=0, atol=1e-13)


def test_the_velocity_gives_back_both_ends_of_the_path():
    flow, (x0, eps) = RectifiedFlow(), draws()
    t = torch.rand(6, dtype=torch.float64)
    x0_hat, eps_hat = flow.predict_x0_and_eps(flow.add_noise(x0, eps, t), t, eps - x0)
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-14)
    torch.testing.assert_close(eps_hat, eps, rtol=0, atol=1e-14)


def test_one_model_four_parameterizations():
    """At t = σ/(α + σ) the flow and the diffusion see the same SNR, x_t = x_s/(α + σ), and ε, x_0, v and the
    velocity u each give the same (x̂_0, ε̂) through their own maps (diffusion.py's closing comment)."""
    (x0, eps), flow = draws(), RectifiedFlow()
    for t_d in (0, 17, 250, 500, 999):
        d = {p: GaussianDiffusion(prediction_type=p) for p in ("epsilon", "sample", "v_prediction")}
        ab = d["epsilon"].alpha_bar[t_d]
        a, s = ab.sqrt(), (1 - ab).sqrt()
        t = flow_time(ab)
        torch.testing.assert_close(((1 - t) / t) ** 2, ab / (1 - ab), rtol=1e-12, atol=0)     # same SNR
        x_s, x_t = d["epsilon"].add_noise(x0, eps, t_d), flow.add_noise(x0, eps, float(t))
        torch.testing.assert_close(x_t, x_s / (a + s), rtol=0, atol=1e-14)
        u, v = eps - x0, d["v_prediction"].get_velocity(x0, eps, t_d)
        torch.testing.assert_close(v, (a + s) * ((1 - 2 * t) * x_t + ((1 - t) ** 2 + t ** 2) * u), rtol=0, atol=1e-13)
        if t_d > 0:                                             # u = (x_t − x_0)/t = (ε − x_t)/(1 − t)
            torch.testing.assert_close((x_t - x0) / t, u, rtol=0, atol=1e-11)
        torch.testing.assert_close((eps - x_t) / (1 - t), u, rtol=0, atol=1e-11)
        from_u = flow.predict_x0_and_eps(x_t, float(t), u)
        for p, out in (("epsilon", eps), ("sample", x0), ("v_prediction", v)):
            for got, want in zip(d[p].predict_x0_and_eps(x_s, t_d, out), from_u):
                torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_training_times_are_logit_normal_and_seeded():
    t = RectifiedFlow(logit_mean=0.5, logit_std=0.8).draw_timesteps(200_000, torch.Generator().manual_seed(0), "cpu")
    n = torch.logit(t.double())
    assert 0 < float(t.min()) and float(t.max()) < 1
    assert abs(float(n.mean()) - 0.5) < 0.01 and abs(float(n.std()) - 0.8) < 0.01
    a, b = (RectifiedFlow().draw_timesteps(8, torch.Generator().manual_seed(3), "cpu") for _ in range(2))
    assert torch.equal(a, b)


def test_the_loss_regresses_the_velocity_and_the_unet_sees_t_times_T_minus_1():
    flow, (x0, eps) = RectifiedFlow(), draws()
    t, seen = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0, 0.25], dtype=torch.float64), []

    def model(x_t, t_model, cond):
        seen.append(t_model)
        return torch.zeros_like(x_t)

    loss = flow.training_loss(model, x0, t=t, noise=eps, reduction="none")
    torch.testing.assert_close(loss, ((eps - x0) ** 2).flatten(1).mean(1).float())
    torch.testing.assert_close(seen[0], t * 999)
    # the ideal model that knows x_0 and ε has zero loss
    exact = flow.training_loss(lambda x_t, tm, c: eps - x0, x0, t=t, noise=eps)
    assert float(exact) == 0.0


# ---- Euler and Heun on the exact velocity of Gaussian data -------------------------------------------------
def ideal_velocity(mu=MU, s=S):
    """E[ε − x_0 | x_t] for x_0 ~ N(μ, s²): x_t ~ N((1−t)μ, V), V = (1−t)²s² + t², Cov(ε, x_t) = t and
    Cov(x_0, x_t) = (1−t)s², so  u(x, t) = (t − (1−t)s²)/V · (x − (1−t)μ) − μ  (t read back from t·999)."""
    def model(x, t_model, cond):
        t = (t_model.double() / 999).view(-1, *([1] * (x.ndim - 1)))
        V = (1 - t) ** 2 * s * s + t * t
        return ((t - (1 - t) * s * s) / V * (x.double() - (1 - t) * mu) - mu).to(x.dtype)
    return model


def exact_sample(x1, mu=MU, s=S):
    """The ODE keeps (x − (1−t)μ)/√V(t) constant along a path, V(1) = 1: from x_1 it reaches x_0 = μ + s·x_1."""
    return mu + s * x1.double()


@pytest.mark.parametrize("solver,order", [("euler", 1), ("heun", 2)])
def test_euler_and_heun_converge_to_the_exact_sample_with_their_order(solver, order):
    flow, x1 = RectifiedFlow(), draws((256, 1, 2, 2))[0]
    errors = [float((FLOW_SAMPLERS[solver](ideal_velocity(), flow, None, steps=n, x_T=x1) - exact_sample(x1))
                    .abs().max()) for n in (8, 16, 32, 64)]
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(2 ** order * 0.85 < r < 2 ** order * 1.15 for r in ratios), (errors, ratios)   # error ∝ (1/steps)^order


def test_one_euler_step_is_exact_when_the_paths_are_straight():
    """One data point (s = 0): every path is the straight line from x_1 to μ, u = (x − μ)/t, one step lands on μ."""
    x1 = draws((16, 2))[0]
    x0 = flow_euler_sample(ideal_velocity(s=0.0), RectifiedFlow(), None, steps=1, x_T=x1)
    torch.testing.assert_close(x0, torch.full_like(x1, MU), rtol=0, atol=1e-12)


def test_flow_samplers_step_evenly_call_back_every_step_and_count_their_model_calls():
    assert flow_timesteps(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    calls, steps = [], []

    def model(x, t_model, cond):
        calls.append(float(t_model[0]))
        return ideal_velocity()(x, t_model, cond)

    x1 = draws((4, 1, 2, 2))[0]
    out, record = flow_heun_sample(model, RectifiedFlow(), None, steps=4, x_T=x1, return_intermediates=True,
                                   callback=lambda i, t, x, x0: steps.append((i, t)))
    assert len(calls) == 2 * 4 - 1 and max(calls) == 999 and min(calls) > 0     # t = 0 is never asked about
    assert steps == [(0, 1.0), (1, 0.75), (2, 0.5), (3, 0.25)] and record["timesteps"] == [1.0, 0.75, 0.5, 0.25]
    assert torch.equal(record["x_t"][0], x1)
    # the recorded x̂_0 of the last step is where its Euler step lands: x_0 = x_t − t·v̂
    x_last, t_last = record["x_t"][-1], 0.25
    _, x0_hat = flow_euler_step(RectifiedFlow(), ideal_velocity()(x_last, torch.full((4,), t_last * 999), None),
                                t_last, x_last, 0.0)
    torch.testing.assert_close(out, x0_hat)


def test_guidance_combines_the_velocities():
    """v̂ = v̂(∅) + s·(v̂(y) − v̂(∅)): a model whose velocity is its condition samples x_1 − (guided velocity)."""
    cond, uncond = torch.full((3, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), -1.0)
    model = lambda x, t, c: c.expand_as(x)  # noqa: E731
    x1 = torch.zeros(3, 1, 2, 2)
    for s in (0.0, 1.0, 2.5):
        out = flow_euler_sample(model, RectifiedFlow(), None, cond=cond, uncond=uncond, guidance_scale=s, steps=3,
                                x_T=x1)
        guided = guided_model_output(model, x1, torch.zeros(3), cond, uncond, s)
        torch.testing.assert_close(out, x1 - guided)


# ---- the flow LDM ------------------------------------------------------------------------------------------
def flow_ldm(untrained_ldm, **changes) -> LatentDiffusion:
    base = untrained_ldm("text")
    cfg = LDMConfig(**{**base.config.__dict__, "process": "flow", **changes})
    ldm = LatentDiffusion(base.autoencoder, cfg, tokenizer=base.tokenizer, num_classes=base.num_classes,
                          max_objects=base.max_objects, scale_factor=float(base.scale_factor))
    return ldm.eval()


def test_a_flow_ldm_builds_the_flow_and_its_loss_splits_over_rows_like_one_process(untrained_ldm):
    ldm = flow_ldm(untrained_ldm)
    assert ldm.is_flow and isinstance(ldm.diffusion, RectifiedFlow) and "process='flow'" in repr(ldm)
    assert not untrained_ldm("text").is_flow and isinstance(untrained_ldm("text").diffusion, GaussianDiffusion)
    z0 = torch.randn(4, ldm.latent_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    raw = ldm.prompt_condition(prompts=["a large red circle"] * 4)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    full = ldm.training_step(z0, raw, g())
    halves = [ldm.training_step(z0, raw, g(), rows=r) for r in (slice(0, 2), slice(2, 4))]
    torch.testing.assert_close((halves[0] + halves[1]) / 2, full)
    full.backward()
    assert all(p.grad is not None for p in ldm.unet.parameters() if p.requires_grad)


@pytest.mark.slow
def test_a_flow_ldm_trains_in_the_ci_profile_resumes_samples_and_keeps_its_process(tmp_path, ae_path):
    r = train_ldm(FLOW, ae_path, tmp_path / "run", device="cpu", progress=False, steps=2)
    assert r["step"] == 2 and all(math.isfinite(h["loss"]) for h in r["history"])
    r = train_ldm(FLOW, ae_path, tmp_path / "run", device="cpu", progress=False)            # resumes at step 2
    assert r["step"] == 4 and len(r["history"]) == 4
    assert load_checkpoint(r["path"])["config"]["process"] == "flow"
    ldm = LatentDiffusion.from_checkpoint(r["path"], "cpu")
    assert ldm.is_flow and ldm.config == FLOW.ldm
    raw = ldm.prompt_condition(prompts=["a small blue square", "a large red circle"])
    for sampler in ("euler", "heun"):
        seen = []
        images = ldm.sample(raw, sampler=sampler, steps=3, generator=torch.Generator().manual_seed(0),
                            callback=lambda *a: seen.append(a[1]))
        assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()
        assert seen == pytest.approx([1.0, 2 / 3, 1 / 3])
    # the default sampler of a flow model is Euler, with the same noise as a diffusion model's DDIM
    a = ldm.sample(raw, steps=3, decode=False, generator=torch.Generator().manual_seed(0))
    b = ldm.sample(raw, sampler="euler", steps=3, decode=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


@pytest.mark.slow
def test_a_checkpoint_without_a_process_loads_and_resumes_as_diffusion(tmp_path, ae_path):
    """Checkpoints written before flow matching have no `process` (nor logit_*) in their config."""
    diffusion = FLOW.replace(ldm={"process": "diffusion"})
    r = train_ldm(diffusion, ae_path, tmp_path, device="cpu", progress=False, steps=2)
    ckpt = load_checkpoint(r["path"])
    ckpt["config"] = {k: v for k, v in ckpt["config"].items() if k not in ("process", "logit_mean", "logit_std")}
    save_checkpoint(ckpt, tmp_path / LDM_CHECKPOINT)
    ldm = LatentDiffusion.from_checkpoint(tmp_path / LDM_CHECKPOINT, "cpu")
    assert not ldm.is_flow and isinstance(ldm.diffusion, GaussianDiffusion) and ldm.config == diffusion.ldm
    assert train_ldm(diffusion, ae_path, tmp_path, device="cpu", progress=False, steps=3)["step"] == 3
    with pytest.raises(ValueError, match="process: checkpoint='diffusion' current='flow'"):
        train_ldm(FLOW, ae_path, tmp_path, device="cpu", progress=False)


@pytest.mark.slow
def test_train_ldm_command_takes_process_flow(tmp_path, ae_path, capsys):
    assert main(["train-ldm", "--profile", "ci", "--autoencoder", str(ae_path), "--process", "flow", "--steps", "1",
                 "--out", str(tmp_path / "f")]) == 0
    assert load_checkpoint(tmp_path / "f" / LDM_CHECKPOINT)["config"]["process"] == "flow"
    assert main(["train-ldm", "--profile", "ci", "--autoencoder", str(ae_path), "--process", "fm"]) == 2
    assert "invalid choice: 'fm'" in capsys.readouterr().err


def test_the_wrong_sampler_or_option_is_a_clear_error(untrained_ldm):
    ldm, diffusion = flow_ldm(untrained_ldm), untrained_ldm("text")
    raw = ldm.prompt_condition(prompts=["a large red circle"])
    for sampler in ("ddim", "ddpm", "dpmpp_2m"):
        with pytest.raises(ValueError, match="this is a flow model.*sampler='euler' or 'heun'"):
            ldm.sample(raw, sampler=sampler, steps=2)
    with pytest.raises(ValueError, match="eta=1.0 is DDIM's noise"):
        ldm.sample(raw, sampler="heun", steps=2, eta=1.0)
    with pytest.raises(ValueError, match="steps evenly in t"):
        ldm.sample(raw, steps=2, spacing="leading")
    with pytest.raises(ValueError, match="steps must be a positive int"):
        ldm.sample(raw, steps=0)
    with pytest.raises(ValueError, match="loss_weighting='min_snr' is a diffusion option"):
        ldm.training_step(torch.zeros(1, 4, 8, 8), raw, loss_weighting="min_snr")
    with pytest.raises(ValueError, match="no invert"):
        ldm.invert(torch.zeros(1, 4, 8, 8), raw)
    with pytest.raises(ValueError, match="no img2img"):
        ldm.img2img(torch.zeros(1, 3, 32, 32), raw)
    with pytest.raises(ValueError, match="process must be one of"):
        LDMConfig(process="rectified")
    with pytest.raises(ValueError, match="set the training times of a flow model"):   # a flow-only option
        LDMConfig(logit_mean=0.5)
    with pytest.raises(ValueError, match="logit_std must be > 0"):
        LDMConfig(process="flow", logit_std=0.0)
    with pytest.raises(ValueError, match="timesteps must be an int ≥ 2"):
        RectifiedFlow(timesteps=1)
    with pytest.raises(ValueError, match="logit_std must be > 0"):                # built directly, as toy2d does
        RectifiedFlow(logit_std=0.0)
    assert diffusion.sample(raw, steps=2, decode=False).shape == (1, 4, 8, 8)     # the diffusion default: DDIM


# ---- the 2-D warm-up ---------------------------------------------------------------------------------------
def test_straightness_is_one_for_a_line_and_root_two_for_a_right_angle():
    line = torch.tensor([[[0.0, 0.0]], [[1.0, 1.0]], [[3.0, 3.0]]])
    corner = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]], [[1.0, 1.0]]])
    assert straightness(line) == pytest.approx(1.0) and straightness(corner) == pytest.approx(math.sqrt(2))


def test_the_2d_warm_up_runs_in_the_ci_preset():
    cfg = TOY2D["ci"]
    r = flow_vs_diffusion_2d(cfg)
    assert r["data"].shape == (cfg.num_paths, 2) and two_moons(5).shape == (5, 2)
    for name in ("flow", "diffusion"):
        assert r[name]["paths"].shape == (cfg.sample_steps + 1, cfg.num_paths, 2)
        assert torch.equal(r[name]["samples"], r[name]["paths"][-1]) and r[name]["straightness"] >= 1
        assert set(r[name]["euler_error"]) == set(cfg.error_steps) and len(r[name]["losses"]) == cfg.steps
    assert torch.equal(r["flow"]["paths"][0], r["diffusion"]["paths"][0])             # the same noise


@pytest.mark.slow
def test_flow_matching_needs_fewer_euler_steps_than_diffusion_on_two_moons():
    """The cpu preset: the flow's few-step Euler samples lie closer to its many-step ones, and both models learn
    the moons: their samples lie less than half as far from the data as the noise they start from."""
    cfg = TOY2D["cpu"]
    r = flow_vs_diffusion_2d(cfg)
    assert all(r["flow"]["euler_error"][k] < r["diffusion"]["euler_error"][k] for k in cfg.error_steps)
    to_data = lambda x: float(torch.cdist(x, r["data"]).min(1).values.mean())  # noqa: E731
    for name in ("flow", "diffusion"):
        assert to_data(r[name]["samples"]) < 0.5 * to_data(r[name]["paths"][0])
