"""FID on real images without a network connection: the best feature extractor this machine already has, named.

Which network makes the features decides what an FID means. On Shapes the course uses the Shapes judge
(accuracy.py); on other data (MNIST, a folder of pictures) this module takes, never downloading, the first of
FEATURE_NAMES whose weights are on disk: torchvision's Inception-v3 (not the TensorFlow weights of published
FIDs), the LPIPS trunks VGG16 and AlexNet, or a fixed-seed random trunk (_LABELS says what each measures).

    feats = offline_features()            # Features(name="alexnet", label="alexnet: torchvision's ImageNet ...")
    r = fid_with_floor(samples, dataset)  # {"fid", "fid_floor", "fid_spread", "n", "features", "features_label"}

Every FID comes with its floor: the FID between two disjoint sets of n real images with the same features,
what a perfect model would score at that n (finite-sample noise alone). Images of any size and 1 or 3 channels
in [-1, 1] are resized (and grey is repeated to RGB) as the network needs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..perceptual import BACKBONE_FILES, backbone_path
from .metrics import bootstrap_std, extract_features, fid_from_features

__all__ = ["Features", "offline_features", "available_features", "feature_file", "fid_with_floor",
           "FEATURE_NAMES", "INCEPTION_FILE"]

FEATURE_NAMES = ("inception-v3", "vgg16", "alexnet", "random")        # best first
INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"                  # torchvision's Inception_V3 IMAGENET1K_V1
_INPUT_SIZE = {"inception-v3": 299, "vgg16": 128, "alexnet": 224, "random": 64}
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_LABELS = {
    "inception-v3": "inception-v3: torchvision's ImageNet Inception-v3, 2048 pool features (not the TensorFlow "
                    "weights of published FIDs: compare with numbers of this setup only)",
    "vgg16": "vgg16: torchvision's ImageNet VGG16 (the LPIPS trunk), its last convolution's 512 features averaged "
             "over positions (not Inception: compare only with FIDs on these features)",
    "alexnet": "alexnet: torchvision's ImageNet AlexNet (the LPIPS trunk), its last convolution's 256 features "
               "averaged over positions (not Inception: compare only with FIDs on these features)",
    "random": "random features: a fixed-seed random AlexNet trunk (no pretrained weights on this machine); "
              "compare only numbers made the same way",
}
_built: dict[tuple, nn.Module] = {}


def feature_file(name: str) -> Path | None:
    """Where torchvision keeps the weights of extractor `name` ($TORCH_HOME/hub/checkpoints/...); None for random."""
    if name == "random":
        return None
    if name == "inception-v3":
        return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    return backbone_path({"vgg16": "vgg", "alexnet": "alex"}[name])


def available_features() -> list[str]:
    """The extractors whose weights are on disk now, best first; "random" is always last (nothing is downloaded)."""
    return [n for n in FEATURE_NAMES if n == "random" or feature_file(n).is_file()]


@dataclass
class Features:
    """A frozen feature extractor: images (B, 1 or 3, H, W) in [-1, 1] -> features (B, D) on the CPU."""

    name: str
    label: str
    net: nn.Module = field(repr=False)
    size: int = 224
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = _prepare(images, self.size, imagenet_norm=self.name != "inception-v3").to(self.device)
        if self.name == "inception-v3":
            return self.net(x).float().cpu()                                # (B, 2048) pool features
        return self.net(x).mean(dim=(2, 3)).float().cpu()                   # (B, C, h, w) -> (B, C)


def _prepare(images: torch.Tensor, size: int, imagenet_norm: bool) -> torch.Tensor:
    """(B, 1|3, H, W) in [-1, 1] -> (B, 3, size, size) as the network expects (ImageNet-normalized, or [-1, 1]
    for Inception-v3's Google weights)."""
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"expected images (B, 1 or 3, H, W) in [-1, 1], got {shape}")
    x = images.float()
    if x.numel() and (float(x.min()) < -1.5 or float(x.max()) > 1.5):
        raise ValueError(f"expected images in [-1, 1], got values from {float(x.min()):.3g} to {float(x.max()):.3g}; "
                         "map pixels p in 0..255 with p / 127.5 - 1 (datasets.to_model_range)")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)                                         # grey -> RGB
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=x.shape[-1] > size, align_corners=False)
    if not imagenet_norm:
        return x
    mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
    return ((x + 1) / 2 - mean) / std


