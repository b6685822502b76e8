"""Measuring the diffusion process: the chain against its closed form, what is left of x0 at step t, errors by
timestep and of inversion.

The instruments of notebooks 03, 05 and 06. Each takes the diffusion (GaussianDiffusion) or the model
(LatentDiffusion) as its first argument and recomputes a quantity the paper's formulas predict:

    the chain        chain_moments, iterate_chain, moment_z_scores: q(x_t | x_{t−1}) iterated t + 1 times is
                     the closed form N(√ᾱ_t·x_0, (1−ᾱ_t)·I), by moments and by sampling
    the signal left  timestep_at_snr, ideal_observer_accuracy, target_coefficients, x0_error_gain
    the model        loss_by_timestep (L_simple at fixed t), inversion_error (DDIM⁻¹ then DDIM)
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..diffusion import GaussianDiffusion
from ..ldm import LatentDiffusion
from ..utils import randn

__all__ = ["chain_moments", "iterate_chain", "moment_z_scores", "timestep_at_snr", "ideal_observer_accuracy",
           "target_coefficients", "x0_error_gain", "loss_by_timestep", "inversion_error"]


# ---- the chain q(x_t | x_{t−1}) against the closed form q(x_t | x_0) ----------------------------------------
def chain_moments(diffusion: GaussianDiffusion, t: int) -> tuple[float, float]:
    """(mean coefficient m_t, variance v_t) of x_t given x_0 by pushing moments through the chain, float64:
    m_s = √(1−β_s)·m_{s−1}, v_s = (1−β_s)·v_{s−1} + β_s, from m = 1, v = 0. The closed form says
    m_t = √ᾱ_t and v_t = 1 − ᾱ_t exactly (up to float64 rounding)."""
    m, v = 1.0, 0.0
    for s in range(t + 1):
        b = float(diffusion.betas[s])
        m, v = math.sqrt(1.0 - b) * m, (1.0 - b) * v + b                     # Var(a·x + √b·ε) = a²·Var(x) + b
    return m, v


def iterate_chain(diffusion: GaussianDiffusion, x0: torch.Tensor, t: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """x_t drawn the slow way: t + 1 steps of the forward chain q(x_s | x_{s−1}) (DDPM Eq. 2) from x_0, with fresh
    noise each (steps 0 … t).

    In distribution it equals `diffusion.add_noise(x0, ε, t)` (the closed form, DDPM Eq. 4): notebook 03 checks
    that on many samples. Costs t + 1 noise draws instead of one.
    """
    x = x0.clone()
    for s in range(t + 1):   # x_s = √(1−β_s)·x_{s−1} + √β_s·ε, with scalar factors and in place
        noise = randn(x0.shape, generator, x0.device, x0.dtype)
        x.mul_(float(diffusion.sqrt_alphas[s])).add_(noise, alpha=float(diffusion.sqrt_betas[s]))
    return x


def moment_z_scores(samples: torch.Tensor, mean: torch.Tensor | float, var: torch.Tensor | float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """How far the sample moments of `samples` (n ≥ 2, …) lie from a Gaussian's mean and variance (> 0), in
    standard errors.

    z_mean = (m̂ − μ) / √(σ²/n) and z_var = (σ̂² − σ²) / (σ²·√(2/(n−1))), elementwise over the trailing dims
    (the standard errors of a Gaussian sample's mean and variance). If the samples do come from N(μ, σ²),
    each z is roughly N(0, 1): |z| > 5 happens about once in 1.7 million.
    """
    n = samples.shape[0]
    x = samples.double()
    mean = torch.as_tensor(mean, dtype=torch.float64, device=x.device)
    var = torch.as_tensor(var, dtype=torch.float64, device=x.device)
    z_mean = (x.mean(0) - mean) / (var / n).sqrt()                                  # (m̂ − μ) / (σ/√n)
    z_var = (x.var(0) - var) / (var * math.sqrt(2.0 / (n - 1)))                     # (σ̂² − σ²) / (σ²√(2/(n−1)))
    return z_mean, z_var


# ---- what is left of x_0 at step t ------------------------------------------------------------------------
def timestep_at_snr(diffusion: GaussianDiffusion, snr: float = 1.0) -> int:
    """The first t with SNR(t) ≤ `snr` (SNR falls with t): where noise starts to outweigh the signal.

    snr = 1 is log-SNR = 0, the step at which x_t holds as much signal variance ᾱ_t as noise 1 − ᾱ_t.
    (An IndexError means the schedule never gets that noisy.)
    """
    all_snr = diffusion.alpha_bar / diffusion.one_minus_alpha_bar                 # (T,), decreasing
    return int((all_snr <= snr).nonzero()[0])


def ideal_observer_accuracy(diffusion: GaussianDiffusion, x_a: torch.Tensor, x_b: torch.Tensor,
                            t: torch.Tensor | int) -> torch.Tensor:
    """How well the best possible test tells q(x_t | x_a) from q(x_t | x_b), given one x_t: (B,) in [0.5, 1].

    Both are Gaussians with the same covariance (1 − ᾱ_t)·I, so the likelihood-ratio test is optimal and
    its accuracy (equal priors) is Φ(d′/2) with d′ = √ᾱ_t·‖x_a − x_b‖ / √(1 − ᾱ_t) = √SNR_t·‖x_a − x_b‖.
    Two images (or latents) that differ in one object: when the accuracy nears 0.5 the object is gone
    from x_t for any denoiser, however good.
    """
    t = torch.as_tensor(t).cpu()
    dist = (x_a.double() - x_b.double()).flatten(1).norm(dim=1).cpu()                 # ‖x_a − x_b‖, (B,)
    d_prime = (diffusion.alpha_bar[t] / diffusion.one_minus_alpha_bar[t]).sqrt() * dist  # √SNR_t·‖Δ‖
    return 0.5 * (1 + torch.erf(d_prime / 2 / math.sqrt(2)))                           # Φ(d′/2)


def target_coefficients(diffusion: GaussianDiffusion, t: torch.Tensor | int, prediction_type: str | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(a_t, b_t) per t, float64, with target = a_t·x_0 + b_t·ε: ε → (0, 1), x_0 → (1, 0),
    v → (−√(1−ᾱ_t), √ᾱ_t). For unit-variance x_0 and ε, a_t/√(a_t² + b_t²) is how much of x_0 the target holds.
    `prediction_type` defaults to the diffusion's."""
    t = torch.as_tensor(t).reshape(-1).cpu()
    ones, zeros = torch.ones(len(t), dtype=torch.float64), torch.zeros(len(t), dtype=torch.float64)
    return {"epsilon": (zeros, ones), "sample": (ones, zeros),
            "v_prediction": (-diffusion.sqrt_one_minus_alpha_bar[t], diffusion.sqrt_alpha_bar[t])
            }[prediction_type or diffusion.prediction_type]


def x0_error_gain(diffusion: GaussianDiffusion, t: torch.Tensor | int, prediction_type: str | None = None
                  ) -> torch.Tensor:
    """By how much an error δ in the model output grows in x̂_0 (float64, per t): ε → √(1−ᾱ_t)/√ᾱ_t = 1/√SNR_t
    (huge at high noise), x_0 → 1, v → √(1−ᾱ_t) ≤ 1. From x̂_0 = (x_t − √(1−ᾱ)ε̂)/√ᾱ = √ᾱ·x_t − √(1−ᾱ)·v̂.
    `prediction_type` defaults to the diffusion's."""
    t = torch.as_tensor(t).reshape(-1).cpu()
    return {"epsilon": diffusion.sqrt_one_minus_alpha_bar[t] / diffusion.sqrt_alpha_bar[t],   # 1/√SNR_t
            "sample": torch.ones(len(t), dtype=torch.float64),
            "v_prediction": diffusion.sqrt_one_minus_alpha_bar[t]}[prediction_type or diffusion.prediction_type]


# ---- the model: its loss by timestep, and DDIM inversion ---------------------------------------------------
@torch.no_grad()
def loss_by_timestep(ldm: LatentDiffusion, z0: torch.Tensor, raw: torch.Tensor | None, timesteps: Sequence[int],
                     noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """L_simple at each given t, averaged over the batch of scaled latents z0 (`ldm.encode(images)`) under their
    conditions `raw`: (len(timesteps),) float32 on the CPU.

    The same noise ε is used at every t (so the curve shows t, not the luck of the draw), and the condition
    is never dropped: this is the loss of the conditional model, in its current mode (call .eval() first
    to measure the sampling model)."""
    if noise is None:
        noise = randn(z0.shape, generator, z0.device, z0.dtype)                     # ε ~ N(0, I)
    cond = ldm.encode_condition(raw, tuple(z0.shape[-2:]))
    losses = []
    for t in timesteps:
        per_sample = ldm.diffusion.training_loss(ldm.model_fn, z0, cond, t=int(t), noise=noise,
                                                 reduction="none")                  # (B,) ‖target − out‖²
        losses.append(per_sample.mean().float().cpu())
    return torch.stack(losses)


@torch.no_grad()
def inversion_error(ldm: LatentDiffusion, z0: torch.Tensor, raw: torch.Tensor | None = None,
                    steps: int = 50) -> float:
    """‖DDIM(DDIM⁻¹(z0)) − z0‖² / ‖z0‖²: how well S-step inversion followed by S-step sampling (η = 0, no
    guidance) returns the latents it started from (0 = perfectly)."""
    x_T = ldm.invert(z0, raw, steps)
    z_back = ldm.sample(raw, num_samples=None if raw is not None else z0.shape[0], steps=steps,
                        guidance_scale=1.0, x_T=x_T, decode=False,
                        resolution=z0.shape[-1] * ldm.autoencoder.downsample_factor)
    return float((z_back - z0).pow(2).sum() / z0.pow(2).sum())
