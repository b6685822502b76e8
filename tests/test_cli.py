"""The `minildm` command as a user runs it: demo (ci profile), sample, preview, errors."""

import json

import pytest
import torch

from minildm.data.shapes import parse_layout
from minildm.tools.cli import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    # offline, without LPIPS weights: the demo says so and continues with a random backbone
    assert main(["demo", "--profile", "ci", "--offline", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_demo_writes_pictures_and_checkpoints(demo_dir, capsys):
    for name in ("shapes_preview.png", "samples.png", "filmstrip.png", "autoencoder.pt", "ldm.pt"):
        assert (demo_dir / name).is_file(), name
    before = {name: (demo_dir / name).stat().st_mtime_ns for name in ("autoencoder.pt", "ldm.pt")}
    assert main(["demo", "--profile", "ci", "--offline", "--out", str(demo_dir)]) == 0  # second run reuses the checkpoints
    out = capsys.readouterr().out
    assert "samples:" in out
    assert "autoencoder: step 20/20" in out and "latent diffusion: step 20/20" in out and "cap" not in out
    assert {name: (demo_dir / name).stat().st_mtime_ns for name in before} == before   # neither was rewritten
    assert torch.load(demo_dir / "ldm.pt", weights_only=True)["step"] == 20


@pytest.mark.slow
def test_demo_says_when_a_time_cap_stopped_training_and_a_second_run_finishes(tmp_path, capsys):
    # a zero-minute cap stops both stages before their first step; the demo must say so, not pretend
    before = torch.get_num_threads()
    assert main(["demo", "--profile", "ci", "--offline", "--out", str(tmp_path), "--ae-minutes", "0",
                 "--ldm-minutes", "0", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "threads=1 (fixed)" in out and "trained with" not in out       # a fixed count: no thread governor
    assert torch.get_num_threads() == before                                # and the caller's count is restored
    assert "(at most 0 min)" in out and "autoencoder: step 0/20" in out and "stopped by its time cap" in out
    assert "latent diffusion: step 0/20" in out and "run the demo again to resume and finish" in out
    # the default has no cap (the steps, not the clock, decide the pictures): a second run resumes and finishes
    assert main(["demo", "--profile", "ci", "--offline", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "autoencoder: step 20/20" in out and "latent diffusion: step 20/20" in out
    assert "at most" not in out and "time cap" not in out
    assert "trained with" in out and "thread" in out             # speed.ThreadGovernor's summary per stage


@pytest.mark.slow
def test_sample_command(demo_dir, tmp_path, capsys):
    out = tmp_path / "s.png"
    assert main(["sample", "--checkpoint", str(demo_dir / "ldm.pt"), "--prompt", "a red circle in the top left",
                 "--steps", "3", "-n", "2", "--out", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out
    # unknown words: a clear error and exit code 2, no traceback
    assert main(["sample", "--checkpoint", str(demo_dir / "ldm.pt"), "--prompt", "a red dragon",
                 "--steps", "3", "--out", str(out)]) == 2
    assert "dragon" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(demo_dir / "ldm.pt"), "--prompt", "a red circle",
                 "--steps", "0", "--out", str(out)]) == 2


def test_sample_missing_checkpoint(tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tmp_path / "none.pt"), "--prompt", "a red circle"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_sample_from_a_shipped_model_needs_no_training(tmp_path, capsys):
    out = tmp_path / "x.png"
    assert main(["sample", "--pretrained", "text", "--prompt", "a large red circle in the top left", "-n", "2",
                 "--steps", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(out) in printed
    assert "shipped text model: DDIM-5, η = 1, guidance 2.5, seed 0" in printed    # the demo's sampler by default
    assert main(["sample", "--pretrained", "sr", "--scene", "3", "-n", "1", "--steps", "2",
                 "--out", str(tmp_path / "sr.png")]) == 0
    assert (tmp_path / "sr.png").is_file() and "guidance 1," in capsys.readouterr().out


@pytest.mark.parametrize("name", ["unconditional", "dragons"])
def test_an_unknown_shipped_model_names_the_shipped_ones(name, tmp_path, capsys):
    assert main(["sample", "--pretrained", name, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert f"no shipped model {name!r}" in err and "text, class, class-token, layout, sr" in err
    assert not (tmp_path / "x.png").exists()


def test_sample_takes_a_shipped_model_or_a_checkpoint_not_both_nor_neither(tmp_path, capsys):
    assert main(["sample", "--pretrained", "text", "--checkpoint", str(tmp_path / "a.pt"), "--prompt", "a"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["sample", "--prompt", "a red circle"]) == 2
    assert "one of the arguments --pretrained --checkpoint is required" in capsys.readouterr().err


def test_parse_layout():
    lay = parse_layout("red circle@0.1,0.1,0.45,0.45; blue star@0.5,0.5,0.9,0.9")
    assert lay.shape == (1, 2, 5)
    assert lay[0, 0, 0] == 0 and lay[0, 1, 0] == 3 * 6 + 2  # star = shape 3, blue = color 2
    for bad in ("red dragon@0,0,1,1", "red circle@0.5,0.5,0.1,0.9", "red circle", "red circle@0,0,1"):
        with pytest.raises(ValueError):
            parse_layout(bad)


def test_preview_and_unknown_profile(tmp_path, capsys, monkeypatch):
    out = tmp_path / "p.png"
    assert main(["preview", "--out", str(out), "-n", "4"]) == 0 and out.is_file()
    assert main(["demo", "--profile", "huge", "--out", str(tmp_path)]) == 2
    assert "unknown profile 'huge'" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_ldm_command(demo_dir, capsys):
    assert main(["evaluate-ldm", "--checkpoint", str(demo_dir / "ldm.pt"), "-n", "4", "--steps", "2",
                 "--no-fid"]) == 0
    out = capsys.readouterr().out
    assert "one_object" in out and "two_objects" in out and "prompt accuracy" in out
    assert "word influence" in out and "circle/square" in out and "red/blue" in out


# ------------------------------------------------------------------------------ bad input, in the command's words


@pytest.mark.parametrize("prompt", ["   ", "...", ""])
def test_a_blank_or_wordless_prompt_is_refused(demo_dir, tmp_path, capsys, prompt):
    out = tmp_path / "s.png"
    assert main(["sample", "--checkpoint", str(demo_dir / "ldm.pt"), "--prompt", prompt, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has no words" in err and "no condition" in err and not out.exists()


def test_flags_that_do_not_fit_the_model_are_refused_in_the_commands_words(demo_dir, tmp_path, capsys):
    ckpt = str(demo_dir / "ldm.pt")
    assert main(["sample", "--checkpoint", ckpt, "--class", "3", "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert 'text-conditional model: give --prompt "' in err and "not --class" in err and "prompts=" not in err
    assert main(["sample", "--checkpoint", ckpt, "--out", str(tmp_path / "s.png")]) == 2
    assert "give --prompt" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["train-ae", "--steps", "-5"], "argument --steps: must be a positive whole number, got -5"),
    (["demo", "--ae-minutes", "-1"], "must be 0 or more minutes (a time cap)"),
])
def test_counts_that_are_not_positive_are_refused_before_anything_runs(argv, words, capsys, tmp_path):
    assert main(argv) == 2
    assert words in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------ every command runs


@pytest.fixture(scope="module")
def class_and_layout(demo_dir, tmp_path_factory):
    """A class- and a layout-conditional model on the demo's autoencoder, through `minildm train-ldm`."""
    out = tmp_path_factory.mktemp("cond")
    for cond in ("class", "layout"):
        assert main(["train-ldm", "--profile", "ci", "--autoencoder", str(demo_dir / "autoencoder.pt"), "--cond",
                     cond, "--steps", "2", "--out", str(out / cond)]) == 0
    return out


@pytest.mark.slow
def test_train_ldm_command_trains_and_resumes(class_and_layout, demo_dir, capsys):
    assert torch.load(class_and_layout / "class" / "ldm.pt", weights_only=True)["step"] == 2
    assert main(["train-ldm", "--profile", "ci", "--autoencoder", str(demo_dir / "autoencoder.pt"), "--cond", "class",
                 "--steps", "3", "--out", str(class_and_layout / "class")]) == 0      # one more step
    assert "trained 3 steps" in capsys.readouterr().out


@pytest.mark.slow
def test_train_ldm_on_the_shipped_autoencoder(demo_dir, tmp_path, monkeypatch, capsys):
    """--autoencoder shipped trains on the profile's shipped autoencoder; a profile that ships none is told what to do."""
    from minildm.course import pretrained
    from minildm.utils import load_checkpoint

    assert main(["train-ldm", "--profile", "ci", "--autoencoder", "shipped", "--cond", "none", "--steps", "1",
                 "--out", str(tmp_path / "none")]) == 2
    assert "no shipped autoencoder for the ci profile" in capsys.readouterr().err
    demo_ae = load_checkpoint(demo_dir / "autoencoder.pt", kind="autoencoder")
    stand_in = pretrained.build_autoencoder(pretrained.config_from_dict(pretrained.AEConfig, demo_ae["config"]))
    stand_in.load_state_dict(demo_ae["state_dict"])
    asked = []
    monkeypatch.setattr(pretrained, "load_autoencoder", lambda profile, device=None, root=None: asked.append(profile)
                        or stand_in)
    assert main(["train-ldm", "--profile", "ci", "--autoencoder", "shipped", "--cond", "none", "--steps", "1",
                 "--out", str(tmp_path / "none")]) == 0
    assert asked == ["ci"] and "trained 1 steps" in capsys.readouterr().out
    trained = load_checkpoint(tmp_path / "none" / "ldm.pt", kind="ldm")["autoencoder"]["state_dict"]
    assert all(torch.equal(trained[k], v) for k, v in stand_in.state_dict().items())


@pytest.mark.slow
def test_sample_class_and_layout_commands(class_and_layout, tmp_path, capsys):
    ckpt = class_and_layout / "class" / "ldm.pt"
    assert main(["sample", "--checkpoint", str(ckpt), "--class", "7", "-n", "2", "--steps", "2",
                 "--out", str(tmp_path / "c.png")]) == 0 and (tmp_path / "c.png").is_file()
    assert main(["sample", "--checkpoint", str(ckpt), "--class", "24", "--out", str(tmp_path / "x.png")]) == 2
    assert "--class must be between 0 and 23, got 24" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(class_and_layout / "layout" / "ldm.pt"), "--layout",
                 "red circle@0.1,0.1,0.45,0.45; blue star@0.5,0.5,0.9,0.9", "-n", "2", "--steps", "2",
                 "--out", str(tmp_path / "l.png")]) == 0 and (tmp_path / "l.png").is_file()


def test_info_and_bench_data_commands(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "device: cpu" in out and "profile: ci" in out and "profile ci (tested in CI)" in out
    assert "shipped models" in out and "text, class, class-token, layout, sr" in out
    assert main(["bench-data", "--seconds", "0.1", "--resolutions", "32", "--batch-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "32x32:" in out and "images/s" in out


@pytest.mark.slow
def test_bench_ae_and_bench_ldm_commands(tmp_path, capsys):
    assert main(["bench-ae", "--profile", "ci", "--minutes", "0.01", "--random-lpips", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "RANDOM backbone" in out and "test split (64 images): PSNR" in out and "steps/s" in out
    assert main(["bench-ldm", "--profile", "ci", "--seconds", "0.1", "--steps", "2", "--sample-batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "LDM step, text encoder + U-Net" in out and "DDIM-2 sampling" in out


@pytest.mark.slow
def test_train_evaluator_command(tmp_path, capsys):
    out = tmp_path / "evaluator.pt"
    assert main(["train-evaluator", "--steps", "2", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert torch.load(out, weights_only=True)["kind"] == "shapes_evaluator"


@pytest.mark.slow
def test_training_commands_take_a_folder_of_images(demo_dir, tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "pets"
    for name, color in (("cat", (20, 40, 220)), ("dog", (220, 30, 30))):       # class subfolders: labels
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40, 40), color).save(root / name / f"{i}.png")
    (root / "dog" / "broken.png").write_bytes(b"not a png")                    # skipped with a warning
    data = f"folder:{root}"
    with pytest.warns(UserWarning, match="broken.png"):
        assert main(["train-ae", "--profile", "ci", "--random-lpips", "--data", data, "--steps", "2",
                     "--out", str(tmp_path / "ae")]) == 0
    with pytest.warns(UserWarning, match="broken.png"):
        assert main(["train-ldm", "--profile", "ci", "--autoencoder", str(tmp_path / "ae" / "autoencoder.pt"),
                     "--data", data, "--steps", "2", "--out", str(tmp_path / "ldm")]) == 0
    ckpt = torch.load(tmp_path / "ldm" / "ldm.pt", weights_only=True)
    assert ckpt["config"]["cond"] == "class" and ckpt["conditioning"]["num_classes"] == 2   # from the folders
    assert main(["sample", "--checkpoint", str(tmp_path / "ldm" / "ldm.pt"), "--class", "1", "-n", "2",
                 "--steps", "2", "--out", str(tmp_path / "s.png")]) == 0 and (tmp_path / "s.png").is_file()
    capsys.readouterr()
    assert main(["train-ldm", "--profile", "ci", "--autoencoder", str(demo_dir / "autoencoder.pt"), "--data", data,
                 "--cond", "text", "--out", str(tmp_path / "x")]) == 2
    assert "--cond text needs Shapes" in capsys.readouterr().err
    assert main(["train-ae", "--profile", "ci", "--data", "mnist", "--data-root", str(tmp_path / "none"),
                 "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "files not found" in err and str(tmp_path / "none") in err and "--download" in err


# ------------------------------------------------------------------------------ samplers and flow models


@pytest.fixture(scope="module")
def tiny_text_models(ae_path, tmp_path_factory):
    """A diffusion and a flow text model of the ci profile, two training steps each."""
    from minildm.train.profiles import get_profile
    from minildm.train.stages import train_ldm

    out = tmp_path_factory.mktemp("tiny")
    for name, process in (("diffusion", "diffusion"), ("flow", "flow")):
        train_ldm(get_profile("ci").replace(ldm={"process": process}), ae_path, out / name, cond="text",
                  device="cpu", steps=2, progress=False)
    return out


def test_sample_on_the_shipped_flow_model_with_defaults_uses_euler_and_says_so(tmp_path, capsys, monkeypatch):
    import minildm.tools.cli as cli

    titles = []
    grid = cli.image_grid
    monkeypatch.setattr(cli, "image_grid", lambda *a, **k: titles.append(k["title"]) or grid(*a, **k))
    out = tmp_path / "flow.png"
    assert main(["sample", "--pretrained", "text-flow", "--prompt", "a large red circle in the top left", "-n", "2",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "shipped text-flow model: Euler-50, guidance 3, seed 0" in printed and "DDIM" not in printed
    assert titles == ["minildm, shipped text-flow model: Euler-50, guidance 3, seed 0"]
    assert main(["sample", "--pretrained", "text-flow", "--prompt", "a red circle", "-n", "1", "--steps", "3",
                 "--sampler", "heun", "--out", str(out)]) == 0
    assert "Heun-3 (5 model calls), guidance 3" in capsys.readouterr().out
    assert main(["sample", "--pretrained", "text-flow", "--sampler", "rk4", "--out", str(out)]) == 2
    assert "invalid choice: 'rk4'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["--pretrained", "text-flow", "--eta", "1"], "this is a flow model, sampled deterministically with euler: leave --eta out"),
    (["--pretrained", "text-flow", "--sampler", "heun", "--eta", "0"], "sampled deterministically with heun"),
    (["--pretrained", "text-flow", "--sampler", "ddim"], "use --sampler euler (its default) or --sampler heun"),
    (["--pretrained", "text", "--sampler", "euler", "--eta", "1"],
     "the euler sampler takes none: leave --eta out, or use --sampler ddim --eta 1"),
    (["--pretrained", "text", "--sampler", "ddpm", "--eta", "0.5"], "or use --sampler ddim --eta 0.5"),
])
def test_eta_with_a_sampler_that_has_none_is_refused_and_says_what_to_do(argv, words, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert main(["sample", *argv, "--prompt", "a red circle", "--out", str(out)]) == 2
    assert words in capsys.readouterr().err and not out.exists()


def test_evaluate_ldm_takes_a_sampler_and_evaluates_flow_models(tiny_text_models, tmp_path, capsys):
    from minildm.ldm import SAMPLERS
    from minildm.samplers import ODE_SAMPLERS

    assert set(SAMPLERS) == {"ddim", "ddpm", *ODE_SAMPLERS}      # --sampler offers every sampler of sample()
    record = tmp_path / "eval.json"
    assert main(["evaluate-ldm", "--checkpoint", str(tiny_text_models / "flow" / "ldm.pt"), "-n", "2", "--steps", "2",
                 "--no-fid", "--json", str(record)]) == 0
    out = capsys.readouterr().out
    assert ": Euler-2, guidance 3, 2 prompts per type" in out and "one_object" in out
    assert "word influence: not measured" in out and str(record) in out
    saved = json.loads(record.read_text())
    assert saved["sampler"] == "euler" and saved["steps"] == 2 and saved["guidance"] == 3.0 and saved["n"] == 2
    assert 0 <= saved["one_object"]["accuracy"] <= 1 and saved["word_influence"] == {}
    assert main(["evaluate-ldm", "--checkpoint", str(tiny_text_models / "flow" / "ldm.pt"), "-n", "2", "--steps", "2",
                 "--no-fid", "--sampler", "heun"]) == 0
    assert "Heun-2 (3 model calls)" in capsys.readouterr().out
    diffusion = str(tiny_text_models / "diffusion" / "ldm.pt")
    assert main(["evaluate-ldm", "--checkpoint", diffusion, "-n", "2", "--steps", "2", "--no-fid",
                 "--sampler", "dpmpp_2m"]) == 0
    out = capsys.readouterr().out
    assert "DPM-Solver++(2M)-2, guidance 3" in out and "word influence (0:" in out
    assert main(["evaluate-ldm", "--checkpoint", diffusion, "-n", "2", "--steps", "2", "--no-fid"]) == 0
    assert "DDIM-2, η = 0, guidance 3" in capsys.readouterr().out          # the default: DDIM, η = 0
    assert main(["evaluate-ldm", "--checkpoint", diffusion, "-n", "2", "--sampler", "heun", "--eta", "1"]) == 2
    assert "leave --eta out, or use --sampler ddim --eta 1" in capsys.readouterr().err
