"""The ODE samplers (Euler, Heun, DPM-Solver++(2M)): the exact probability-flow solution on Gaussian data, their
orders of convergence, step for step against diffusers' schedulers, guidance, and errors at the public boundary."""

import dataclasses
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")                 # importing diffusers must not reach for the Hub
os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from minildm.autoencoder import build_autoencoder  # noqa: E402
from minildm.data.datasets import ShapesDataset  # noqa: E402
from minildm.diffusion import GaussianDiffusion  # noqa: E402
from minildm.ldm import LatentDiffusion  # noqa: E402
from minildm.samplers import (  # noqa: E402
    ODE_SAMPLERS,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    dpmpp_2m_sample,
    dpmpp_2m_step,
    euler_sample,
    euler_step,
    guided_model_output,
    heun_sample,
    heun_step,
)
from minildm.train.profiles import get_profile  # noqa: E402

T = 1000
SD = dict(schedule="scaled_linear", timesteps=T, beta_start=0.00085, beta_end=0.012)
MU, S = 0.5, 0.3                       # data x_0 ~ N(μ, s²·I): the Bayes-optimal ε̂ and the ODE's solution are known
ORDER = {"euler": 1, "heun": 2, "dpmpp_2m": 2}


def oracle(diffusion, prediction_type="epsilon"):
    """The Bayes-optimal output for x_0 ~ N(μ, s²) in float64: ε̂ = √(1−ᾱ)/(ᾱs² + 1 − ᾱ)·(x_t − √ᾱ·μ)."""
    ab = diffusion.alpha_bar

    def model(x, t, cond):
        a = ab[t.cpu()].view(-1, 1, 1, 1)
        xd = x.double()
        eps = (1 - a).sqrt() / (a * S * S + 1 - a) * (xd - a.sqrt() * MU)
        x0 = (xd - (1 - a).sqrt() * eps) / a.sqrt()
        out = {"epsilon": eps, "sample": x0, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0}[prediction_type]
        return out.to(x.dtype)

    return model


def exact_solution(diffusion, x_T, t):
    """The probability-flow ODE from x_T at T−1 to timestep t (t = −1: the clean data), in closed form.

    With x̃ = x/√ᾱ and σ² = (1−ᾱ)/ᾱ, x̃ ~ N(μ, s² + σ²) and the ODE dx̃/dσ = ε̂ = σ·(x̃ − μ)/(s² + σ²) keeps
    (x̃ − μ)/√(s² + σ²) constant along every path.
    """
    ab = lambda t: 1.0 if t < 0 else float(diffusion.alpha_bar[t])  # noqa: E731
    var = lambda t: S * S + (1 - ab(t)) / ab(t)                      # noqa: E731  s² + σ_t²
    x_tilde = MU + math.sqrt(var(t) / var(T - 1)) * (x_T.double() / math.sqrt(ab(T - 1)) - MU)
    return math.sqrt(ab(t)) * x_tilde


