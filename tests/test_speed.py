"""The speed switches (speed.py): bf16 autocast agrees with fp32, compile traces the U-Net in one graph and is
skipped cleanly where it cannot run, losses are read back every few steps without changing the training."""

import pytest
import torch

from minildm.autoencoder import build_autoencoder
from minildm.data.datasets import ShapesDataset
from minildm.ldm import LatentDiffusion
from minildm.train import speed
from minildm.train.profiles import get_profile
from minildm.train.speed import (
    NO_COMPILE_ENV,
    SpeedConfig,
    ThreadGovernor,
    autocast,
    compile_unsupported,
    maybe_compile,
    precision_dtype,
    sync_interval,
)
from minildm.train.stages import train_ldm
from minildm.unet import UNet

CI = get_profile("ci")


@pytest.fixture(scope="module")
def ldm():
    torch.manual_seed(0)
    ds = ShapesDataset("train", config=CI.data)
    model = LatentDiffusion(build_autoencoder(CI.ae), CI.ldm, tokenizer=ds.tokenizer)
    model.set_scale_factor(ds.batch(range(8))["image"])
    return model, ds


def test_precision_names_and_devices():
    assert precision_dtype("cpu", "auto") is None                   # a CPU runs fp32 unless asked
    assert precision_dtype("cpu", "fp32") is None
    assert precision_dtype("cpu", "bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        precision_dtype("cpu", "fp16")
    with pytest.raises(ValueError, match="SpeedConfig.precision"):
        SpeedConfig(precision="half")
    with pytest.raises(ValueError, match="sync_every"):
        SpeedConfig(sync_every=-1)
    assert sync_interval("cpu", SpeedConfig()) == 1 and sync_interval("cuda", SpeedConfig()) == 25
    assert sync_interval("cpu", SpeedConfig(sync_every=5)) == 5


def test_bf16_training_loss_and_gradients_agree_with_fp32(ldm):
    model, ds = ldm
    raw = model.raw_condition(ds.batch(range(16)))
    z0 = torch.randn(16, 4, 8, 8)

    def loss_and_grad(dtype):
        model.zero_grad(set_to_none=True)
        with autocast("cpu", dtype):
            loss = model.training_step(z0, raw, generator=torch.Generator().manual_seed(1))
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in model.unet.parameters()])

    (l32, g32), (l16, g16) = loss_and_grad(None), loss_and_grad(torch.bfloat16)
    assert l16.dtype == torch.float32                               # the loss itself is computed in fp32
    assert abs(float(l16 - l32)) / float(l32) < 2e-2                # bf16 keeps 8 bits of mantissa: ~0.4 % per op
    cos = torch.nn.functional.cosine_similarity(g16, g32, dim=0)
    assert cos > 0.99, f"bf16 gradient direction differs from fp32: cosine {float(cos):.4f}"


def test_bf16_sampling_agrees_with_fp32_and_decodes_in_fp32(ldm):
    model, ds = ldm
    raw = model.prompt_condition(prompts=["a red circle", "a blue star"])
    kw = dict(steps=5, guidance_scale=3.0)
    a = model.sample(raw, generator=torch.Generator().manual_seed(0), **kw)
    b = model.sample(raw, generator=torch.Generator().manual_seed(0), precision="bf16", **kw)
    assert a.dtype == b.dtype == torch.float32
    assert float((a - b).abs().max()) < 0.1 and float((a - b).abs().mean()) < 0.02


@pytest.mark.slow
def test_a_bf16_training_run_follows_the_fp32_run(tmp_path):
    ae = build_autoencoder(CI.ae)
    runs = {p: train_ldm("ci", ae, tmp_path / p, steps=10, progress=False, speed=SpeedConfig(precision=p))
            for p in ("fp32", "bf16")}
    l32, l16 = ([h["loss"] for h in runs[p]["history"]] for p in ("fp32", "bf16"))
    assert max(abs(a - b) / a for a, b in zip(l32, l16)) < 5e-2


@pytest.mark.slow
def test_reading_losses_every_few_steps_changes_nothing_but_when_they_are_read(tmp_path):
    ae = build_autoencoder(CI.ae)
    every = train_ldm("ci", ae, tmp_path / "a", steps=7, progress=False)
    batched = train_ldm("ci", ae, tmp_path / "b", steps=7, progress=False, speed=SpeedConfig(sync_every=3))
    assert every["history"] == batched["history"]               # the same numbers, bit for bit
    w1, w2 = (torch.load(r["path"], weights_only=True)["state_dict"] for r in (every, batched))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_compile_is_skipped_with_a_message_where_it_cannot_run(monkeypatch, capsys):
    monkeypatch.setenv(NO_COMPILE_ENV, "1")
    assert compile_unsupported("cpu") == f"${NO_COMPILE_ENV} is set"
    net = torch.nn.Linear(3, 2)
    assert maybe_compile(net, True, "test net") is False
    assert "torch.compile skipped for the test net" in capsys.readouterr().out
    assert net(torch.ones(1, 3)).shape == (1, 2)                     # still eager, still works
    assert compile_unsupported("mps") is not None


