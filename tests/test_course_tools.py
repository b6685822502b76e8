"""What the package gained for the course: spectra, slerp, layer shapes, attention maps per word, the L2 pixel
loss, widgets (their callbacks at the slider's ends), and the course helpers (claims, answers, models)."""

import math

import pytest
import torch

from minildm.autoencoder import build_autoencoder
from minildm.course import lesson as C
from minildm.course import runner
from minildm.course.results import load_json
from minildm.course.widgets import frame_slider, prompt_explorer
from minildm.data.datasets import ShapesDataset
from minildm.data.shapes import COLORS, Scene, ShapeObject, render_scenes
from minildm.eval.metrics import log_spectrum_distance, radial_power_spectrum
from minildm.eval.probes import attention_mass, layer_shapes, object_mask, word_attention_maps
from minildm.ldm import LatentDiffusion
from minildm.losses import AutoencoderLoss, LossConfig
from minildm.train.profiles import get_profile
from minildm.unet import UNet
from minildm.course.viz import slerp
from minildm.utils import load_checkpoint, save_checkpoint

CI = get_profile("ci")


# ------------------------------------------------------------------------------ spectra


@pytest.mark.parametrize("k", [2, 5, 11])
def test_a_pure_wave_puts_its_power_in_its_own_ring(k):
    """An image cos(2π·k·x/N) (grey, no mean) has its power at frequency k/N: ring k holds the most, and
    rings further than one away hold almost nothing."""
    N = 32
    x = torch.arange(N, dtype=torch.float64)
    wave = torch.cos(2 * math.pi * k * x / N)[None, :].expand(N, N)          # varies along x only
    img = (0.5 * wave).float().expand(1, 3, N, N)
    f, p = radial_power_spectrum(img)
    assert f[k - 1] == pytest.approx(k / N) and int(p.argmax()) == k - 1
    far = (torch.arange(1, len(p) + 1) - k).abs() > 1       # the Hann window spreads a wave over k − 1 … k + 1
    assert p[k - 1] > 1e3 * p[far].max()


def test_blur_removes_high_frequency_power():
    x = ShapesDataset("test", size=32).batch(range(32))["image"]
    blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    f, p = radial_power_spectrum(x)
    _, pb = radial_power_spectrum(blurred)
    high = f > 0.25
    assert (pb[high] < 0.5 * p[high]).all()                                   # a 3×3 box kills the fine detail
    assert log_spectrum_distance(x, x) == 0.0 and log_spectrum_distance(blurred, x, min_frequency=0.25) > 0.3


# ------------------------------------------------------------------------------ slerp, shapes


def test_slerp_ends_keeps_the_norm_and_falls_back_to_lerp():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 4, 8, 8, generator=g), torch.randn(5, 4, 8, 8, generator=g)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    mid = slerp(a, b, 0.5).flatten(1).norm(dim=1)
    ends = (a.flatten(1).norm(dim=1) + b.flatten(1).norm(dim=1)) / 2
    assert torch.allclose(mid, ends, rtol=0.05)                              # on the great circle
    assert ((a + b) / 2).flatten(1).norm(dim=1).mean() < 0.8 * ends.mean()  # the chord shrinks by ~√2
    assert torch.allclose(slerp(a, 2 * a, 0.25), 1.25 * a, atol=1e-5)        # parallel rows: lerp
    with pytest.raises(ValueError, match="same shape"):
        slerp(a, b[:2], 0.5)


def test_layer_shapes_follow_the_unet_down_and_up():
    unet = UNet(4, 4, 16, channel_mult=(1, 2), attention_resolutions=(2,), num_heads=2)
    shapes = layer_shapes(unet, torch.zeros(2, 4, 8, 8), torch.zeros(2, dtype=torch.long), depth=1)
    names = [n for n, _ in shapes]
    assert names[0] == "time_embed.0" and shapes[0][1] == (2, 64)
    down = [s for n, s in shapes if n.startswith("input_blocks")]
    assert down[0] == (2, 16, 8, 8) and down[-1] == (2, 32, 4, 4)           # halved once, doubled width
    assert dict(shapes)["middle_block.1"] == (2, 32, 4, 4)                  # attention keeps the shape
    assert [s for n, s in shapes if n.startswith("output_blocks")][-1] == (2, 16, 8, 8)