def x_T(seed=0, shape=(64, 1, 2, 2), dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def state_at(solver, diffusion, model, x, steps, t):
    """The sampler's x_t when it reaches timestep t (a node of the trailing list)."""
    _, record = ODE_SAMPLERS[solver](model, diffusion, None, steps=steps, x_T=x, return_intermediates=True)
    return record["x_t"][record["timesteps"].index(t)]


# ---- the first-order solvers are DDIM ---------------------------------------------------------------------
def test_euler_on_the_sigma_ode_is_deterministic_ddim():
    """Karras et al. Sec. 3: x̃_prev = x̃ + (σ_prev − σ)·ε̂ = x̂_0 + σ_prev·ε̂, which is DDIM with η = 0."""
    d, x = GaussianDiffusion(**SD), x_T()
    model = oracle(d)
    for steps in (1, 7, 20):
        torch.testing.assert_close(euler_sample(model, d, None, steps=steps, x_T=x),
                                   ddim_sample(model, d, None, steps=steps, x_T=x), rtol=0, atol=1e-12)


def test_dpmpp_first_order_step_is_ddim_and_the_last_step_returns_x0():
    d, x = GaussianDiffusion(**SD), x_T()
    out = oracle(d)(x, torch.full((x.shape[0],), 600), None)
    torch.testing.assert_close(dpmpp_2m_step(d, out, 600, x, 400)[0], ddim_step(d, out, 600, x, 400)[0],
                               rtol=0, atol=1e-12)
    x0_hat = d.predict_x0_and_eps(x, 600, out)[0]
    x_last, x0 = dpmpp_2m_step(d, out, 600, x, -1, x0_last=torch.zeros_like(x), t_last=800)
    assert torch.equal(x_last, x0_hat) and torch.equal(x0, x0_hat)      # to σ = 0: first order, x_0 = x̂_0
    for step in (euler_step(d, out, 600, x, -1), heun_step(d, out, 600, x, -1, None)):
        torch.testing.assert_close(step[0], x0_hat, rtol=0, atol=1e-12)


# ---- convergence to the exact ODE solution, with the expected order -------------------------------------------
# Measured (SD betas, s = 0.3, float64, max error at t = 39 over 256 scalars), error ratio when the steps double:
#   euler    25→50→100→200 steps   1.97, 1.99, 1.99        (order 1)
#   heun     25→50→100→200 steps   4.02, 4.02, 4.01        (order 2)
#   dpmpp_2m 125→250→500→1000      3.49, 3.76, 3.88        (order 2, reached more slowly: its steps are in λ)
# t = 39 is a node of every one of these trailing lists; comparing there leaves out the last step to σ = 0,
# which every solver takes first order (σ_prev = 0), so the *final* samples converge at order 1 (error ∝ σ_last²).
@pytest.mark.parametrize("solver, steps", [("euler", (25, 50, 100, 200)), ("heun", (25, 50, 100, 200)),
                                           ("dpmpp_2m", (250, 500, 1000))])
def test_each_solver_converges_to_the_exact_ode_solution_with_its_order(solver, steps):
    d, x = GaussianDiffusion(**SD), x_T()
    model, exact = oracle(d), exact_solution(d, x, 39)
    errors = [float((state_at(solver, d, model, x, n, 39) - exact).abs().max()) for n in steps]
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    p = ORDER[solver]
    assert all(r > 2 ** p * 0.85 for r in ratios[1:]), (errors, ratios)
    assert abs(math.log2(ratios[-1]) - p) < 0.1, (errors, ratios)          # the observed order at the finest pair


def test_final_samples_converge_to_the_exact_clean_data_and_second_order_beats_euler():
    d, x = GaussianDiffusion(**SD), x_T()
    model, exact = oracle(d), exact_solution(d, x, -1)
    err = {s: [float((ODE_SAMPLERS[s](model, d, None, steps=n, x_T=x) - exact).abs().max()) for n in (10, 40, 160)]
           for s in ODE_SAMPLERS}
    for s, e in err.items():
        assert e[0] > e[1] > e[2], (s, e)
    assert err["heun"][2] < 0.03 and err["dpmpp_2m"][2] < 0.03
    assert err["dpmpp_2m"][1] < 0.8 * err["euler"][1]      # same model calls, smaller error


@pytest.mark.parametrize("solver", list(ODE_SAMPLERS))
def test_the_three_parameterizations_give_the_same_samples(solver):
    d = {p: GaussianDiffusion(**SD, prediction_type=p) for p in ("epsilon", "sample", "v_prediction")}
    x = x_T()
    out = {p: ODE_SAMPLERS[solver](oracle(d[p], p), d[p], None, steps=8, x_T=x) for p in d}
    torch.testing.assert_close(out["sample"], out["epsilon"], rtol=0, atol=1e-9)
    torch.testing.assert_close(out["v_prediction"], out["epsilon"], rtol=0, atol=1e-9)


# ---- step for step against diffusers --------------------------------------------------------------------------
class TinyNet(torch.nn.Module):
    """The oracle plus a fixed random network of x_t, t and a context: bounded, deterministic, and its output
    really depends on the condition (for the guided comparison)."""

    def __init__(self, diffusion, prediction_type, c=4, d=8):
        super().__init__()
        self.oracle = oracle(diffusion, prediction_type)
        g = torch.Generator().manual_seed(1)
        self.w1 = torch.nn.Parameter(torch.randn(16, c, 3, 3, generator=g) * 0.2)
        self.w2 = torch.nn.Parameter(torch.randn(c, 16, 3, 3, generator=g) * 0.2)
        self.proj = torch.nn.Parameter(torch.randn(d, 16, generator=g) * 0.5)

    def forward(self, x, t, cond):
        h = torch.nn.functional.conv2d(x, self.w1, padding=1) + (t.float() / T)[:, None, None, None]
        if cond is not None:
            h = h + (cond["context"].mean(1) @ self.proj)[:, :, None, None]
        return self.oracle(x, t, None) + 0.2 * torch.tanh(torch.nn.functional.conv2d(torch.tanh(h), self.w2, padding=1))


def diffusers_sample(solver, prediction_type, timesteps, x, output_fn):
    """diffusers' own loop (set_timesteps, scale_model_input, step) with its scheduler set up like ours: the same
    betas and prediction type, our timestep list, final σ = 0, no churn / thresholding / Karras σ's."""
    diffusers = pytest.importorskip("diffusers")
    common = dict(num_train_timesteps=T, beta_start=SD["beta_start"], beta_end=SD["beta_end"],
                  beta_schedule="scaled_linear", prediction_type=prediction_type)
    scheduler = {"dpmpp_2m": lambda: diffusers.DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++",
                                                                            solver_order=2),
                 "euler": lambda: diffusers.EulerDiscreteScheduler(**common),
                 "heun": lambda: diffusers.HeunDiscreteScheduler(**common)}[solver]()
    scheduler.set_timesteps(timesteps=timesteps)
    if solver != "dpmpp_2m":                                 # Euler / Heun carry x̃ = x/√ᾱ = x·√(σ² + 1)
        x = x * (scheduler.sigmas[0] ** 2 + 1) ** 0.5
    for t in scheduler.timesteps:
        out = output_fn(scheduler.scale_model_input(x, t), int(round(float(t))))
        x = scheduler.step(out, t, x).prev_sample
    return x


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")     # inside diffusers, numpy 2
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("steps", [7, 10, 25])
@pytest.mark.parametrize("solver", list(ODE_SAMPLERS))
def test_each_solver_matches_its_diffusers_scheduler(solver, steps, prediction_type):
    """diffusers keeps ᾱ in float32, minildm in float64: the samples differ by float32 rounding (measured worst
    2.0e-6 over these cases, 1.3e-6 with guidance), far below any real mistake (measured: starting one timestep
    off, at 998, moves a sample by 9e-4; first-order steps where DPM-Solver++ takes second-order ones, by 8e-2)."""
    d = GaussianDiffusion(**SD, prediction_type=prediction_type)
    net, x = TinyNet(d, prediction_type).eval(), x_T(3, (2, 4, 8, 8), torch.float32)
    with torch.no_grad():
        ours = ODE_SAMPLERS[solver](net, d, None, steps=steps, x_T=x)
        theirs = diffusers_sample(solver, prediction_type, ddim_timesteps(T, steps), x,
                                  lambda x, t: net(x, torch.full((x.shape[0],), t), None))
    assert float((ours - theirs).abs().max()) <= 1e-4, f"max |Δ| = {float((ours - theirs).abs().max()):.3g}"
    assert float(ours.std()) > 0.1                          # a real sample, not a collapsed one


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("solver", list(ODE_SAMPLERS))
def test_guided_sampling_matches_diffusers_with_the_same_guided_output(solver):
    d = GaussianDiffusion(**SD, prediction_type="v_prediction")
    net, x = TinyNet(d, "v_prediction").eval(), x_T(4, (2, 4, 8, 8), torch.float32)
    g = torch.Generator().manual_seed(2)
    cond, uncond = {"context": torch.randn(2, 5, 8, generator=g)}, {"context": torch.zeros(1, 5, 8)}
    with torch.no_grad():
        ours = ODE_SAMPLERS[solver](net, d, None, cond=cond, uncond=uncond, guidance_scale=3.0, steps=10, x_T=x)
        theirs = diffusers_sample(solver, "v_prediction", ddim_timesteps(T, 10), x,
                                  lambda x, t: guided_model_output(net, x, t, cond, uncond, 3.0))
        unguided = ODE_SAMPLERS[solver](net, d, None, cond=cond, steps=10, x_T=x)
    assert float((ours - theirs).abs().max()) <= 1e-4
    assert float((ours - unguided).abs().max()) > 1e-2     # guidance changed the sample


