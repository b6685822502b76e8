"""flops.py: FLOP counts against hand-computed formulas, the peak table, and the plan of a profile's training."""

import pytest
import torch

from minildm.tools import flops
from minildm.tools.cli import main


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


def test_no_peak_memory_on_cpu_and_rss_is_positive():
    m = flops.count_flops(lambda: torch.ones(4, 4) @ torch.ones(4, 4), "cpu")
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


@pytest.mark.slow
def test_training_step_flops_are_linear_in_the_batch():
    """The plan counts at a small batch and scales: every counted FLOP must be per image."""
    for count in (lambda b: flops.count_ldm_step("ci", "text", b), lambda b: flops.count_ldm_step("ci", "layout", b),
                  lambda b: flops.count_ae_step("ci", b), lambda b: flops.count_ae_step("ci", b, gan=True)):
        two, four = count(2), count(4)
        assert four["flops"] == 2 * two["flops"] > 0
        assert four["ops"] == two["ops"]                    # the number of launched ops does not grow with the batch
    assert flops.count_ae_step("ci", 2, gan=True)["flops"] > flops.count_ae_step("ci", 2)["flops"]


@pytest.mark.slow
def test_plan_says_it_is_a_prediction(capsys):
    assert main(["bench", "--plan", "ci", "--peak-tflops", "100", "--assume-util", "0.25"]) == 0
    out = capsys.readouterr().out
    assert "a prediction, not a measurement" in out and "ASSUMED 25% of 100 TFLOP/s" in out
    for stage in ("01 autoencoder", "05 text LDM", "08 class LDM", "08 layout LDM", "08 sr LDM", "all"):
        assert stage in out
    assert main(["bench", "--plan", "ci", "--assume-util", "1.5"]) == 2
    assert "must be a share of the peak" in capsys.readouterr().err
