"""LPIPS (Zhang et al. 2018), the perceptual distance in the first stage's reconstruction loss, and where its
backbone weights come from.

LPIPS(x, y) compares unit-normalized features of a pretrained ImageNet trunk (VGG16 in the paper; AlexNet or
SqueezeNet are much cheaper on a CPU) through learned 1×1 heads. The heads ship with the `lpips` package; the
trunk's weights are torchvision's files in $TORCH_HOME/hub/checkpoints:

    on disk                      used as they are
    missing, download allowed    downloaded once (the network call has a timeout, so no network fails fast)
    missing, no download         LPIPSWeightsMissingError, which says where to put the file
    random backbone requested    a fixed random trunk (seed 0): offline and reproducible, but then LPIPS is
                                 NOT a perceptual metric, and a notice says so ($MINILDM_LPIPS_RANDOM_BACKBONE=1)
"""

from __future__ import annotations

import copy
import os
import socket
import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = ["LPIPS", "LPIPSWeightsMissingError", "backbone_path", "lpips_weights_missing", "random_backbone_requested",
           "RANDOM_BACKBONE_ENV", "BACKBONE_FILES"]

RANDOM_BACKBONE_ENV = "MINILDM_LPIPS_RANDOM_BACKBONE"

# torchvision's ImageNet weights for each LPIPS trunk: file name in $TORCH_HOME/hub/checkpoints and its URL
BACKBONE_FILES = {
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "squeeze": ("squeezenet1_1-b8a52dc0.pth", "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"),
}
# their sizes in MB (MiB) as torchvision lists them (Weights.meta["_file_size"]), said before a download starts
_BACKBONE_MB = {"vgg": 527.8, "alex": 233.1, "squeeze": 4.7}
DOWNLOAD_TIMEOUT_S = 30.0
_random_notice_shown: set[str] = set()
_built: dict[tuple, nn.Module] = {}   # (net, backbone file or None, its mtime) -> the lpips model, built once


class LPIPSWeightsMissingError(FileNotFoundError):
    """The pretrained backbone for LPIPS is not on disk and could not be downloaded."""


def backbone_path(net: str) -> Path:
    """Where torchvision keeps (and minildm looks for) the LPIPS backbone: $TORCH_HOME/hub/checkpoints/<file>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net][0]


def random_backbone_requested() -> bool:
    """True when $MINILDM_LPIPS_RANDOM_BACKBONE opts into a random LPIPS backbone."""
    return os.environ.get(RANDOM_BACKBONE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _download_backbone(net: str, path: Path) -> None:
    """torch.hub download with a socket timeout so an unreachable network fails instead of hanging."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(BACKBONE_FILES[net][1], str(path), progress=False)
    finally:
        socket.setdefaulttimeout(old)


def _backbone_file(net: str, download: bool) -> Path:
    """Path of the trunk's weight file: on disk, else downloaded now, else LPIPSWeightsMissingError."""
    path = backbone_path(net)
    reason = "download=False"
    if not path.is_file() and download:
        mb = _BACKBONE_MB[net]
        print(f"downloading the LPIPS {net} backbone {path.name} (about {mb:.{0 if mb >= 10 else 1}f} MB, "
              f"torchvision's ImageNet weights, once) from {BACKBONE_FILES[net][1]} to {path.parent}", flush=True)
        try:
            _download_backbone(net, path)
        except Exception as e:  # URLError, timeouts, HTTP errors, read-only folders ...
            reason = f"the download failed: {type(e).__name__}: {e}"
    if not path.is_file():
        raise LPIPSWeightsMissingError(f"LPIPS needs the pretrained {net} backbone {path.name} in {path.parent} "
                                       f"({reason}).\n  Fix: download {BACKBONE_FILES[net][1]} there, or opt into a "
                                       f"RANDOM one (random_backbone=True, --random-lpips, {RANDOM_BACKBONE_ENV}=1).")
    return path


def lpips_weights_missing(net: str, download: bool = True) -> str | None:
    """None when LPIPS can use the pretrained `net` backbone (on disk, or downloaded now when `download`);
    otherwise one line saying why not (the file is missing, or a random backbone was requested)."""
    if random_backbone_requested():
        return f"a random LPIPS backbone was requested (${RANDOM_BACKBONE_ENV})"
    try:
        _backbone_file(net, download)
    except LPIPSWeightsMissingError as e:
        return str(e).splitlines()[0]
    return None


class LPIPS(nn.Module):
    """LPIPS(x, y) per image (B,): unit-normalized trunk features, squared difference, learned 1×1 heads,
    spatial mean, summed over layers. Frozen, always fp32 and eval; gradients flow to the inputs. The trunk's
    weights: see the module docstring (`download`, `random_backbone`)."""

    def __init__(self, net: str = "vgg", download: bool = True, random_backbone: bool | None = None):
        super().__init__()
        import lpips  # imported here: the package prints and imports torchvision models on use

        random_backbone = bool(random_backbone_requested() if random_backbone is None else random_backbone)
        file = None if random_backbone else _backbone_file(net, download)   # missing and no download: an error
        key = (net, str(file), file.stat().st_mtime_ns if file else None)
        if key not in _built:                                     # built once per file, then copied (fast)
            state = None if file is None else torch.load(file, map_location="cpu", weights_only=True)
            # pnet_rand=True builds the trunk without asking torchvision for weights (no download); the random
            # init runs on a forked RNG with a fixed seed, so the global RNG is untouched and the trunk is the
            # same in every process.
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)      # torchvision's `pretrained=` deprecation
                torch.manual_seed(0)
                model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
            if state is not None:
                _load_trunk(model, state)
            _built[key] = model
        self.model = copy.deepcopy(_built[key])
        if random_backbone and net not in _random_notice_shown:
            _random_notice_shown.add(net)
            print(f"NOTICE: LPIPS uses a RANDOM {net} backbone (opted in); the perceptual loss still shapes "
                  f"training but its values are NOT a meaningful perceptual metric.")
        self.net, self.random_backbone = net, bool(random_backbone)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> "LPIPS":
        super().train(mode)
        self.model.eval()                                         # frozen metric: never dropout / train mode
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image distance (B,) between (B, 3, H, W) images in [-1, 1] (AlexNet needs H, W ≥ 31, VGG ≥ 16),
        computed in fp32 even under autocast."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            d = self.model(x.float(), y.float())                  # (B, 1, 1, 1)
        return d.flatten()


def _load_trunk(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """torchvision keys `features.<i>.<...>` -> lpips trunk keys `slice<k>.<i>.<...>` of model.net."""
    trunk = model.net
    mapped = {}
    for key in trunk.state_dict():
        _, rest = key.split(".", 1)                               # "slice2.5.weight" -> "5.weight"
        mapped[key] = state[f"features.{rest}"]
    trunk.load_state_dict(mapped)
