"""Profiles, device choice, seeding, checkpoints and EMA: the plumbing everything else stands on."""

import random

import pytest
import torch

from minildm.nn import EMA, num_groups
from minildm.train.profiles import PROFILES, get_profile
from minildm.utils import get_device, seed_everything


def test_profiles_exist_and_scale_up():
    assert set(PROFILES) == {"ci", "cpu", "gpu"}
    ci, cpu, gpu = (PROFILES[n] for n in ("ci", "cpu", "gpu"))
    assert ci.ae_train.steps < cpu.ae_train.steps <= gpu.ae_train.steps
    assert ci.ldm_train.steps < cpu.ldm_train.steps <= gpu.ldm_train.steps
    for p in PROFILES.values():
        assert p.data.resolution % 8 == 0


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("MINILDM_PROFILE", "cpu")
    assert get_profile().name == "cpu"
    monkeypatch.delenv("MINILDM_PROFILE")
    assert get_profile().name == ("gpu" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("MINILDM_PROFILE", "laptop")
    with pytest.raises(ValueError, match="unknown profile 'laptop'.*ci, cpu, gpu"):
        get_profile()


def test_profile_replace():
    p = get_profile("ci").replace(ae_train={"steps": 3})
    assert p.ae_train.steps == 3 and p.ae == get_profile("ci").ae and p.ldm == get_profile("ci").ldm
    for section in ("data", "ae", "ae_loss", "ae_train", "ldm", "ldm_train", "speed"):    # every section
        assert get_profile("ci").replace(**{section: {}}) == get_profile("ci")
    with pytest.raises(ValueError, match="section"):
        p.replace(model={"x": 1})


def test_device_choice(monkeypatch):
    assert get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("MINILDM_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            get_device("cuda")
    monkeypatch.setenv("MINILDM_DEVICE", "auto")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert get_device().type == expected


def test_seed_everything_repeats():
    g = seed_everything(123)
    a = (random.random(), torch.rand(3), torch.rand(2, generator=g))
    g = seed_everything(123)
    b = (random.random(), torch.rand(3), torch.rand(2, generator=g))
    assert a[0] == b[0] and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_group_rule():
    assert num_groups(128) == 32 and num_groups(256) == 32  # the reference's 32 at its widths
    for c in (3, 8, 16, 24, 32, 48, 64, 96):
        g = num_groups(c)
        assert c % g == 0 and (c // g >= 4 or g == 1)


def test_ema_follows_the_formula():
    model = torch.nn.Linear(2, 1, bias=False)
    ema = EMA(model, decay=0.9, warmup=True)
    w0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # n = 0: d = min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.shadow["weight"], 0.1 * w0 + 0.9 * (w0 + 1))
    ema.update(model)  # n = 1: d = min(0.9, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.shadow["weight"], d * (0.1 * w0 + 0.9 * (w0 + 1)) + (1 - d) * (w0 + 1))


def test_ema_updates_every_float_tensor_and_copies_integer_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EMA(model, decay=0.5, warmup=False)
    before = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(2.0)
    model.train()(torch.randn(5, 3))   # moves the BatchNorm running stats and its integer counter
    ema.update(model)
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:   # d·shadow + (1−d)·θ with d = 0.5
            assert torch.allclose(ema.shadow[k], 0.5 * before[k] + 0.5 * v), k
        else:
            assert torch.equal(ema.shadow[k], v), k


def test_fused_optimizer_is_the_same_adamw_update():
    from minildm.train.loop import fused_optimizer

    assert fused_optimizer("cpu") == {"fused": True}
    assert fused_optimizer("mps") == {}
    torch.manual_seed(0)
    a = torch.nn.Linear(5, 3)
    b = torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.AdamW(a.parameters(), lr=1e-2, weight_decay=0.01, foreach=False)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.01, **fused_optimizer("cpu"))
    for _ in range(5):
        x = torch.randn(8, 5)
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
