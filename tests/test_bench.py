"""`minildm bench` and its diffusers peer: the timer counts right, the peer configs are the same networks,
and — independently of any speed — our DDIM and diffusers' DDIMScheduler give the same samples."""

import importlib.metadata
import json
import math
import os
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")                 # importing diffusers must not reach for the Hub
os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("diffusers")                             # CI installs it (the `test` extra)

from minildm import perceptual  # noqa: E402
from minildm.autoencoder import AutoencoderKL  # noqa: E402
from minildm.diffusion import GaussianDiffusion  # noqa: E402
from minildm.ldm import LDMConfig  # noqa: E402
from minildm.samplers import ddim_sample, ddim_timesteps  # noqa: E402
from minildm.tools import bench, peer  # noqa: E402
from minildm.tools.cli import main  # noqa: E402
from minildm.train.profiles import get_profile  # noqa: E402
from minildm.unet import UNet  # noqa: E402

T = 1000
MU, S = 0.5, 0.3                                             # data x_0 ~ N(μ, s²·I): the exact ε̂ is known
# diffusers keeps ᾱ_t in float32 (a cumprod of 1000 float32 factors), minildm in float64: the samples then
# differ by ~1e-6 (measured max 1.3e-6 over these cases, with guidance); 2e-5 leaves room for other
# BLAS/CPUs, and is far below any real DDIM discrepancy (an off-by-one timestep moves samples by > 1e-3).
ATOL = 2e-5


def _ldm_cfg(prediction_type="epsilon"):
    return LDMConfig(schedule="scaled_linear", timesteps=T, beta_start=0.0015, beta_end=0.0195,
                     prediction_type=prediction_type)


def _oracle(prediction_type):
    """Bayes-optimal output for x_0 ~ N(μ, s²) in float64: ε̂ = √(1−ᾱ)/(ᾱs² + 1 − ᾱ)·(x_t − √ᾱ·μ)."""
    ab = GaussianDiffusion(**{k: getattr(_ldm_cfg(), k) for k in ("schedule", "timesteps", "beta_start",
                                                                  "beta_end")}).alpha_bar

    def model(x, t, cond):
        a = ab[torch.as_tensor(t).cpu()].view(-1, 1, 1, 1)
        xd = x.double()
        eps = (1 - a).sqrt() / (a * S * S + 1 - a) * (xd - a.sqrt() * MU)
        x0 = (xd - (1 - a).sqrt() * eps) / a.sqrt()
        out = eps if prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
        return out.to(x.dtype)

    return model


