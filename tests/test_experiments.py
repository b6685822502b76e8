"""The paper's experiments at mini scale: every experiment runs end to end on tiny budgets and returns the
rows it promises; the f-study's segments and reuse behave; rates, tables and errors are right."""

import json
import math

import pytest
import torch

from minildm.autoencoder import PixelSpace, build_autoencoder
from minildm.eval.accuracy import evaluate_text_ldm, evaluate_text_model
from minildm.ldm import LatentDiffusion
from minildm.course import results as R
from minildm.tools import studies as E
from minildm.tools.cli import main
from minildm.train.profiles import BUDGETS, ExperimentBudget, get_profile

load_ldm = LatentDiffusion.from_checkpoint

PROFILE = get_profile("ci").replace(ae_train={"steps": 3}, ldm_train={"steps": 4})
# equal="steps" spends ae_steps / ldm_steps / ldm_batch of the budget, not the profile's 3 / 4 / 8
BUDGET = ExperimentBudget(factors=(1, 4), ae_minutes=0.005, ldm_minutes=0.01, ae_steps=2, ldm_steps=6, ldm_batch=4,
                          segments=2, eval_samples=4,
                            eval_steps=2, eval_batch=4, throughput_batch=2, throughput_steps=2,
                            sampler_steps=(1, 2), sampler_etas=(0.0, 1.0), sampler_samples=4,
                            guidance_scales=(1.0, 3.0), guidance_samples=4, guidance_steps=2, rd_images=8)
METRICS = ("fid", "fid_floor", "kid", "precision", "recall", "precision_floor", "recall_floor", "accuracy",
           "one_object_accuracy", "two_object_accuracy", "sample_images_per_s")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """f ∈ {1, 4}, equal step budgets (2 autoencoder steps, 6 LDM steps of batch 4 in 2 segments): deterministic."""
    out = tmp_path_factory.mktemp("fstudy")
    rows = E.f_study(PROFILE, out, BUDGET, equal="steps", download=False, verbose=False)
    return out, rows


@pytest.mark.slow
def test_f_study_rows_have_the_promised_fields(study):
    out, rows = study
    assert [(r["f"], r["segment"]) for r in rows] == [(1, 1), (1, 2), (4, 1), (4, 2)]
    for r in rows:
        for key in ("minutes", "steps", "train_steps_per_s", "latent_size", "latent_channels", "rate",
                    "ae_steps", "ae_minutes", "ddim_steps", *METRICS):
            assert key in r, key
        assert math.isfinite(r["fid"]) and r["fid"] >= 0 and r["fid_floor"] >= 0
        assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 and 0 <= r["accuracy"] <= 1
    # equal steps: segment k ends at round(k · 6 / 2) LDM steps, for every f, each with batches of 4
    assert [r["steps"] for r in rows] == [3, 6, 3, 6] and {r["equal"] for r in rows} == {"steps"}
    for f in (1, 4):
        assert json.loads((out / f"f{f}" / "f_study.json").read_text())["key"]["ldm_config"]["batch_size"] == 4
        assert torch.load(out / f"f{f}" / "ldm.pt", weights_only=True)["step"] == 6
    by_f = {r["f"]: r for r in rows if r["segment"] == 2}
    assert by_f[1]["checkpoint"] == str(out / "f1" / "ldm.pt")
    assert by_f[1]["latent_size"] == 32 and by_f[1]["latent_channels"] == 3 and by_f[1]["rate"] == 1.0
    assert by_f[1]["ae_steps"] == 0 and by_f[4]["ae_steps"] == 2
    assert by_f[4]["latent_size"] == 8 and by_f[4]["rate"] == pytest.approx(4 * 8 * 8 / (3 * 32 * 32))
    for f in (1, 4):   # sampling throughput is measured once, at the end of the budget
        assert by_f[f]["ddim_images_per_s"] > 0 and by_f[f]["throughput_steps"] == 2
        assert "ddim_images_per_s" not in rows[0]
    # the same real-vs-real floor for every evaluation (same n, same real images)
    assert len({r["fid_floor"] for r in rows}) == 1
    assert R.f_study_summary(rows) == [by_f[1], by_f[4]]


