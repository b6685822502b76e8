"""FID on real data with the features this machine has offline (features.py): which extractor is picked and said,
that nothing is downloaded, and FID and its floor against the formula computed independently (numpy)."""

import numpy as np
import pytest
import torch
from torch import nn

from minildm.eval import features as FT
from minildm.eval.features import FEATURE_NAMES, available_features, feature_file, fid_with_floor, offline_features


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache ($TORCH_HOME) and no way to download: every download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(FT, "_built", {})

    def no_download(*args, **kwargs):
        raise AssertionError("features.py tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def independent_fid(a: np.ndarray, b: np.ndarray) -> float:
    """‖μa − μb‖² + Tr Σa + Tr Σb − 2·Σ √λ_i(Σa·Σb), the eigenvalues of the (non-symmetric) product by numpy."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    lam = np.linalg.eigvals(sa @ sb).real.clip(min=0)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.sqrt(lam).sum())


def test_the_fallback_order_follows_the_files_on_disk(hub):
    assert available_features() == ["random"]
    assert feature_file("random") is None and feature_file("alexnet").parent == hub
    expected = ["random"]
    for name in ("alexnet", "vgg16", "inception-v3"):             # each better one arrives in the cache
        feature_file(name).write_bytes(b"stand-in")
        expected.insert(0, name)
        assert available_features() == expected
    assert available_features() == list(FEATURE_NAMES)
    feature_file("vgg16").unlink()
    assert available_features() == ["inception-v3", "alexnet", "random"]


def test_random_features_are_labelled_and_deterministic(hub):
    f = offline_features()
    assert f.name == "random"
    assert "random features" in f.label and "compare only numbers made the same way" in f.label
    state = torch.random.get_rng_state()
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    first = f(x)
    FT._built.clear()                                             # a fresh build gives the same network
    assert torch.equal(offline_features()(x), first) and first.shape == (5, 256)
    assert torch.equal(torch.random.get_rng_state(), state)       # the global RNG is untouched


def test_pretrained_weights_are_loaded_from_the_cache_not_drawn(hub, monkeypatch):
    import torchvision

    class Tiny(nn.Module):                                        # the AlexNet layout in miniature
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())

    monkeypatch.setattr(torchvision.models, "alexnet", lambda weights=None: Tiny())
    saved = Tiny()
    with torch.no_grad():
        saved.features[0].weight.fill_(0.25)
        saved.features[0].bias.fill_(-0.5)
    torch.save(saved.state_dict(), feature_file("alexnet"))
    f = offline_features()
    assert f.name == "alexnet" and "ImageNet AlexNet" in f.label and "random" not in f.label
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    expected = saved.features(FT._prepare(x, f.size, imagenet_norm=True)).mean(dim=(2, 3))
    assert torch.allclose(f(x), expected, atol=1e-5)


def test_missing_or_broken_files_give_clear_errors(hub):
    with pytest.raises(FileNotFoundError, match=r"inception_v3_google.*never downloads"):
        offline_features(prefer="inception-v3")
    with pytest.raises(ValueError, match="unknown features 'resnet'"):
        offline_features(prefer="resnet")
    feature_file("alexnet").write_bytes(b"<html>not a checkpoint</html>")
    with pytest.raises(RuntimeError, match=r"alexnet-owt-7be5be79\.pth.*delete the file"):
        offline_features()
    assert offline_features(prefer="random").name == "random"


def test_images_of_any_size_and_grey_images(hub):
    f = offline_features()
    grey = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2)) * 2 - 1     # MNIST-like
    assert torch.allclose(f(grey), f(grey.repeat(1, 3, 1, 1)), atol=1e-5)   # grey = the same value in R, G, B
    assert f(torch.zeros(3, 3, 40, 56)).shape == (3, 256)
    with pytest.raises(ValueError, match=r"in \[-1, 1\].*127\.5"):
        f(torch.full((2, 3, 8, 8), 200.0))
    with pytest.raises(ValueError, match="1 or 3"):
        f(torch.zeros(2, 4, 8, 8))


def test_fid_and_floor_against_the_formula(hub):
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, 24, 24, generator=g) * 1.2 - 0.6
    real = (base + 0.3 * torch.randn(40, 3, 24, 24, generator=g)).clamp(-1, 1)   # one scene, noisy copies
    feats = offline_features()
    n = 20
    same = fid_with_floor(real[n:], real, feats)                  # the reference set itself
    assert same["fid"] < 1e-6 and same["n"] == n and same["features"] == "random"
    assert same["features_label"] == feats.label

    shifted = (real[:n] + 0.5).clamp(-1, 1)                       # brighter images: a different distribution
    r = fid_with_floor(shifted, real, "random")
    fa, fr, fs = (feats(x).double().numpy() for x in (real[:n], real[n:], shifted))
    assert r["fid"] == pytest.approx(independent_fid(fs, fr), rel=1e-3)
    assert r["fid_floor"] == pytest.approx(independent_fid(fa, fr), rel=1e-3)
    assert r["fid"] > 2 * r["fid_floor"] > 0


def test_fid_on_a_dataset_draws_a_seeded_subset_and_halves_n_when_short(hub):
    class Sorted:                                                 # 10 dark then 10 bright images, like class folders
        images = torch.cat([torch.full((10, 3, 8, 8), -0.8), torch.full((10, 3, 8, 8), 0.8)])

        def __len__(self):
            return len(self.images)

        def batch(self, idx):
            return {"image": self.images[torch.as_tensor(idx)]}

    fake = Sorted.images[torch.arange(0, 20, 2)]                  # 5 dark, 5 bright
    r = fid_with_floor(fake, Sorted(), seed=0)
    assert r["n"] == 10
    again = fid_with_floor(fake, Sorted(), seed=0)
    assert again == r                                             # seeded: the same subset every time
    # taking the first 2n in order would compare all-dark with all-bright: a huge "floor"
    dark_vs_bright = fid_with_floor(Sorted.images[:10], Sorted.images[10:].repeat(2, 1, 1, 1))
    assert r["fid_floor"] < dark_vs_bright["fid"]
    short = fid_with_floor(torch.zeros(30, 3, 8, 8), Sorted())    # 30 generated, 20 real: n = 10
    assert short["n"] == 10
    with pytest.raises(ValueError, match="at least 2 generated and 4 real"):
        fid_with_floor(torch.zeros(5, 3, 8, 8), Sorted.images[:3])
    with pytest.raises(ValueError, match="dataset with .batch"):
        fid_with_floor(torch.zeros(5, 3, 8, 8), [1, 2, 3, 4])
