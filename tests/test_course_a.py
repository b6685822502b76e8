"""What notebooks 00, 03 and 04 add to the package: the forward chain step by step, the moments test, the SNR
crossing, the ideal observer, the anatomy of the targets (diffusion.py), and the U-Net's parameter tables
(nn.py, unet.py). Each is checked against a formula recomputed here."""

import math

import pytest
import torch

from minildm.conditioning import TextEncoder
from minildm.data.shapes import ShapesTokenizer
from minildm.diffusion import GaussianDiffusion, moment_z_scores
from minildm.nn import parameters_by_block, parameters_with_gradient
from minildm.unet import UNet, parameters_by_kind

T = 1000


# ---- the chain q(x_t | x_{t−1}) ---------------------------------------------------------------------------
def test_q_step_is_one_gaussian_kernel():
    d = GaussianDiffusion()
    x, eps = torch.randn(3, 4, 2, 2, dtype=torch.float64), torch.randn(3, 4, 2, 2, dtype=torch.float64)
    b = float(d.betas[17])
    torch.testing.assert_close(d.q_step(x, 17, eps), math.sqrt(1 - b) * x + math.sqrt(b) * eps)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
def test_chain_moments_equal_the_closed_form(schedule):
    d = GaussianDiffusion(schedule, T, 1e-4, 0.02)
    for t in (0, 1, 99, 500, T - 1):
        m, v = d.chain_moments(t)
        assert m == pytest.approx(float(d.sqrt_alpha_bar[t]), rel=1e-10, abs=1e-15)
        assert v == pytest.approx(float(d.one_minus_alpha_bar[t]), rel=1e-10)


def test_iterated_chain_matches_the_closed_form_in_distribution():
    d = GaussianDiffusion()
    g = torch.Generator().manual_seed(0)
    n, t = 4000, 60
    x0 = torch.linspace(-1, 1, 5, dtype=torch.float64).expand(n, 5)
    chain = d.iterate_chain(x0, t, generator=g)
    z_m, z_v = moment_z_scores(chain, float(d.sqrt_alpha_bar[t]) * x0[0], float(d.one_minus_alpha_bar[t]))
    assert z_m.abs().max() < 5 and z_v.abs().max() < 5
    # a broken chain (forgetting the √(1−β) shrink) is caught by the same test
    wrong = x0.clone()
    for s in range(t + 1):
        wrong = wrong + d.sqrt_betas[s] * torch.randn(wrong.shape, generator=g, dtype=torch.float64)
    z_m, _ = moment_z_scores(wrong, float(d.sqrt_alpha_bar[t]) * x0[0], float(d.one_minus_alpha_bar[t]))
    assert z_m.abs().max() > 8


def test_iterate_chain_is_seeded_and_checks_t():
    d = GaussianDiffusion()
    x0 = torch.zeros(2, 3)
    a = d.iterate_chain(x0, 5, torch.Generator().manual_seed(3))
    b = d.iterate_chain(x0, 5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="timestep"):
        d.iterate_chain(x0, T)