def _row(f, segment, fid, steps, spread=1.0, equal="time"):
    return {"f": f, "segment": segment, "fid": fid, "fid_spread": spread, "fid_floor": 5.0, "samples": 100,
            "minutes": 4.0 * segment / 2, "steps": steps, "train_steps_per_s": steps / 240, "equal": equal}


def test_f_study_verdict_says_which_f_won_and_whether_f4_is_ahead_of_pixel_space_beyond_the_noise():
    rows = [_row(1, 1, 80.0, 10), _row(1, 2, 60.0, 20), _row(4, 1, 50.0, 400), _row(4, 2, 30.0, 800)]
    v = R.f_study_verdict(rows)
    assert "(4.00 min of LDM training each)" in v and "the lowest Shapes-FID is f = 4's: 30.0" in v
    # noise: 2·√(1² + 1²) = 2.83
    assert "f = 4 is ahead of pixel space: FID 30.0 vs 60.0 (difference +30.0, noise ± 2.8), after 800 vs 20" in v
    rows[-1] = _row(4, 2, 70.0, 800)                               # now pixel space ends lower
    v = R.f_study_verdict(rows)
    assert "the lowest Shapes-FID is f = 1's: 60.0" in v and "f = 4 is behind pixel space" in v
    rows[-1] = _row(4, 2, 58.0, 800, spread=3.0)                   # 2 points apart, noise 2·√10 = 6.3
    assert "f = 4 is within the noise of pixel space" in R.f_study_verdict(rows)
    steps = [_row(1, 2, 60.0, 300, equal="steps"), _row(4, 2, 30.0, 300, equal="steps")]
    assert "(300 training steps each)" in R.f_study_verdict(steps)
    # at equal steps, every earlier evaluation too: ahead early (80 − 50 = 30 > 2.8), within the noise at the end
    steps = [_row(1, 1, 80.0, 150, equal="steps"), _row(1, 2, 60.0, 300, equal="steps"),
             _row(4, 1, 50.0, 150, equal="steps"), _row(4, 2, 58.0, 300, spread=3.0, equal="steps")]
    v = R.f_study_verdict(steps)
    assert "f = 4 is within the noise of pixel space: FID 58.0 vs 60.0" in v
    assert v.endswith("Earlier, at equal steps: 150 steps: f = 4 is ahead of pixel space (+30.0 ± 2.8).")
    assert "Earlier" not in R.f_study_verdict(rows)               # equal time: the steps differ, no pairing
    assert R.f_study_verdict([]) == "no f-study rows"


def test_experiment_budget_refuses_step_budgets_below_one():
    with pytest.raises(ValueError, match="ldm_steps must be ≥ 1 or None"):
        ExperimentBudget(ldm_steps=0)
    assert ExperimentBudget(ldm_steps=None).ldm_steps is None


@pytest.mark.slow
def test_pixel_space_ldm_round_trips_through_load_ldm(study):
    out, _ = study
    ckpt = torch.load(out / "f1" / "ldm.pt", weights_only=True)
    assert ckpt["step"] == 6 and ckpt["autoencoder"]["config"]["kind"] == "pixel"
    ldm = load_ldm(out / "f1" / "ldm.pt", "cpu")
    assert isinstance(ldm.autoencoder, PixelSpace) and ldm.latent_size(32) == 32 and ldm.latent_channels == 3
    z = torch.randn(2, 3, 32, 32)
    s = float(ldm.scale_factor)
    assert torch.equal(ldm.decode(z), (z / s).clamp(-1, 1))          # D(z / scale) is the identity
    x = ldm.sample(ldm.prompt_condition(prompts=["a red circle"] * 2), resolution=32, steps=2,
                   generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 32, 32) and torch.isfinite(x).all()


def test_f_study_reuses_finished_work_and_refuses_other_settings(study):
    out, rows = study
    before = (out / "f4" / "ldm.pt").stat().st_mtime_ns
    again = E.f_study(PROFILE, out, BUDGET, equal="steps", download=False, verbose=False)
    assert again == json.loads(json.dumps(rows))                       # read back, nothing retrained
    assert (out / "f4" / "ldm.pt").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="other settings"):
        E.f_study(PROFILE, out, BUDGET, segments=3, equal="steps", download=False, verbose=False)