# ---- guidance, callback, hand-written loops -------------------------------------------------------------------
def cond_model(x, t, cond):
    return torch.tanh(0.8 * x + 1e-3 * t.view(-1, 1, 1, 1).to(x.dtype)) + 0.1 * cond.view(-1, 1, 1, 1).to(x.dtype)


@pytest.mark.parametrize("solver", list(ODE_SAMPLERS))
def test_guidance_scale_one_is_the_conditional_model_alone_and_zero_the_unconditional(solver):
    d, x = GaussianDiffusion(**SD), x_T(shape=(2, 1, 2, 2))
    cond, uncond = torch.tensor([1.0, -1.0]), torch.zeros(2)
    sample = lambda **kw: ODE_SAMPLERS[solver](cond_model, d, None, steps=5, x_T=x, **kw)  # noqa: E731
    assert torch.equal(sample(cond=cond, uncond=uncond, guidance_scale=1.0), sample(cond=cond))
    assert torch.equal(sample(cond=cond, uncond=uncond, guidance_scale=0.0), sample(cond=uncond))
    assert not torch.equal(sample(cond=cond, uncond=uncond, guidance_scale=2.0), sample(cond=cond))


@pytest.mark.parametrize("solver, calls", [("euler", 6), ("dpmpp_2m", 6), ("heun", 11)])
def test_callback_once_per_step_and_model_calls_per_solver(solver, calls):
    d, x, seen, batches = GaussianDiffusion(**SD), x_T(shape=(2, 1, 2, 2)), [], []

    def model(x, t, cond):
        batches.append(x.shape[0])
        return cond_model(x, t, cond)

    ODE_SAMPLERS[solver](model, d, None, cond=torch.ones(2), uncond=torch.zeros(2), guidance_scale=2.0, steps=6,
                         x_T=x, callback=lambda step, t, x_t, x0: seen.append((step, t, x_t.shape, x0.shape)))
    assert [(s, t) for s, t, _, _ in seen] == list(enumerate(ddim_timesteps(T, 6)))
    assert all(a == b == x.shape for _, _, a, b in seen)
    assert batches == [4] * calls                           # one doubled batch per model call; Heun 2·S − 1 calls


