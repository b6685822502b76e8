"""Small building blocks shared by the autoencoder and the U-Net: group normalization, zero-initialization, an EMA,
upsampling, the sinusoidal timestep embedding, and attention softmax(QKᵀ/√d)·V (LDM Sec. 3.3) written out and
through PyTorch's fused kernel, with a switch that records every attention layer's maps for visualization.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["num_groups", "check_attention_factors", "group_norm", "group_norm32", "GroupNorm32", "zero_module",
           "EMA", "Upsample", "timestep_embedding", "attention_explicit", "attention_sdpa", "RecordableAttention",
           "CrossAttention", "AttentionMaps", "record_attention"]


def num_groups(channels: int, max_groups: int = 32) -> int:
    """Groups for GroupNorm: the reference's 32 where channels allow it, else the largest divisor ≤ 32
    that leaves at least 4 channels per group (so 16 channels -> 4 groups, 8 -> 2, 3 -> 1).

    The reference always uses 32 groups because its widths are ≥ 128; minildm's small widths need this rule.
    """
    for g in range(max(1, min(max_groups, channels // 4)), 0, -1):
        if channels % g == 0:
            return g
    return 1


def check_attention_factors(levels: int, factors: tuple[int, ...], name: str) -> None:
    """Attention resolutions are downsampling factors (1, 2, 4, ...) of a network with `levels` levels,
    not pixel sizes (the reference's are pixel sizes); anything else is a clear error."""
    valid = [2**i for i in range(levels)]
    if not set(factors) <= set(valid):
        raise ValueError(f"{name} {tuple(factors)} are downsampling factors, not pixel sizes: the levels' are {valid}")


def group_norm(channels: int, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm(num_groups(channels), channels) with the reference's eps = 1e-6, affine."""
    return nn.GroupNorm(num_groups(channels), channels, eps=eps, affine=True)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of `module` and return it: a residual branch that starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class EMA:
    """Exponential moving average of a model's parameters (and a copy of its buffers).

    shadow ← d·shadow + (1 − d)·θ with warm-up d_n = min(decay, (1 + n) / (10 + n)), n = updates made before this
    one (so the first update uses d = 1/10). The reference's LitEma has the same formula but increments its counter
    first, so its first update uses 2/11: one update later along the same curve.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        self.decay, self.warmup, self.num_updates = decay, warmup, 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        n = self.num_updates
        d = min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay
        floats, targets = [], []
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                floats.append(self.shadow[k])
                targets.append(v.detach())
            else:
                self.shadow[k].copy_(v)
        # shadow = d·shadow + (1−d)·θ, i.e. shadow + (1−d)·(θ − shadow): one multi-tensor call for all weights
        # (a per-tensor loop costs ~4 ms per step on the cpu profile's 316 small tensors)
        if floats:
            torch._foreach_lerp_(floats, targets, 1 - d)
        self.num_updates += 1

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow)

    @contextmanager
    def applied_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Run a block with the EMA weights in `model` (e.g. to validate or sample while training); the
        trained weights are put back afterwards, bit for bit."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            model.load_state_dict(backup)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.warmup, self.num_updates = state["decay"], state["warmup"], state["num_updates"]
        device = {k: v.device for k, v in self.shadow.items()}                  # stay beside the model's weights
        self.shadow = {k: v.to(device.get(k, v.device), copy=True) for k, v in state["shadow"].items()}


# --- Normalization in fp32 (the U-Net's ResBlocks): under bf16/fp16 autocast the statistics are still fp32. ---


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back to the input dtype (reference U-Net's GroupNorm32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


def group_norm32(channels: int, eps: float = 1e-6) -> GroupNorm32:
    """Like `group_norm(channels)` (same group rule, eps 1e-6) but always computed in fp32."""
    return GroupNorm32(num_groups(channels), channels, eps=eps, affine=True)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour ×2, then a 3×3 conv (the autoencoder's decoder and the U-Net's up path)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")    # (B, C, H, W) -> (B, C, 2H, 2W)
        return self.conv(x)


# --- Timestep embedding -------------------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor | float | int, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of diffusion steps: [cos(t·ω_i), sin(t·ω_i)], ω_i = exp(−ln(10⁴)·i/half) (DDPM/LDM U-Net).

    t: (B,) or a scalar (integer or continuous steps) -> (B, dim) float32; an odd `dim` gets a zero last column.
    """
    t = torch.as_tensor(t).reshape(-1).float()                                  # (B,)
    half = dim // 2
    i = torch.arange(half, dtype=torch.float32, device=t.device)
    omega = torch.exp(-math.log(max_period) * i / half)                          # ω_i = 10000^(−i/half)
    angles = t[:, None] * omega[None, :]                                         # (B, half)
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)              # (B, 2·half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))                                                 # (B, dim)
    return emb


# --- Attention(Q, K, V) = softmax(QKᵀ/√d)·V   (LDM Sec. 3.3, Vaswani et al. 2017) ---------------------------


def attention_explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(QKᵀ/√d)·V written out (LDM Sec. 3.3); returns (output (B,h,N_q,d), probabilities (B,h,N_q,N_k)).

    mask: (B, N_k) bool, True = real key; masked keys get probability exactly 0. Every row needs one real key.
    The softmax runs in float32 whatever the input dtype.
    """
    d = q.shape[-1]
    scores = torch.einsum("bhid,bhjd->bhij", q, k).float() / math.sqrt(d)   # QKᵀ/√d: (B, h, N_q, N_k)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    probs = scores.softmax(dim=-1)                                       # each row sums to 1 over keys
    out = torch.einsum("bhij,bhjd->bhid", probs.to(v.dtype), v)         # (B, h, N_q, d)
    return out, probs


def attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The same softmax(QKᵀ/√d)·V through torch's fused `scaled_dot_product_attention` (fast; no probabilities)."""
    attn_mask = None if mask is None else mask[:, None, None, :]        # (B, 1, 1, N_k), True = attend
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


class RecordableAttention(nn.Module):
    """An attention layer whose probabilities `record_attention` can capture (a recorder set from outside).

    `attend` runs softmax(QKᵀ/√d)·V: through the fused SDPA kernel when `fused` and nothing records, else
    written out (`attention_explicit`), handing the probabilities to the recorder when one is attached.
    """

    fused = True              # subclasses that must always compute the explicit formula set this to False

    def __init__(self):
        super().__init__()
        self.recorder = None  # set only inside `record_attention`; None = fast path, nothing stored

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, kind: str,
               hw: tuple[int, int] | None) -> torch.Tensor:
        """q (B, h, N_q, d), k, v (B, h, N_k, d) -> (B, h, N_q, d); `kind` ("self"/"cross") and the query
        grid `hw` are only passed on to a recorder."""
        if self.recorder is None and self.fused:
            return attention_sdpa(q, k, v, mask)
        out, probs = attention_explicit(q, k, v, mask)
        if self.recorder is not None:
            self.recorder(kind, probs, hw)
        return out


