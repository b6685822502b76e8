"""Stage 1 of the LDM paper (Sec. 3.1, App. G): perceptual compression with an autoencoder.

An encoder E maps an image x (B, 3, H, W) to a latent z = E(x) of shape (B, c, H/f, W/f) and a decoder D
maps it back, x̃ = D(z). The latent is regularized in one of two ways:

    KL-reg   E predicts a diagonal Gaussian q(z|x) = N(μ, σ²); a tiny KL(q ‖ N(0, I)) penalty.
    VQ-reg   z is snapped to the nearest entry of a learned codebook (VQ-VAE), here inside the decoder.

Unlike the reference, `attn_resolutions` are downsampling factors (1, 2, 4, ...) like the U-Net's, not pixel
sizes, so one config works at any image size; and β sits on VQ's commitment term (see `VectorQuantizer`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .nn import RecordableAttention, Upsample, check_attention_factors, group_norm
from .utils import config_from_dict, get_device, load_checkpoint, randn

__all__ = ["AEConfig", "ResnetBlock", "AttnBlock", "Downsample", "Encoder", "Decoder", "DiagonalGaussian",
           "AutoencoderKL", "VectorQuantizer", "AutoencoderVQ", "PixelSpace", "build_autoencoder",
           "load_autoencoder", "reconstruct", "sample_latent", "CHECKPOINT_KIND"]

CHECKPOINT_KIND = "autoencoder"


@dataclass(frozen=True)
class AEConfig:
    """The first stage's network: what builds it, stored with its weights. Its objective is losses.LossConfig,
    how it is trained train.AETrainConfig."""

    kind: str = "kl"                       # "kl" (KL-regularized), "vq" (vector-quantized), "pixel" (f = 1, identity)
    ch: int = 32                           # base width
    ch_mult: tuple[int, ...] = (1, 2, 2)   # f = 2 ** (len(ch_mult) - 1)
    num_res_blocks: int = 1                # per encoder level; the decoder uses num_res_blocks + 1
    z_channels: int = 4
    attn_resolutions: tuple[int, ...] = ()  # downsampling factors (1, 2, 4 ...), not pixel sizes
    dropout: float = 0.0
    n_embed: int = 256                     # VQ codebook size
    beta: float = 0.25                     # VQ commitment weight (on ‖z − sg[e]‖², the VQ-VAE form)

    def __post_init__(self):
        identity = self.kind != "pixel" or (len(self.ch_mult), self.z_channels) == (1, 3)   # pixel space: f = 1, RGB
        if self.kind not in ("kl", "vq", "pixel") or not identity:
            raise ValueError(f"AEConfig.kind must be 'kl', 'vq' or 'pixel' (with ch_mult=(1,), z_channels=3), got "
                             f"kind={self.kind!r}, ch_mult={self.ch_mult}, z_channels={self.z_channels}")
        # checkpoints store tuples as lists; normalize so configs compare equal after a round trip
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))

    @property
    def downsample_factor(self) -> int:
        """f = H/h = 2^(len(ch_mult) − 1)."""
        return 2 ** (len(self.ch_mult) - 1)


# --- Building blocks ----------------------------------------------------------------------------------------


class ResnetBlock(nn.Module):
    """GN → SiLU → conv3×3, twice (dropout before the second conv), plus a 1×1 shortcut if widths differ."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2, self.conv2 = group_norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))                     # (B, C_in, H, W) -> (B, C_out, H, W)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))       # (B, C_out, H, W) -> (B, C_out, H, W)
        return self.shortcut(x) + h


