"""Test-wide settings: the tiny `ci` profile, the CPU, a non-interactive matplotlib backend, no network.

MINILDM_TEST_DEVICE=cuda runs the suite on a GPU (the code paths that pick the device from $MINILDM_DEVICE,
bf16 autocast included); tests that name the CPU explicitly stay on it."""

import os

os.environ.setdefault("MINILDM_PROFILE", "ci")
os.environ.setdefault("MINILDM_DEVICE", os.environ.get("MINILDM_TEST_DEVICE", "cpu"))
os.environ.setdefault("MPLBACKEND", "Agg")

import socket  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from minildm.autoencoder import build_autoencoder  # noqa: E402
from minildm.data.datasets import ShapesDataset  # noqa: E402
from minildm.ldm import LatentDiffusion  # noqa: E402
from minildm.train.profiles import get_profile  # noqa: E402
from minildm.train.stages import AE_CHECKPOINT  # noqa: E402
from minildm.utils import save_checkpoint  # noqa: E402

# One intra-op thread: the test models are tiny, and two OpenMP threads fighting over two (possibly
# shared) cores made the suite 5-10x slower here. Results do not depend on the thread count.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to open a network connection in a test fails loudly."""

    def guard(*args, **kwargs):
        raise RuntimeError("tests must not use the network")

    monkeypatch.setattr(socket, "create_connection", guard)
    monkeypatch.setattr(socket.socket, "connect", guard)


@pytest.fixture(scope="module")
def ae_path(tmp_path_factory):
    """A (random) ci autoencoder checkpoint for the second stage to train on."""
    torch.manual_seed(0)
    ae = build_autoencoder(get_profile("ci").ae)
    path = tmp_path_factory.mktemp("ae") / AE_CHECKPOINT
    save_checkpoint({"kind": "autoencoder", "config": ae.config, "state_dict": ae.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def ae():
    """An untrained ci autoencoder (seed 0), in eval mode."""
    torch.manual_seed(0)
    return build_autoencoder(get_profile("ci").ae).eval()


@pytest.fixture(scope="module")
def batch():
    """Eight training scenes of the ci Shapes world (a test file may define its own `batch`)."""
    return ShapesDataset("train", get_profile("ci").data).batch(range(8))


def _untrained_ldm(cond: str) -> LatentDiffusion:
    """An untrained ci-profile model for `cond`, with a measured scale factor, in eval mode (seed 0: two models
    built by it share their weights)."""
    ci = get_profile("ci")
    torch.manual_seed(0)
    ds = ShapesDataset("train", ci.data)
    ldm = LatentDiffusion(build_autoencoder(ci.ae), ci.ldm.__class__(**{**ci.ldm.__dict__, "cond": cond}),
                          tokenizer=ds.tokenizer, num_classes=ds.num_classes, max_objects=ds.max_objects)
    ldm.set_scale_factor(ds.batch(range(8))["image"])
    return ldm.eval()


@pytest.fixture(scope="session")
def untrained_ldm():
    """The factory `untrained_ldm(cond)` for tests that judge or probe a model's plumbing, not its quality."""
    return _untrained_ldm


@pytest.fixture(scope="module")
def text_ldm():
    return _untrained_ldm("text")