@pytest.mark.slow
def test_f_study_equal_time_segments_increase(tmp_path):
    budget = ExperimentBudget(factors=(4,), ae_minutes=0.004, ldm_minutes=0.015, segments=3, eval_samples=4,
                                eval_steps=1, eval_batch=4, throughput_batch=2, throughput_steps=1)
    rows = E.f_study(PROFILE, tmp_path, budget, download=False, verbose=False)
    minutes, steps = [r["minutes"] for r in rows], [r["steps"] for r in rows]
    assert [r["segment"] for r in rows] == [1, 2, 3]
    assert all(a < b for a, b in zip(minutes, minutes[1:])) and all(a < b for a, b in zip(steps, steps[1:]))
    # training stops only once the segment's share of the budget is spent
    for k, m in enumerate(minutes, start=1):
        assert m >= k * 0.015 / 3 - 1e-9
    assert rows[0]["ae_minutes"] >= 0.004


@pytest.mark.slow
def test_evaluate_text_model_agrees_with_evaluate_ldm(study):
    out, _ = study
    ldm = load_ldm(out / "f4" / "ldm.pt", "cpu")
    mine = evaluate_text_model(ldm, num_samples=4, steps=2, guidance_scale=3.0, batch_size=4)
    theirs = evaluate_text_ldm(ldm, n=4, steps=2, guidance_scale=3.0, batch_size=4)["fid"]
    for key in ("fid", "fid_floor", "precision", "recall", "kid"):
        assert mine[key] == pytest.approx(theirs[key], rel=1e-6, abs=1e-9), key
    assert mine["samples"] == 4 and mine["sample_images_per_s"] > 0


@pytest.mark.slow
def test_sampler_and_guidance_sweeps(study):
    out, _ = study
    ckpt = out / "f4" / "ldm.pt"
    rows = E.sampler_sweep(PROFILE, ckpt, BUDGET, verbose=False)
    assert [(r["steps"], r["eta"]) for r in rows] == [(1, 0.0), (2, 0.0), (1, 1.0), (2, 1.0)]
    assert all(k in r for r in rows for k in METRICS)
    assert len({r["fid_floor"] for r in rows}) == 1                    # one floor, measured once
    g = E.guidance_sweep(PROFILE, ckpt, BUDGET, verbose=False)
    assert [r["guidance_scale"] for r in g] == [1.0, 3.0] and all(k in r for r in g for k in METRICS)
    # η = 0 and guidance 3 at 2 steps is one sample set in both sweeps: the same numbers
    assert rows[1]["fid"] == pytest.approx(g[1]["fid"]) and rows[1]["accuracy"] == g[1]["accuracy"]


def test_rate_distortion(study):
    out, _ = study
    before = (out / "f4" / "autoencoder.pt").stat().st_mtime_ns
    # the f-study's autoencoders are used as they are, whatever budget is asked for here (10 min would show)
    rows = E.rate_distortion(PROFILE, out, BUDGET, ae_minutes=10.0, download=False, verbose=False)
    assert (out / "f4" / "autoencoder.pt").stat().st_mtime_ns == before
    assert [r["f"] for r in rows] == [4]                                # f = 1 is lossless: no row
    r = rows[0]
    assert r["rate"] == pytest.approx(4 * 8 * 8 / (3 * 32 * 32)) and r["ae_steps"] == 2
    assert r["lpips"] is None                                          # offline: no pretrained LPIPS weights
    assert 0 < r["psnr"] < 60 and -1 <= r["ssim"] <= 1 and r["rfid"] >= 0 and r["images"] == 8


