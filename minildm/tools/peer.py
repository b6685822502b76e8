"""The peer: diffusers configured to match minildm layer for layer, for `minildm bench` and the tests.

diffusers' blocks are the same design as the reference LDM code, so the same config gives the same layers
and the *same parameter count* for every profile (checked in tests/test_bench.py). Where they still differ:
  * GroupNorm groups: minildm picks groups per width (`nn.num_groups`: 16 ch -> 4, 32 -> 8, 64 -> 16);
    diffusers takes one `norm_num_groups` for the whole network, here the count of the narrowest level.
    Same parameters, same FLOPs up to the normalization statistics.
  * Coordinate channels (`coord_channels`, a minildm addition): our U-Net builds the (x, y) grid in its
    forward; the peer gets 2 more input channels and the grid is concatenated before the call.
  * Our autoencoder's mid-block attention is written out (softmax(QKᵀ/√d)·V); diffusers' uses SDPA.
diffusers is optional (`pip install 'minildm[peer]'`) and imported only here, offline.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any, Callable

import torch

from ..nn import num_groups
from ..samplers import guided_model_output
from ..unet import coordinate_grid

__all__ = ["diffusers_available", "peer_unet", "peer_autoencoder", "peer_scheduler", "peer_ddim_sample",
           "peer_unet_fn"]


def diffusers_available() -> bool:
    return importlib.util.find_spec("diffusers") is not None


def _diffusers():
    """diffusers, imported offline (it never needs the Hub here)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")
    import diffusers
    return diffusers


def _groups_for(widths: tuple[int, ...]) -> int:
    """One GroupNorm group count for all widths: minildm's rule (`nn.num_groups`) at the narrowest level."""
    g = num_groups(min(widths))
    if any(w % g for w in widths):
        g = math.gcd(*widths)
    return g


def peer_unet(cfg, in_channels: int = 4) -> torch.nn.Module:
    """diffusers' UNet2DConditionModel matched to `UNet.from_config(cfg, in_channels, cross_attention=True)`
    (diffusers' up path, like ours, has one more ResBlock per level than layers_per_block; its mid block always
    attends)."""
    diffusers = _diffusers()
    widths = tuple(cfg.model_channels * m for m in cfg.channel_mult)
    attn = [2**i in cfg.attention_resolutions for i in range(len(widths))]
    return diffusers.UNet2DConditionModel(
        in_channels=in_channels + (2 if cfg.coord_channels else 0),
        out_channels=in_channels,
        block_out_channels=widths,
        layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        cross_attention_dim=cfg.context_dim,
        attention_head_dim=cfg.num_heads,          # diffusers' legacy name: this is the number of heads
        norm_num_groups=_groups_for(widths),
        norm_eps=1e-6,
        dropout=cfg.dropout,
    )


def peer_autoencoder(ae_cfg) -> torch.nn.Module:
    """diffusers' AutoencoderKL matched to our `AutoencoderKL(ae_cfg)` (a KL autoencoder with attention in the mid
    block only; the decoder, in both, has one more ResBlock per level)."""
    diffusers = _diffusers()
    widths = tuple(ae_cfg.ch * m for m in ae_cfg.ch_mult)
    return diffusers.AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(widths),
        up_block_types=("UpDecoderBlock2D",) * len(widths),
        block_out_channels=widths,
        layers_per_block=ae_cfg.num_res_blocks,
        latent_channels=ae_cfg.z_channels,
        norm_num_groups=_groups_for(widths),
    )


def peer_scheduler(cfg) -> Any:
    """diffusers' DDIMScheduler set up like our `ddim_sample`: same betas, trailing spacing, ᾱ_prev = 1 at the
    last step, no clipping of x̂_0, the same prediction type. Equal samples only when S divides T (see
    tests/test_bench.py: for other S diffusers steps to t − ⌊T/S⌋ instead of the list's next timestep)."""
    diffusers = _diffusers()
    return diffusers.DDIMScheduler(
        num_train_timesteps=cfg.timesteps, beta_start=cfg.beta_start, beta_end=cfg.beta_end,
        beta_schedule=cfg.schedule, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing",
        prediction_type=cfg.prediction_type)


@torch.no_grad()
def peer_ddim_sample(model_fn: Callable, scheduler: Any, x_T: torch.Tensor, steps: int, cond: Any = None,
                     uncond: Any = None, guidance_scale: float = 1.0) -> torch.Tensor:
    """The DDIM loop through diffusers' scheduler (`set_timesteps`, `step`) with our classifier-free guidance
    (samplers.guided_model_output, one doubled batch); model_fn(x, t, cond) as in samplers.py."""
    scheduler.set_timesteps(steps, device=x_T.device)
    x = x_T
    for t in scheduler.timesteps:
        out = guided_model_output(model_fn, x, t.expand(x.shape[0]), cond, uncond, guidance_scale)
        x = scheduler.step(out, t, x).prev_sample
    return x


def peer_unet_fn(unet: torch.nn.Module, coord_channels: bool) -> Callable:
    """model_fn(x, t, {"context", "context_mask"}) around the diffusers U-Net (mask: True = real token)."""

    def model_fn(x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        if coord_channels:
            x = torch.cat([x, coordinate_grid(x)], dim=1)
        mask = cond.get("context_mask")
        return unet(x, t, encoder_hidden_states=cond["context"],
                    encoder_attention_mask=None if mask is None else mask.to(x.dtype), return_dict=False)[0]

    return model_fn
