"""DDPM / DDIM samplers, checked against the exact Gaussian oracle and float64 re-derivations of the updates."""

import math

import numpy as np
import pytest
import torch

from minildm.diffusion import GaussianDiffusion
from minildm.samplers import (
    ddim_coefficients,
    ddim_invert,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    ddpm_step,
    guided_model_output,
    img2img,
)

T = 1000
LDM = dict(schedule="scaled_linear", timesteps=T, beta_start=0.0015, beta_end=0.0195)
SD = dict(schedule="scaled_linear", timesteps=T, beta_start=0.00085, beta_end=0.012)
MU, S = 0.5, 0.3                       # data x_0 ~ N(μ, s²·I)
N_SAMPLES = (4096, 1, 4, 4)            # 65 536 scalars: SE(mean) ≈ 0.0012, SE(std) ≈ 0.0008 at s = 0.3




def np_alpha_bar(b0, b1):
    return np.cumprod(1 - np.linspace(math.sqrt(b0), math.sqrt(b1), T) ** 2)


def make_oracle(diffusion, mu=MU, s=S, prediction_type="epsilon"):
    """The Bayes-optimal output for x_0 ~ N(μ, s²): ε̂ = √(1−ᾱ)/(ᾱs² + 1 − ᾱ)·(x_t − √ᾱ·μ), in any parameterization."""
    ab = torch.from_numpy(np_alpha_bar(diffusion.beta_start, diffusion.beta_end))

    def model(x, t, cond):
        a = ab[t.cpu()].to(x.dtype).view(-1, 1, 1, 1)
        eps = (1 - a).sqrt() / (a * s * s + 1 - a) * (x - a.sqrt() * mu)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        return {"epsilon": eps, "sample": x0, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0}[prediction_type]

    return model


