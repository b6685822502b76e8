"""The instruments of eval/process.py: the forward chain against its closed form, the moments test, the SNR
crossing, the ideal observer, the anatomy of the targets (on a model: tests/test_ldm_inversion.py). Each is checked
against a formula recomputed here."""

import math

import pytest
import torch

from minildm.diffusion import GaussianDiffusion
from minildm.eval.process import (
    chain_moments,
    ideal_observer_accuracy,
    iterate_chain,
    moment_z_scores,
    target_coefficients,
    timestep_at_snr,
    x0_error_gain,
)
from minildm.train.profiles import get_profile

T = 1000
CI = get_profile("ci")


# ---- the chain q(x_t | x_{t−1}) against the closed form ------------------------------------------------------
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
def test_chain_moments_equal_the_closed_form(schedule):
    d = GaussianDiffusion(schedule, T, 1e-4, 0.02)
    for t in (0, 1, 99, 500, T - 1):
        m, v = chain_moments(d, t)
        assert m == pytest.approx(float(d.sqrt_alpha_bar[t]), rel=1e-10, abs=1e-15)
        assert v == pytest.approx(float(d.one_minus_alpha_bar[t]), rel=1e-10)


def test_iterated_chain_matches_the_closed_form_in_distribution():
    d = GaussianDiffusion()
    g = torch.Generator().manual_seed(0)
    n, t = 4000, 60
    x0 = torch.linspace(-1, 1, 5, dtype=torch.float64).expand(n, 5)
    chain = iterate_chain(d, x0, t, generator=g)
    z_m, z_v = moment_z_scores(chain, float(d.sqrt_alpha_bar[t]) * x0[0], float(d.one_minus_alpha_bar[t]))
    assert z_m.abs().max() < 5 and z_v.abs().max() < 5
    # a broken chain (forgetting the √(1−β) shrink) is caught by the same test
    wrong = x0.clone()
    for s in range(t + 1):
        wrong = wrong + d.sqrt_betas[s] * torch.randn(wrong.shape, generator=g, dtype=torch.float64)
    z_m, _ = moment_z_scores(wrong, float(d.sqrt_alpha_bar[t]) * x0[0], float(d.one_minus_alpha_bar[t]))
    assert z_m.abs().max() > 8


def test_iterate_chain_is_seeded():
    d = GaussianDiffusion()
    x0 = torch.zeros(2, 3)
    a = iterate_chain(d, x0, 5, torch.Generator().manual_seed(3))
    b = iterate_chain(d, x0, 5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_moment_z_scores_formula():
    x = torch.tensor([[1.0], [3.0]])              # mean 2, unbiased variance 2
    z_m, z_v = moment_z_scores(x, 1.0, 4.0)
    assert float(z_m) == pytest.approx((2 - 1) / math.sqrt(4 / 2))
    assert float(z_v) == pytest.approx((2 - 4) / (4 * math.sqrt(2 / 1)))


# ---- SNR, the ideal observer, the targets -------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
def test_timestep_at_snr_is_the_first_crossing(schedule):
    d = GaussianDiffusion(schedule, T, 1e-4, 0.02)
    snr = (d.alpha_bar / (1 - d.alpha_bar)).numpy()
    for level in (10.0, 1.0, 0.1):
        t = timestep_at_snr(d, level)
        assert snr[t] <= level and (t == 0 or snr[t - 1] > level)


def test_ideal_observer_accuracy_is_phi_of_half_d_prime():
    d = GaussianDiffusion()
    a, b = torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    b[0, 0, 0, 0], b[1, :, :2, :2] = 3.0, 1.0                     # distances 3 and √12
    t = torch.tensor([100, 800])
    acc = ideal_observer_accuracy(d, a, b, t)
    for i, dist in enumerate((3.0, math.sqrt(12))):
        snr = float(d.alpha_bar[t[i]] / (1 - d.alpha_bar[t[i]]))
        d_prime = math.sqrt(snr) * dist
        assert float(acc[i]) == pytest.approx(0.5 * (1 + math.erf(d_prime / 2 / math.sqrt(2))), rel=1e-12)
    # identical inputs: a coin flip; more noise: never easier
    assert torch.allclose(ideal_observer_accuracy(d, a, a, 5), torch.full((2,), 0.5, dtype=torch.float64))
    accs = [float(ideal_observer_accuracy(d, a[:1], b[:1], s)[0]) for s in range(0, T, 50)]
    assert all(x >= y for x, y in zip(accs, accs[1:]))


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_target_coefficients_rebuild_training_target(kind):
    d = GaussianDiffusion(prediction_type=kind)
    x0, eps = torch.randn(4, 2, 3, 3, dtype=torch.float64), torch.randn(4, 2, 3, 3, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 999])
    a, b = target_coefficients(d, t)
    expected = d.training_target(x0, eps, t)
    torch.testing.assert_close(a[:, None, None, None] * x0 + b[:, None, None, None] * eps, expected)
    torch.testing.assert_close(target_coefficients(GaussianDiffusion(), t, kind)[0], a)   # the kind by name


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_x0_error_gain_is_how_an_output_error_reaches_x0(kind):
    d = GaussianDiffusion(prediction_type=kind)
    x_t, out = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, dtype=torch.float64)
    delta = 1e-3 * torch.randn(3, 2, 4, 4, dtype=torch.float64)
    t = torch.tensor([5, 400, 990])
    x0_a, _ = d.predict_x0_and_eps(x_t, t, out)
    x0_b, _ = d.predict_x0_and_eps(x_t, t, out + delta)
    ratio = (x0_b - x0_a).flatten(1).norm(dim=1) / delta.flatten(1).norm(dim=1)
    torch.testing.assert_close(ratio, x0_error_gain(d, t))
    torch.testing.assert_close(x0_error_gain(GaussianDiffusion(), t, kind), ratio)               # the kind by name