# ------------------------------------------------------------------------------ attention maps per word


@pytest.fixture(scope="module")
def text_ldm():
    torch.manual_seed(0)
    ds = ShapesDataset("train", CI.data)
    ldm = LatentDiffusion(build_autoencoder(CI.ae), CI.ldm, tokenizer=ds.tokenizer, num_classes=ds.num_classes,
                          max_objects=ds.max_objects)
    ldm.set_scale_factor(ds.batch(range(8))["image"])
    return ldm.eval()


def test_word_attention_maps_are_distributions_over_the_tokens(text_ldm):
    r = word_attention_maps(text_ldm, "a large red circle in the top left", steps=3)
    assert r["words"] == "a large red circle in the top left".split() and r["maps"].shape == (8, 32, 32)
    total = r["maps"].sum(0) + r["bos"] + r["eos"]                   # each pixel's attention sums to 1
    assert torch.allclose(total, torch.ones(32, 32), atol=1e-4)
    first_half = word_attention_maps(text_ldm, "a red circle in the center", steps=4, step_range=(0.0, 0.5))
    assert first_half["maps"].shape == (6, 32, 32)
    with pytest.raises(ValueError, match="step_range"):
        word_attention_maps(text_ldm, "a red circle in the center", step_range=(0.5, 0.5))


def test_object_mask_and_attention_mass():
    obj = ShapeObject("square", "red", "large", 0, 0, 0.28, 0.28)
    image = render_scenes([Scene((obj,), None, (0.3, 0, 0, 0, 0, 0.0, 1, 0, 0, 0.0, 1, 0, 0, 0.0))], 32)[0][0]
    mask = object_mask(image, "red")
    assert mask[:2, :2].sum() == 0 and mask[20:, 20:].sum() == 0 and mask[9, 9] and 0.05 < mask.float().mean() < 0.3   # the square, top left
    assert object_mask(image, "blue").sum() == 0
    mass, area = attention_mass(mask.float(), mask)                   # attention exactly on the object
    assert mass == pytest.approx(1.0) and area == pytest.approx(float(mask.float().mean()))
    mass, _ = attention_mass(torch.ones(32, 32), mask)                # uniform attention: mass = area
    assert mass == pytest.approx(area)
    with pytest.raises(ValueError, match="unknown color"):
        object_mask(image, "magenta")
    assert set(COLORS) >= {"red", "blue"}


# ------------------------------------------------------------------------------ the L2 pixel loss


def test_l2_pixel_loss_is_the_squared_error():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon = x + 0.1 * torch.randn_like(x)
    for kind, expected in (("l1", (x - recon).abs()), ("l2", (x - recon).pow(2))):
        cfg = LossConfig(pixel_loss=kind, perceptual_weight=0.0)
        rec, logs = AutoencoderLoss(cfg, random_backbone=True).reconstruction_loss(x, recon)
        assert rec.item() == pytest.approx(float(expected.sum() / 2), rel=1e-5)
        assert logs["l1"].item() == pytest.approx(float((x - recon).abs().mean()), rel=1e-5)
    with pytest.raises(ValueError, match="pixel_loss"):
        LossConfig(pixel_loss="l3")


# ------------------------------------------------------------------------------ widgets, at their ends


def test_frame_slider_shows_every_frame_and_refuses_others():
    frames = [torch.full((2, 3, 8, 8), v) for v in (-1.0, 0.0, 1.0)]
    view = frame_slider(frames, ["t=999", "t=500", "t=0"])
    for i in (0, 2):
        fig = view.figure(i)
        assert fig._suptitle.get_text() == ["t=999", "t=500", "t=0"][i]
        view.show(i)
    with pytest.raises(IndexError):
        view.figure(3)
    with pytest.raises(ValueError, match="one title per frame"):
        frame_slider(frames, ["only one"])


