"""flops.py: FLOP counts against hand-computed formulas, the peak table, the achieved-throughput arithmetic, and
the plan's prediction recomputed from its own counts."""

import pytest
import torch

from minildm.tools import flops
from minildm.train.profiles import get_profile


def test_linear_forward_is_2_b_in_out_and_a_training_step_of_a_linear_stack_is_3x_forward():
    B, sizes = 8, (64, 32, 16)
    stack = torch.nn.Sequential(*(torch.nn.Linear(a, b, bias=False) for a, b in zip(sizes, sizes[1:])))
    x = torch.randn(B, sizes[0])
    forward = 2 * B * sum(a * b for a, b in zip(sizes, sizes[1:]))            # 2·B·in·out per layer
    assert flops.count_flops(lambda: stack(x))["flops"] == forward
    xg = x.clone().requires_grad_(True)                   # input gradient too: forward + 2 products per layer
    assert flops.count_flops(lambda: stack(xg).sum().backward())["flops"] == 3 * forward
    # without an input gradient the first layer computes only its weight gradient
    assert flops.count_flops(lambda: stack(x).sum().backward())["flops"] == 3 * forward - 2 * B * 64 * 32


def test_conv_and_cpu_attention_flops():
    B, cin, cout, k, H = 2, 3, 5, 3, 10
    conv = torch.nn.Conv2d(cin, cout, k, padding=1)
    x = torch.randn(B, cin, H, H)
    assert flops.count_flops(lambda: conv(x))["flops"] == 2 * B * cout * H * H * cin * k * k
    b, h, L, S, d = 2, 4, 16, 12, 8                      # CPU flash attention: QKᵀ and (·)V, 2·L·S·d each
    q, kv = torch.randn(b, h, L, d), torch.randn(b, h, S, d)
    assert flops.count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, kv, kv))["flops"] \
        == 2 * (2 * b * h * L * S * d)


def test_measure_call_has_no_peak_memory_on_cpu_and_rss_is_positive():
    m = flops.measure_call(lambda: torch.ones(4, 4) @ torch.ones(4, 4), "cpu")
    assert m["flops"] == 2 * 4 * 4 * 4 and m["ops"] >= 1 and m["peak_mem"] is None
    assert flops.max_rss_bytes() > 0


@pytest.mark.parametrize("name, dtype, expected", [
    ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989.4), ("NVIDIA H100 PCIe", torch.bfloat16, 756.5),
    ("NVIDIA H200", torch.bfloat16, 989.4), ("NVIDIA A100-SXM4-80GB", torch.bfloat16, 312.0),
    ("NVIDIA L40S", torch.bfloat16, 362.0), ("NVIDIA L4", torch.bfloat16, 121.0), ("NVIDIA A10", torch.bfloat16, 125.0),
    ("NVIDIA GeForce RTX 4090", torch.bfloat16, 165.2), ("Tesla T4", torch.bfloat16, None),
    ("NVIDIA A10G", torch.bfloat16, None), ("Some Future GPU", torch.bfloat16, None)])
def test_peak_table_lookup(name, dtype, expected):
    assert flops.peak_tflops("cuda", dtype, name=name) == expected


def test_fp32_peak_is_tf32_only_when_allowed():
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        assert flops.peak_tflops("cuda", None, name="NVIDIA A100-PCIE-40GB") == 156.0
        torch.backends.cuda.matmul.allow_tf32 = False
        assert flops.peak_tflops("cuda", None, name="NVIDIA A100-PCIE-40GB") == 19.5
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    assert flops.peak_tflops("cpu", torch.bfloat16) is None


def test_achieved_and_share_of_peak():
    r = flops.achieved(3e9, 200.0, peak=1.2)                        # 3 GFLOP x 200 calls/s = 0.6 TFLOP/s
    assert r["tflops"] == pytest.approx(0.6) and r["peak_share"] == pytest.approx(0.5)
    assert flops.achieved(3e9, 200.0)["peak_share"] is None
    assert flops.achieved(None, 200.0) == {"tflops": None, "peak_share": None}
    with pytest.raises(ValueError, match="positive"):
        flops.achieved(1, 1.0, peak=0)
    row = flops.with_peak({"tflops": 0.6, "tflops_diffusers": None}, 1.2)
    assert row["peak_share"] == pytest.approx(0.5) and row["peak_share_diffusers"] is None


def test_training_step_flops_are_linear_in_the_batch():
    """The plan counts at a small batch and scales: every counted FLOP must be per image."""
    for count in (lambda b: flops.count_ldm_step("ci", "text", b), lambda b: flops.count_ldm_step("ci", "layout", b),
                  lambda b: flops.count_ae_step("ci", b), lambda b: flops.count_ae_step("ci", b, gan=True)):
        two, four = count(2), count(4)
        assert four["flops"] == 2 * two["flops"] > 0
        assert four["ops"] == two["ops"]                    # the number of launched ops does not grow with the batch
    assert flops.count_ae_step("ci", 2, gan=True)["flops"] > flops.count_ae_step("ci", 2)["flops"]
    with pytest.raises(ValueError, match="positive whole number"):
        flops.count_ldm_step("ci", "text", 0)


def test_plan_recomputes_from_its_counts():
    p = get_profile("ci")
    u, peak, op_us, b = 0.25, 100.0, 10.0, 2
    plan = flops.plan_profile(p, peak, u, op_us, count_batch=b)
    assert [s["name"] for s in plan["stages"]] == ["01 autoencoder", "05 text LDM", "08 class LDM", "08 layout LDM",
                                                   "08 sr LDM"]
    rate = peak * 1e12 * u

    def secs(c, batch, steps):
        return steps * max(c["flops"] * batch / b / rate, c["ops"] * op_us * 1e-6)

    plain = min(p.ae.steps, p.ae.disc_start)
    ae = secs(flops.count_ae_step(p, b), p.ae.batch_size, plain) + \
        secs(flops.count_ae_step(p, b, gan=True), p.ae.batch_size, p.ae.steps - plain)
    assert plan["stages"][0]["minutes"] == pytest.approx(ae / 60)
    cache = min(p.ldm.cache_size, p.data.train_size) * flops.count_encode(p, b)["flops"] / b / rate
    text = secs(flops.count_ldm_step(p, "text", b), p.ldm.batch_size, p.ldm.steps) + cache
    assert plan["stages"][1]["minutes"] == pytest.approx(text / 60)
    assert plan["minutes"] == pytest.approx(sum(s["minutes"] for s in plan["stages"]))
    assert "a prediction, not a measurement" in flops.format_plan(plan)
    with pytest.raises(ValueError, match="utilization"):
        flops.plan_profile(p, peak, 1.5)
