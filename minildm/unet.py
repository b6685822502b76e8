"""The denoising U-Net ε_θ(z_t, t, τ_θ(y)) of latent diffusion (LDM Sec. 3.2–3.3, App. E; after the reference).

    z_t (B, c, h, w) ─ conv_in ─┬─ [ResBlock (+SpatialTransformer)] × n ─ Downsample ─ … ─┐
                                │              skips ↓                                  middle: Res, ST, Res
    ε̂  (B, c, h, w) ← conv_out ─┴─ [ResBlock(cat skip) (+SpatialTransformer)] × (n+1) ─ Upsample ─ … ─┘

The step t enters every ResBlock through a sinusoidal embedding → MLP (4× width); a class label is added
to that embedding; a context sequence τ_θ(y) (text or layout tokens) enters through cross-attention in
each SpatialTransformer; image-like conditions (low-res images, maps) are concatenated to z_t as extra
input channels. Every residual branch ends in a zero-initialized layer and so does the output conv, so at
initialization the U-Net outputs exactly zero and each block starts as the identity.

A class label (LDMConfig.class_route "time", ADM's) indexes a table of `num_classes + 1` rows, the last the
null class of classifier-free guidance; the paper's route ("crossattn", conditioning.ClassToken) is a context token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .nn import CrossAttention, Upsample, check_attention_factors, group_norm32, timestep_embedding, zero_module

__all__ = ["UNet", "ResBlock", "Downsample", "TransformerBlock", "SpatialTransformer", "GEGLU", "UNetStage",
           "coordinate_grid"]


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))) + W·SiLU(emb); out = skip(x) + conv₀(dropout(SiLU(GN(h)))), conv₀ zero-initialized."""

    def __init__(self, in_channels: int, emb_dim: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm32(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels)
        self.norm2 = group_norm32(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))                      # (B, C_in, H, W) -> (B, C_out, H, W)
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]       # + projected (time + class) embedding
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))        # (B, C_out, H, W), zero at init
        return self.skip(x) + h


class Downsample(nn.Module):
    """3×3 conv with stride 2 (symmetric padding, as in the reference U-Net): (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class GEGLU(nn.Module):
    """GEGLU(x) = (xW + b) ⊙ GELU(xV + c) (Shazeer 2020), the reference transformer's feed-forward gate."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)                    # (B, N, D_in) -> 2 × (B, N, D_out)
        return a * F.gelu(gate)