def _x_T(seed=0, shape=(4, 4, 8, 8)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------------
# the timer
# ------------------------------------------------------------------------------------------------------


def test_throughput_counts_calls_with_a_fake_clock():
    """A callable that takes exactly 0.25 s: 1 s of timing holds 4 calls, 4 calls/s; warm-up calls are not timed."""
    now = [0.0]
    calls = [0]

    def fn():
        calls[0] += 1
        now[0] += 0.25

    r = bench.throughput(fn, seconds=1.0, warmup=3, clock=lambda: now[0])
    assert r["calls"] == 4 and calls[0] == 3 + 4
    assert r["seconds"] == pytest.approx(1.0) and r["per_s"] == pytest.approx(4.0)
    # a call longer than the budget is still counted once
    r = bench.throughput(lambda: now.__setitem__(0, now[0] + 5.0), seconds=1.0, warmup=0, clock=lambda: now[0])
    assert r["calls"] == 1 and r["per_s"] == pytest.approx(0.2)


# ------------------------------------------------------------------------------------------------------
# the peer configs are the same networks
# ------------------------------------------------------------------------------------------------------


def _shapes(module):
    """Multiset of parameter shapes, a 1×1 conv counted like the equivalent linear layer."""
    shapes = []
    for p in module.parameters():
        s = tuple(p.shape)
        shapes.append(s[:2] if len(s) == 4 and s[2:] == (1, 1) else s)
    return Counter(shapes)


@pytest.mark.parametrize("profile", ["ci", "cpu"])
@pytest.mark.slow
def test_peer_configs_match_ours_layer_for_layer(profile):
    """Same parameter count (tolerance 0: the designs coincide, see bench's docstring) and the same layer shapes."""
    p = get_profile(profile)
    ours, theirs = UNet.from_config(p.ldm, 4, cross_attention=True), peer.peer_unet(p.ldm, 4)
    n_ours, n_theirs = sum(x.numel() for x in ours.parameters()), sum(x.numel() for x in theirs.parameters())
    assert n_ours == n_theirs, f"U-Net parameters: ours {n_ours}, diffusers {n_theirs}"
    assert _shapes(ours) == _shapes(theirs)
    ours, theirs = AutoencoderKL(p.ae), peer.peer_autoencoder(p.ae)
    n_ours, n_theirs = sum(x.numel() for x in ours.parameters()), sum(x.numel() for x in theirs.parameters())
    assert n_ours == n_theirs, f"autoencoder parameters: ours {n_ours}, diffusers {n_theirs}"
    assert _shapes(ours) == _shapes(theirs)          # ours: 1×1-conv attention projections, theirs: linear


# ------------------------------------------------------------------------------------------------------
# DDIM: ours and diffusers' DDIMScheduler, same model callable, same x_T, η = 0
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("steps", [10, 50])
def test_ddim_matches_diffusers_scheduler(steps, prediction_type):
    cfg = _ldm_cfg(prediction_type)
    model, x_T = _oracle(prediction_type), _x_T()
    ours = ddim_sample(model, GaussianDiffusion.from_config(cfg), None, steps=steps, x_T=x_T)

    scheduler = peer.peer_scheduler(cfg)
    scheduler.set_timesteps(steps)
    assert [int(t) for t in scheduler.timesteps] == ddim_timesteps(T, steps, "trailing")
    x = x_T.clone()
    for t in scheduler.timesteps:                    # diffusers' own loop: set_timesteps, then step
        x = scheduler.step(model(x, t.expand(x.shape[0]), None), t, x).prev_sample
    assert torch.allclose(ours, x, atol=ATOL, rtol=0), f"max |Δ| = {float((ours - x).abs().max()):.3g}"
    assert float(ours.std()) > 0.1                   # a real sample, not a collapsed one


class _TinyNet(torch.nn.Module):
    """The oracle plus a fixed random network of x_t, t and a context (bounded, so the samples stay O(1)):
    a model whose output really depends on the condition, for the guidance test."""

    def __init__(self, prediction_type, c=4, d=8):
        super().__init__()
        self.oracle = _oracle(prediction_type)
        g = torch.Generator().manual_seed(1)
        self.w1 = torch.nn.Parameter(torch.randn(16, c, 3, 3, generator=g) * 0.2)
        self.w2 = torch.nn.Parameter(torch.randn(c, 16, 3, 3, generator=g) * 0.2)
        self.proj = torch.nn.Parameter(torch.randn(d, 16, generator=g) * 0.5)

    def forward(self, x, t, cond):
        h = torch.nn.functional.conv2d(x, self.w1, padding=1)
        h = h + (cond["context"].mean(1) @ self.proj)[:, :, None, None] + (t.float() / T)[:, None, None, None]
        return self.oracle(x, t, None) + 0.2 * torch.tanh(torch.nn.functional.conv2d(torch.tanh(h), self.w2, padding=1))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_with_guidance_matches_diffusers(prediction_type):
    """Classifier-free guidance in one doubled batch, s = 3, through peer.peer_ddim_sample and ours."""
    cfg = _ldm_cfg(prediction_type)
    net = _TinyNet(prediction_type).eval()
    g = torch.Generator().manual_seed(2)
    cond = {"context": torch.randn(4, 5, 8, generator=g)}
    uncond = {"context": torch.zeros(1, 5, 8)}       # one null context, broadcast to the batch (both sides)
    x_T = _x_T(3)
    with torch.no_grad():
        ours = ddim_sample(net, GaussianDiffusion.from_config(cfg), None, cond=cond, uncond=uncond,
                           guidance_scale=3.0, steps=10, x_T=x_T)
        theirs = peer.peer_ddim_sample(net, peer.peer_scheduler(cfg), x_T, 10, cond, uncond, 3.0)
        unguided = ddim_sample(net, GaussianDiffusion.from_config(cfg), None, cond=cond, steps=10, x_T=x_T)
    assert torch.allclose(ours, theirs, atol=ATOL, rtol=0), f"max |Δ| = {float((ours - theirs).abs().max()):.3g}"
    assert float((ours - unguided).abs().max()) > 1e-2  # guidance actually changed the sample
    assert float(ours.abs().max()) < 10                 # and the samples are of the data's size


def _float64_ddim(x_T, timesteps, prev, prediction_type="epsilon"):
    """Deterministic DDIM (Song et al. Eq. 12, η = 0) in float64: x_prev = √ᾱ_prev·x̂_0 + √(1−ᾱ_prev)·ε̂."""
    ab = GaussianDiffusion(**{k: getattr(_ldm_cfg(), k) for k in ("schedule", "timesteps", "beta_start",
                                                                  "beta_end")}).alpha_bar
    model, x = _oracle(prediction_type), x_T.double()
    for i, t in enumerate(timesteps):
        a = float(ab[t])
        eps = model(x, torch.full((x.shape[0],), t), None)
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        p = prev(i, t)
        a_prev = 1.0 if p < 0 else float(ab[p])
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    return x


def test_ddim_when_steps_do_not_divide_T_follows_the_paper_and_diffusers_does_not():
    """S = 7: the DDIM sub-sequence τ must step from τ_i to τ_{i+1} (and to ᾱ = 1 after the last).

    Ours does. diffusers 0.42's DDIMScheduler steps to t − ⌊T/S⌋ whatever the spacing (the pitfall in
    REFERENCE.md): with trailing spacing and S ∤ T that is one step off the list every time, and its last
    step lands on ᾱ_0 instead of the clean data. So the two agree only when S divides T, which is why
    `minildm bench` (S = 50) and the tests above compare them there.
    """
    steps, x_T = 7, _x_T()
    ours_ts = ddim_timesteps(T, steps, "trailing")
    ours = ddim_sample(_oracle("epsilon"), GaussianDiffusion.from_config(_ldm_cfg()), None, steps=steps, x_T=x_T)
    paper = _float64_ddim(x_T, ours_ts, lambda i, t: ours_ts[i + 1] if i + 1 < steps else -1)
    assert torch.allclose(ours.double(), paper, atol=ATOL, rtol=0)

    scheduler = peer.peer_scheduler(_ldm_cfg())
    scheduler.set_timesteps(steps)
    their_ts = [int(t) for t in scheduler.timesteps]
    x = x_T.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(_oracle("epsilon")(x, t.expand(4), None), t, x).prev_sample
    their_rule = _float64_ddim(x_T, their_ts, lambda i, t: t - T // steps)
    their_paper = _float64_ddim(x_T, their_ts, lambda i, t: their_ts[i + 1] if i + 1 < steps else -1)
    assert torch.allclose(x.double(), their_rule, atol=ATOL, rtol=0), "diffusers' DDIM step rule changed"
    assert float((x.double() - their_paper).abs().max()) > 1e-2


# ------------------------------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------------------------------


ROWS = ("Shapes data", "autoencoder step, L1 + LPIPS", "autoencoder step, L1 + KL (matched)", "LDM step",
        "LDM step, bf16 autocast", "U-Net step, MSE + AdamW (matched)", "DDIM-5 sampling")


@pytest.mark.slow
def test_bench_command_runs_end_to_end_and_prints_every_row(capsys, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--profile", "ci", "--seconds", "0.2", "--steps", "5", "--random-lpips", "--offline",
                 "--json", str(out), "--peak-tflops", "0.5"]) == 0
    text = capsys.readouterr().out
    table = text[text.index("minildm bench, profile ci"):]
    for row in ROWS:
        assert row in table, f"row {row!r} missing from:\n{table}"
    assert "LPIPS-alex (random trunk)" in table                # the opt-in is visible next to the number
    assert f"diffusers {importlib.metadata.version('diffusers')}" in table.splitlines()[0]
    result = json.loads(out.read_text())
    assert len(result["rows"]) == len(ROWS)
    assert all(r["what"].startswith(prefix.split(",")[0]) for r, prefix in zip(result["rows"], ROWS))
    for r in result["rows"]:
        assert r["ours"] > 0
        if "matched" in r["what"] or r["what"].startswith("DDIM"):
            assert r["diffusers"] > 0 and r["ratio"] == pytest.approx(r["ours"] / r["diffusers"])
            assert r["params_ours"] == r["params_diffusers"]
    assert result["machine"]["torch_threads"] == torch.get_num_threads()
    _check_flop_columns(result, peak=0.5)
    assert "FLOP/call" in table and "% of peak" in table and "of 0.5 TFLOP/s" in table


def _check_flop_columns(result, peak):
    """achieved TFLOP/s = FLOPs per call x calls/s; share of peak = that / peak, only when a peak is known."""
    assert result["peak_tflops"] == peak
    for r in result["rows"]:
        if r["what"].startswith("Shapes data"):           # rendering: no matmul FLOPs to count
            assert r.get("flops") is None and r["peak_share"] is None
            continue
        steps = r["what"].startswith(("autoencoder", "LDM", "U-Net"))
        assert r["calls_per_s"] == pytest.approx(r["ours"] if steps else r["ours"] / r["batch_size"])
        assert r["flops"] > 0 and r["tflops"] == pytest.approx(r["flops"] * r["calls_per_s"] / 1e12)
        assert r["peak_share"] == (None if peak is None else pytest.approx(r["tflops"] / peak))
        assert r["peak_mem"] is None                       # CPU: no per-call peak memory
        if r["diffusers"] is not None:
            assert r["tflops_diffusers"] == pytest.approx(r["flops_diffusers"] * r["calls_per_s_diffusers"] / 1e12)
            assert r["flops_diffusers"] == pytest.approx(r["flops"], rel=0.05)   # matched: the same computation
    bf16 = [r for r in result["rows"] if "bf16" in r["what"]]
    fp32 = [r for r in result["rows"] if r["what"].startswith("LDM step, text")]
    assert len(bf16) == 1 and bf16[0]["flops"] == fp32[0]["flops"]      # the same step in another precision


@pytest.mark.slow
def test_bench_without_peer_and_without_lpips_weights(capsys, monkeypatch, tmp_path):
    """--no-peer leaves the peer columns empty; missing LPIPS weights skip that one row with a way out."""
    monkeypatch.setattr(perceptual, "backbone_path", lambda net: tmp_path / "absent" / f"{net}.pth")
    monkeypatch.delenv(perceptual.RANDOM_BACKBONE_ENV, raising=False)
    result = bench.run_bench("ci", "cpu", seconds=0.05, peer=False, steps=2, lpips_download=False, log=None)
    assert len(result["rows"]) == 7
    _check_flop_columns({**result, "rows": [r for r in result["rows"] if not r.get("skipped")]}, peak=None)
    assert all(r["diffusers"] is None and r["ratio"] is None for r in result["rows"])
    skipped = [r for r in result["rows"] if r.get("skipped")]
    assert len(skipped) == 1 and "--random-lpips" in skipped[0]["skipped"]
    table = bench.format_table(result)
    assert "skipped" in table and "DDIM-2" in table
