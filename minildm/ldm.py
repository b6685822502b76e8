"""LatentDiffusion: a frozen autoencoder, a latent scale factor, a conditioning encoder τθ and a U-Net.

The paper's second stage (LDM Sec. 3.2-3.3) in one object:

    training   z = E(x)·scale            (a posterior *sample*, scaled to unit variance)
               L = ‖ε − ε_θ(z_t, t, τθ(y))‖²   with y replaced by the null condition 10 % of the time
    sampling   z ~ DDIM(ε_θ, guidance s) → x = D(z / scale)
    editing    x_T = DDIM⁻¹(z) (`invert`), SDEdit (`img2img`), inpainting (`inpaint`)

Beyond the paper, `LDMConfig(process="flow")` trains the same U-Net on the same latents by flow matching
(diffusion.RectifiedFlow: x_t = (1 − t)·z + t·ε, target ε − z) and samples it with Euler or Heun on dx/dt = v_θ.

scale_factor = 1/std(z), measured on the first training batch and stored with the model (the reference's
`scale_by_std`; 0.18215 is that number for one Stable Diffusion autoencoder, not a constant).

Conditioning modes (`cond`): "text" (captions → transformer → cross-attention), "class" (label → time embedding,
ADM's route; `class_route="crossattn"`: one cross-attention token, the paper's), "layout" (one token per object),
"sr" (low-res image), "seg" (semantic map; Sec. 4.3.2) and "inpaint" (masked image and mask; Sec. 4.5), these
three concatenated to z_t, trained without conditioning dropout and sampled without guidance; "none".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .autoencoder import AEConfig, build_autoencoder, sample_latent
from .conditioning import (ClassEmbedder, ClassToken, InpaintConcat, LayoutEncoder, LowResConcat, SemanticConcat,
                           TextEncoder, WordTokenizer, check_class_map, check_mask, latent_mask, training_masks)
from .diffusion import PREDICTION_TYPES, PROCESSES, GaussianDiffusion, RectifiedFlow
from .samplers import FLOW_SAMPLERS, ODE_SAMPLERS, ddim_inpaint, ddim_invert, ddim_sample, ddpm_sample
from .samplers import img2img as ddim_img2img
from .unet import UNet
from .utils import autocast, config_from_dict, get_device, load_checkpoint, precision_dtype, randn

__all__ = ["LDMConfig", "LatentDiffusion", "sample_latent", "COND_MODES", "CONCAT_MODES", "CLASS_ROUTES", "BATCH_KEYS",
           "CHECKPOINT_KIND", "SAMPLE_STEPS", "GUIDANCE_SCALE", "SAMPLERS"]

COND_MODES = ("text", "class", "layout", "sr", "seg", "inpaint", "none")
CONCAT_MODES = ("sr", "seg", "inpaint")  # image-like conditions concatenated to z_t: no dropout while training
CLASS_ROUTES = ("time", "crossattn")     # how a class label enters the U-Net: time embedding (ADM) or one token
BATCH_KEYS = {"text": "tokens", "class": "label", "layout": "layout", "sr": "image", "seg": "semantic",
              "inpaint": "image", "none": None}
CHECKPOINT_KIND = "ldm"
SAMPLE_STEPS, GUIDANCE_SCALE = 50, 3.0    # sampling defaults: DDIM-50, guidance s = 3
# LatentDiffusion.sample's samplers: a diffusion model takes every one (default "ddim"), a flow model the
# FLOW_SAMPLERS ("euler", its default, and "heun"); Heun makes 2·steps − 1 model calls, DDPM all T, the others steps
SAMPLERS = ("ddim", "ddpm", "euler", "heun", "dpmpp_2m")


@dataclass(frozen=True)
class LDMConfig:
    """The second stage's network: U-Net, conditioning encoder τθ and noise schedule, stored with its weights. How
    it is trained (and the sample grids of a run) is train.LDMTrainConfig."""

    cond: str = "text"                                # one of COND_MODES
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (1, 2)   # downsampling factors, not pixel sizes
    num_heads: int = 4
    context_dim: int = 64                             # width of τθ(y) (text / layout / class tokens)
    class_route: str = "time"                         # class models: "time" (ADM, minildm) or "crossattn" (paper)
    text_layers: int = 2
    box_bins: int = 16                                # layout coordinates are quantized into this many bins
    coord_channels: bool = False                      # append (x, y) coordinate channels to z_t (see unet.py)
    sr_factor: int = 4                                # super-resolution: low-res side = image side / sr_factor
    dropout: float = 0.0
    timesteps: int = 1000
    schedule: str = "scaled_linear"
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    prediction_type: str = "epsilon"
    # the forward process: "diffusion" (the paper's; the schedule and prediction_type above) or "flow" (flow
    # matching, diffusion.RectifiedFlow: the U-Net predicts the velocity ε − z0; only `timesteps` of the lines
    # above applies, as its time scale), whose training times are t = sigmoid(n), n ~ N(logit_mean, logit_std²)
    process: str = "diffusion"
    logit_mean: float = 0.0
    logit_std: float = 1.0

    def __post_init__(self):
        for name, allowed in (("cond", COND_MODES), ("class_route", CLASS_ROUTES),
                              ("prediction_type", PREDICTION_TYPES), ("process", PROCESSES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"LDMConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if (self.process == "diffusion" and (self.logit_mean, self.logit_std) != (0.0, 1.0)) or not self.logit_std > 0:
            raise ValueError("logit_mean / logit_std set the training times of a flow model; logit_std must be > 0")
        # checkpoints store tuples as lists; normalize so configs compare equal after a round trip
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))


class LatentDiffusion(nn.Module):
    """ε_θ(z_t, t, τθ(y)) on the latents of a frozen autoencoder (LDM Eq. 2).

    What the condition can be comes from the data: `tokenizer` (text models, e.g. `ShapesDataset.tokenizer`),
    `num_classes` (class, layout and seg models; a semantic map has one more id, background), `max_objects`
    (layout models: rows per layout); `resolution` is the image side the model samples by default.
    """

    def __init__(self, autoencoder: nn.Module, config: LDMConfig, *, tokenizer: WordTokenizer | None = None,
                 num_classes: int | None = None, max_objects: int | None = None, resolution: int = 32,
                 scale_factor: float | None = None):
        super().__init__()
        cond = config.cond
        if cond in ("class", "layout", "seg") and not num_classes:
            raise ValueError(f"a {cond} model needs num_classes (e.g. ShapesDataset.num_classes)")
        self.config, self.cond_mode, self.resolution = config, cond, int(resolution)
        self.num_classes, self.max_objects = num_classes, max_objects
        self.autoencoder = autoencoder.eval().requires_grad_(False)  # first stage: frozen
        # the forward process: GaussianDiffusion, or RectifiedFlow for a flow model (`is_flow`)
        self.diffusion = (RectifiedFlow if config.process == "flow" else GaussianDiffusion).from_config(config)
        c = autoencoder.z_channels
        self.tokenizer = tokenizer if cond == "text" else None
        class_token = cond == "class" and config.class_route == "crossattn"
        self.cond_encoder: nn.Module | None = {
            "text": lambda: TextEncoder.from_config(config, tokenizer),
            "class": lambda: ClassToken(num_classes, config.context_dim) if class_token else ClassEmbedder(num_classes),
            "layout": lambda: LayoutEncoder(num_classes, max_objects, config.context_dim, config.box_bins),
            "sr": lambda: LowResConcat(factor=config.sr_factor / autoencoder.downsample_factor),
            "seg": lambda: SemanticConcat(num_classes + 1),
            "inpaint": InpaintConcat,
            "none": lambda: None}[cond]()
        # channels concatenated to z_t: the low-res image (3), the class shares (classes + background), or the
        # masked image's latent and the mask (c + 1)
        concat = {"sr": 3, "seg": (num_classes or 0) + 1, "inpaint": c + 1}.get(cond, 0)
        self.unet = UNet.from_config(
            config, in_channels=c, cross_attention=cond in ("text", "layout") or class_token,
            num_classes=num_classes if cond == "class" and not class_token else None, concat_channels=concat)
        # scale_factor = 1/std(z); NaN until measured (`set_scale_factor`), then saved in the state dict
        self.register_buffer("scale_factor", torch.tensor(float("nan") if scale_factor is None else scale_factor))

    # ------------------------------------------------------------------ first stage
    @property
    def is_flow(self) -> bool:
        """Whether this model was trained by flow matching (LDMConfig.process == "flow")."""
        return self.config.process == "flow"

    @property
    def default_sampler(self) -> str:
        """The sampler `sample(sampler=None)` uses: "euler" for a flow model, else "ddim"."""
        return "euler" if self.is_flow else "ddim"

    @property
    def latent_channels(self) -> int:
        return self.autoencoder.z_channels

    def latent_size(self, resolution: int | None = None) -> int:
        """Side h of the latent for images of side `resolution` (default: the model's): h = resolution / f."""
        return (self.resolution if resolution is None else resolution) // self.autoencoder.downsample_factor

    def _measured_scale(self) -> float:
        """scale_factor as a float; still NaN (never measured) is an error."""
        s = float(self.scale_factor)
        if s != s:
            raise RuntimeError("scale factor not measured yet: call set_scale_factor(first_batch) or load a checkpoint")
        return s

    @torch.no_grad()
    def latent_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters (μ, σ) of the *unscaled* latent; σ = 0 for VQ (pre-quantization latent)."""
        posterior = self.autoencoder.encode(x)
        if isinstance(posterior, torch.Tensor):  # VQ / pixel space: encode returns the latent directly
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
        return sample_latent(mean, std, generator) * self._measured_scale()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> image: D(z / scale), in fp32 (decoding in half precision gives black images)."""
        return self.autoencoder.decode(z.float() / self._measured_scale()).clamp(-1, 1)

    # ------------------------------------------------------------------ conditioning
    def raw_condition(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """The conditioning input y of a data batch for this model's mode (tokens, label, layout, low-res, semantic
        map; inpainting: the masked image and a training mask drawn with `generator`, conditioning.training_masks)."""
        if self.cond_mode == "none":
            return None
        if self.cond_mode == "sr":
            return LowResConcat.degrade(batch["image"], self.config.sr_factor)
        if self.cond_mode == "inpaint":
            return InpaintConcat.raw(batch["image"], training_masks(batch["segmentation"], generator))
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
        if self.cond_mode == "seg":
            return self.cond_encoder(raw, size=latent_hw or (self.latent_size(raw.shape[-1]),) * 2)
        if self.cond_mode == "inpaint":
            return self.cond_encoder(raw, encode=self._condition_latent)
        return self.cond_encoder(raw)

    @torch.no_grad()
    def _condition_latent(self, x: torch.Tensor) -> torch.Tensor:
        """The masked image's latent for the inpainting condition: posterior mean × scale (deterministic)."""
        return self.latent_moments(x)[0].float() * self._measured_scale()

    def semantic_condition(self, maps: torch.Tensor) -> torch.Tensor:
        """The raw condition of a seg model: (B, H, W) class maps (ids 0..num_classes, the last background; e.g.
        ShapesDataset('test').batch([0])['semantic']), checked (conditioning.check_class_map), on the model's device."""
        self._require("seg", "semantic_condition", "semantic maps")
        return check_class_map(maps, self.num_classes + 1, self.resolution).to(self.scale_factor.device)

    def inpaint_condition(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The raw condition of an inpainting model: images (B, 3, H, W) in [-1, 1] and 0/1 masks (B, 1, H, W),
        1 = the hole, checked (conditioning.check_mask) -> [x·(1 − m), m] (B, 4, H, W) on the model's device."""
        self._require("inpaint", "inpaint_condition", "images with holes")
        mask = check_mask(mask, images)
        device = self.scale_factor.device
        return InpaintConcat.raw(images.to(device).float(), mask.to(device))

    def _require(self, mode: str, what: str, takes: str) -> None:
        if self.cond_mode != mode:
            raise ValueError(f"{what} builds a {mode} model's condition from {takes}; this is a {self.cond_mode} model")

    def prompt_condition(self, prompts: list[str] | None = None, labels: list[int] | None = None,
                         layouts: torch.Tensor | None = None) -> torch.Tensor:
        """Raw conditioning from user input: captions (text), class ids (class) or a layout tensor (layout).

        Blank or word-less prompts and out-of-range labels are errors: they would silently mean "no condition".
        """
        device = self.scale_factor.device
        if self.cond_mode == "text":
            if isinstance(prompts, str) or not prompts or not all(self.tokenizer.words(p) for p in prompts):
                raise ValueError(f"pass prompts=[...], a list of captions; one that has no words would mean 'no "
                                 f"condition' (the null prompt of guidance), got {prompts!r}")
            return self.tokenizer.encode_batch(prompts).to(device)
        if self.cond_mode == "class":
            if labels is None or not all(0 <= int(y) < self.num_classes for y in labels):
                raise ValueError(f"class labels must be in 0..{self.num_classes - 1} (labels=[...]), got {labels!r}")
            return torch.as_tensor(labels, dtype=torch.int64, device=device)
        if self.cond_mode == "layout":
            return torch.as_tensor(layouts, dtype=torch.float32, device=device)
        instead = {"seg": "a seg model is conditioned on a semantic map, not a prompt: pass "
                          "ldm.semantic_condition(maps) (maps (B, H, W) of class ids, e.g. ShapesDataset('test')"
                          ".batch([0])['semantic']) to sample(), or `minildm sample --pretrained seg --scene N`",
                   "inpaint": "an inpainting model is conditioned on an image with a hole, not a prompt: call "
                              "ldm.inpaint(images, mask) (mask 1 = the hole), or `minildm sample --pretrained "
                              "inpaint --scene N --mask box|object`"}
        raise ValueError(instead.get(self.cond_mode, f"a {self.cond_mode!r} model takes no prompt"))

    # ------------------------------------------------------------------ the denoiser
    def model_fn(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict | None) -> torch.Tensor:
        """ε_θ(z_t, t, c) with c a dict of U-Net arguments: the callable every sampler takes (fp32 out, also
        under bf16 autocast, so that the sampler's arithmetic stays fp32)."""
        return self.unet(x_t, t, **(cond or {})).float()

    def training_step(self, z0: torch.Tensor, raw: torch.Tensor | None,
                      generator: torch.Generator | None = None, rows: slice | None = None, *,
                      cond_drop_prob: float = 0.1, loss_weighting: str = "simple") -> torch.Tensor:
        """One L_simple evaluation on scaled latents z0, y replaced by the null condition with probability
        `cond_drop_prob` (classifier-free guidance); `loss_weighting` "simple" or "min_snr" (diffusion.py). A flow
        model takes ‖(ε − z0) − v_θ(z_t, t, y)‖², t logit-normal (RectifiedFlow), and only "simple".

        `rows` (data parallelism): draw the dropout, t and ε for the whole batch, as one process would, then
        compute the loss of these rows only, so the processes' mean loss (and gradient) is the one-process one."""
        if raw is not None and self.cond_mode != "none" and cond_drop_prob > 0 and self.cond_mode not in CONCAT_MODES:
            raw = self.cond_encoder.drop(raw, cond_drop_prob, generator)
        t = noise = None
        if rows is not None:                                  # the draws training_loss would make, in its order
            t = self.diffusion.draw_timesteps(z0.shape[0], generator, z0.device)[rows]
            noise = randn(z0.shape, generator, z0.device, z0.dtype)[rows]
            z0, raw = z0[rows], raw[rows] if raw is not None else None
        cond = self.encode_condition(raw, tuple(z0.shape[-2:]))
        return self.diffusion.training_loss(self.model_fn, z0, cond, t=t, noise=noise, generator=generator,
                                            weighting=loss_weighting)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, raw: torch.Tensor | None = None, num_samples: int | None = None, resolution: int | None = None,
               steps: int | None = None, eta: float = 0.0, guidance_scale: float | None = None,
               sampler: str | None = None, generator: torch.Generator | None = None,
               callback: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
               return_intermediates: bool = False, x_T: torch.Tensor | None = None,
               decode: bool = True, spacing: str = "trailing", precision: str = "fp32") -> Any:
        """Draw images for conditioning inputs `raw` (or `num_samples` unconditional ones).

        `sampler` (None: "ddim"; samplers.py): "ddim" (`steps` timesteps chosen by `spacing`, noise η = `eta`),
        "ddpm" (all T), or the ODE solvers "dpmpp_2m", "euler", "heun" on DDIM's timesteps (Heun makes 2·steps − 1
        model calls). A flow model (`is_flow`) takes "euler" (its default) or "heun" on dx/dt = v_θ, `steps` even
        steps of t from 1 to 0 (no η, no spacing). `steps` None: SAMPLE_STEPS (50).

        Classifier-free guidance: ε̂ = ε̂(∅) + s·(ε̂(y) − ε̂(∅)); s = 1 is purely conditional; `guidance_scale` None:
        GUIDANCE_SCALE (3), for seg and inpaint models 1 (they have no unconditional prediction to guide against).
        Returns images in [-1, 1] (or latents with decode=False); with return_intermediates, also the trajectory.
        `precision` "bf16"/"auto" runs the denoiser under autocast (speed.py); the latents and decoding stay fp32.
        """
        amp = precision_dtype(self.scale_factor.device, precision)
        sampler = self.default_sampler if sampler is None else sampler
        allowed = tuple(FLOW_SAMPLERS) if self.is_flow else ("ddim", "ddpm", *ODE_SAMPLERS)
        if sampler not in allowed or self.is_flow and spacing != "trailing":
            raise ValueError(f"this is a flow model (process='flow'): it steps evenly in t with sampler='euler' or "
                             f"'heun' and default spacing; got {sampler!r}, spacing={spacing!r}" if self.is_flow else
                             f"unknown sampler {sampler!r}; expected one of {allowed}")
        if eta != 0 and sampler not in ("ddim", "ddpm"):
            raise ValueError(f"eta={eta!r} is DDIM's noise (sampler='ddim'); {sampler!r} is deterministic: eta=0")
        steps = SAMPLE_STEPS if steps is None else steps
        guidance_scale = self._guidance(guidance_scale)
        B = raw.shape[0] if raw is not None else num_samples
        h = self.latent_size(resolution)
        cond, uncond = self._conditions(raw, (h, h), guidance_scale)
        shape = (B, self.latent_channels, h, h)
        kwargs = dict(cond=cond, uncond=uncond, guidance_scale=guidance_scale, generator=generator,
                      x_T=x_T, callback=callback, return_intermediates=return_intermediates,
                      device=self.scale_factor.device)
        with autocast(self.scale_factor.device, amp):
            if self.is_flow:
                out = FLOW_SAMPLERS[sampler](self.model_fn, self.diffusion, shape, steps=steps, **kwargs)
            elif sampler == "ddim":
                out = ddim_sample(self.model_fn, self.diffusion, shape, steps=steps, eta=eta, spacing=spacing, **kwargs)
            elif sampler == "ddpm":
                out = ddpm_sample(self.model_fn, self.diffusion, shape, **kwargs)
            else:
                loop = ODE_SAMPLERS[sampler]
                out = loop(self.model_fn, self.diffusion, shape, steps=steps, spacing=spacing, **kwargs)
        z, trajectory = out if return_intermediates else (out, None)
        z = z.float()
        result = self.decode(z) if decode else z
        return (result, trajectory) if return_intermediates else result

    def _guidance(self, guidance_scale: float | None) -> float:
        """The guidance scale to use: GUIDANCE_SCALE by default; 1 (no guidance) for an unconditional model, which
        has nothing to guide towards, and for seg and inpaint models, which refuse any other."""
        if self.cond_mode == "none":
            return 1.0
        if self.cond_mode in ("seg", "inpaint"):
            if guidance_scale not in (None, 1, 1.0):
                raise ValueError(f"a {self.cond_mode} model is trained without dropping its condition, so it has no "
                                 f"unconditional prediction to guide against: leave guidance_scale out (or 1)")
            return 1.0
        return GUIDANCE_SCALE if guidance_scale is None else guidance_scale

    def _conditions(self, raw: torch.Tensor | None, latent_hw: tuple[int, int], guidance_scale: float
                    ) -> tuple[dict | None, dict | None]:
        """(τθ(y), τθ(∅)) for a sampler; the null condition only when guidance needs it (s ≠ 1). A seg or inpaint
        condition must be an image of the latent's size."""
        f = self.autoencoder.downsample_factor
        if self.cond_mode in ("seg", "inpaint") and raw is not None and raw.shape[-1] != latent_hw[-1] * f:
            raise ValueError(f"a {self.cond_mode} condition must be {latent_hw[-1] * f} pixels wide, as wide as the "
                             f"image, got {raw.shape[-1]}")
        cond = self.encode_condition(raw, latent_hw)
        uncond = None
        if cond is not None and guidance_scale != 1.0:
            uncond = self.encode_condition(self.null_condition(raw), latent_hw)
        return cond, uncond

    def _edit(self, what: str, z0: torch.Tensor, raw: torch.Tensor | None, guidance_scale: float
              ) -> tuple[dict | None, dict | None]:
        """The conditions of an edit (invert, img2img, inpaint) of latents z0: DDIM only, one condition per latent."""
        if self.is_flow:
            raise ValueError(f"{what} runs DDIM; this is a flow model (process='flow'), and minildm has no {what}")
        if self.cond_mode != "none" and (raw is None or raw.shape[0] != z0.shape[0]):
            raise ValueError(f"{what}: a {self.cond_mode} model needs one condition per latent (ldm.prompt_condition)")
        return self._conditions(raw, tuple(z0.shape[-2:]), guidance_scale)

    @torch.no_grad()
    def invert(self, z0: torch.Tensor, raw: torch.Tensor | None = None, steps: int = 50,
               guidance_scale: float = 1.0, return_intermediates: bool = False) -> Any:
        """DDIM inversion of scaled latents z0 (e.g. `encode(images)`) under their condition -> x_T (DDIM Sec. 4.3).

        `sample(raw, x_T=x_T, steps=steps, guidance_scale=guidance_scale)` maps x_T back to (about) z0; the error
        shrinks with the step size. Guidance s = 1 (none) inverts best: s > 1 makes the ODE stiffer."""
        cond, uncond = self._edit("invert", z0, raw, guidance_scale)
        return ddim_invert(self.model_fn, self.diffusion, z0, steps=steps, cond=cond, uncond=uncond,
                           guidance_scale=guidance_scale, return_intermediates=return_intermediates)

    @torch.no_grad()
    def img2img(self, images: torch.Tensor, raw: torch.Tensor | None = None, strength: float = 0.75,
                steps: int | None = None, eta: float = 0.0, guidance_scale: float | None = None,
                generator: torch.Generator | None = None, decode: bool = True) -> torch.Tensor:
        """SDEdit on images (B, 3, H, W) in [-1, 1]: encode, noise to the timestep picked by `strength`, run the
        rest of DDIM towards the condition `raw`, decode (samplers.img2img). strength 0 keeps the image
        (up to the autoencoder's reconstruction), 1 starts from (almost) pure noise."""
        steps = SAMPLE_STEPS if steps is None else steps
        guidance_scale = self._guidance(guidance_scale)          # seg, inpaint and unconditional models: none
        z0 = self.encode(images, generator)
        cond, uncond = self._edit("img2img", z0, raw, guidance_scale)
        z = ddim_img2img(self.model_fn, self.diffusion, z0, strength=strength, steps=steps, eta=eta, cond=cond,
                         uncond=uncond, guidance_scale=guidance_scale, generator=generator)
        return self.decode(z) if decode else z

    @torch.no_grad()
    def inpaint(self, images: torch.Tensor, mask: torch.Tensor, raw: torch.Tensor | None = None,
                steps: int | None = None, eta: float = 0.0, guidance_scale: float | None = None,
                generator: torch.Generator | None = None, decode: bool = True) -> torch.Tensor:
        """Fill the hole (mask = 1) of images (B, 3, H, W) in [-1, 1]; mask (B, 1, H, W) or (B, H, W) of 0/1.

        An inpainting model (cond "inpaint", LDM Sec. 4.5) samples with the masked image's latent and the mask
        concatenated to z_t (`inpaint_condition`; no guidance, `raw` must be None). Any other diffusion model
        inpaints without training: DDIM under its own condition `raw`, the known region blended in at every step,
        z_t ← m·z_t + (1 − m)·q(z_t | z_0) (RePaint without resampling; samplers.ddim_inpaint), with z_0 the
        posterior mean × scale and m the mask on the latent grid ("max": a latent pixel with any hole pixel).
        The result is not pasted into the original: outside the hole it is the autoencoder's rendering."""
        if self.cond_mode == "inpaint":
            if raw is not None:
                raise ValueError("an inpainting model reads the image and the mask only: leave raw out")
            return self.sample(self.inpaint_condition(images, mask), steps=steps, eta=eta,
                               guidance_scale=guidance_scale, generator=generator, decode=decode)
        mask = check_mask(mask, images)
        steps = SAMPLE_STEPS if steps is None else steps
        guidance_scale = self._guidance(guidance_scale)
        device = self.scale_factor.device
        z0 = self._condition_latent(images.to(device).float())
        cond, uncond = self._edit("inpaint", z0, raw, guidance_scale)
        m = latent_mask(mask.to(device), tuple(z0.shape[-2:]), "max")
        z = ddim_inpaint(self.model_fn, self.diffusion, z0, m, steps=steps, eta=eta, cond=cond, uncond=uncond,
                         guidance_scale=guidance_scale, generator=generator)
        return self.decode(z) if decode else z

    # ------------------------------------------------------------------ parameters and checkpoints
    def denoiser_modules(self) -> nn.ModuleDict:
        """The modules trained in stage two (U-Net, and τθ when it has weights), as one module: what the
        optimizer and the EMA see and what checkpoints store."""
        mods = {"unet": self.unet}
        if self.cond_encoder is not None and any(True for _ in self.cond_encoder.parameters()):
            mods["cond_encoder"] = self.cond_encoder
        return nn.ModuleDict(mods)

    def checkpoint_model(self) -> dict[str, Any]:
        """Everything but the trained weights that `from_checkpoint` needs to rebuild this model."""
        return {"config": self.config, "autoencoder": {"config": self.autoencoder.config,
                                                       "state_dict": self.autoencoder.state_dict()},
                "conditioning": {"tokenizer": None if self.tokenizer is None else self.tokenizer.to_dict(),
                                 "num_classes": self.num_classes, "max_objects": self.max_objects},
                "resolution": self.resolution, "scale_factor": float(self.scale_factor)}

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        use_ema: bool = True) -> "LatentDiffusion":
        """Rebuild a LatentDiffusion (autoencoder included) from its checkpoint alone, EMA weights by default,
        in eval mode on `device` (default: the best available)."""
        ckpt = load_checkpoint(path, kind=CHECKPOINT_KIND)
        cfg = config_from_dict(LDMConfig, ckpt["config"])
        ae = build_autoencoder(config_from_dict(AEConfig, ckpt["autoencoder"]["config"]))
        ae.load_state_dict(ckpt["autoencoder"]["state_dict"])
        c = ckpt["conditioning"]
        tok = None if c["tokenizer"] is None else WordTokenizer.from_dict(c["tokenizer"])
        ldm = cls(ae, cfg, tokenizer=tok, num_classes=c["num_classes"], max_objects=c["max_objects"],
                  resolution=int(ckpt["resolution"]), scale_factor=float(ckpt["scale_factor"]))
        state = ckpt["ema"]["shadow"] if use_ema and ckpt.get("ema") else ckpt["state_dict"]
        ldm.denoiser_modules().load_state_dict(state)
        return ldm.to(get_device(device)).eval()

    def extra_repr(self) -> str:
        flow = ", process='flow'" if self.is_flow else ""
        return f"cond={self.cond_mode!r}, resolution={self.resolution}{flow}"