def _build(name: str, file: Path | None) -> nn.Module:
    """The network of `name`, with the weights of `file` (None: the fixed-seed random trunk); never downloads."""
    import torchvision  # imported here: only FID on real data needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if name == "inception-v3":
            net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False,
                                                  transform_input=False)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)                                        # the random trunk: same everywhere
                net = (torchvision.models.vgg16 if name == "vgg16" else torchvision.models.alexnet)(weights=None)
                for m in net.features.modules():                            # He init keeps the activations'
                    if isinstance(m, nn.Conv2d):                            # scale through the ReLUs, so the
                        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")   # numbers are not all ~0
                        nn.init.zeros_(m.bias)
    if file is not None:
        try:
            net.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
        except Exception as e:  # a truncated download, an HTML page saved under the file's name, ...
            why = (str(e).strip().splitlines() or [""])[0][:120]
            raise RuntimeError(f"cannot load the {name} weights {file} ({type(e).__name__}: {why}); delete the file "
                               f"(it is probably an interrupted download) and download it again, or pass "
                               f"prefer='random'") from e
    if name == "inception-v3":
        net.fc = nn.Identity()                                              # -> the 2048 pool features
        return net.eval()
    return net.features.eval()                                              # the convolutional trunk


def offline_features(prefer: str | None = None, device: torch.device | str | None = None) -> Features:
    """The best extractor whose weights are on disk (FEATURE_NAMES' order), or `prefer` (an error when its file is
    missing). Nothing is downloaded. Built once per weight file and device."""
    if prefer is not None and prefer not in FEATURE_NAMES:
        raise ValueError(f"unknown features {prefer!r}; expected one of {', '.join(FEATURE_NAMES)}")
    name = prefer or available_features()[0]
    file = feature_file(name)
    if file is not None and not file.is_file():
        url = ("https://download.pytorch.org/models/" + INCEPTION_FILE if name == "inception-v3" else
               BACKBONE_FILES["vgg" if name == "vgg16" else "alex"][1])
        raise FileNotFoundError(f"the {name} weights {file.name} are not in {file.parent} (this module never "
                                f"downloads): put {url} there, or leave prefer=None to use the best available "
                                f"({available_features()[0]})")
    device = torch.device(device or "cpu")
    key = (name, str(file), file.stat().st_mtime_ns if file else None, str(device))
    if key not in _built:
        _built[key] = _build(name, file).to(device)
        for p in _built[key].parameters():
            p.requires_grad_(False)
    return Features(name, _LABELS[name], _built[key], _INPUT_SIZE[name], device)


def _real_images(real: Any, count: int, seed: int) -> torch.Tensor:
    """`count` images of a dataset (a seeded random subset: folders are sorted by class) or of a tensor."""
    if torch.is_tensor(real):
        return real[:count]
    if not hasattr(real, "batch") or not hasattr(real, "__len__"):
        raise ValueError(f"real must be an image tensor (N, C, H, W) or a dataset with .batch(indices), "
                         f"got {type(real).__name__}")
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    return torch.cat([real.batch(order[i:i + 256])["image"].cpu() for i in range(0, len(order), 256)])


def fid_with_floor(fake: torch.Tensor, real: Any, features: Features | str | None = None,
                   seed: int = 0) -> dict[str, Any]:
    """FID of generated images `fake` (n, C, H, W) against n real images, and the real-vs-real floor at the same
    n with the same features: FID(real A, real B) for two disjoint sets A, B of n real images (B is the reference
    of both). `real` is a dataset (n = len(fake) images drawn from it at random, seeded) or an image tensor
    (its first 2n); with fewer than 2n real images both are measured at n = half of them. `features` is a
    Features, a name of FEATURE_NAMES, or None (the best available offline, run on the device of `fake`).
    "fid_spread" is the standard deviation of the FID over 50 bootstrap resamples of the generated images, the
    sampling noise of this n (a difference of two FIDs smaller than it is noise).
    -> {"fid", "fid_floor", "fid_spread", "n", "features" (name), "features_label" (what they are, in words)}."""
    feats = features if isinstance(features, Features) else offline_features(features, device=fake.device)
    available = int(real.shape[0]) if torch.is_tensor(real) else len(real)
    n = min(len(fake), available // 2)
    if n < 2:
        raise ValueError(f"FID with a floor needs at least 2 generated and 4 real images, got {len(fake)} generated "
                         f"and {available} real; sample more images or use a larger dataset")
    images = _real_images(real, 2 * n, seed)
    a, reference = extract_features(images[:n], feats, 100), extract_features(images[n:], feats, 100)
    generated = extract_features(fake[:n].cpu(), feats, 100)
    spread = bootstrap_std(lambda idx: fid_from_features(reference, generated[idx]), n, 50, seed)
    return {"fid": fid_from_features(reference, generated), "fid_floor": fid_from_features(reference, a),
            "fid_spread": spread, "n": n, "features": feats.name, "features_label": feats.label}