def test_prompt_explorer_generates_and_reports_bad_words(text_ldm, capsys):
    view = prompt_explorer(text_ldm, n=2, steps=2)
    for s in (0.0, 10.0):                                              # the slider's ends
        x = view.generate("a small blue star in the center", s)
        assert x.shape == (2, 3, 32, 32)
    assert view.generate("a small blue dragon", 3.0) is None          # the message, not a traceback
    assert view.generate("   ", 3.0) is None


def test_the_explorer_labels_each_sample_with_the_evaluators_verdict():
    """Scenes drawn for the caption hold it; the same scenes judged against a caption with another color, or
    against a one-object caption while they hold two, fail it, and the verdict names what fails."""
    from minildm.data.shapes import scene_from_caption
    from minildm.course.widgets import verdicts

    caption = "a small purple star below a large green square"
    images, _ = render_scenes([scene_from_caption(caption, seed=k) for k in range(3)], 32)
    assert verdicts(images, caption) == ["✓ all hold"] * 3
    assert all(v.startswith("✗") and "color" in v for v in verdicts(images, caption.replace("purple", "orange")))
    one, _ = render_scenes([scene_from_caption("a large green square in the center", seed=k) for k in range(2)], 32)
    assert all(v.startswith("✗ object count") for v in verdicts(images[:2], "a large green square in the center"))
    assert verdicts(one, "a large green square in the center") == ["✓ all hold"] * 2


# ------------------------------------------------------------------------------ the course helpers