class CrossAttention(RecordableAttention):
    """Multi-head attention with Q = W_Q·φ(z), K = W_K·τθ(y), V = W_V·τθ(y) (LDM Sec. 3.3, Eq. for cross-attention).

    With `context=None` it is self-attention (K, V from x itself). q/k/v projections have no bias and the
    scale is d_head^(−½), as in the reference.
    """

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 4, dim_head: int | None = None):
        super().__init__()
        dim_head = query_dim // heads if dim_head is None else dim_head
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.context_dim = query_dim if context_dim is None else context_dim
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(self.context_dim, inner, bias=False)
        self.to_v = nn.Linear(self.context_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                hw: tuple[int, int] | None = None) -> torch.Tensor:
        """x (B, N_q, query_dim), context (B, N_k, context_dim) or None, mask (B, N_k) bool -> (B, N_q, query_dim);
        `hw`: the query grid (h, w), N_q = h·w, for an attention recorder."""
        kind = "self" if context is None else "cross"
        ctx = x if context is None else context
        h = self.heads
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=h)      # (B, N_q, h·d) -> (B, h, N_q, d)
        k = rearrange(self.to_k(ctx), "b n (h d) -> b h n d", h=h)    # (B, N_k, h·d) -> (B, h, N_k, d)
        v = rearrange(self.to_v(ctx), "b n (h d) -> b h n d", h=h)
        out = self.attend(q, k, v, mask, kind, hw)
        out = rearrange(out, "b h n d -> b n (h d)")                   # (B, h, N_q, d) -> (B, N_q, h·d)
        return self.to_out(out)                                        # (B, N_q, query_dim)


class AttentionMaps(dict):
    """Recorded attention probabilities: {layer name: (B, heads, N_q, N_k)} (or a list of those per call).

    Names are module paths inside the recorded model, e.g. 'middle_block.1.blocks.0.cross_attn'.
    `kind[name]` is "self" or "cross"; `spatial[name]` is the query grid (h, w) (N_q = h·w) or None for
    token sequences (text encoder).
    """

    def __init__(self):
        super().__init__()
        self.kind: dict[str, str] = {}
        self.spatial: dict[str, tuple[int, int] | None] = {}

    def of_kind(self, kind: str) -> dict:
        """Only the "self" or only the "cross" attention maps."""
        return {name: m for name, m in self.items() if self.kind[name] == kind}


@contextmanager
def record_attention(model: nn.Module, keep: str = "last") -> Iterator[AttentionMaps]:
    """Record the attention probabilities of every attention layer in `model` while the block runs.

        with record_attention(unet) as maps:
            unet(z_t, t, **cond)
        maps["middle_block.1.blocks.0.cross_attn"]   # (B, heads, N_q, N_k), rows sum to 1

    keep="last" stores the latest call of each layer; keep="all" a list of every call (e.g. one per
    sampling step). Maps are detached float32 tensors on the model's device. On exit every layer is put
    back on the fast SDPA path and nothing more is stored.
    """
    maps = AttentionMaps()
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, RecordableAttention)]

    def make_recorder(name: str):
        def recorder(kind: str, probs: torch.Tensor, hw: tuple[int, int] | None) -> None:
            probs = probs.detach().float()
            maps.kind[name], maps.spatial[name] = kind, hw
            if keep == "last":
                maps[name] = probs
            else:
                maps.setdefault(name, []).append(probs)
        return recorder

    previous = [m.recorder for _, m in layers]
    try:
        for name, m in layers:
            m.recorder = make_recorder(name)
        yield maps
    finally:
        for (_, m), prev in zip(layers, previous):
            m.recorder = prev