class TransformerBlock(nn.Module):
    """x += SelfAttn(LN(x)); x += CrossAttn(LN(x), τθ(y)); x += FF(LN(x)) with FF = GEGLU ×4 (LDM Sec. 3.3)."""

    def __init__(self, dim: int, heads: int, context_dim: int | None, dropout: float = 0.0, ff_mult: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = CrossAttention(dim, None, heads)
        # Without a context (unconditional / class / concat models) the block has no cross-attention at all.
        self.norm2 = nn.LayerNorm(dim) if context_dim is not None else None
        self.cross_attn = CrossAttention(dim, context_dim, heads) if context_dim is not None else None
        self.norm3 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(GEGLU(dim, ff_mult * dim), nn.Dropout(dropout), nn.Linear(ff_mult * dim, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                hw: tuple[int, int] | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), hw=hw)                                   # (B, N, D)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm2(x), context, context_mask, hw=hw)       # queries: pixels, keys: tokens
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """GN → 1×1 proj_in → flatten pixels to tokens → transformer blocks → zero-init 1×1 proj_out, + residual."""

    def __init__(self, channels: int, heads: int, context_dim: int | None, depth: int = 1, dropout: float = 0.0):
        super().__init__()
        self.norm = group_norm32(channels)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.blocks = nn.ModuleList(TransformerBlock(channels, heads, context_dim, dropout) for _ in range(depth))
        self.proj_out = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        _, _, h, w = x.shape
        z = self.proj_in(self.norm(x))                                  # (B, C, h, w)
        z = rearrange(z, "b c h w -> b (h w) c")                        # (B, C, h, w) -> (B, h·w, C)
        for block in self.blocks:
            z = block(z, context, context_mask, hw=(h, w))
        z = rearrange(z, "b (h w) c -> b c h w", h=h, w=w)              # (B, h·w, C) -> (B, C, h, w)
        return x + self.proj_out(z)                                     # zero at init: identity block


class UNetStage(nn.ModuleList):
    """A sequence of U-Net layers; each gets what it needs (ResBlock: emb, SpatialTransformer: context)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, context_mask)
            else:
                x = layer(x)
        return x


class UNet(nn.Module):
    """ε_θ(z_t, t, y): the LDM denoising U-Net with ResBlocks and SpatialTransformers (LDM Sec. 3.3, App. E).

    attention_resolutions are downsampling factors, not pixel sizes; the middle block always has attention.
    Conditioning, any combination:
      num_classes     class label y ∈ {0..num_classes} (num_classes = null class), added to the time embedding;
      context_dim     cross-attention on context (B, L, context_dim) with context_mask (B, L), True = real token;
      concat_channels extra input channels concatenated to z_t (low-res image, segmentation map, …).

    coord_channels=True appends two channels holding each latent pixel's (x, y) in [−1, 1] to the input
    (CoordConv, Liu et al. 2018) — a minildm addition, not in the reference. Convolutions and attention
    are (nearly) translation-equivariant, so a plain U-Net learns *where* something is only from border
    effects, slowly; Shapes captions name absolute positions ("in the top left"), and with the coordinates
    the cross-attention queries know where they are from the first step.
    """

    def __init__(self, in_channels: int, out_channels: int, model_channels: int, channel_mult: tuple[int, ...] = (1, 2),
                 num_res_blocks: int = 1, attention_resolutions: tuple[int, ...] = (1, 2), num_heads: int = 4,
                 context_dim: int | None = None, num_classes: int | None = None, concat_channels: int = 0,
                 dropout: float = 0.0, coord_channels: bool = False):
        super().__init__()
        channel_mult, attention_resolutions = tuple(channel_mult), tuple(attention_resolutions)
        check_attention_factors(len(channel_mult), attention_resolutions, "attention_resolutions")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.model_channels, self.channel_mult = model_channels, channel_mult
        self.context_dim, self.num_classes, self.concat_channels = context_dim, num_classes, concat_channels
        self.coord_channels = coord_channels

        # Time (and class) embedding: sinusoid(t) -> Linear -> SiLU -> Linear, width 4·model_channels.
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None

        def attention(ch: int) -> SpatialTransformer:
            return SpatialTransformer(ch, num_heads, context_dim, dropout=dropout)

        # Down path. `skip_channels` remembers the width of every output that the up path concatenates.
        ch = model_channels
        extra = concat_channels + (2 if coord_channels else 0)
        self.input_blocks = nn.ModuleList([UNetStage([nn.Conv2d(in_channels + extra, ch, 3, padding=1)])])
        skip_channels, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * model_channels, dropout)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(attention(ch))
                self.input_blocks.append(UNetStage(layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(UNetStage([Downsample(ch)]))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = UNetStage([ResBlock(ch, emb_dim, ch, dropout), attention(ch),
                                       ResBlock(ch, emb_dim, ch, dropout)])

        # Up path: num_res_blocks + 1 ResBlocks per level, each eating one skip connection.
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb_dim, mult * model_channels, dropout)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(attention(ch))
                if level != 0 and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(UNetStage(layers))

        self.out = nn.Sequential(group_norm32(ch), nn.SiLU(), zero_module(nn.Conv2d(ch, out_channels, 3, padding=1)))

    @classmethod
    def from_config(cls, cfg, in_channels: int, out_channels: int | None = None, cross_attention: bool = False,
                    num_classes: int | None = None, concat_channels: int = 0) -> "UNet":
        """Build from an `LDMConfig`; cross_attention=True uses cfg.context_dim as the context width."""
        return cls(in_channels, in_channels if out_channels is None else out_channels, cfg.model_channels,
                   cfg.channel_mult, cfg.num_res_blocks, cfg.attention_resolutions, cfg.num_heads,
                   cfg.context_dim if cross_attention else None, num_classes, concat_channels, cfg.dropout,
                   cfg.coord_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, y: torch.Tensor | None = None,
                concat: torch.Tensor | None = None) -> torch.Tensor:
        """ε̂ = ε_θ(z_t, t, τθ(y)): (B, c, h, w) -> (B, out_channels, h, w).

        t (B,) or one step for the whole batch; y (B,) in 0..num_classes; context (B, L, context_dim) with
        context_mask (B, L), True = real token (each row keeps one); concat (B, concat_channels, h, w); h and w
        multiples of 2^(len(channel_mult) − 1). LatentDiffusion checks what users pass; here they are trusted."""
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0])                    # a scalar step -> (B,)
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(x.dtype))   # (B,) -> (B, 4·mc)
        if self.label_emb is not None:
            emb = emb + self.label_emb(y)                                              # + class embedding
        if concat is not None:
            x = torch.cat([x, concat.to(x.dtype)], dim=1)                              # (B, c + c_concat, h, w)
        if self.coord_channels:
            x = torch.cat([x, coordinate_grid(x)], dim=1)                              # (B, c_in + 2, h, w)

        skips = []
        h = x
        for stage in self.input_blocks:                    # (B, c, h, w) -> … -> (B, mc·mult[-1], h/m, w/m)
            h = stage(h, emb, context, context_mask)
            skips.append(h)
        h = self.middle_block(h, emb, context, context_mask)
        for stage in self.output_blocks:                   # concat skip along channels, back up to (B, mc, h, w)
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, context, context_mask)
        return self.out(h)                                 # (B, mc, h, w) -> (B, out_channels, h, w)


def coordinate_grid(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, h, w): each pixel's (x, y) in [−1, 1] for a batch shaped like x (B, C, h, w) (CoordConv)."""
    B, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), 0)                 # (2, h, w): x, y
    return grid.expand(B, -1, -1, -1)

