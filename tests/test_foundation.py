"""Profiles, device choice, seeding, checkpoints and EMA: the plumbing everything else stands on."""

import random
import urllib.error

import pytest
import torch

from minildm import perceptual
from minildm.nn import EMA, num_groups
from minildm.train.profiles import PROFILES, explain_profile, get_profile
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
    assert get_profile().name == "cpu"                # the measured recipe, with or without a GPU
    monkeypatch.setenv("MINILDM_PROFILE", "laptop")
    with pytest.raises(ValueError, match="unknown profile 'laptop'.*ci, cpu, gpu"):
        get_profile()


def test_a_gpu_alone_runs_the_measured_recipe_without_time_caps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("MINILDM_PROFILE", raising=False)
    p = get_profile()
    assert p.name == "cpu" and p.status == "measured"
    assert p.speed.ae_minutes is None and p.speed.ldm_minutes is None
    line = explain_profile()
    assert line.startswith("profile cpu (measured): the default") and "a GPU is present" in line
    assert "MINILDM_PROFILE=gpu" in line and "predicted" in line
    monkeypatch.setenv("MINILDM_PROFILE", "gpu")                     # the larger recipe only when asked for
    p = get_profile()
    assert p.name == "gpu" and "predicted" in p.status and "never run" in p.status
    assert "profile gpu (predicted, never run on a GPU): from $MINILDM_PROFILE" in explain_profile()


def test_every_profile_says_what_is_known_about_it_and_none_caps_time():
    assert {n: p.status for n, p in PROFILES.items()} == {
        "ci": "tested in CI", "cpu": "measured", "gpu": "predicted, never run on a GPU"}
    for p in PROFILES.values():                      # the steps decide, not the clock; caps are opt-in
        assert p.speed.ae_minutes is None and p.speed.ldm_minutes is None, p.name
    assert get_profile("ci").replace(ae_train={"steps": 3}).status == "tested in CI"


def test_a_backbone_download_is_announced_with_its_file_and_size(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(perceptual.RANDOM_BACKBONE_ENV, raising=False)

    def offline(net, path):
        raise urllib.error.URLError("no network in tests")
    monkeypatch.setattr(perceptual, "_download_backbone", offline)
    for net, words in (("vgg", "vgg16-397923af.pth (about 528 MB"), ("alex", "alexnet-owt-7be5be79.pth (about 233 MB"),
                       ("squeeze", "squeezenet1_1-b8a52dc0.pth (about 4.7 MB")):
        assert perceptual.lpips_weights_missing(net, download=True) is not None
        assert f"downloading the LPIPS {net} backbone {words}" in capsys.readouterr().out
    assert perceptual.lpips_weights_missing("vgg", download=False) is not None
    assert "downloading" not in capsys.readouterr().out                    # no download: no notice


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


def test_ema_loads_a_cpu_state_beside_the_models_weights():
    """A resumed run loads its checkpoint on the CPU; the shadow must stay on the model's device (here "meta",
    the one non-CPU device every machine has), with the saved values and its own storage."""
    saved = EMA(torch.nn.Linear(2, 1), decay=0.9).state_dict()
    on_meta = EMA(torch.nn.Linear(2, 1, device="meta"), decay=0.9)
    on_meta.load_state_dict(saved)
    assert all(v.device.type == "meta" for v in on_meta.shadow.values())
    on_cpu = EMA(torch.nn.Linear(2, 1), decay=0.9)
    on_cpu.load_state_dict(saved)
    assert all(torch.equal(on_cpu.shadow[k], v) and on_cpu.shadow[k].data_ptr() != v.data_ptr()
               for k, v in saved["shadow"].items())


def test_fused_optimizer_is_the_same_adamw_update():
    from minildm.train.loop import fused_optimizer

    assert fused_optimizer("cpu") == ({"fused": True} if torch.__version__ >= (2, 4) else {})   # CPU kernel: torch 2.4
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
