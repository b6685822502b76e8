"""What training shows while it runs (train/stages.py, notebook 05): SampleSnapshots, the same prompts and seed
sampled at chosen steps and kept across a resume, and loss_trend, the claim "the loss falls"."""

import pytest
import torch

from minildm.autoencoder import build_autoencoder
from minildm.ldm import LatentDiffusion
from minildm.train.profiles import get_profile
from minildm.train.stages import AE_CHECKPOINT, LDM_CHECKPOINT, SampleSnapshots, loss_trend, train_ldm
from minildm.utils import save_checkpoint

CI = get_profile("ci")
PROMPTS = ["a large red circle in the top left", "a small blue square in the center"]


@pytest.fixture(scope="module")
def ae_path(tmp_path_factory):
    torch.manual_seed(0)
    ae = build_autoencoder(CI.ae).eval()
    path = tmp_path_factory.mktemp("ae") / AE_CHECKPOINT
    save_checkpoint({"kind": "autoencoder", "config": ae.config, "state_dict": ae.state_dict()}, path)
    return path


@pytest.mark.slow
def test_snapshots_are_taken_with_the_ema_weights_at_the_chosen_steps_and_survive_a_resume(tmp_path, ae_path):
    profile = CI.replace(ldm_train=dict(steps=4, checkpoint_every=2, batch_size=4, cache_size=16))
    file = tmp_path / "snapshots.pt"
    seen = []

    class Spy(SampleSnapshots):
        def take(self, step, model):
            seen.append((step, model.unet.training))
            return super().take(step, model)

    snaps = Spy(PROMPTS, [1, 2, 4], file, seed=3, steps=3)
    train_ldm(profile, ae_path, tmp_path, device="cpu", steps=2, progress=False, callback=snaps)
    assert seen == [(1, False), (2, False)]               # sampled in eval mode, at the chosen steps only
    resumed = Spy(PROMPTS, [1, 2, 4], file, seed=3, steps=3)
    assert sorted(resumed.images) == [1, 2]               # read back from the file
    assert all(torch.equal(resumed.images[k], snaps.images[k]) for k in (1, 2))
    train_ldm(profile, ae_path, tmp_path, device="cpu", progress=False, callback=resumed)
    assert [s for s, _ in seen] == [1, 2, 4]              # steps 1 and 2 are not sampled again
    # the snapshot of the last step is the EMA model of the checkpoint, sampled from the same seed
    final = LatentDiffusion.from_checkpoint(tmp_path / LDM_CHECKPOINT, "cpu")
    again = SampleSnapshots(PROMPTS, [4], None, seed=3, steps=3).take(4, final)
    torch.testing.assert_close(again, resumed.images[4], atol=1e-5, rtol=0)
    assert resumed.images[4].shape == (2, 3, 32, 32)
    # other prompts or another seed: the file's snapshots are not theirs
    assert SampleSnapshots(PROMPTS[:1], [1], file, seed=3, steps=3).images == {}
    assert SampleSnapshots(PROMPTS, [1], file, seed=4, steps=3).images == {}
    assert SampleSnapshots(PROMPTS, [1], file, seed=3, steps=5).images == {}


def test_loss_trend_compares_the_first_and_the_last_tenth():
    history = [{"step": i + 1, "loss": float(v)} for i, v in enumerate(range(100, 0, -1))]
    first, last = loss_trend(history)
    assert first == pytest.approx(sum(range(91, 101)) / 10) and last == pytest.approx(sum(range(1, 11)) / 10)
    assert loss_trend(history[:3], fraction=0.1) == (100.0, 98.0)      # at least one record each
    assert loss_trend([{"loss": 2.0}, {"step": 2}, {"loss": 4.0}], fraction=0.5) == (2.0, 4.0)
    with pytest.raises(ValueError, match="records"):
        loss_trend([{"step": 1}])
    with pytest.raises(ValueError, match="fraction"):
        loss_trend(history, fraction=0)