class AttnBlock(RecordableAttention):
    """Single-head self-attention over all H·W positions: softmax(QKᵀ/√C)·V, residual (recordable).

    Always the explicit formula (`fused = False`): the arithmetic the measured models were trained with.
    """

    fused = False

    def __init__(self, ch: int):
        super().__init__()
        self.norm = group_norm(ch)
        self.q, self.k, self.v = (nn.Conv2d(ch, ch, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, H, W = x.shape
        h = self.norm(x)
        q, k, v = (rearrange(proj(h), "b c h w -> b 1 (h w) c") for proj in (self.q, self.k, self.v))  # (B, 1, HW, C)
        out = self.attend(q, k, v, None, "self", (H, W))                # softmax(QKᵀ/√C)·V: (B, 1, HW, C)
        return x + self.proj_out(rearrange(out, "b 1 (h w) c -> b c h w", h=H, w=W))


class Downsample(nn.Module):
    """Halve H and W: pad right and bottom by 1, then 3×3 conv with stride 2 and no padding (reference)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 1, 0, 1))                                # (B, C, H, W) -> (B, C, H+1, W+1)
        return self.conv(x)                                       # -> (B, C, H/2, W/2)


class Encoder(nn.Module):
    """E: conv_in → per level num_res_blocks ResnetBlocks (+attention) and a Downsample (not on the last level)
    → mid (Res, Attn, Res) → GN → SiLU → conv_out to `out_channels` (2·z for KL: μ and log σ², z for VQ)."""

    def __init__(self, *, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, out_channels: int,
                 attn_resolutions: tuple[int, ...] = (), dropout: float = 0.0, in_channels: int = 3):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.levels = nn.ModuleList()
        block_in = ch
        for i, mult in enumerate(ch_mult):
            block_out = ch * mult
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                attns.append(AttnBlock(block_in) if 2**i in attn_resolutions else nn.Identity())
            down = Downsample(block_in) if i < len(ch_mult) - 1 else nn.Identity()
            self.levels.append(nn.ModuleDict(dict(blocks=blocks, attns=attns, down=down)))
        self.mid = nn.Sequential(ResnetBlock(block_in, block_in, dropout), AttnBlock(block_in),
                                 ResnetBlock(block_in, block_in, dropout))
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)                                       # (B, 3, H, W) -> (B, ch, H, W)
        for level in self.levels:                                 # level i: (B, ch·m_i, H/2^i, W/2^i)
            for block, attn in zip(level["blocks"], level["attns"]):
                h = attn(block(h))
            h = level["down"](h)                                  # halves H, W except on the last level
        h = self.mid(h)                                           # (B, C_top, h, w), h = H/f
        return self.conv_out(F.silu(self.norm_out(h)))            # -> (B, out_channels, H/f, W/f)


class Decoder(nn.Module):
    """D: conv_in → mid (Res, Attn, Res) → per level (reversed) num_res_blocks+1 ResnetBlocks (+attention) and
    an Upsample (not on the first level) → GN → SiLU → conv_out to RGB."""

    def __init__(self, *, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_channels: int,
                 attn_resolutions: tuple[int, ...] = (), dropout: float = 0.0, out_channels: int = 3):
        super().__init__()
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = nn.Sequential(ResnetBlock(block_in, block_in, dropout), AttnBlock(block_in),
                                 ResnetBlock(block_in, block_in, dropout))
        self.levels = nn.ModuleList()   # stored top (coarsest) first, the order forward runs them
        for i in reversed(range(len(ch_mult))):
            block_out = ch * ch_mult[i]
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                attns.append(AttnBlock(block_in) if 2**i in attn_resolutions else nn.Identity())
            up = Upsample(block_in) if i > 0 else nn.Identity()
            self.levels.append(nn.ModuleDict(dict(blocks=blocks, attns=attns, up=up)))
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight the adaptive GAN weight is computed on (losses.adaptive_weight)."""
        return self.conv_out.weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))                             # (B, z, h, w) -> (B, C_top, h, w)
        for level in self.levels:
            for block, attn in zip(level["blocks"], level["attns"]):
                h = attn(block(h))
            h = level["up"](h)                                    # doubles H, W except on the last level
        return self.conv_out(F.silu(self.norm_out(h)))            # (B, ch, H, W) -> (B, 3, H, W)


# --- KL-regularized autoencoder -----------------------------------------------------------------------------