@pytest.mark.slow
def test_the_compiled_unet_has_no_graph_break():
    torch.manual_seed(0)
    unet = UNet.from_config(CI.ldm, in_channels=4, cross_attention=True)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    ctx, mask = torch.randn(2, 5, CI.ldm.context_dim), torch.ones(2, 5, dtype=torch.bool)
    explained = torch._dynamo.explain(unet)(x, t, ctx, mask)
    assert explained.graph_break_count == 0, explained.break_reasons
    eager = unet(x, t, ctx, mask)
    unet.compile(backend="eager")                     # nn.Module.compile: dynamo's tracing without code generation
    assert torch.allclose(unet(x, t, ctx, mask), eager, atol=1e-6)
    fresh = UNet.from_config(CI.ldm, in_channels=4, cross_attention=True)
    assert set(unet.state_dict()) == set(fresh.state_dict())          # keys unchanged: checkpoints still load


def _govern(monkeypatch, seconds_per_step, steps: int, first: int = 1, **kw) -> tuple[ThreadGovernor, list]:
    """Drive a ThreadGovernor through `steps` callbacks on a fake clock: step k takes seconds_per_step[n] at n
    threads (n = torch.get_num_threads() when the step ran), or seconds_per_step(k, n) when it is a function;
    `first`: the step a resumed run starts at."""
    clock = [0.0]
    monkeypatch.setattr(speed.time, "perf_counter", lambda: clock[0])
    cost = seconds_per_step if callable(seconds_per_step) else lambda k, n: seconds_per_step[n]
    gov, records = ThreadGovernor(most=2, **kw), []
    for step in range(first, first + steps):
        clock[0] += cost(step, torch.get_num_threads())
        records.append({"step": step})
        gov(step, records[-1])
    return gov, records


def _trial_steps(*starts: int, window: int = 5) -> set[int]:
    """The steps a trial starting at each of `starts` runs: per count one warm-up step and `window` timed ones."""
    return {s for start in starts for s in range(start + 1, start + 2 * (window + 1) + 1)}


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("busy", [False, True])
def test_thread_governor_keeps_the_faster_count_and_records_it(monkeypatch, two_threads, busy):
    # idle two-core machine: 2 threads 0.27 s/step, 1 thread 0.37; beside another program: 0.9 and 0.35
    per_step = {1: 0.35, 2: 0.9} if busy else {1: 0.37, 2: 0.27}
    gov, records = _govern(monkeypatch, per_step, 300, window=5, every=40, backoff=4)
    winner = 1 if busy else 2
    assert gov.rates == pytest.approx({n: 1 / per_step[n] for n in (1, 2)})    # rates measured on the clock
    # trials at step 1 and at multiples of 40; the gap doubles while the winner repeats: 40, 80, 160 (the cap)
    trial_steps = _trial_steps(1, 40, 120, 280)
    assert gov.trials == 4 and gov.next_trial == 280 + 160
    assert records[0]["threads"] == 2                          # the first step runs before any trial
    assert all(r["threads"] == winner for r in records[1:] if r["step"] not in trial_steps)
    assert {r["threads"] for r in records if r["step"] in trial_steps} == {1, 2}
    assert sum(gov.steps_at.values()) == 300 and gov.steps_at[winner] == 300 - len(trial_steps) // 2 - (winner == 1)
    assert f"{winner} thread" in gov.summary() and "4 trials" in gov.summary() and "steps/s" in gov.summary()


def test_thread_governor_reacts_to_load_at_once_and_ignores_one_slow_step(monkeypatch, two_threads):
    def cost(step, n):                         # idle until step 200, another program from then on;
        if step == 70:                         # step 70 is a validation pass: one step of 5 s
            return 5.0
        return ({1: 0.37, 2: 0.27} if step < 200 else {1: 0.35, 2: 0.9})[n]
    gov, records = _govern(monkeypatch, cost, 400, window=5, every=40, backoff=4)
    threads = {r["step"]: r["threads"] for r in records}
    # idle: trials at 1, 40, 120 (the slow step 70 starts none); the load is seen within two watch windows
    alarm = next(s for s in range(200, 212) if threads[s + 1] == 1)
    assert all(threads[s] == 2 for s in range(2, 200) if s not in _trial_steps(1, 40, 120))
    assert all(threads[s] == 1 for s in range(alarm + 13, 401) if s not in _trial_steps(240, 320))
    # after the alarm the gaps start over at `every`: trials at 240 (the next multiple of 40), 320 (gap 80)
    assert gov.trials == 6 and gov.winner == 1 and gov.next_trial == 320 + 160


def test_thread_governor_with_one_core_never_switches(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        gov = ThreadGovernor(most=1)
        records = [{"step": k} for k in range(1, 30)]
        for r in records:
            gov(r["step"], r)
        assert gov.candidates == [1] and {r["threads"] for r in records} == {1} and gov.rates == {}
        assert gov.summary() == "1 thread: 29 steps"
    finally:
        torch.set_num_threads(before)


def test_thread_governor_times_a_resumed_run_at_once(monkeypatch, two_threads):
    gov, records = _govern(monkeypatch, {1: 0.35, 2: 0.9}, 100, first=1001, window=5, every=40)
    threads = {r["step"]: r["threads"] for r in records}
    assert threads[1001] == 2 and threads[1002] == 1                  # the trial starts at the first step
    assert all(threads[s] == 1 for s in range(1014, 1101) if s not in _trial_steps(1040))
    assert gov.trials == 2 and gov.next_trial == 1120                 # 1040 confirmed 1 thread: gap 80