def test_hand_written_loops_over_the_public_steps_are_the_samplers_bit_for_bit():
    """What a student writes: for each listed t, the guided output, then one step to the next listed t."""
    d, x = GaussianDiffusion(**SD), x_T(shape=(2, 1, 2, 2))
    cond, uncond = torch.tensor([1.0, -1.0]), torch.zeros(2)
    f = lambda x, t: guided_model_output(cond_model, x, t, cond, uncond, 3.0)  # noqa: E731
    ts = ddim_timesteps(T, 10)
    prev = ts[1:] + [-1]
    xe = xh = xd = x
    x0_last = t_last = None
    for t, t_prev in zip(ts, prev):
        xe, _ = euler_step(d, f(xe, t), t, xe, t_prev)
        xh, _ = heun_step(d, f(xh, t), t, xh, t_prev, f)
        xd, x0 = dpmpp_2m_step(d, f(xd, t), t, xd, t_prev, x0_last, t_last)
        x0_last, t_last = x0, t
    kw = dict(cond=cond, uncond=uncond, guidance_scale=3.0, steps=10, x_T=x)
    assert torch.equal(xe, euler_sample(cond_model, d, None, **kw))
    assert torch.equal(xh, heun_sample(cond_model, d, None, **kw))
    assert torch.equal(xd, dpmpp_2m_sample(cond_model, d, None, **kw))


# ---- the public boundary: LatentDiffusion.sample and the loops ------------------------------------------------
@pytest.mark.parametrize("steps", [0, -1, T + 1, 2.5])
@pytest.mark.parametrize("solver", list(ODE_SAMPLERS))
def test_impossible_step_counts_are_errors(solver, steps):
    with pytest.raises(ValueError, match=r"steps must be an int in \[1, 1000\]"):
        ODE_SAMPLERS[solver](cond_model, GaussianDiffusion(**SD), (1, 1, 2, 2), steps=steps)


def test_latent_diffusion_samples_with_every_solver_and_names_the_valid_ones():
    ci = get_profile("ci")
    torch.manual_seed(0)
    ds = ShapesDataset("train", ci.data)
    ldm = LatentDiffusion(build_autoencoder(ci.ae).eval(), dataclasses.replace(ci.ldm), tokenizer=ds.tokenizer,
                          num_classes=ds.num_classes, max_objects=ds.max_objects)
    ldm.set_scale_factor(ds.batch(range(4))["image"])
    raw = ldm.prompt_condition(prompts=["a small red circle in the center"])
    for solver, loop in ODE_SAMPLERS.items():
        z = ldm.sample(raw, steps=3, guidance_scale=1.0, sampler=solver, decode=False,
                       generator=torch.Generator().manual_seed(5))
        cond = ldm.encode_condition(raw, tuple(z.shape[-2:]))
        expected = loop(ldm.model_fn, ldm.diffusion, z.shape, cond=cond, steps=3,
                        generator=torch.Generator().manual_seed(5))
        assert torch.equal(z, expected), solver
    with pytest.raises(ValueError, match=r"unknown sampler 'dpm\+\+'.*'ddim', 'ddpm', 'dpmpp_2m', 'euler', 'heun'"):
        ldm.sample(raw, steps=3, sampler="dpm++")
    with pytest.raises(ValueError, match="deterministic"):
        ldm.sample(raw, steps=3, sampler="heun", eta=1.0)
    with pytest.raises(ValueError, match=r"\[1, 1000\]"):
        ldm.sample(raw, steps=0, sampler="dpmpp_2m")