def test_latent_rate_and_autoencoder_configs():
    assert E.latent_rate(32, 4, 4) == 4 * 8 * 8 / (3 * 32 * 32)
    assert E.latent_rate(32, 1, 3) == 1.0 and E.latent_rate(64, 8, 4) == 4 * 8 * 8 / (3 * 64 * 64)
    ae = PROFILE.ae
    assert E.autoencoder_config(ae, 1).kind == "pixel"
    for f, mult in ((2, (1, 2)), (4, (1, 2, 4)), (8, (1, 2, 4, 4))):
        cfg = E.autoencoder_config(ae, f)
        assert cfg.ch_mult == mult and cfg.downsample_factor == f and cfg.z_channels == ae.z_channels
        z = build_autoencoder(cfg).encode_latent(torch.randn(1, 3, 32, 32))
        assert z.shape == (1, ae.z_channels, 32 // f, 32 // f)      # the encoder really downsamples by f


@pytest.mark.parametrize("f", [3, 6, 64])
def test_bad_downsampling_factors(f, tmp_path, capsys):
    assert main(["experiments", "f-study", "--profile", "ci", "--factors", "4", str(f), "--out", str(tmp_path)]) == 2
    assert "must be a power of two" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())                                  # refused before training anything


def test_factor_too_large_for_the_unet(tmp_path):
    # f = 32 on 32×32 images leaves 1×1 latents, which the U-Net cannot downsample
    with pytest.raises(ValueError, match="cannot halve"):
        E.f_study(PROFILE, tmp_path, BUDGET, factors=(32,), download=False, verbose=False)


def test_a_missing_checkpoint_says_how_to_get_one(tmp_path, capsys):
    assert main(["experiments", "guidance", "--profile", "ci", "--checkpoint", str(tmp_path / "missing.pt"),
                 "--out", str(tmp_path)]) == 2
    assert "minildm demo" in capsys.readouterr().err


def test_results_table_renders_numbers():
    rows = [{"f": 4, "fid": 12.345, "acc": 0.5, "lpips": None}, {"f": 8, "fid": 30.0, "acc": 0.125, "lpips": 0.25}]
    table = R.results_table(rows, [("f", "f", "d"), ("fid", "Shapes-FID", ".1f"), ("acc", "accuracy", ".1%"),
                                   "lpips"])
    assert table.splitlines() == ["| f | Shapes-FID | accuracy | lpips |", "|---|---|---|---|",
                                  "| 4 | 12.3 | 50.0% | — |", "| 8 | 30.0 | 12.5% | 0.25 |"]
    assert R.results_table(rows[:1]).splitlines()[0] == "| f | fid | acc | lpips |"   # default: every key
    with pytest.raises(ValueError, match="fdi"):
        R.results_table(rows, ["fdi"])


@pytest.mark.slow
def test_cli_writes_results(study, tmp_path, capsys):
    out, _ = study
    for name in ("guidance", "sampler"):
        assert main(["experiments", name, "--profile", "ci", "--checkpoint", str(out / "f4" / "ldm.pt"),
                     "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| s | Shapes-FID |" in printed and "results.md" in printed
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["experiments"]) == {"guidance", "sampler"}      # the second run merged, not replaced
    assert len(results["experiments"]["guidance"]["rows"]) == len(BUDGETS["ci"].guidance_scales)
    md = (tmp_path / "results.md").read_text()
    assert "(b) DDIM steps" in md and "(c) Classifier-free guidance" in md
    assert main(["experiments", "everything"]) == 2                    # argparse names the valid choices


def test_step_speeds_time_the_f_study_models_on_this_machine():
    rows = E.step_speeds("ci", (1, 4), batch_size=2, seconds=0.0, ddim_steps=1)
    assert [r["f"] for r in rows] == [1, 4] and [r["latent_size"] for r in rows] == [32, 8]
    assert all(r["batch"] == 2 and r["train_steps_per_s"] > 0 and r["ddim_image_steps_per_s"] > 0 for r in rows)
    # the same U-Net but for its 3×3 input and output convolutions (width m): 3 pixel channels vs the latent's c,
    # so (c − 3)·9m more input weights and (c − 3)·(9m + 1) more output weights and biases
    p = get_profile("ci")
    c, m = E.autoencoder_config(p.ae, 4).z_channels, p.ldm.model_channels
    assert rows[1]["unet_parameters"] - rows[0]["unet_parameters"] == (c - 3) * (18 * m + 1)
    with pytest.raises(ValueError, match="power of two"):
        E.step_speeds("ci", (3,), seconds=0.0)