def test_identities_raise_and_findings_need_to_clear_their_bar_by_their_noise(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(C.COURSE_DIR_ENV, str(tmp_path))
    course = C.setup("03_forward_diffusion", profile="ci")
    out = capsys.readouterr().out
    assert "notebook 03_forward_diffusion" in out and "profile ci (tested in CI): asked for" in out and "LPIPS" in out
    course.identity("rows sum to one", 1.0, "==", 1.0)
    assert "holds: rows sum to one" in capsys.readouterr().out
    with pytest.raises(C.ClaimFailed, match="closed form"):
        course.identity("closed form = chain", 1e-3, "<", 1e-6)          # identities raise in every mode
    course.finding("clear win", 0.9, ">", 0.5, noise=0.1)
    course.finding("inside the noise", 0.55, ">", 0.5, noise=0.1)       # measured > bar, but not by its noise
    course.finding("interval", 0.3, "<", 0.25, noise=(0.2, 0.4))        # an interval (low, high) that spans the bar
    course.finding("interval below", 0.1, "<", 0.25, noise=(0.05, 0.2))
    printed = capsys.readouterr().out
    assert "✓ finding: clear win: 0.9 (95 % interval 0.8 … 1)" in printed and "margin 0.4 = 4.0× its noise" in printed
    assert "✗ finding: inside the noise" in printed and "not shown in the ci profile" in printed
    with pytest.raises(ValueError, match="op must be"):
        course.finding("equal", 1.0, "==", 1.0, noise=0.0)
    results = load_json(tmp_path / "results.json")["03_forward_diffusion"]
    held = {name: f["ok"] for name, f in results["findings"].items()}
    assert held == {"clear win": True, "inside the noise": False, "interval": False, "interval below": True}
    assert results["findings"]["clear win"]["low"] == 0.8
    assert results["identities"]["rows sum to one"]["ok"] and not results["identities"]["closed form = chain"]["ok"]
    C.setup("04_unet_and_cross_attention", profile="ci").finding("four", 4.0, ">", 3.0, noise=0.5)
    monkeypatch.setenv(C.STRICT_ENV, "1")
    strict = C.setup("03_forward_diffusion", profile="ci")          # a rerun drops the earlier run's results
    assert "03_forward_diffusion" not in load_json(tmp_path / "results.json")
    assert load_json(tmp_path / "results.json")["04_unet_and_cross_attention"]["findings"]["four"]["ok"]
    with pytest.raises(C.ClaimFailed, match="not shown"):
        strict.finding("inside the noise", 0.55, ">", 0.5, noise=0.1)


def test_binomial_interval_and_bootstrap_against_independent_computations():
    from minildm.eval.metrics import binomial_interval, bootstrap_std
    low, high = binomial_interval(8, 10)          # Wilson 95 % for 8/10: 0.4902 … 0.9433 (Brown, Cai & DasGupta)
    assert abs(low - 0.4902) < 1e-3 and abs(high - 0.9433) < 1e-3
    assert binomial_interval(0, 20)[0] == 0.0 and binomial_interval(0, 20)[1] > 0.1   # never empty at k = 0
    assert binomial_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-3)
    # the bootstrap std of a mean of n values ≈ their std / √n
    x = torch.randn(400, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    se = bootstrap_std(lambda idx: float(x[idx].mean()), len(x), n_boot=400)
    assert se == pytest.approx(float(x.std()) / 20, rel=0.15)


def test_check_answer_says_what_is_wrong_and_never_the_answer(capsys):
    C.check_answer("Exercise 0.1", 1 / 12, 4 * 8 * 8 / (3 * 32 * 32))
    C.check_answer("Exercise 3.1", torch.ones(3) + 1e-7, torch.ones(3))
    C.check_answer("Exercise 5.1", torch.ones(2, requires_grad=True) * 1, torch.ones(2))   # a loss with its graph
    # natural wrong answers, each rejected with what is wrong; the expected value appears in no message
    wrong = [  # (answer, expected, what the message must say)
        (torch.tensor([1.0, 1.5, 1.0]), torch.ones(3), r"1 of 3 values are off, the worst by 0.5 at index \(1,\)"),
        (torch.ones(2), torch.ones(3), r"shape \(2,\), the answer's is \(3,\)"),
        (-torch.tensor([1.25, 2.5, 3.75]), torch.tensor([1.25, 2.5, 3.75]), "the sign is flipped"),
        (torch.tensor([0.625, 1.25, 1.875]), torch.tensor([1.25, 2.5, 3.75]), "same factor, about 0.5"),  # a stray ½
        (0.1, 4 * 8 * 8 / (3 * 32 * 32), "too large by about 20 %"),
        (-0.0625, 0.0625, "the sign is flipped"),
        (0.0, 0.047, "yours is 0, and the answer is not"),                  # not "too small by a factor of 0"
        ([999, 856, 713], [999, 856, 714], r"worst by 1 at index \(2,\)"),                         # off by one
        ({"objects": [], "relation": "above"}, {"objects": [], "relation": "below"}, r"\['relation'\] differ"),
        ("cat", "circle", "'cat' is not it"),
        (([1, 2], "red star"), ([1, 2], "green star"), "item 1 differs"),
    ]
    for got, expected, says in wrong:
        with pytest.raises(AssertionError, match=says) as e:
            C.check_answer("Exercise 9.9", got, expected)
        text = str(e.value)
        assert "not yet" in text and all(s not in text for s in ("circle'", "green star", "below", "714", "0.0833",
                                                                 "1.25", "3.75"))
    with pytest.raises(AssertionError, match="must be a constant"):        # λ with its graph: gradients would flow
        C.check_answer("Exercise 1.2", torch.ones(2, requires_grad=True) * 1, torch.ones(2), constant=True)
    C.check_answer("Exercise 1.2", torch.ones(2, requires_grad=True).detach(), torch.ones(2), constant=True)
    capsys.readouterr()
    # not answered yet (None, or the student edition's `...`, also inside a tuple): skipped, so Run All goes on
    for got in (None, ..., (..., "red star")):
        C.check_answer("Exercise 3.2", got, 1.0)
        assert "Exercise 3.2: skipped, no answer yet" in capsys.readouterr().out


def test_shows_error_prints_the_refusal_and_insists_on_one(capsys):
    with C.shows_error(ValueError):
        raise ValueError("an unknown word: 'hexagon'")
    assert capsys.readouterr().out == "ValueError: an unknown word: 'hexagon'\n"
    with pytest.raises(AssertionError, match="should have raised ValueError, and ran without one"):
        with C.shows_error(ValueError):
            pass
    with pytest.raises(KeyError):                              # another kind of error is not the lesson's
        with C.shows_error(ValueError):
            raise KeyError("x")


@pytest.mark.slow
def test_models_are_handed_on_own_run_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(C.COURSE_DIR_ENV, str(tmp_path))
    course = C.setup("02_latent_space", profile="ci")
    ae = course.autoencoder()                                        # none yet: trains the ci one, says so
    assert "no autoencoder yet: training" in capsys.readouterr().out and (tmp_path / "autoencoder.pt").is_file()
    again = C.setup("06_ddim_sampling", profile="ci").autoencoder()  # a later notebook loads it
    assert "autoencoder: " in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(ae.state_dict().values(), again.state_dict().values()))
    ldm = course.ldm("text")
    assert ldm.cond_mode == "text" and (tmp_path / "ldm-text" / "ldm.pt").is_file()
    assert course.trained_steps("ldm-text") == CI.ldm_train.steps and course.trained_steps("ldm-class") is None
    # an interrupted run: used, with a warning that says how to take the shipped one instead
    path, half = tmp_path / "ldm-text" / "ldm.pt", CI.ldm_train.steps // 2
    save_checkpoint({**load_checkpoint(path), "step": half}, path)        # re-checksummed, as a run writes it
    capsys.readouterr()
    assert course.ldm("text").cond_mode == "text"
    out = capsys.readouterr().out
    assert f"only {half:,} of the ci profile's {CI.ldm_train.steps:,} steps" in out
    assert "course.ldm('text', prefer=\"shipped\")" in out
    # the ci profile ships no models: prefer="shipped" says so and keeps the student's own (never retrains over it)
    course.ldm("text", prefer="shipped")
    assert "no shipped one for the ci profile on shapes: your own after all" in capsys.readouterr().out
    assert course.trained_steps("ldm-text") == half
    with pytest.raises(ValueError, match="prefer must be 'own'"):
        course.ldm("text", prefer="mine")


