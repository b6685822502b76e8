"""The first stage's training objective (LDM Sec. 3.1, App. G; Esser et al. 2021 "taming transformers").

    L_AE = L_rec(x, x̃) + L_reg + λ·L_GAN
    L_rec = |x − x̃| + w_p·LPIPS(x, x̃)                  pixel L1 plus a perceptual distance
    L_reg = kl_weight·KL(q(z|x) ‖ N(0, I))   (KL-reg)   or   codebook_weight·L_vq   (VQ-reg)
    L_GAN = −mean D(x̃)                                  generator side of a patch-based GAN
    λ     = disc_weight·‖∇_W L_rec‖ / (‖∇_W L_GAN‖ + 1e-4),   W = the decoder's last conv weight

The discriminator D (a PatchGAN) is trained in alternation with a hinge (or vanilla) loss. Both GAN terms are
switched on only from step `disc_start`: reconstructions first, realism after.

Normalization (as in the reference): for KL-reg, L_rec is summed over C, H, W and averaged over the batch,
so that the KL (also summed over the latent's C, H, W) with weight 1e-6 is on the per-image scale the paper
uses; for VQ-reg, L_rec is a per-element mean like L_vq, so codebook_weight = 1 balances the two. The
adaptive weight λ makes the GAN term independent of that choice.
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoder import AEConfig

__all__ = ["LPIPS", "LPIPSWeightsMissingError", "backbone_path", "load_backbone_state", "lpips_weights_missing",
           "random_backbone_requested", "NLayerDiscriminator", "hinge_d_loss", "vanilla_d_loss", "generator_loss",
           "adaptive_weight", "AutoencoderLoss", "RANDOM_BACKBONE_ENV", "BACKBONE_FILES"]

# --- LPIPS (Zhang et al. 2018) through the `lpips` package, with the backbone weights handled offline-safely ---

RANDOM_BACKBONE_ENV = "MINILDM_LPIPS_RANDOM_BACKBONE"

# torchvision's ImageNet weights for each LPIPS trunk: file name in $TORCH_HOME/hub/checkpoints and its URL
BACKBONE_FILES = {
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "squeeze": ("squeezenet1_1-b8a52dc0.pth", "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"),
}
DOWNLOAD_TIMEOUT_S = 30.0
_random_notice_shown: set[str] = set()
_built: dict[tuple, nn.Module] = {}   # (net, backbone file or None, its mtime) -> the lpips model, built once


class LPIPSWeightsMissingError(FileNotFoundError):
    """The pretrained backbone for LPIPS is not on disk and could not be downloaded."""


def backbone_path(net: str) -> Path:
    """Where torchvision keeps (and minildm looks for) the LPIPS backbone: $TORCH_HOME/hub/checkpoints/<file>."""
    if net not in BACKBONE_FILES:
        raise ValueError(f"unknown LPIPS network {net!r}; expected one of {sorted(BACKBONE_FILES)}")
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
        try:
            _download_backbone(net, path)
        except Exception as e:  # URLError, timeouts, HTTP errors, read-only folders ...
            reason = f"the download failed: {type(e).__name__}: {e}"
    if not path.is_file():
        name, url = BACKBONE_FILES[net]
        raise LPIPSWeightsMissingError(
            f"LPIPS needs the pretrained {net} backbone file {name}, which is not in {path.parent} ({reason}).\n"
            f"  Fix: download {url} and put it in {path.parent} (that is $TORCH_HOME/hub/checkpoints), or\n"
            f"  opt into a RANDOM backbone with random_backbone=True (CLI: --random-lpips, or set "
            f"{RANDOM_BACKBONE_ENV}=1); the perceptual loss still trains but is not a meaningful metric then."
        )
    return path


def load_backbone_state(net: str, download: bool = True) -> dict[str, torch.Tensor]:
    """The torchvision ImageNet state dict of the LPIPS trunk; from disk, else downloaded, else a clear error."""
    return torch.load(_backbone_file(net, download), map_location="cpu", weights_only=True)


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
    spatial mean, summed over layers. Frozen, always fp32 and eval; gradients flow to the inputs.

    The learned heads ship with the `lpips` package. The trunk (VGG16 as in the paper, AlexNet or SqueezeNet,
    much cheaper on CPU) uses torchvision's ImageNet weights, loaded here from $TORCH_HOME/hub/checkpoints;
    missing weights are downloaded if `download`, else an error explains the fix. With
    `random_backbone=True` (or $MINILDM_LPIPS_RANDOM_BACKBONE=1) a fixed random trunk (seed 0) is used instead.
    """

    def __init__(self, net: str = "vgg", download: bool = True, random_backbone: bool | None = None):
        super().__init__()
        import lpips  # imported here: the package prints and imports torchvision models on use

        if net not in BACKBONE_FILES:
            raise ValueError(f"unknown LPIPS network {net!r}; expected one of {sorted(BACKBONE_FILES)}")
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
        """Per-image distance (B,) between images in [-1, 1], computed in fp32 even under autocast."""
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects two (B, 3, H, W) images in [-1, 1], got {tuple(x.shape)} and {tuple(y.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            try:
                d = self.model(x.float(), y.float())              # (B, 1, 1, 1)
            except RuntimeError as e:
                if "too small" not in str(e):
                    raise
                raise ValueError(f"images of size {tuple(x.shape[-2:])} are too small for the {self.net} LPIPS "
                                 f"trunk (AlexNet needs at least 31×31, VGG 16×16); upsample them or use "
                                 f"lpips_net='vgg'") from e
        return d.flatten()


def _load_trunk(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """torchvision keys `features.<i>.<...>` -> lpips trunk keys `slice<k>.<i>.<...>` of model.net."""
    trunk = model.net
    mapped = {}
    for key in trunk.state_dict():
        _, rest = key.split(".", 1)                               # "slice2.5.weight" -> "5.weight"
        mapped[key] = state[f"features.{rest}"]
    trunk.load_state_dict(mapped)


# --- Patch discriminator (pix2pix, Isola et al. 2017) -------------------------------------------------------


class NLayerDiscriminator(nn.Module):
    """PatchGAN: one logit per overlapping patch. Kernel 4, padding 1, LeakyReLU 0.2; strides 2 on the first
    `n_layers` convs, then a stride-1 conv and a stride-1 1-channel output; BatchNorm after all but the first.

    Unlike the reference, BatchNorm keeps no running statistics (it always normalizes with batch statistics,
    which is all the reference ever uses in training), so a forward pass in the generator step cannot change
    any of D's state.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"the discriminator needs n_layers >= 1, got {n_layers}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False),
                       nn.BatchNorm2d(ndf * mult, track_running_stats=False), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        self.apply(_pix2pix_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)                                       # (B, 3, H, W) -> (B, 1, h', w') patch logits


def _pix2pix_init(m: nn.Module) -> None:
    """Conv weights ~ N(0, 0.02); norm weights ~ N(1, 0.02), norm biases 0."""
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """L_D = ½·(mean relu(1 − D(x)) + mean relu(1 + D(x̃)))."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """L_D = ½·(mean softplus(−D(x)) + mean softplus(D(x̃))), the non-saturating GAN's cross-entropy."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """L_GAN = −mean D(x̃)."""
    return -logits_fake.mean()


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    disc_weight: float = 1.0) -> torch.Tensor:
    """λ = disc_weight · ‖∇_W L_rec‖ / (‖∇_W L_GAN‖ + 1e-4), clamped to [0, 1e4] and detached (Esser et al. Eq. 7)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    lam = rec_grad.norm() / (g_grad.norm() + 1e-4)
    return lam.clamp(0.0, 1e4).detach() * disc_weight


# --- The full objective -------------------------------------------------------------------------------------


class AutoencoderLoss(nn.Module):
    """L_AE for the generator step and L_D for the discriminator step, with weights from an AEConfig."""

    def __init__(self, config: AEConfig, lpips_download: bool = True, random_backbone: bool | None = None):
        super().__init__()
        self.config = config
        self.perceptual = (LPIPS(config.lpips_net, lpips_download, random_backbone)
                           if config.perceptual_weight > 0 else None)
        self.discriminator = NLayerDiscriminator(3, config.disc_ndf, config.disc_layers)
        self.d_loss_fn = hinge_d_loss if config.disc_loss == "hinge" else vanilla_d_loss

    def gan_active(self, step: int) -> bool:
        """Both GAN terms are zero, and D is not trained, before `disc_start`."""
        return step >= self.config.disc_start

    def reconstruction_loss(self, x: torch.Tensor, recon: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """|x − x̃| + w_p·LPIPS(x, x̃), reduced per the module docstring (KL: Σ_CHW / B; VQ: mean).

        With config.pixel_loss = "l2" the pixel term is (x − x̃)² instead: the loss whose minimizer is the
        mean of all plausible images, i.e. a blurry one (the course compares the two)."""
        x, recon = x.float(), recon.float()
        l1 = (x - recon).abs()                                    # (B, 3, H, W)
        pixel = l1 if self.config.pixel_loss == "l1" else (x - recon).pow(2)
        if self.perceptual is not None:
            p = self.perceptual(x, recon)                         # (B,)
            rec = pixel + self.config.perceptual_weight * p.view(-1, 1, 1, 1)   # LPIPS broadcast over pixels
        else:
            p, rec = torch.zeros(x.shape[0], device=x.device), pixel
        rec = rec.sum() / x.shape[0] if self.config.kind == "kl" else rec.mean()
        return rec, {"l1": l1.mean().detach(), "lpips": p.mean().detach()}

    def generator_loss(self, x: torch.Tensor, recon: torch.Tensor, reg_loss: torch.Tensor, step: int,
                       last_layer: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_AE = L_rec + w_reg·L_reg + λ·L_GAN for one batch; reg_loss is KL per sample (B,) or L_vq (scalar)."""
        rec, logs = self.reconstruction_loss(x, recon)
        if self.config.kind == "kl":
            reg = self.config.kl_weight * reg_loss.float().mean()  # KL summed over C,H,W, averaged over B
        else:
            reg = self.config.codebook_weight * reg_loss.float().mean()
        loss = rec + reg
        g = lam = torch.zeros((), device=x.device)
        if self.gan_active(step):
            with _frozen(self.discriminator):                     # grads reach x̃, never D's parameters
                g = generator_loss(self.discriminator(recon.float()))
            if last_layer is None or not torch.is_grad_enabled():
                lam = torch.tensor(self.config.disc_weight, device=x.device)   # evaluation: no gradients
            else:
                lam = adaptive_weight(rec, g, last_layer, self.config.disc_weight)
            loss = loss + lam * g
        logs.update(rec=rec.detach(), reg=reg.detach(), g=g.detach(), d_weight=lam.detach())
        return loss, logs

    def discriminator_loss(self, x: torch.Tensor, recon: torch.Tensor, discriminator: nn.Module | None = None
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_D on real x and detached x̃ (so the D step never sends gradients into the autoencoder).
        `discriminator`: the same discriminator wrapped for several processes (DDP), if it is."""
        disc = self.discriminator if discriminator is None else discriminator
        logits_real = disc(x.detach().float())
        logits_fake = disc(recon.detach().float())
        d = self.d_loss_fn(logits_real, logits_fake)
        return d, {"d_loss": d.detach(), "logits_real": logits_real.mean().detach(),
                   "logits_fake": logits_fake.mean().detach()}


@contextlib.contextmanager
def _frozen(module: nn.Module):
    """Temporarily set requires_grad=False on every parameter of `module`."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)
