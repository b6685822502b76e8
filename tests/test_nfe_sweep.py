"""Quality against cost (`minildm experiments ode-samplers`): every sampler at about the same number of model
evaluations, on the same prompts and the same starting noise; the model calls are counted, not computed."""

import json

import pytest
import torch

from minildm.ldm import LatentDiffusion
from minildm.tools import studies as E
from minildm.tools.cli import main
from minildm.train.profiles import BUDGETS, ExperimentBudget
from minildm.utils import save_checkpoint

COLUMNS = ("label", "sampler", "eta", "steps", "nfe", "nfe_target", "guidance_scale", "fid", "fid_spread", "fid_floor",
           "precision", "recall", "accuracy", "accuracy_low", "accuracy_high", "samples", "sample_images_per_s")


@pytest.fixture
def counted(monkeypatch):
    """Every LatentDiffusion.sample run, in order: the sampler and steps it was asked for, how many times it called
    the U-Net (LatentDiffusion.model_fn) and the latents of its first call (x_T)."""
    runs = []
    sample, model_fn = LatentDiffusion.sample, LatentDiffusion.model_fn

    def counting_sample(self, *args, **kwargs):
        runs.append({"sampler": kwargs.get("sampler", "ddim"), "eta": kwargs.get("eta", 0.0), "steps": kwargs["steps"],
                     "calls": 0, "x_T": None})
        return sample(self, *args, **kwargs)

    def counting_model_fn(self, x_t, t, cond):
        run = runs[-1]
        run["calls"] += 1
        if run["x_T"] is None:
            run["x_T"] = x_t[: len(x_t) // 2].clone()       # guidance: the batch is [x_t, x_t], (cond, uncond)
        return model_fn(self, x_t, t, cond)

    monkeypatch.setattr(LatentDiffusion, "sample", counting_sample)
    monkeypatch.setattr(LatentDiffusion, "model_fn", counting_model_fn)
    return runs


@pytest.mark.slow
def test_the_command_measures_every_sampler_at_each_nfe_on_the_same_noise(text_ldm, tmp_path, counted, capsys):
    ckpt = tmp_path / "ldm.pt"
    save_checkpoint({"kind": "ldm", **text_ldm.checkpoint_model(), "step": 0,
                     "state_dict": text_ldm.denoiser_modules().state_dict()}, ckpt)
    out = tmp_path / "out"
    assert main(["experiments", "ode-samplers", "--profile", "ci", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert "(e) Samplers against model evaluations" in capsys.readouterr().out
    rows = json.loads((out / "results.json").read_text())["experiments"]["ode-samplers"]["rows"]
    b = BUDGETS["ci"]
    assert b.nfe == (4, 5) and b.nfe_samples == 16 and b.eval_batch == 16       # one sampling batch per row
    assert [(r["label"], r["nfe_target"]) for r in rows] == [
        (label, n) for label in ("DDIM η = 0", "DDIM η = 1", "DPM-Solver++(2M)", "Heun") for n in b.nfe]
    for r in rows:
        assert all(k in r for k in COLUMNS), [k for k in COLUMNS if k not in r]
        assert r["samples"] == 16 and r["accuracy_low"] <= r["accuracy"] <= r["accuracy_high"]
        assert r["fid_spread"] >= 0 and r["fid_floor"] == rows[0]["fid_floor"]        # one floor, the same n
    # the U-Net calls, counted: one run per row, in the rows' order, each with the sampler and η the row names
    assert len(counted) == len(rows)
    asked = [(c["sampler"], c["eta"], c["steps"]) for c in counted]
    assert asked == [(r["sampler"], r["eta"], r["steps"]) for r in rows]
    assert [c["calls"] for c in counted] == [r["nfe"] for r in rows]
    # ... which are, per row: DDIM and DPM-Solver++ one call per step, Heun 2·steps − 1 (2 steps: 3, 3 steps: 5)
    assert [c["calls"] for c in counted] == [4, 5, 4, 5, 4, 5, 3, 5]
    assert all(r["nfe"] <= r["nfe_target"] for r in rows)
    # paired: every sampler starts from the same x_T for the same prompts
    assert all(torch.equal(c["x_T"], counted[0]["x_T"]) for c in counted)
    assert (out / "ode_samplers.png").stat().st_size > 10_000
    assert "(e) Samplers against model evaluations" in (out / "results.md").read_text()


def test_heun_gets_the_most_steps_within_the_nfe():
    """5, 10, 20, 50 model calls: Heun takes 3, 5, 10, 25 steps = 5, 9, 19, 49 calls; the others one step a call."""
    assert [E._steps_within("heun", n) for n in (5, 10, 20, 50)] == [3, 5, 10, 25]
    assert [E.model_calls("heun", s) for s in (3, 5, 10, 25)] == [5, 9, 19, 49]
    assert [E._steps_within(s, 10) for s in ("ddim", "dpmpp_2m", "euler")] == [10, 10, 10]
    assert E._steps_within("heun", 1) == 1 and E.model_calls("heun", 1) == 1


def test_an_unknown_sampler_is_refused_with_the_names_that_exist(text_ldm):
    with pytest.raises(ValueError, match=r"'rk4'.*ddim, ddim-eta1, dpmpp_2m, heun, euler"):
        E.ode_sampler_sweep("ci", text_ldm, samplers=("ddim", "rk4"), verbose=False)
    with pytest.raises(ValueError, match="nfe"):
        ExperimentBudget(nfe=(0, 5))


@pytest.mark.slow
def test_the_cpu_profile_measures_the_shipped_text_model_by_default(tmp_path):
    rows = E.run_experiment("ode-samplers", "cpu", tmp_path, nfe=(2,), nfe_samples=4)
    results = json.loads((tmp_path / "results.json").read_text())["experiments"]["ode-samplers"]
    assert "shipped cpu text model" in results["checkpoint"] and results["profile"] == "cpu"
    assert [(r["sampler"], r["eta"], r["nfe"]) for r in rows] == [("ddim", 0.0, 2), ("ddim", 1.0, 2),
                                                                  ("dpmpp_2m", 0.0, 2), ("heun", 0.0, 1)]
