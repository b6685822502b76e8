"""Several training processes (distributed.py): torchrun + DDP on CPU with gloo, two processes, the `ci` profile.

The promise: the profile's batch is the global batch, each process computes its share, DDP averages the
gradients, so two processes follow the one-process run (up to the order of floating-point sums), and a killed
run resumes, with any number of processes."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from minildm.autoencoder import build_autoencoder
from minildm.data.datasets import ShapesDataset
from minildm.data.datasets import ImageFolderDataset
from minildm.ldm import LatentDiffusion
from minildm.train.distributed import Dist
from minildm.train.profiles import get_profile
from minildm.train.stages import AE_CHECKPOINT, LDM_CHECKPOINT
from minildm.utils import load_checkpoint

pytestmark = pytest.mark.slow      # trains, runs notebooks or several processes

CI = get_profile("ci")


def minildm_command(args, processes):
    """`minildm …` with one process, `torchrun --nproc-per-node N -m minildm …` with more."""
    launch = ([sys.executable, "-m", "minildm"] if processes == 1 else
              [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "minildm"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINILDM_LPIPS_RANDOM_BACKBONE": "1"}
    return launch + list(args), env


def run_minildm(args, processes, timeout=240):
    cmd, env = minildm_command(args, processes)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def losses(path):
    return [h["loss"] for h in load_checkpoint(path)["history"]]


# --- The pieces, checked in one process against the math --------------------------------------------------------


def test_rows_split_the_global_batch_evenly_or_say_how_to_fix_it():
    assert Dist().rows(64) is None
    assert [Dist(r, 4).rows(64) for r in range(4)] == [slice(0, 16), slice(16, 32), slice(32, 48), slice(48, 64)]
    with pytest.raises(ValueError, match="64 cannot be split evenly over 3 processes.*multiple of 3"):
        Dist(0, 3).rows(64)


@pytest.mark.parametrize("source", ["shapes", "folder"])
def test_each_process_renders_exactly_its_rows_of_batch_k(source, tmp_path):
    if source == "shapes":
        ds = ShapesDataset("train", resolution=16, size=200)
    else:
        from PIL import Image
        for i in range(10):
            Image.new("RGB", (8, 8), (25 * i, 0, 0)).save(tmp_path / f"{i}.png")
        ds = ImageFolderDataset(tmp_path, resolution=8)
    full = ds.random_batches(8, seed=3, start=5)
    halves = [ds.random_batches(8, seed=3, start=5, rows=Dist(r, 2).rows(8)) for r in range(2)]
    for _ in range(3):                        # batches 5, 6, 7: the two shares put together are the batch
        whole = next(full)["image"]
        assert torch.equal(torch.cat([next(h)["image"] for h in halves]), whole)


def test_the_mean_of_two_halves_is_the_loss_and_gradient_of_the_whole_batch():
    """What DDP relies on: each process's loss over its rows (drawing dropout, t and ε for the whole batch first)
    averages to the one-process loss, and so do the gradients."""
    torch.manual_seed(0)
    ds = ShapesDataset("train", config=CI.data)
    ldm = LatentDiffusion(build_autoencoder(CI.ae), CI.ldm, tokenizer=ds.tokenizer)
    b = ds.batch(range(8))
    z0, raw = torch.randn(8, 4, 8, 8), ldm.raw_condition(b)

    def loss_and_grad(rows):
        ldm.zero_grad(set_to_none=True)
        loss = ldm.training_step(z0, raw, generator=torch.Generator().manual_seed(7), rows=rows)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in ldm.unet.parameters()]

    whole, g_whole = loss_and_grad(None)
    parts = [loss_and_grad(Dist(r, 2).rows(8)) for r in range(2)]
    assert torch.allclose((parts[0][0] + parts[1][0]) / 2, whole, rtol=1e-5)
    for g, a, b_ in zip(g_whole, parts[0][1], parts[1][1]):
        assert torch.allclose((a + b_) / 2, g, rtol=1e-4, atol=1e-7)


# --- Two processes through torchrun -------------------------------------------------------------------------------


def test_two_processes_follow_the_one_process_ldm_run(ae_path, tmp_path):
    args = ["train-ldm", "--profile", "ci", "--autoencoder", str(ae_path), "--steps", "20"]
    out1 = run_minildm(args + ["--out", str(tmp_path / "one")], 1)
    out2 = run_minildm(args + ["--out", str(tmp_path / "two")], 2)
    assert "trained 20 steps" in out1
    assert "2 processes × 4 images = the profile's batch of 8" in out2 and out2.count("trained 20 steps") == 1
    one, two = losses(tmp_path / "one" / LDM_CHECKPOINT), losses(tmp_path / "two" / LDM_CHECKPOINT)
    assert len(one) == len(two) == 20
    assert one[0] == pytest.approx(two[0], rel=1e-6)              # the same batch, noise and t: the same loss
    assert max(abs(a - b) / a for a, b in zip(one, two)) < 1e-4   # 20 steps later: only summation order differs
    w1, w2 = (load_checkpoint(tmp_path / d / LDM_CHECKPOINT)["state_dict"] for d in ("one", "two"))
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-4


def test_two_processes_follow_the_one_process_autoencoder_run(tmp_path):
    """A VQ autoencoder before its GAN starts has no per-process randomness: the curves agree. (A KL model
    samples its posterior per process, and the discriminator's batch norm sees each process's half: those
    runs agree only in distribution, not step by step.)"""
    args = ["train-ae", "--profile", "ci", "--kind", "vq", "--steps", "8"]
    run_minildm(args + ["--out", str(tmp_path / "one")], 1)
    run_minildm(args + ["--out", str(tmp_path / "two")], 2)
    one, two = losses(tmp_path / "one" / AE_CHECKPOINT), losses(tmp_path / "two" / AE_CHECKPOINT)
    assert len(one) == len(two) == 8 and one[0] == pytest.approx(two[0], rel=1e-6)
    assert max(abs(a - b) / a for a, b in zip(one, two)) < 1e-3


def test_a_killed_two_process_run_resumes_with_one_process(ae_path, tmp_path):
    steps, args = 400, ["train-ldm", "--profile", "ci", "--autoencoder", str(ae_path)]
    cmd, env = minildm_command(args + ["--steps", str(steps), "--out", str(tmp_path / "killed")], 2)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt, deadline = tmp_path / "killed" / LDM_CHECKPOINT, time.time() + 180
    while not ckpt.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)             # as a scheduler stops a job: torchrun passes it to both workers,
    proc.wait(timeout=60)                        # which die mid-step (minildm does not catch it)
    killed_at = load_checkpoint(ckpt)["step"]
    time.sleep(1.0)
    assert load_checkpoint(ckpt)["step"] == killed_at, "a worker outlived torchrun"
    assert 0 < killed_at < steps, "the run finished before it could be killed; make it longer"
    run_minildm(args + ["--steps", str(killed_at + 20), "--out", str(tmp_path / "killed")], 1)
    run_minildm(args + ["--steps", str(killed_at + 20), "--out", str(tmp_path / "straight")], 1)
    resumed, straight = losses(ckpt), losses(tmp_path / "straight" / LDM_CHECKPOINT)
    assert [h["step"] for h in load_checkpoint(ckpt)["history"]] == list(range(1, killed_at + 21))
    assert max(abs(a - b) / a for a, b in zip(resumed, straight)) < 1e-4