def test_moment_z_scores_formula_and_errors():
    x = torch.tensor([[1.0], [3.0]])              # mean 2, unbiased variance 2
    z_m, z_v = moment_z_scores(x, 1.0, 4.0)
    assert float(z_m) == pytest.approx((2 - 1) / math.sqrt(4 / 2))
    assert float(z_v) == pytest.approx((2 - 4) / (4 * math.sqrt(2 / 1)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        moment_z_scores(torch.zeros(1, 3), 0.0, 1.0)
    with pytest.raises(ValueError, match="positive"):
        moment_z_scores(torch.zeros(4, 3), 0.0, 0.0)


# ---- SNR, the ideal observer, the targets -------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
def test_timestep_at_snr_is_the_first_crossing(schedule):
    d = GaussianDiffusion(schedule, T, 1e-4, 0.02)
    snr = (d.alpha_bar / (1 - d.alpha_bar)).numpy()
    for level in (10.0, 1.0, 0.1):
        t = d.timestep_at_snr(level)
        assert snr[t] <= level and (t == 0 or snr[t - 1] > level)
    with pytest.raises(ValueError, match="never falls"):
        d.timestep_at_snr(1e-30)
    with pytest.raises(ValueError, match="never falls"):
        d.timestep_at_snr(-1.0)


def test_ideal_observer_accuracy_is_phi_of_half_d_prime():
    d = GaussianDiffusion()
    a, b = torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    b[0, 0, 0, 0], b[1, :, :2, :2] = 3.0, 1.0                     # distances 3 and √12
    t = torch.tensor([100, 800])
    acc = d.ideal_observer_accuracy(a, b, t)
    for i, dist in enumerate((3.0, math.sqrt(12))):
        snr = float(d.alpha_bar[t[i]] / (1 - d.alpha_bar[t[i]]))
        d_prime = math.sqrt(snr) * dist
        assert float(acc[i]) == pytest.approx(0.5 * (1 + math.erf(d_prime / 2 / math.sqrt(2))), rel=1e-12)
    # identical inputs: a coin flip; more noise: never easier
    assert torch.allclose(d.ideal_observer_accuracy(a, a, 5), torch.full((2,), 0.5, dtype=torch.float64))
    accs = [float(d.ideal_observer_accuracy(a[:1], b[:1], s)[0]) for s in range(0, T, 50)]
    assert all(x >= y for x, y in zip(accs, accs[1:]))


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_target_coefficients_rebuild_training_target(kind):
    d = GaussianDiffusion(prediction_type=kind)
    x0, eps = torch.randn(4, 2, 3, 3, dtype=torch.float64), torch.randn(4, 2, 3, 3, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 999])
    a, b = d.target_coefficients(t)
    expected = d.training_target(x0, eps, t)
    torch.testing.assert_close(a[:, None, None, None] * x0 + b[:, None, None, None] * eps, expected)


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_x0_error_gain_is_how_an_output_error_reaches_x0(kind):
    d = GaussianDiffusion(prediction_type=kind)
    x_t, out = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, dtype=torch.float64)
    delta = 1e-3 * torch.randn(3, 2, 4, 4, dtype=torch.float64)
    t = torch.tensor([5, 400, 990])
    x0_a, _ = d.predict_x0_and_eps(x_t, t, out)
    x0_b, _ = d.predict_x0_and_eps(x_t, t, out + delta)
    ratio = (x0_b - x0_a).flatten(1).norm(dim=1) / delta.flatten(1).norm(dim=1)
    torch.testing.assert_close(ratio, d.x0_error_gain(t))
    with pytest.raises(ValueError, match="prediction_type"):
        d.x0_error_gain(t, "score")
    with pytest.raises(ValueError, match="prediction_type"):
        d.target_coefficients(t, "noise")


# ---- the U-Net's parameters by block and by kind ----------------------------------------------------------
def small_text_unet() -> tuple[UNet, TextEncoder]:
    torch.manual_seed(0)
    unet = UNet(4, 4, model_channels=8, channel_mult=(1, 2), attention_resolutions=(1, 2), num_heads=2,
                context_dim=8, num_classes=3, concat_channels=2)
    return unet, TextEncoder.from_tokenizer(ShapesTokenizer(), 8, 1, 2)


def test_parameters_by_block_adds_up_and_follows_module_order():
    unet, _ = small_text_unet()
    blocks = parameters_by_block(unet, depth=0)
    assert [name for name, _ in blocks] == [n for n, _ in unet.named_children()]
    assert sum(n for _, n in blocks) == sum(p.numel() for p in unet.parameters())
    deeper = parameters_by_block(unet, depth=1)
    assert sum(n for _, n in deeper) == sum(p.numel() for p in unet.parameters())
    assert ("middle_block.1", sum(p.numel() for p in unet.middle_block[1].parameters())) in deeper


def test_parameters_by_kind_sorts_every_parameter_once():
    unet, _ = small_text_unet()
    kinds = parameters_by_kind(unet)
    assert sum(kinds.values()) == sum(p.numel() for p in unet.parameters())
    cross = sum(p.numel() for n, p in unet.named_parameters() if ".cross_attn." in n)
    assert kinds["cross-attention (text / layout)"] == cross > 0
    assert kinds["class embedding"] == unet.label_emb.weight.numel()
    no_cond = UNet(4, 4, model_channels=8, channel_mult=(1, 2), num_heads=2)
    assert parameters_by_kind(no_cond)["cross-attention (text / layout)"] == 0


def test_zero_init_lets_the_gradient_reach_one_layer_more_each_step():
    """At init only the output conv gets a gradient (everything before it is multiplied by its zero weights);
    after a step or two every parameter does."""
    unet, enc = small_text_unet()
    tokens = ShapesTokenizer().encode_batch(["a large red circle in the top left", "a small blue star in the center"])
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    with torch.no_grad():
        cond = {**enc(tokens), "y": torch.tensor([0, 3]), "concat": torch.randn(2, 2, 8, 8)}
    opt = torch.optim.SGD(unet.parameters(), lr=0.1)
    reached = []
    for _ in range(3):
        opt.zero_grad()
        out = unet(x, t, **cond)
        out.sub(torch.ones_like(out)).pow(2).mean().backward()
        reached.append(parameters_with_gradient(unet))
        opt.step()
    assert reached[0] == ["out.2.weight", "out.2.bias"]
    assert len(reached[0]) < len(reached[1]) < len(reached[2]) == len(list(unet.parameters()))
    unet.zero_grad(set_to_none=True)
    assert parameters_with_gradient(unet) == []
