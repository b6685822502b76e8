"""The `minildm` command as a user runs it: demo (ci profile), sample, preview, errors."""

import pytest
import torch

from minildm.cli import main
from minildm.train_ldm import parse_layout


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    # offline, without LPIPS weights: the demo says so and continues with a random backbone
    assert main(["demo", "--profile", "ci", "--offline", "--out", str(out)]) == 0
    return out


def test_demo_writes_pictures_and_checkpoints(demo_dir, capsys):
    for name in ("shapes_preview.png", "samples.png", "filmstrip.png", "autoencoder.pt", "ldm.pt"):
        assert (demo_dir / name).is_file(), name
    before = (demo_dir / "ldm.pt").stat().st_mtime_ns
    assert main(["demo", "--profile", "ci", "--offline", "--out", str(demo_dir)]) == 0  # second run reuses the checkpoints
    out = capsys.readouterr().out
    assert "samples:" in out
    assert "autoencoder: step 20/20" in out and "latent diffusion: step 20/20" in out and "cap" not in out
    assert torch.load(demo_dir / "ldm.pt", weights_only=True)["step"] == 20


def test_demo_says_when_a_time_cap_stopped_training(tmp_path, capsys):
    # a zero-minute cap stops both stages before their first step; the demo must say so, not pretend
    assert main(["demo", "--profile", "ci", "--offline", "--out", str(tmp_path), "--ae-minutes", "0",
                 "--ldm-minutes", "0"]) == 0
    out = capsys.readouterr().out
    assert "autoencoder: step 0/20" in out and "stopped by the 0.0-min cap" in out
    assert "latent diffusion: step 0/20" in out


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


def test_evaluate_ldm_command(demo_dir, capsys):
    assert main(["evaluate-ldm", "--checkpoint", str(demo_dir / "ldm.pt"), "-n", "4", "--steps", "2",
                 "--no-fid"]) == 0
    out = capsys.readouterr().out
    assert "one_object" in out and "two_objects" in out and "prompt accuracy" in out
    assert "word influence" in out and "circle/square" in out and "red/blue" in out