def sample_latent(mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The posterior sample z = μ + σ·ε, ε ~ N(0, I) drawn with `generator` on its device (utils.randn)."""
    return mean + std * randn(mean.shape, generator, mean.device, mean.dtype)


class DiagonalGaussian:
    """q(z|x) = N(μ, diag σ²) from the encoder's moments (B, 2c, h, w) = [μ, log σ²]; log σ² ∈ [−30, 20]."""

    LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0

    def __init__(self, moments: torch.Tensor):
        if moments.dtype in (torch.float16, torch.bfloat16):
            moments = moments.float()                             # fp32 even under bf16 autocast (exp, KL)
        self.mean, logvar = moments.chunk(2, dim=1)               # (B, 2c, h, w) -> 2 × (B, c, h, w)
        self.logvar = logvar.clamp(self.LOGVAR_MIN, self.LOGVAR_MAX)
        self.std = torch.exp(0.5 * self.logvar)                   # σ = exp(½ log σ²)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = μ + σ·ε (reparameterization), `sample_latent`."""
        return sample_latent(self.mean, self.std, generator)

    def mode(self) -> torch.Tensor:
        """The most likely latent, μ."""
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(N(μ, σ²) ‖ N(0, I)) = ½·Σ_{c,h,w}(μ² + σ² − 1 − log σ²), one value per sample: (B,)."""
        return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=(1, 2, 3))


class _AutoencoderBase(nn.Module):
    """What both autoencoders share: config, encoder/decoder construction, f and z_channels."""

    def __init__(self, config: AEConfig, encoder_out: int):
        super().__init__()
        check_attention_factors(len(config.ch_mult), tuple(config.attn_resolutions), "attn_resolutions")
        self.config = config
        arch = dict(ch=config.ch, ch_mult=tuple(config.ch_mult), num_res_blocks=config.num_res_blocks,
                    attn_resolutions=tuple(config.attn_resolutions), dropout=config.dropout)
        self.encoder = Encoder(out_channels=encoder_out, **arch)
        self.decoder = Decoder(z_channels=config.z_channels, **arch)

    @property
    def z_channels(self) -> int:
        return self.config.z_channels

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.last_layer

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """quant_conv(E(x)): (B, 3, H, W) -> (B, 2c (KL: μ, log σ²) or c (VQ), H/f, W/f). Students encode their own
        images: a side that f does not divide would come back cropped, so it is an error."""
        f = self.downsample_factor
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by the autoencoder's downsampling "
                             f"factor f={f}; resize or crop it to a multiple of {f}, e.g. {x.shape[-1] // f * f}")
        return self.quant_conv(self.encoder(x))


class AutoencoderKL(_AutoencoderBase):
    """KL-regularized autoencoder (Sec. 3.1): x → E → quant_conv → q(z|x); z → post_quant_conv → D → x̃."""

    def __init__(self, config: AEConfig):
        super().__init__(config, encoder_out=2 * config.z_channels)
        c = config.z_channels
        self.quant_conv = nn.Conv2d(2 * c, 2 * c, 1)
        self.post_quant_conv = nn.Conv2d(c, c, 1)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z|x): the posterior over latents."""
        return DiagonalGaussian(self._encode(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x̃ = D(z)."""
        return self.decoder(self.post_quant_conv(z))              # (B, c, h, w) -> (B, 3, f·h, f·w)

    def encode_latent(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The latent the diffusion model is trained on: a *sample* of q(z|x), as in the reference."""
        return self.encode(x).sample(generator)

    def forward(self, x: torch.Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, DiagonalGaussian]:
        """(x̃, q(z|x)); decodes a sample (training) or the mean (`sample_posterior=False`)."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior


# --- VQ-regularized autoencoder -----------------------------------------------------------------------------


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantization with a straight-through gradient (van den Oord et al. 2017).

        k* = argmin_k ‖z − e_k‖²          z_q = e_{k*}          forward value z_q, gradient as if identity
        L_vq = ‖sg[z] − e‖² + β·‖z − sg[e]‖²   (codebook term moves e, commitment term moves the encoder)

    The reference implementation writes β·‖sg[z] − e‖² + ‖z − sg[e]‖², i.e. β on the codebook term; minildm
    uses the VQ-VAE paper's form above. Both terms are means over all elements.
    """

    def __init__(self, n_embed: int, dim: int, beta: float = 0.25):
        super().__init__()
        self.n_embed, self.dim, self.beta = n_embed, dim, beta
        self.embedding = nn.Embedding(n_embed, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)   # U(−1/n, 1/n)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the closest code for every position: (B, c, h, w) -> (B, h, w)."""
        B, _, H, W = z.shape
        flat = rearrange(z, "b c h w -> (b h w) c")               # (N, c)
        e = self.embedding.weight                                 # (K, c)
        # ‖z − e‖² = ‖z‖² + ‖e‖² − 2·z·e
        d = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2.0 * flat @ e.t()   # (N, K)
        return rearrange(d.argmin(dim=1), "(b h w) -> b h w", b=B, h=H, w=W)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(z_q with straight-through gradient, L_vq, info with indices, perplexity, usage)."""
        z = z.float()                                             # distances and codebook in fp32
        indices = self.nearest(z)                                 # (B, h, w)
        e = rearrange(self.embedding(indices), "b h w c -> b c h w")   # (B, c, h, w)
        codebook = F.mse_loss(e, z.detach())                      # ‖sg[z] − e‖²
        commitment = F.mse_loss(z, e.detach())                    # ‖z − sg[e]‖²
        loss = codebook + self.beta * commitment
        z_q = z + (e - z).detach()                                # straight-through: value e, gradient ∂/∂z = I
        return z_q, loss, self.code_statistics(indices)

    @torch.no_grad()
    def code_statistics(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Perplexity exp(−Σ p_k log p_k) of the code histogram, and the fraction of codes used."""
        counts = torch.bincount(indices.flatten(), minlength=self.n_embed).float()
        p = counts / counts.sum()
        perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum())
        usage = (counts > 0).float().mean()
        return {"indices": indices, "perplexity": perplexity, "usage": usage}


class AutoencoderVQ(_AutoencoderBase):
    """VQ-regularized autoencoder: x → E → quant_conv → h (pre-quantization); h → VQ → post_quant_conv → D → x̃.
    As in the reference, diffusion runs on h and the quantizer is part of the decoder."""

    def __init__(self, config: AEConfig):
        super().__init__(config, encoder_out=config.z_channels)
        c = config.z_channels
        self.quant_conv = nn.Conv2d(c, c, 1)
        self.quantize = VectorQuantizer(config.n_embed, c, config.beta)
        self.post_quant_conv = nn.Conv2d(c, c, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-quantization latent h = quant_conv(E(x))."""
        return self._encode(x)

    def decode(self, h: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor:
        """x̃ = D(VQ(h)); `force_not_quantize=True` skips the codebook (decodes h directly)."""
        z_q = h if force_not_quantize else self.quantize(h)[0]
        return self.decoder(self.post_quant_conv(z_q))           # (B, c, h, w) -> (B, 3, f·h, f·w)

    def encode_latent(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The latent the diffusion model is trained on: pre-quantization h (deterministic; generator unused)."""
        return self.encode(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(x̃, L_vq, code statistics) for training."""
        z_q, vq_loss, info = self.quantize(self.encode(x))
        return self.decoder(self.post_quant_conv(z_q)), vq_loss, info


class PixelSpace(nn.Module):
    """The identity "first stage" (f = 1): diffusion directly on pixels, the paper's LDM-1 baseline (Sec. 4.1),
    so the downsampling-factor study compares f = 1, 2, 4, 8 with one LatentDiffusion and one training loop."""

    def __init__(self, config: AEConfig | None = None):
        super().__init__()
        self.config = config if config is not None else AEConfig(kind="pixel", ch_mult=(1,), z_channels=3)

    z_channels = 3
    downsample_factor = 1

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = x (deterministic, like the VQ pre-quantization latent)."""
        return x

    def encode_latent(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x̃ = z."""
        return z


def build_autoencoder(config: AEConfig) -> AutoencoderKL | AutoencoderVQ | PixelSpace:
    """AutoencoderKL, AutoencoderVQ or the identity PixelSpace according to `config.kind`."""
    return {"kl": AutoencoderKL, "vq": AutoencoderVQ, "pixel": PixelSpace}[config.kind](config)   # AEConfig checks kind


def load_autoencoder(path: str | os.PathLike, device: str | torch.device | None = None,
                     config: AEConfig | None = None, use_ema: bool = True) -> AutoencoderKL | AutoencoderVQ:
    """Rebuild the autoencoder from a checkpoint's own config (EMA weights if stored), in eval mode; a `config`
    passed too must be the checkpoint's."""
    ckpt = load_checkpoint(path, kind=CHECKPOINT_KIND)
    saved = config_from_dict(AEConfig, ckpt["config"])
    if config is not None:
        diffs = [f"{f.name}: checkpoint={getattr(saved, f.name)!r} current={getattr(config, f.name)!r}"
                 for f in fields(AEConfig) if getattr(saved, f.name) != getattr(config, f.name)]
        if diffs:
            raise ValueError(f"{path} holds another autoencoder than `config` ({'; '.join(diffs)}): drop `config`")
    model = build_autoencoder(saved)
    state = ckpt["ema"]["shadow"] if use_ema and ckpt.get("ema") else ckpt["state_dict"]
    model.load_state_dict(state)
    return model.to(get_device(device)).eval()


@torch.no_grad()
def reconstruct(model: AutoencoderKL | AutoencoderVQ | PixelSpace, x: torch.Tensor) -> torch.Tensor:
    """x̃ = D(E(x)) for evaluation: KL decodes the posterior mean, VQ the quantized latent, pixel space is exact."""
    if isinstance(model, AutoencoderKL):
        return model(x, sample_posterior=False)[0]
    if isinstance(model, PixelSpace):
        return x
    return model(x)[0]
