"""The forward process of DDPM/LDM, checked against closed forms recomputed here in float64."""

import math

import numpy as np
import pytest
import torch

from minildm.diffusion import PREDICTION_TYPES, GaussianDiffusion, make_beta_schedule

T = 1000
LDM = dict(schedule="scaled_linear", timesteps=T, beta_start=0.0015, beta_end=0.0195)




def np_alpha_bar(schedule="scaled_linear", T=T, b0=0.0015, b1=0.0195):
    """ᾱ_t recomputed with NumPy, independent of the package."""
    if schedule == "linear":
        betas = np.linspace(b0, b1, T)
    elif schedule == "scaled_linear":
        betas = np.linspace(math.sqrt(b0), math.sqrt(b1), T) ** 2
    else:
        raise AssertionError(schedule)
    return betas, np.cumprod(1 - betas)


# ---- schedules ------------------------------------------------------------------------------------
def test_scaled_linear_is_linear_in_sqrt_beta_and_differs_from_linear():
    betas = make_beta_schedule("scaled_linear", T, 0.0015, 0.0195).numpy()
    expected = np.array([(math.sqrt(0.0015) + i * (math.sqrt(0.0195) - math.sqrt(0.0015)) / (T - 1)) ** 2
                         for i in range(T)])
    np.testing.assert_allclose(betas, expected, rtol=1e-12)
    linear = make_beta_schedule("linear", T, 0.0015, 0.0195).numpy()
    np.testing.assert_allclose(linear, 0.0015 + np.arange(T) * (0.0195 - 0.0015) / (T - 1), rtol=1e-12)
    # same endpoints, but the scaled schedule is convex: its middle is below the straight line
    assert betas[0] == pytest.approx(linear[0]) and betas[-1] == pytest.approx(linear[-1])
    assert betas[T // 2] < linear[T // 2] - 1e-3


def test_cosine_endpoints():
    s = 0.008
    d = GaussianDiffusion("cosine", T)
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    assert float(d.alpha_bar[0]) == pytest.approx(f(1 / T) / f(0), rel=1e-10)   # ᾱ at the first step ≈ 1
    assert float(d.betas[-1]) == pytest.approx(0.999)                              # clipped: cos²(π/2) = 0
    assert float(d.betas.max()) <= 0.999 and float(d.betas.min()) > 0
    assert float(d.alpha_bar[-1]) < 1e-5
    mid = T // 2 - 1  # ᾱ at t = T/2 is cos²(π/2·(0.5 + s)/(1 + s)) / f(0) up to the clipping (inactive there)
    assert float(d.alpha_bar[mid]) == pytest.approx(f(0.5) / f(0), rel=1e-10)


def test_bad_schedule_prediction_type_and_betas_are_clear_errors():
    with pytest.raises(ValueError, match="scaled_linear"):
        GaussianDiffusion("sqrt_linear")
    with pytest.raises(ValueError, match="v_prediction"):
        GaussianDiffusion(prediction_type="v")
    with pytest.raises(ValueError, match="beta_start"):
        GaussianDiffusion("linear", beta_start=0.02, beta_end=0.0001)
    with pytest.raises(ValueError, match="timesteps"):
        GaussianDiffusion(timesteps=0)


# ---- q(x_t | x_0) ----------------------------------------------------------------------------------
def test_add_noise_statistics_match_q_xt_given_x0():
    d = GaussianDiffusion(**LDM)
    _, ab = np_alpha_bar()
    g = torch.Generator().manual_seed(0)
    n = 20_000
    x0 = torch.linspace(-1, 1, 8).reshape(1, 2, 2, 2).expand(n, 2, 2, 2)
    for t in (0, 10, 300, 999):
        x_t = d.add_noise(x0, torch.randn(x0.shape, generator=g), t).double()
        mean, var = math.sqrt(ab[t]) * x0[0].double(), 1 - ab[t]
        se_mean, se_var = math.sqrt(var / n), var * math.sqrt(2 / n)       # standard errors
        assert (x_t.mean(0) - mean).abs().max() < 5 * se_mean
        assert (x_t.var(0) - var).abs().max() < 5 * se_var


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
def test_closed_form_matches_iterating_the_chain(schedule):
    """q(x_t|x_0) = N(√ᾱ_t x_0, 1−ᾱ_t) equals T one-step kernels N(√(1−β_t) x_{t−1}, β_t) (moments in float64)."""
    d = GaussianDiffusion(schedule, T, 1e-4, 0.02)
    betas = d.betas.numpy()
    x0 = torch.full((T, 1, 1, 1), 0.7, dtype=torch.float64)
    t_all = torch.arange(T)
    mean_cf = d.add_noise(x0, torch.zeros_like(x0), t_all).flatten().numpy()            # √ᾱ_t·x_0
    std_cf = d.add_noise(torch.zeros_like(x0), torch.ones_like(x0), t_all).flatten().numpy()  # √(1−ᾱ_t)
    m, v = 0.7, 0.0
    for t in range(T):  # x_t = √(1−β_t)·x_{t−1} + √β_t·ε
        m, v = math.sqrt(1 - betas[t]) * m, (1 - betas[t]) * v + betas[t]
        assert mean_cf[t] == pytest.approx(m, rel=1e-9, abs=1e-12)
        assert std_cf[t] ** 2 == pytest.approx(v, rel=1e-9)


def test_closed_form_matches_monte_carlo_chain():
    d = GaussianDiffusion("linear", 20, 0.01, 0.2)
    g = torch.Generator().manual_seed(1)
    n = 40_000
    x = torch.full((n,), 0.5, dtype=torch.float64)
    for t in range(20):
        b = float(d.betas[t])
        x = math.sqrt(1 - b) * x + math.sqrt(b) * torch.randn(n, generator=g, dtype=torch.float64)
    ab = float(d.alpha_bar[19])
    mean, var = math.sqrt(ab) * 0.5, 1 - ab                       # q(x_19 | x_0) = N(√ᾱ·x_0, 1 − ᾱ)
    assert abs(x.mean() - mean) < 5 * math.sqrt(var / n)
    assert abs(x.var() - var) < 5 * var * math.sqrt(2 / n)


# ---- q(x_{t−1} | x_t, x_0) -----------------------------------------------------------------------
def test_posterior_is_bayes_rule_for_gaussians():
    """q(x_{t−1}|x_t,x_0) ∝ q(x_t|x_{t−1})·q(x_{t−1}|x_0), multiplied out here as precisions."""
    d = GaussianDiffusion(**LDM)
    betas, ab = np_alpha_bar()
    t = np.arange(1, T)
    x0, x_t = 0.3, -1.2
    prec = 1 / (1 - ab[t - 1]) + (1 - betas[t]) / betas[t]
    var = 1 / prec
    mean = var * (np.sqrt(ab[t - 1]) * x0 / (1 - ab[t - 1]) + np.sqrt(1 - betas[t]) * x_t / betas[t])
    full = lambda v: torch.full((T - 1, 1), v, dtype=torch.float64)
    m, v, log_v = d.posterior_mean_variance(full(x0), full(x_t), torch.from_numpy(t))
    np.testing.assert_allclose(m.flatten().numpy(), mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(v.flatten().numpy(), var, rtol=1e-9)
    np.testing.assert_allclose(log_v.flatten().numpy(), np.log(var), rtol=1e-9)
    # t = 0: x_{−1} is the data itself, so the posterior is a point mass at x_0 (log-variance clipped)
    m0, v0, log_v0 = d.posterior_mean_variance(full(x0)[:1], full(x_t)[:1], 0)
    assert m0.item() == pytest.approx(x0) and v0.item() == 0 and log_v0.item() == pytest.approx(math.log(1e-20))


# ---- parameterizations ----------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_parameterization_round_trips_with_the_true_noise(prediction_type):
    d = GaussianDiffusion(**LDM, prediction_type=prediction_type)
    _, ab = np_alpha_bar()
    g = torch.Generator().manual_seed(2)
    t = torch.tensor([0, 1, 50, 500, 998, 999])
    x0 = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    x_t = d.add_noise(x0, eps, t)
    a = torch.from_numpy(np.sqrt(ab[t.numpy()])).view(-1, 1, 1, 1)
    target = {"epsilon": eps, "sample": x0, "v_prediction": a * eps - (1 - a**2).sqrt() * x0}[prediction_type]
    torch.testing.assert_close(d.training_target(x0, eps, t), target, rtol=1e-12, atol=1e-12)
    x0_hat, eps_hat = d.predict_x0_and_eps(x_t, t, target)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps_hat, eps, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(d.get_velocity(x0, eps, t), a * eps - (1 - a**2).sqrt() * x0)


def test_snr_is_alpha_bar_over_one_minus_alpha_bar_and_decreasing():
    d = GaussianDiffusion(**LDM)
    _, ab = np_alpha_bar()
    snr = d.snr(torch.arange(T)).numpy()
    np.testing.assert_allclose(snr, ab / (1 - ab), rtol=1e-10)
    assert (np.diff(snr) < 0).all()
    assert d.snr(3).item() == pytest.approx(ab[3] / (1 - ab[3]))


# ---- L_simple -------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_training_loss_is_mse_to_the_parameterization_target(prediction_type):
    d = GaussianDiffusion(**LDM, prediction_type=prediction_type)
    _, ab = np_alpha_bar()
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g)
    t = torch.tensor([0, 7, 400, 999])
    a = torch.from_numpy(np.sqrt(ab[t.numpy()])).float().view(-1, 1, 1, 1)       # √ᾱ_t
    b = torch.from_numpy(np.sqrt(1 - ab[t.numpy()])).float().view(-1, 1, 1, 1)   # √(1−ᾱ_t), float64 then cast
    target = {"epsilon": noise, "sample": x0, "v_prediction": a * noise - b * x0}[prediction_type]
    seen = {}

    def model(x_t, tt, cond):
        seen.update(x_t=x_t, t=tt, cond=cond)
        return torch.zeros_like(x_t)

    loss = d.training_loss(model, x0, cond={"y": torch.arange(4)}, t=t, noise=noise, reduction="none")
    torch.testing.assert_close(loss, target.pow(2).mean((1, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(seen["x_t"], a * x0 + b * noise, rtol=1e-5, atol=1e-6)
    assert seen["t"].dtype == torch.int64 and torch.equal(seen["t"], t) and "y" in seen["cond"]
    # a perfect model has zero loss
    assert d.training_loss(lambda x, tt, c: target, x0, t=t, noise=noise).item() < 1e-10


def test_training_loss_draws_t_uniformly_and_is_seeded():
    d = GaussianDiffusion(**LDM)
    ts = []
    model = lambda x, t, c: (ts.append(t), torch.zeros_like(x))[1]
    g = torch.Generator().manual_seed(4)
    for _ in range(20):
        d.training_loss(model, torch.zeros(1000, 1, 1, 1), generator=g)
    t = torch.cat(ts).double()
    assert t.min() >= 0 and t.max() <= T - 1
    # U{0..T−1}: mean (T−1)/2, sd ≈ T/√12; 20 000 draws
    assert abs(t.mean() - (T - 1) / 2) < 5 * (T / math.sqrt(12)) / math.sqrt(len(t))
    x = torch.randn(3, 1, 2, 2)
    l1 = d.training_loss(lambda x, t, c: x, x, generator=torch.Generator().manual_seed(5))
    l2 = d.training_loss(lambda x, t, c: x, x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(l1, l2)


def test_min_snr_weighting_matches_formula():
    """Min-SNR-γ: each sample's MSE times min(SNR_t, γ)/SNR_t (ε), min(SNR_t, γ)/(SNR_t + 1) (v), min(SNR_t, γ) (x0)."""
    import torch as _t

    from minildm.diffusion import GaussianDiffusion as _GD

    x0 = _t.randn(6, 2, 3, 3, dtype=_t.float64).float()
    noise = _t.randn(6, 2, 3, 3)
    t = _t.tensor([0, 5, 100, 400, 800, 999])
    out = _t.randn(6, 2, 3, 3)
    for ptype in ("epsilon", "v_prediction", "sample"):
        d = _GD(prediction_type=ptype)
        plain = d.training_loss(lambda x, tt, c: out, x0, t=t, noise=noise, reduction="none")
        weighted = d.training_loss(lambda x, tt, c: out, x0, t=t, noise=noise, reduction="none", weighting="min_snr")
        ab = d.alpha_bar[t]
        snr = ab / (1 - ab)
        g = snr.clamp(max=5.0)
        w = {"epsilon": g / snr, "v_prediction": g / (snr + 1), "sample": g}[ptype]
        assert _t.allclose(weighted.double(), plain.double() * w, rtol=1e-5)
