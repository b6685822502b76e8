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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .perceptual import LPIPS

__all__ = ["LossConfig", "NLayerDiscriminator", "hinge_d_loss", "vanilla_d_loss", "generator_loss", "adaptive_weight",
           "AutoencoderLoss"]


@dataclass(frozen=True)
class LossConfig:
    """The first stage's objective L_AE: its terms and weights, and the discriminator of its GAN term."""

    pixel_loss: str = "l1"                 # "l1" (the paper's |x − x̃|) or "l2" ((x − x̃)², for comparison)
    lpips_net: str = "alex"                # "vgg" (paper), "alex", "squeeze"
    perceptual_weight: float = 1.0
    kl_weight: float = 1e-6
    codebook_weight: float = 1.0
    disc_start: int = 2_000                # GAN terms are zero and D is not trained before this step
    disc_weight: float = 0.5
    disc_loss: str = "hinge"               # "hinge" or "vanilla"
    disc_ndf: int = 32
    disc_layers: int = 3

    def __post_init__(self):
        for name, allowed in (("pixel_loss", ("l1", "l2")), ("lpips_net", ("vgg", "alex", "squeeze")),
                              ("disc_loss", ("hinge", "vanilla"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"LossConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")


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
    """L_AE for the generator step and L_D for the discriminator step, with weights from a LossConfig; `kind` is
    the autoencoder's ("kl" or "vq": which regularizer, and how L_rec is reduced)."""

    def __init__(self, config: LossConfig, lpips_download: bool = True, random_backbone: bool | None = None, *,
                 kind: str = "kl"):
        super().__init__()
        self.config, self.kind = config, kind
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
        rec = rec.sum() / x.shape[0] if self.kind == "kl" else rec.mean()
        return rec, {"l1": l1.mean().detach(), "lpips": p.mean().detach()}

    def generator_loss(self, x: torch.Tensor, recon: torch.Tensor, reg_loss: torch.Tensor, step: int,
                       last_layer: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_AE = L_rec + w_reg·L_reg + λ·L_GAN for one batch; reg_loss is KL per sample (B,) or L_vq (scalar)."""
        rec, logs = self.reconstruction_loss(x, recon)
        if self.kind == "kl":
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