def propagate(ab, timesteps, eta, mu=MU, s=S):
    """Mean and std of the sampler's output under the oracle, from x_T ~ N(0, 1), by float64 moment propagation.

    Every step is affine in x_t plus independent noise: x_prev = A·x_t + B + σ·z, so m ← A·m + B, v ← A²·v + σ².
    ᾱ_prev is ᾱ of the next listed timestep and 1 after the last one.
    """
    m, v = 0.0, 1.0
    for i, t in enumerate(timesteps):
        a, ap = ab[t], (ab[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.0)
        sigma = eta * math.sqrt((1 - ap) / (1 - a) * (1 - a / ap))

        def step(x):
            eps = math.sqrt(1 - a) / (a * s * s + 1 - a) * (x - math.sqrt(a) * mu)
            x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
            return math.sqrt(ap) * x0 + math.sqrt(1 - ap - sigma**2) * eps

        B = step(0.0)
        A = step(1.0) - B
        m, v = A * m + B, A * A * v + sigma**2
    return m, math.sqrt(v)


def assert_stats(x, mean, std, n_se=5.0):
    """Sample mean/std agree with the predicted ones within n_se standard errors."""
    n = x.numel()
    assert abs(x.double().mean().item() - mean) < n_se * std / math.sqrt(n), (x.mean().item(), mean)
    assert abs(x.double().std().item() - std) < n_se * std / math.sqrt(2 * n), (x.std().item(), std)


def smooth_model(x, t, cond):
    """A smooth nonlinear stand-in for a U-Net (depends on x, t and an optional tensor condition)."""
    out = torch.tanh(0.8 * x + 1e-3 * t.view(-1, 1, 1, 1).to(x.dtype))
    if isinstance(cond, torch.Tensor):
        out = out + 0.1 * cond.view(-1, 1, 1, 1).to(x.dtype)
    return out


# ---- timesteps ------------------------------------------------------------------------------------
STEPS = [1, 2, 3, 7, 10, 33, 50, 99, 100, 101, 250, 333, 500, 667, 999, 1000]


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
def test_ddim_timesteps_are_strictly_decreasing_in_range_with_the_right_length(spacing):
    for steps in STEPS:
        ts = ddim_timesteps(T, steps, spacing)
        assert len(ts) == steps and all(isinstance(t, int) for t in ts)
        assert all(0 <= t <= T - 1 for t in ts)
        assert all(a > b for a, b in zip(ts, ts[1:])), (steps, ts)
        if spacing == "trailing":
            assert ts[0] == T - 1                                   # starts where the noise is pure
            assert ts[-1] == T // steps - 1 or ts[-1] == math.floor(T / steps) - 1
        if spacing == "leading":
            assert ts[-1] == 0 and ts[0] == (steps - 1) * (T // steps)
        if spacing == "linspace" and steps > 1:
            assert ts[0] == T - 1 and ts[-1] == 0
    assert ddim_timesteps(T, T, spacing) == list(range(T - 1, -1, -1))


def test_ddim_timesteps_match_their_definitions():
    assert ddim_timesteps(T, 10, "trailing") == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert ddim_timesteps(T, 10, "leading") == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert ddim_timesteps(T, 3, "trailing") == [999, 665, 332]
    assert ddim_timesteps(T, 3, "leading") == [666, 333, 0]
    assert ddim_timesteps(T, 4, "linspace") == [999, 666, 333, 0]
    # no ties at S = 6 (i·999/5 is never k + ½), so NumPy's rounding agrees with ours
    np.testing.assert_array_equal(ddim_timesteps(T, 6, "linspace"), np.round(np.linspace(T - 1, 0, 6)).astype(int))


@pytest.mark.parametrize("steps", [0, T + 1, -3])
def test_ddim_timesteps_reject_impossible_step_counts(steps):
    with pytest.raises(ValueError, match=r"\[1, 1000\]"):
        ddim_timesteps(T, steps)
    with pytest.raises(ValueError, match=r"\[1, 1000\]"):
        ddim_sample(smooth_model, GaussianDiffusion(**LDM), (1, 1, 2, 2), steps=steps)


def test_unknown_spacing_and_bad_eta_are_errors():
    d = GaussianDiffusion(**LDM)
    with pytest.raises(ValueError, match="trailing"):
        ddim_timesteps(T, 10, "uniform")
    for eta in (-0.5, 3.0, float("nan")):     # η > 1: √(1 − ᾱ_prev − σ²) is not real; it is never clamped silently
        with pytest.raises(ValueError, match="eta"):
            ddim_sample(smooth_model, d, (1, 1, 2, 2), steps=10, eta=eta)


# ---- DDIM coefficients ----------------------------------------------------------------------------
def test_ddim_eta1_all_steps_uses_exactly_the_ddpm_posterior_variance():
    d = GaussianDiffusion(**LDM)
    ab = np_alpha_bar(0.0015, 0.0195)
    betas = np.linspace(math.sqrt(0.0015), math.sqrt(0.0195), T) ** 2
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    posterior_var = betas * (1 - ab_prev) / (1 - ab)       # β̃_t, recomputed here
    ts = ddim_timesteps(T, T)
    _, _, sigma = ddim_coefficients(d, ts, 1.0)
    np.testing.assert_allclose(sigma.numpy() ** 2, posterior_var[ts], rtol=1e-10, atol=1e-300)
    assert sigma[-1] == 0                                  # no noise at the last step, as in DDPM


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
def test_ddim_previous_timestep_comes_from_the_list_and_is_clean_data_at_the_end(spacing):
    d = GaussianDiffusion(**LDM)
    ab = np_alpha_bar(0.0015, 0.0195)
    for steps in (3, 7, 50):
        ts = ddim_timesteps(T, steps, spacing)
        a, a_prev, sigma = ddim_coefficients(d, ts, 0.7)
        np.testing.assert_allclose(a.numpy(), ab[ts], rtol=1e-12)
        np.testing.assert_allclose(a_prev.numpy(), list(ab[ts[1:]]) + [1.0], rtol=1e-12)
        expected = 0.7 * np.sqrt((1 - a_prev.numpy()) / (1 - ab[ts]) * (1 - ab[ts] / a_prev.numpy()))
        np.testing.assert_allclose(sigma.numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_last_step_returns_the_predicted_x0(eta):
    d = GaussianDiffusion(**LDM)
    x, inter = ddim_sample(smooth_model, d, (2, 1, 3, 3), steps=5, eta=eta, return_intermediates=True,
                           generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, inter["pred_x0"][-1], rtol=0, atol=1e-6)


# ---- DDIM ↔ DDPM, determinism ---------------------------------------------------------------------
def test_ddim_eta1_all_steps_is_ddpm():
    d = GaussianDiffusion(**LDM)
    kw = dict(generator=None, x_T=torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0)))
    a = ddpm_sample(smooth_model, d, None, **{**kw, "generator": torch.Generator().manual_seed(1)})
    b = ddim_sample(smooth_model, d, None, steps=T, eta=1.0, **{**kw, "generator": torch.Generator().manual_seed(1)})
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_ddim_eta0_is_deterministic_and_seeded_runs_are_bitwise_identical():
    d = GaussianDiffusion(**LDM)
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    a = ddim_sample(smooth_model, d, None, x_T=x_T, steps=20, generator=torch.Generator().manual_seed(1))
    b = ddim_sample(smooth_model, d, None, x_T=x_T, steps=20, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)                               # η = 0 draws no noise after x_T
    for sampler, kw in ((ddim_sample, dict(steps=20, eta=0.5)), (ddpm_sample, {})):
        runs = [sampler(smooth_model, d, (2, 1, 4, 4), generator=torch.Generator().manual_seed(7), **kw)
                for _ in range(2)]
        assert torch.equal(runs[0], runs[1])
        other = sampler(smooth_model, d, (2, 1, 4, 4), generator=torch.Generator().manual_seed(8), **kw)
        assert not torch.equal(runs[0], other)


# ---- the exact Gaussian oracle -------------------------------------------------------------------
@pytest.mark.slow
def test_ddpm_with_the_oracle_samples_the_data_distribution():
    d = GaussianDiffusion(**LDM)
    x = ddpm_sample(make_oracle(d), d, N_SAMPLES, generator=torch.Generator().manual_seed(0))
    mean, std = propagate(np_alpha_bar(0.0015, 0.0195), list(range(T - 1, -1, -1)), eta=1.0)
    assert_stats(x, mean, std)
    # ancestral sampling with β̃_t slightly under-disperses (true reverse variance is β̃_t + coef²·Var[x_0|x_t])
    assert abs(mean - MU) < 1e-3 and abs(std - S) < 0.01


def test_ddim_50_steps_with_the_oracle_matches_float64_and_the_data():
    d = GaussianDiffusion(**LDM)
    ts = ddim_timesteps(T, 50)
    x = ddim_sample(make_oracle(d), d, N_SAMPLES, steps=50, generator=torch.Generator().manual_seed(0))
    mean, std = propagate(np_alpha_bar(0.0015, 0.0195), ts, eta=0.0)
    assert_stats(x, mean, std)
    # deterministic DDIM is an Euler-type discretization: the std comes out low at few steps
    assert abs(mean - MU) < 0.005 and 0.24 < std < S


@pytest.mark.slow
def test_ddim_bias_by_step_count_matches_the_reference_measurement():
    """REFERENCE.md: scaled-linear, s = 0.3 → std 0.21 / 0.273 / 0.291 / 0.298 at 10 / 50 / 200 / 1000 steps.

    Those numbers are reproduced by the Stable-Diffusion betas (0.00085 → 0.012) with leading spacing.
    """
    d = GaussianDiffusion(**SD)
    ab = np_alpha_bar(0.00085, 0.012)
    for steps, reference in ((10, 0.21), (50, 0.273), (200, 0.291), (1000, 0.298)):
        ts = ddim_timesteps(T, steps, "leading")
        mean, std = propagate(ab, ts, eta=0.0)
        assert abs(std - reference) < 0.0015, (steps, std)
        x = ddim_sample(make_oracle(d), d, N_SAMPLES, steps=steps, spacing="leading",
                        generator=torch.Generator().manual_seed(steps))
        assert_stats(x, mean, std)


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_samplers_agree_across_parameterizations(prediction_type):
    eps_d, other_d = GaussianDiffusion(**LDM), GaussianDiffusion(**LDM, prediction_type=prediction_type)
    x_T = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = ddim_sample(make_oracle(eps_d), eps_d, None, x_T=x_T, steps=20, eta=0.5,
                    generator=torch.Generator().manual_seed(1))
    b = ddim_sample(make_oracle(other_d, prediction_type=prediction_type), other_d, None, x_T=x_T, steps=20,
                    eta=0.5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


# ---- inversion and img2img ------------------------------------------------------------------------
def test_ddim_inversion_is_exact_when_eps_does_not_depend_on_x():
    d = GaussianDiffusion(**LDM)
    pattern = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = lambda x, t, c: torch.sin(t.to(x.dtype) / 100).view(-1, 1, 1, 1) * pattern
    x0 = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for spacing in ("trailing", "leading"):
        x_T = ddim_invert(model, d, x0, steps=25, spacing=spacing)
        back = ddim_sample(model, d, None, x_T=x_T, steps=25, spacing=spacing)
        torch.testing.assert_close(back, x0, rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_ddim_inversion_then_sampling_returns_the_start_with_first_order_error():
    """Inversion evaluates ε̂ one point early, an O(step) error: the round trip converges like 1/S."""
    d = GaussianDiffusion(**LDM)
    model = make_oracle(d)
    x0 = MU + S * torch.randn(256, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    errors = {}
    for steps in (50, 200, 1000):
        x_T = ddim_invert(model, d, x0, steps=steps)
        assert abs(x_T.std().item() - 1.0) < 0.1          # the inverted latents look like N(0, I) noise
        errors[steps] = (ddim_sample(model, d, None, x_T=x_T, steps=steps) - x0).pow(2).mean().sqrt().item()
    order = math.log(errors[50] / errors[1000]) / math.log(1000 / 50)
    assert 0.8 < order < 1.2, errors                       # first order in the step size
    assert errors[200] < errors[50] / 3 and errors[1000] < errors[200] / 4


def test_img2img_noises_to_the_strength_timestep_then_runs_the_tail_of_ddim():
    d = GaussianDiffusion(**LDM)
    x0 = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    ab = np_alpha_bar(0.0015, 0.0195)
    out, inter = img2img(smooth_model, d, x0, strength=0.5, steps=10, generator=torch.Generator().manual_seed(1),
                         return_intermediates=True)                     # draws the same noise
    assert inter["timesteps"] == ddim_timesteps(T, 10)[5:]
    t0 = inter["timesteps"][0]
    torch.testing.assert_close(inter["x_t"][0], math.sqrt(ab[t0]) * x0 + math.sqrt(1 - ab[t0]) * noise)
    torch.testing.assert_close(out, inter["pred_x0"][-1], rtol=0, atol=1e-6)
    assert torch.equal(img2img(smooth_model, d, x0, strength=0.0, steps=10), x0)
    _, full = img2img(smooth_model, d, x0, strength=1.0, steps=10, return_intermediates=True)
    assert full["timesteps"][0] == T - 1
    with pytest.raises(ValueError, match="strength"):
        img2img(smooth_model, d, x0, strength=1.5)


# ---- classifier-free guidance ---------------------------------------------------------------------
class CountingModel:
    """Records every call's batch size and condition; output depends on x, t and cond."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, cond):
        self.calls.append((x.shape[0], cond))
        y = cond["y"] if isinstance(cond, dict) else cond
        return smooth_model(x, t, y)


def test_guidance_scale_one_is_conditional_and_zero_is_unconditional():
    x = torch.randn(3, 1, 2, 2)
    cond, uncond = torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3)
    t = torch.full((3,), 500)
    m = CountingModel()
    torch.testing.assert_close(guided_model_output(m, x, 500, cond, uncond, 1.0), smooth_model(x, t, cond))
    torch.testing.assert_close(guided_model_output(m, x, 500, cond, uncond, 0.0), smooth_model(x, t, uncond))
    assert [b for b, _ in m.calls] == [3, 3]              # neither needs the doubled batch
    out = guided_model_output(m, x, 500, cond, uncond, 4.0)
    e_c, e_u = smooth_model(x, t, cond), smooth_model(x, t, uncond)
    torch.testing.assert_close(out, e_u + 4.0 * (e_c - e_u))
    assert m.calls[-1][0] == 6 and torch.equal(m.calls[-1][1], torch.cat([cond, uncond]))
    with pytest.raises(TypeError, match="uncond"):
        guided_model_output(m, x, 500, cond, None, 3.0)


def test_guidance_uses_one_doubled_batch_per_step_and_concatenates_dicts_per_key():
    d = GaussianDiffusion(**LDM)
    m = CountingModel()
    cond = {"y": torch.tensor([1.0, 2.0]), "context_mask": torch.ones(2, 5, dtype=torch.bool)}
    uncond = {"y": torch.zeros(1), "context_mask": torch.zeros(1, 5, dtype=torch.bool)}  # batch 1 broadcasts
    ddim_sample(m, d, (2, 1, 2, 2), cond=cond, uncond=uncond, guidance_scale=2.5, steps=7,
                generator=torch.Generator().manual_seed(0))
    assert len(m.calls) == 7 and all(b == 4 for b, _ in m.calls)
    c = m.calls[0][1]
    assert torch.equal(c["y"], torch.tensor([1.0, 2.0, 0.0, 0.0]))
    assert c["context_mask"].shape == (4, 5) and c["context_mask"][:2].all() and not c["context_mask"][2:].any()


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_guidance_on_the_raw_output_equals_guidance_on_eps(prediction_type):
    d = GaussianDiffusion(**LDM, prediction_type=prediction_type)
    g = torch.Generator().manual_seed(0)
    x, out_c, out_u = (torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64) for _ in range(3))
    t, s = 300, 3.0
    model = lambda xx, tt, cond: torch.cat([out_c, out_u])
    guided = guided_model_output(model, x, t, torch.ones(2), torch.zeros(2), s)
    _, eps_guided = d.predict_x0_and_eps(x, t, guided)
    _, eps_c = d.predict_x0_and_eps(x, t, out_c)
    _, eps_u = d.predict_x0_and_eps(x, t, out_u)
    torch.testing.assert_close(eps_guided, eps_u + s * (eps_c - eps_u))


# ---- callback and intermediates -------------------------------------------------------------------
def test_callback_once_per_step_with_the_right_t_and_shapes():
    d_small = GaussianDiffusion("linear", 30, 1e-3, 0.2)
    shape = (2, 3, 4, 4)
    cases = [
        (ddpm_sample, d_small, dict(shape=shape), list(range(29, -1, -1))),
        (ddim_sample, d_small, dict(shape=shape, steps=7, eta=0.3), ddim_timesteps(30, 7)),
        (ddim_invert, d_small, dict(x0=torch.zeros(shape), steps=7), ddim_timesteps(30, 7)[::-1]),
    ]
    for sampler, d, kw, expected_t in cases:
        seen = []
        cb = lambda step, t, x_t, pred_x0: seen.append((step, t, tuple(x_t.shape), tuple(pred_x0.shape)))
        extra = {} if sampler is ddim_invert else dict(generator=torch.Generator().manual_seed(0))
        out, inter = sampler(smooth_model, d, callback=cb, return_intermediates=True, **kw, **extra)
        assert [s for s, *_ in seen] == list(range(len(expected_t)))
        assert [t for _, t, *_ in seen] == expected_t
        assert all(xs == shape and ps == shape for *_, xs, ps in seen)
        assert inter["timesteps"] == expected_t
        assert len(inter["x_t"]) == len(inter["pred_x0"]) == len(expected_t)
        assert out.shape == shape


def test_intermediates_start_at_x_T_and_x0_is_not_clipped():
    d = GaussianDiffusion(**LDM)
    x_T = 3 * torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    wild = lambda x, t, c: -x  # ε̂ = −x_t makes x̂_0 far outside [−1, 1]
    _, inter = ddim_sample(wild, d, None, x_T=x_T, steps=5, return_intermediates=True)
    assert torch.equal(inter["x_t"][0], x_T)
    assert inter["pred_x0"][0].abs().max() > 1


# ------------------------------------------------------------------------------ one step, by hand


def _seeded_model():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(2, 2, 3, padding=1)

    def model(x, t, cond):                       # depends on x, t and the condition
        with torch.no_grad():
            return net(x) * (1 + t.view(-1, 1, 1, 1) / 1000) + (0 if cond is None else cond.view(-1, 1, 1, 1))
    return model


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_a_hand_written_loop_over_ddim_step_is_ddim_sample_bit_for_bit(eta):
    """What a student writes: for each listed t, the (guided) model output, then one ddim_step to the next
    listed timestep (−1 after the last: the clean data). Same generator, same numbers, to the last bit."""
    D = GaussianDiffusion(**LDM, prediction_type="v_prediction")
    model = _seeded_model()
    cond, uncond = torch.tensor([0.3, -0.2]), torch.zeros(2)
    x_T = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    ts = ddim_timesteps(T, 10)
    x, g = x_T.clone(), torch.Generator().manual_seed(2)
    for i, t in enumerate(ts):
        out = guided_model_output(model, x, t, cond, uncond, guidance_scale=3.0)
        x, x0_hat = ddim_step(D, out, t, x, ts[i + 1] if i + 1 < len(ts) else -1, eta=eta, generator=g)
    expected = ddim_sample(model, D, None, cond=cond, uncond=uncond, guidance_scale=3.0, steps=10, eta=eta,
                           x_T=x_T, generator=torch.Generator().manual_seed(2))
    assert torch.equal(x, expected)
    assert torch.equal(x, x0_hat)                 # the last step goes to the clean data: it returns x̂_0


def test_a_hand_written_loop_over_ddpm_step_is_ddpm_sample_bit_for_bit():
    D = GaussianDiffusion(schedule="linear", timesteps=50)
    model = _seeded_model()
    x_T = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    x, g = x_T.clone(), torch.Generator().manual_seed(5)
    for t in range(49, -1, -1):
        x, _ = ddpm_step(D, model(x, torch.full((2,), t), None), t, x, generator=g)
    assert torch.equal(x, ddpm_sample(model, D, None, x_T=x_T, generator=torch.Generator().manual_seed(5)))


def test_ddim_step_is_the_formula_in_float64():
    """x_prev = √ᾱ_prev·x̂_0 + √(1 − ᾱ_prev − σ²)·ε̂ + σ·z, re-derived in float64 from the ε-output."""
    D = GaussianDiffusion(**LDM)
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    ab = np_alpha_bar(0.0015, 0.0195)
    for t, t_prev, eta in ((999, 899, 0.0), (500, 300, 0.7), (40, -1, 1.0)):
        g = torch.Generator().manual_seed(3)
        got, x0 = ddim_step(D, eps, t, x, t_prev, eta=eta, generator=g)
        a, ap = ab[t], (ab[t_prev] if t_prev >= 0 else 1.0)
        sigma = eta * math.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
        x0_64 = (x.double() - math.sqrt(1 - a) * eps.double()) / math.sqrt(a)
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(3)).double() if sigma > 0 else 0
        want = math.sqrt(ap) * x0_64 + math.sqrt(1 - ap - sigma**2) * eps.double() + sigma * z
        assert torch.allclose(got.double(), want, atol=1e-5, rtol=1e-5), (t, t_prev, eta)
        assert torch.allclose(x0.double(), x0_64, atol=1e-5, rtol=1e-5)
