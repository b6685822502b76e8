"""LatentDiffusion: a frozen autoencoder, a latent scale factor, a conditioning encoder τθ and a U-Net.

The paper's second stage (LDM Sec. 3.2-3.3) in one object:

    training   z = E(x)·scale            (a posterior *sample*, scaled to unit variance)
               L = ‖ε − ε_θ(z_t, t, τθ(y))‖²   with y replaced by the null condition 10 % of the time
    sampling   z ~ DDIM(ε_θ, guidance s) → x = D(z / scale)

The autoencoder is frozen (eval mode, no gradients). Its latent statistics differ from N(0, I), so z is
multiplied by scale_factor = 1/std(z), measured on the first training batch and stored with the model (the
reference's `scale_by_std`; 0.18215 is that number for one Stable Diffusion autoencoder, not a constant).
`decode` divides by it again before the decoder.

Conditioning modes (`cond`): "text" (captions → transformer → cross-attention), "class" (label → time
embedding), "layout" (one token per object → cross-attention), "sr" (low-res image concatenated to z_t),
"none" (unconditional).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .conditioning import ClassEmbedder, LayoutEncoder, LowResConcat, TextEncoder
from .data import NUM_CLASSES, ShapesTokenizer
from .diffusion import GaussianDiffusion
from .profiles import LDMConfig
from .samplers import ddim_sample, ddpm_sample
from .unet import UNet

COND_MODES = ("text", "class", "layout", "sr", "none")
BATCH_KEYS = {"text": "tokens", "class": "label", "layout": "layout", "sr": "image", "none": None}


class LatentDiffusion(nn.Module):
    """ε_θ(z_t, t, τθ(y)) on the latents of a frozen autoencoder (LDM Eq. 2)."""

    def __init__(self, autoencoder: nn.Module, config: LDMConfig, max_objects: int = 2,
                 scale_factor: float | None = None):
        super().__init__()
        if config.cond not in COND_MODES:
            raise ValueError(f"unknown conditioning mode {config.cond!r}; expected one of {COND_MODES}")
        self.config, self.cond_mode = config, config.cond
        self.autoencoder = autoencoder.eval().requires_grad_(False)  # first stage: frozen
        self.diffusion = GaussianDiffusion.from_config(config)
        c = autoencoder.z_channels
        self.tokenizer = ShapesTokenizer(max_objects) if config.cond == "text" else None
        if config.cond == "text":
            self.cond_encoder: nn.Module | None = TextEncoder.from_config(config, self.tokenizer)
        elif config.cond == "class":
            self.cond_encoder = ClassEmbedder(NUM_CLASSES)
        elif config.cond == "layout":
            self.cond_encoder = LayoutEncoder.from_config(config, NUM_CLASSES, max_objects)
        elif config.cond == "sr":
            self.cond_encoder = LowResConcat(factor=autoencoder.downsample_factor / config.sr_factor)
        else:
            self.cond_encoder = None
        self.unet = UNet.from_config(
            config, in_channels=c, cross_attention=config.cond in ("text", "layout"),
            num_classes=NUM_CLASSES if config.cond == "class" else None,
            concat_channels=3 if config.cond == "sr" else 0)
        # scale_factor = 1/std(z); NaN until measured (`set_scale_factor`), then saved in the state dict
        self.register_buffer("scale_factor", torch.tensor(float("nan") if scale_factor is None else scale_factor))

    # ------------------------------------------------------------------ first stage
    @property
    def latent_channels(self) -> int:
        return self.autoencoder.z_channels

    def latent_size(self, resolution: int) -> int:
        f = self.autoencoder.downsample_factor
        if resolution % f:
            raise ValueError(f"image size {resolution} is not divisible by the autoencoder's f={f}")
        return resolution // f

    def _check_scale(self) -> float:
        s = float(self.scale_factor)
        if not s == s:  # NaN
            raise RuntimeError("the latent scale factor has not been measured yet: call "
                               "set_scale_factor(first_training_batch) (train_ldm does this) or load a checkpoint")
        return s

    @torch.no_grad()
    def latent_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters (μ, σ) of the *unscaled* latent; σ = 0 for VQ (pre-quantization latent)."""
        posterior = self.autoencoder.encode(x)
        if isinstance(posterior, torch.Tensor):  # VQ: encode returns h directly
            return posterior, torch.zeros_like(posterior)
        return posterior.mean, posterior.std

    @torch.no_grad()
    def set_scale_factor(self, x_or_moments: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
                         generator: torch.Generator | None = None) -> float:
        """scale_factor = 1 / std(z) over a batch of posterior samples (the reference's scale_by_std)."""
        mean, std = x_or_moments if isinstance(x_or_moments, tuple) else self.latent_moments(x_or_moments)
        z = sample_latent(mean, std, generator)
        self.scale_factor.fill_(1.0 / z.float().std().item())
        return float(self.scale_factor)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Image (B, 3, H, W) in [-1, 1] -> scaled latent z·scale (B, c, H/f, W/f)."""
        mean, std = self.latent_moments(x)
        return sample_latent(mean, std, generator) * self._check_scale()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> image: D(z / scale), in fp32 (decoding in half precision gives black images)."""
        return self.autoencoder.decode(z.float() / self._check_scale()).clamp(-1, 1)

    # ------------------------------------------------------------------ conditioning
    def raw_condition(self, batch: dict) -> torch.Tensor | None:
        """The conditioning input y of a Shapes batch for this model's mode (tokens, label, layout, low-res)."""
        if self.cond_mode == "none":
            return None
        if self.cond_mode == "sr":
            return LowResConcat.degrade(batch["image"], self.config.sr_factor)
        return batch[BATCH_KEYS[self.cond_mode]]

    def null_condition(self, raw: torch.Tensor) -> torch.Tensor:
        """The "unconditional" input shaped like `raw`: empty caption, null class, empty layout, zero image."""
        return self.cond_encoder.null_condition(raw)

    def encode_condition(self, raw: torch.Tensor | None, latent_hw: tuple[int, int] | None = None) -> dict | None:
        """τθ(y): raw input -> dict of U-Net keyword arguments ({"context", "context_mask"} / {"y"} / {"concat"})."""
        if self.cond_mode == "none" or raw is None:
            return None
        if self.cond_mode == "sr":
            return self.cond_encoder(raw, size=latent_hw)
        return self.cond_encoder(raw)

    def prompt_condition(self, prompts: list[str] | None = None, labels: list[int] | None = None,
                         layouts: torch.Tensor | None = None) -> torch.Tensor:
        """Raw conditioning from user input: captions (text), class ids (class) or a layout tensor (layout)."""
        device = self.scale_factor.device
        if self.cond_mode == "text":
            if prompts is None:
                raise ValueError("this is a text-conditional model: pass prompts=[...]")
            return self.tokenizer.encode_batch(prompts).to(device)
        if self.cond_mode == "class":
            if labels is None:
                raise ValueError(f"this is a class-conditional model: pass labels=[...] in 0..{NUM_CLASSES - 1}")
            return torch.as_tensor(labels, dtype=torch.int64, device=device)
        if self.cond_mode == "layout":
            if layouts is None:
                raise ValueError("this is a layout-conditional model: pass layouts of shape (B, N, 5)")
            return torch.as_tensor(layouts, dtype=torch.float32, device=device)
        raise ValueError(f"a {self.cond_mode!r} model takes no prompt")

    # ------------------------------------------------------------------ the denoiser
    def model_fn(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict | None) -> torch.Tensor:
        """ε_θ(z_t, t, c) with c a dict of U-Net arguments: the callable every sampler takes."""
        return self.unet(x_t, t, **(cond or {}))

    def training_step(self, z0: torch.Tensor, raw: torch.Tensor | None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """One L_simple evaluation on scaled latents z0, with conditioning dropout for classifier-free guidance."""
        cond = None
        if raw is not None and self.cond_mode != "none":
            if self.config.cond_drop_prob > 0 and self.cond_mode != "sr":
                raw = self.cond_encoder.drop(raw, self.config.cond_drop_prob, generator)
            cond = self.encode_condition(raw, tuple(z0.shape[-2:]))
        return self.diffusion.training_loss(self.model_fn, z0, cond, generator=generator,
                                            weighting=self.config.loss_weighting)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, raw: torch.Tensor | None = None, num_samples: int | None = None, resolution: int = 32,
               steps: int | None = None, eta: float = 0.0, guidance_scale: float | None = None,
               sampler: str = "ddim", generator: torch.Generator | None = None,
               callback: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
               return_intermediates: bool = False, x_T: torch.Tensor | None = None,
               decode: bool = True) -> Any:
        """Draw images for conditioning inputs `raw` (or `num_samples` unconditional ones) with DDIM or DDPM.

        Classifier-free guidance: ε̂ = ε̂(∅) + s·(ε̂(y) − ε̂(∅)); s = 1 is purely conditional.
        Returns images in [-1, 1] (or latents with decode=False); with return_intermediates, also the trajectory.
        """
        self._check_scale()
        steps = self.config.sample_steps if steps is None else steps
        guidance_scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        if self.cond_mode == "none":
            guidance_scale = 1.0  # nothing to guide towards
        if raw is None and num_samples is None:
            raise ValueError("pass conditioning inputs `raw` or, for an unconditional model, num_samples")
        if raw is not None and self.cond_mode == "none":
            raise ValueError("this model is unconditional; pass num_samples instead of a condition")
        B = raw.shape[0] if raw is not None else num_samples
        h = self.latent_size(resolution)
        cond = self.encode_condition(raw, (h, h))
        uncond = None
        if cond is not None and guidance_scale != 1.0:
            uncond = self.encode_condition(self.null_condition(raw), (h, h))
        shape = (B, self.latent_channels, h, h)
        kwargs = dict(cond=cond, uncond=uncond, guidance_scale=guidance_scale, generator=generator,
                      x_T=x_T, callback=callback, return_intermediates=return_intermediates,
                      device=self.scale_factor.device)
        if sampler == "ddim":
            out = ddim_sample(self.model_fn, self.diffusion, shape, steps=steps, eta=eta, **kwargs)
        elif sampler == "ddpm":
            out = ddpm_sample(self.model_fn, self.diffusion, shape, **kwargs)
        else:
            raise ValueError(f"unknown sampler {sampler!r}; expected 'ddim' or 'ddpm'")
        z, trajectory = out if return_intermediates else (out, None)
        result = self.decode(z) if decode else z
        return (result, trajectory) if return_intermediates else result

    # ------------------------------------------------------------------ parameters
    def trainable_parameters(self) -> list[nn.Parameter]:
        """U-Net and τθ parameters (the autoencoder stays frozen)."""
        params = list(self.unet.parameters())
        if self.cond_encoder is not None:
            params += list(self.cond_encoder.parameters())
        return params

    def denoiser_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights trained in stage two (U-Net, τθ, scale factor): what EMA tracks and checkpoints store."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("autoencoder.")}


def sample_latent(mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = μ + σ·ε, ε ~ N(0, I) drawn with `generator` (on its device) — the posterior sample."""
    device = generator.device if generator is not None else mean.device
    eps = torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype).to(mean.device)
    return mean + std * eps