def test_check_says_which_recipe_runs_and_why(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(runner, "speed_probe", lambda profile, seconds=10.0: {"ldm_steps_per_s": 1.0})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("MINILDM_PROFILE", raising=False)
    lines = []
    report = runner.self_check(seconds=0.1, log=lines.append)
    assert report["profile"] == "cpu" and report["profile_status"] == "measured"
    assert any(line.startswith("profile cpu (measured): the default; a GPU is present") and "MINILDM_PROFILE=gpu"
               in line for line in lines), lines



def test_live_training_redraws_one_figure_at_each_new_snapshot_and_only_then(monkeypatch):
    """LiveTraining: the snapshot callback runs at every step; a figure is drawn when (and only when) a new
    snapshot was taken, the first time as a new display, afterwards as an update of that display."""
    import matplotlib
    matplotlib.use("Agg")
    from IPython import display as ipd

    from minildm.course import viz

    calls = []

    class Handle:
        def update(self, fig):
            calls.append(("update", len(fig.axes)))

    def fake_display(fig, display_id=False):
        calls.append(("display", len(fig.axes)))
        return Handle()

    monkeypatch.setattr(ipd, "display", fake_display)

    class Snapshots:                      # stands in for train.stages.SampleSnapshots
        prompts, at_steps, images = ["a", "b", "c"], [1, 4, 8], {}

        def __call__(self, step, record, run):
            if step in self.at_steps:
                self.images[step] = torch.zeros(3, 3, 8, 8)

    class Run:
        history = []

    live, run = viz.LiveTraining(Snapshots(), shown=2), Run()
    for step in range(1, 9):
        run.history.append({"step": step, "loss": 1.0 / step})
        live(step, run.history[-1], run)
    # one loss axis + 2 prompts × 3 snapshot columns, drawn at steps 1, 4 and 8
    assert calls == [("display", 7), ("update", 7), ("update", 7)]
    live(8, run.history[-1], run)         # a step whose snapshot exists already: nothing new to draw
    assert len(calls) == 3
