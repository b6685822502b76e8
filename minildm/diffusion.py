"""The forward (noising) process of a diffusion model, its posterior, and the training loss.

Latent diffusion (Rombach et al. 2022, Sec. 3.2) runs the DDPM of Ho et al. (2020) on autoencoder
latents z instead of pixels; nothing in this file knows which one it is given, so we write x for both.

    forward chain      q(x_t | x_{t-1}) = N(√(1−β_t)·x_{t−1}, β_t·I)            t = 0 … T−1
    closed form        q(x_t | x_0)     = N(√ᾱ_t·x_0, (1−ᾱ_t)·I),   ᾱ_t = Π_{s≤t} (1−β_s)
    posterior          q(x_{t−1} | x_t, x_0) = N(μ̃_t(x_t, x_0), β̃_t·I)        (DDPM Eq. 6–7)
    objective          L_simple = E_{t, x_0, ε} ‖target − model(x_t, t, y)‖²      (LDM Eq. 1–2)

Timesteps are 0-based as in the reference code: t = 0 is the first (least noisy) step and ᾱ_{−1} := 1
means "clean data".

Precision: the schedule tables (β, ᾱ, posterior coefficients, T numbers each) are computed and kept in
float64 on the CPU. Each use gathers the entries for the batch's t and casts only the *result* to the
input's dtype and device, so quantities like 1 − ᾱ_t near t = 0 or √(1 − ᾱ_{t−1} − σ²) never suffer
float32 cancellation (and MPS, which has no float64, still works).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .utils import randint, randn

__all__ = ["GaussianDiffusion", "make_beta_schedule", "moment_z_scores", "SCHEDULES", "PREDICTION_TYPES", "ModelFn"]

SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")

# model_fn(x_t: (B, C, h, w), t: (B,) int64, cond) -> (B, C, h, w); cond is None, a tensor or a dict.
ModelFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


# --- Noise schedules β_t ------------------------------------------------------------------------------------
def make_beta_schedule(
    schedule: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02, cosine_s: float = 0.008
) -> torch.Tensor:
    """β_1 … β_T as a float64 tensor (DDPM Sec. 4 linear; LDM "scaled_linear"; Nichol & Dhariwal 2021 cosine).

    Naming trap: the LDM reference code calls `scaled_linear` "linear" (it is linear in √β) and calls the
    plain DDPM schedule "sqrt_linear". minildm follows diffusers' names, which say what they compute:
        linear          β_t = linspace(β_start, β_end, T)                 pixel DDPM: 1e-4 → 0.02
        scaled_linear   β_t = linspace(√β_start, √β_end, T)²              LDM: 0.0015 → 0.0195
        cosine          ᾱ(t) = cos²(π/2 · (t/T + s)/(1 + s)),  β_t = 1 − ᾱ(t)/ᾱ(t−1) clipped at 0.999
    (`beta_start`/`beta_end` are ignored by `cosine`.)
    """
    if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
        raise ValueError(f"timesteps must be a positive int (the paper uses T = 1000), got {timesteps!r}")
    if schedule in ("linear", "scaled_linear") and not (0 < beta_start < beta_end < 1):
        raise ValueError(
            f"need 0 < beta_start < beta_end < 1, got beta_start={beta_start}, beta_end={beta_end} "
            f"(LDM uses 0.0015 → 0.0195, pixel DDPM 1e-4 → 0.02)"
        )
    if schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2
    elif schedule == "cosine":
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2  # ᾱ(t) up to a constant
        alpha_bar = f / f[0]
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    else:
        raise ValueError(
            f"unknown noise schedule {schedule!r}; expected one of {SCHEDULES} "
            f"(the LDM reference's 'linear' is minildm's 'scaled_linear')"
        )
    return betas


# --- The forward process and its posterior ------------------------------------------------------------------
class GaussianDiffusion:
    """Schedule tables plus the closed-form maps of a Gaussian diffusion (DDPM Sec. 2; LDM Sec. 3.2)."""

    def __init__(
        self,
        schedule: str = "scaled_linear",
        timesteps: int = 1000,
        beta_start: float = 0.0015,
        beta_end: float = 0.0195,
        prediction_type: str = "epsilon",
    ) -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES} "
                f"(ε-, x0- or v-parameterization)"
            )
        self.schedule, self.prediction_type = schedule, prediction_type
        self.beta_start, self.beta_end = beta_start, beta_end
        self.num_timesteps = timesteps                                      # T

        betas = make_beta_schedule(schedule, timesteps, beta_start, beta_end)  # float64, (T,)
        alphas = 1.0 - betas                                                # α_t = 1 − β_t
        alpha_bar = torch.cumprod(alphas, dim=0)                            # ᾱ_t = Π_{s≤t} α_s
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])  # ᾱ_{t−1}, ᾱ_{−1} = 1
        self.betas, self.alphas = betas, alphas
        self.sqrt_betas, self.sqrt_alphas = betas.sqrt(), alphas.sqrt()    # √β_t, √(1−β_t): one chain step
        self.alpha_bar, self.alpha_bar_prev = alpha_bar, alpha_bar_prev
        self.sqrt_alpha_bar = alpha_bar.sqrt()                              # √ᾱ_t
        self.one_minus_alpha_bar = 1.0 - alpha_bar                          # 1 − ᾱ_t
        self.sqrt_one_minus_alpha_bar = self.one_minus_alpha_bar.sqrt()     # √(1−ᾱ_t)
        # β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t); β̃_0 = 0, so its log is clipped at 1e-20
        self.posterior_variance = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        self.posterior_log_variance_clipped = self.posterior_variance.clamp(min=1e-20).log()
        # μ̃_t = β_t √ᾱ_{t−1} / (1 − ᾱ_t) · x_0  +  (1 − ᾱ_{t−1}) √α_t / (1 − ᾱ_t) · x_t
        self.posterior_mean_coef1 = betas * alpha_bar_prev.sqrt() / (1.0 - alpha_bar)
        self.posterior_mean_coef2 = (1.0 - alpha_bar_prev) * alphas.sqrt() / (1.0 - alpha_bar)
        self._cache: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg: Any) -> "GaussianDiffusion":
        """Build from anything with schedule/timesteps/beta_start/beta_end/prediction_type (e.g. LDMConfig)."""
        return cls(cfg.schedule, cfg.timesteps, cfg.beta_start, cfg.beta_end, cfg.prediction_type)

    def config(self) -> dict:
        """The constructor arguments, for storing inside checkpoints."""
        return dict(schedule=self.schedule, timesteps=self.num_timesteps, beta_start=self.beta_start,
                    beta_end=self.beta_end, prediction_type=self.prediction_type)

    def __repr__(self) -> str:
        return "GaussianDiffusion(" + ", ".join(f"{k}={v!r}" for k, v in self.config().items()) + ")"

    # ---- gathering per-sample coefficients -------------------------------------------------------
    def check_timesteps(self, t: torch.Tensor | int, batch: int, device: torch.device | str) -> torch.Tensor:
        """t as a (B,) int64 tensor on `device`; an int is broadcast; out-of-range values are an error.

        Checking a GPU tensor's range costs one device sync; the samplers pass Python ints, which cost none.
        """
        T = self.num_timesteps
        if isinstance(t, int) and not isinstance(t, bool):
            if not 0 <= t < T:
                raise ValueError(f"timestep must lie in [0, {T - 1}] (0-based, T = {T}), got {t}")
            return torch.full((batch,), t, dtype=torch.long, device=device)
        if not isinstance(t, torch.Tensor) or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"t must be an int or an integer tensor of timesteps in [0, {T - 1}], got {t!r}; "
                            f"use torch.randint(0, T, (B,))")
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must have shape ({batch},) (one timestep per batch element), got {tuple(t.shape)}")
        if batch > 0:
            t_min, t_max = int(t.min()), int(t.max())
            if t_min < 0 or t_max >= T:
                raise ValueError(f"timesteps must lie in [0, {T - 1}] (0-based, T = {T}), "
                                 f"got values in [{t_min}, {t_max}]")
        return t.to(device=device, dtype=torch.long)

    def _table(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """table[t] for a *checked* t, reshaped to (B, 1, 1, …) and cast to like's dtype and device."""
        key = (name, like.device, like.dtype)
        if key not in self._cache:  # the float64 CPU table, cast once per (device, dtype)
            self._cache[key] = getattr(self, name).to(device=like.device, dtype=like.dtype)
        return self._cache[key][t].reshape(-1, *([1] * (like.ndim - 1)))

    def coefficient(self, name: str, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """A schedule table (e.g. "alpha_bar", "posterior_variance") at t, shaped (B, 1, 1, …) to broadcast."""
        if not isinstance(getattr(self, name, None), torch.Tensor) or name.startswith("_"):
            raise ValueError(f"unknown schedule table {name!r}; try 'alpha_bar', 'betas', 'sqrt_alpha_bar', "
                             f"'sqrt_one_minus_alpha_bar' or 'posterior_variance'")
        return self._table(name, self.check_timesteps(t, like.shape[0], like.device), like)

    # ---- q(x_t | x_0) ------------------------------------------------------------------------------
    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean √ᾱ_t·x_0 and variance (1−ᾱ_t) of q(x_t | x_0) (DDPM Eq. 4)."""
        t = self.check_timesteps(t, x0.shape[0], x0.device)
        mean = self._table("sqrt_alpha_bar", t, x0) * x0
        var = self._table("one_minus_alpha_bar", t, x0).expand_as(x0)
        return mean, var

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Sample q(x_t | x_0): x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε (DDPM Eq. 4; diffusers' `add_noise`)."""
        _check_same_shape(x0=x0, noise=noise)
        return self._add_noise(x0, noise, self.check_timesteps(t, x0.shape[0], x0.device))

    def _add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """add_noise for a checked t (no range check, so no device sync on a GPU)."""
        return self._table("sqrt_alpha_bar", t, x0) * x0 + self._table("sqrt_one_minus_alpha_bar", t, x0) * noise

    # ---- q(x_{t−1} | x_t, x_0) ---------------------------------------------------------------------
    def posterior_mean_variance(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean μ̃_t, variance β̃_t and clipped log β̃_t of q(x_{t−1} | x_t, x_0) (DDPM Eq. 6–7)."""
        _check_same_shape(x0=x0, x_t=x_t)
        t = self.check_timesteps(t, x_t.shape[0], x_t.device)
        # μ̃_t = β_t √ᾱ_{t−1}/(1−ᾱ_t)·x_0 + (1−ᾱ_{t−1}) √α_t/(1−ᾱ_t)·x_t
        mean = self._table("posterior_mean_coef1", t, x_t) * x0 + self._table("posterior_mean_coef2", t, x_t) * x_t
        var = self._table("posterior_variance", t, x_t).expand_as(x_t)                   # β̃_t
        log_var = self._table("posterior_log_variance_clipped", t, x_t).expand_as(x_t)   # log max(β̃_t, 1e-20)
        return mean, var, log_var

    # ---- the three parameterizations -------------------------------------------------------------
    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor) -> torch.Tensor:
        """x̂_0 = (x_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t (DDPM Eq. 15)."""
        _check_same_shape(x_t=x_t, eps=eps)
        t = self.check_timesteps(t, x_t.shape[0], x_t.device)
        return (x_t - self._table("sqrt_one_minus_alpha_bar", t, x_t) * eps) / self._table("sqrt_alpha_bar", t, x_t)

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor | int, x0: torch.Tensor) -> torch.Tensor:
        """ε̂ = (x_t − √ᾱ_t·x̂_0) / √(1−ᾱ_t) (DDPM Eq. 4 solved for ε)."""
        _check_same_shape(x_t=x_t, x0=x0)
        t = self.check_timesteps(t, x_t.shape[0], x_t.device)
        return (x_t - self._table("sqrt_alpha_bar", t, x_t) * x0) / self._table("sqrt_one_minus_alpha_bar", t, x_t)

    def get_velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 (Salimans & Ho 2022, progressive distillation, Sec. 4)."""
        _check_same_shape(x0=x0, noise=noise)
        t = self.check_timesteps(t, x0.shape[0], x0.device)
        return self._table("sqrt_alpha_bar", t, x0) * noise - self._table("sqrt_one_minus_alpha_bar", t, x0) * x0

    def predict_x0_and_eps(
        self, x_t: torch.Tensor, t: torch.Tensor | int, model_output: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_0, ε̂) from the model output under this `prediction_type` (ε, x_0 or v)."""
        _check_same_shape(x_t=x_t, model_output=model_output)
        t = self.check_timesteps(t, x_t.shape[0], x_t.device)
        a, b = self._table("sqrt_alpha_bar", t, x_t), self._table("sqrt_one_minus_alpha_bar", t, x_t)
        if self.prediction_type == "epsilon":
            eps = model_output
            return (x_t - b * eps) / a, eps                  # x̂_0 = (x_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t
        if self.prediction_type == "sample":
            x0 = model_output
            return x0, (x_t - a * x0) / b                    # ε̂ = (x_t − √ᾱ_t·x̂_0) / √(1−ᾱ_t)
        # x̂_0 = √ᾱ_t·x_t − √(1−ᾱ_t)·v̂,   ε̂ = √(1−ᾱ_t)·x_t + √ᾱ_t·v̂
        v = model_output
        return a * x_t - b * v, b * x_t + a * v

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """What the network regresses on: ε (epsilon), x_0 (sample) or v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 (v_prediction)."""
        _check_same_shape(x0=x0, noise=noise)
        return self._target(x0, noise, self.check_timesteps(t, x0.shape[0], x0.device))

    def _target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """training_target for a checked t (no range check, so no device sync on a GPU)."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        return self._table("sqrt_alpha_bar", t, x0) * noise - self._table("sqrt_one_minus_alpha_bar", t, x0) * x0

    def snr(self, t: torch.Tensor | int) -> torch.Tensor:
        """Signal-to-noise ratio SNR(t) = ᾱ_t / (1 − ᾱ_t) (Kingma et al. 2021, Eq. 2), float64, shaped like t."""
        t_flat = self.check_timesteps(torch.as_tensor(t).reshape(-1), torch.as_tensor(t).numel(), "cpu")
        return (self.alpha_bar[t_flat] / self.one_minus_alpha_bar[t_flat]).reshape(torch.as_tensor(t).shape)

    def timestep_at_snr(self, snr: float = 1.0) -> int:
        """The first t with SNR(t) ≤ `snr` (SNR falls with t): where noise starts to outweigh the signal.

        snr = 1 is log-SNR = 0, the step at which x_t holds as much signal variance ᾱ_t as noise 1 − ᾱ_t.
        """
        all_snr = self.alpha_bar / self.one_minus_alpha_bar                       # (T,), decreasing
        below = (all_snr <= snr).nonzero()
        if not snr > 0 or len(below) == 0:
            raise ValueError(f"SNR never falls to {snr} on this schedule (it ends at {float(all_snr[-1]):.3g}); "
                             f"pick a level between {float(all_snr[-1]):.3g} and {float(all_snr[0]):.3g}")
        return int(below[0])

    # ---- the chain q(x_t | x_{t−1}) that the closed form summarizes -------------------------------
    def q_step(self, x_prev: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """One step of the forward chain: x_t = √(1−β_t)·x_{t−1} + √β_t·ε (DDPM Eq. 2; x_{−1} is x_0)."""
        _check_same_shape(x_prev=x_prev, noise=noise)
        t = self.check_timesteps(t, x_prev.shape[0], x_prev.device)
        return self._table("sqrt_alphas", t, x_prev) * x_prev + self._table("sqrt_betas", t, x_prev) * noise

    def iterate_chain(self, x0: torch.Tensor, t: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_t drawn the slow way: t + 1 steps of `q_step` from x_0 with fresh noise each (steps 0 … t).

        In distribution it equals `add_noise(x0, ε, t)` (the closed form, DDPM Eq. 4): notebook 03 checks that
        on many samples. Costs t + 1 noise draws instead of one.
        """
        t = int(self.check_timesteps(t, 1, "cpu")[0])
        x = x0.clone()
        for s in range(t + 1):   # x_s = √(1−β_s)·x_{s−1} + √β_s·ε, as q_step, with scalar factors and in place
            noise = randn(x0.shape, generator, x0.device, x0.dtype)
            x.mul_(float(self.sqrt_alphas[s])).add_(noise, alpha=float(self.sqrt_betas[s]))
        return x

    def chain_moments(self, t: int) -> tuple[float, float]:
        """(mean coefficient m_t, variance v_t) of x_t given x_0 by pushing moments through the chain, float64:
        m_s = √(1−β_s)·m_{s−1}, v_s = (1−β_s)·v_{s−1} + β_s, from m = 1, v = 0. The closed form says
        m_t = √ᾱ_t and v_t = 1 − ᾱ_t exactly (up to float64 rounding)."""
        t = int(self.check_timesteps(t, 1, "cpu")[0])
        m, v = 1.0, 0.0
        for s in range(t + 1):
            b = float(self.betas[s])
            m, v = math.sqrt(1.0 - b) * m, (1.0 - b) * v + b                     # Var(a·x + √b·ε) = a²·Var(x) + b
        return m, v

    # ---- what is left of x_0 at step t ---------------------------------------------------------------
    def ideal_observer_accuracy(self, x_a: torch.Tensor, x_b: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """How well the best possible test tells q(x_t | x_a) from q(x_t | x_b), given one x_t: (B,) in [0.5, 1].

        Both are Gaussians with the same covariance (1 − ᾱ_t)·I, so the likelihood-ratio test is optimal and
        its accuracy (equal priors) is Φ(d′/2) with d′ = √ᾱ_t·‖x_a − x_b‖ / √(1 − ᾱ_t) = √SNR_t·‖x_a − x_b‖.
        Two images (or latents) that differ in one object: when the accuracy nears 0.5 the object is gone
        from x_t for any denoiser, however good.
        """
        _check_same_shape(x_a=x_a, x_b=x_b)
        t = self.check_timesteps(t, x_a.shape[0], "cpu")
        dist = (x_a.double() - x_b.double()).flatten(1).norm(dim=1).cpu()                # ‖x_a − x_b‖, (B,)
        d_prime = (self.alpha_bar[t] / self.one_minus_alpha_bar[t]).sqrt() * dist         # √SNR_t·‖Δ‖
        return 0.5 * (1 + torch.erf(d_prime / 2 / math.sqrt(2)))                          # Φ(d′/2)

    def _kind_and_steps(self, t: torch.Tensor | int, prediction_type: str | None) -> tuple[str, torch.Tensor]:
        """The prediction type (default: this schedule's) checked, and t as checked flat CPU indices."""
        kind = self.prediction_type if prediction_type is None else prediction_type
        if kind not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {kind!r}; expected one of {PREDICTION_TYPES}")
        return kind, self.check_timesteps(torch.as_tensor(t).reshape(-1), torch.as_tensor(t).numel(), "cpu")

    def target_coefficients(self, t: torch.Tensor | int, prediction_type: str | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_t, b_t), float64, with target = a_t·x_0 + b_t·ε: ε → (0, 1), x_0 → (1, 0),
        v → (−√(1−ᾱ_t), √ᾱ_t). For unit-variance x_0 and ε, a_t/√(a_t² + b_t²) is how much of x_0 the target holds."""
        kind, t_flat = self._kind_and_steps(t, prediction_type)
        ones, zeros = torch.ones(len(t_flat), dtype=torch.float64), torch.zeros(len(t_flat), dtype=torch.float64)
        if kind == "epsilon":
            return zeros, ones
        if kind == "sample":
            return ones, zeros
        return -self.sqrt_one_minus_alpha_bar[t_flat], self.sqrt_alpha_bar[t_flat]

    def x0_error_gain(self, t: torch.Tensor | int, prediction_type: str | None = None) -> torch.Tensor:
        """By how much an error δ in the model output grows in x̂_0 (float64, per t): ε → √(1−ᾱ_t)/√ᾱ_t = 1/√SNR_t
        (huge at high noise), x_0 → 1, v → √(1−ᾱ_t) ≤ 1. From x̂_0 = (x_t − √(1−ᾱ)ε̂)/√ᾱ = √ᾱ·x_t − √(1−ᾱ)·v̂."""
        kind, t_flat = self._kind_and_steps(t, prediction_type)
        if kind == "epsilon":
            return self.sqrt_one_minus_alpha_bar[t_flat] / self.sqrt_alpha_bar[t_flat]
        if kind == "sample":
            return torch.ones(len(t_flat), dtype=torch.float64)
        return self.sqrt_one_minus_alpha_bar[t_flat].clone()

    # ---- training ----------------------------------------------------------------------------------
    def draw_timesteps(self, batch: int, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
        """t ~ Uniform{0, …, T−1} for a batch: in range by construction, drawn on the generator's device."""
        return randint(self.num_timesteps, (batch,), generator, device)

    def training_loss(
        self,
        model_fn: ModelFn,
        x0: torch.Tensor,
        cond: Any = None,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        reduction: str = "mean",
        weighting: str = "simple",
        min_snr_gamma: float = 5.0,
    ) -> torch.Tensor:
        """L_simple = ‖target − model(x_t, t, y)‖², t ~ U{0 … T−1}, ε ~ N(0, I) (DDPM Eq. 14; LDM Eq. 2).

        `reduction="mean"` gives the scalar loss; `"none"` the per-sample loss (B,) (mean over C, h, w),
        handy for plotting the loss against t. t and ε are drawn with `generator` when not given.

        `weighting="min_snr"` multiplies each sample's loss by min(SNR_t, γ)/SNR_t (for ε; the v and x0 forms
        are adjusted accordingly) — Min-SNR-γ (Hang et al. 2023), a minildm option, not in the paper: it stops
        the many easy low-noise steps from dominating, so the high-noise steps that decide the layout
        ("where is the object?") get their share of the gradient. "simple" is the paper's L_simple.
        """
        if weighting not in ("simple", "min_snr"):
            raise ValueError(f"weighting must be 'simple' (L_simple) or 'min_snr', got {weighting!r}")
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        batch = x0.shape[0]
        if t is None:
            t = self.draw_timesteps(batch, generator, x0.device)
        else:
            t = self.check_timesteps(t, batch, x0.device)
        if noise is None:
            noise = randn(x0.shape, generator, x0.device, x0.dtype)                   # ε ~ N(0, I)
        _check_same_shape(x0=x0, noise=noise)
        x_t = self._add_noise(x0, noise, t)                                            # x_t ~ q(x_t | x_0)
        output = model_fn(x_t, t, cond)
        target = self._target(x0, noise, t)                                            # ε, x_0 or v
        if output.shape != target.shape:
            raise ValueError(f"model output has shape {tuple(output.shape)} but the {self.prediction_type} target "
                             f"has shape {tuple(target.shape)}; the U-Net must return as many channels as it gets")
        loss = F.mse_loss(output.float(), target.float(), reduction="none").flatten(1).mean(1)   # (B,)
        if weighting == "min_snr":
            snr = self.snr(t).to(loss.device, torch.float32)                          # ᾱ_t / (1 − ᾱ_t)
            clipped = snr.clamp(max=min_snr_gamma)                                     # min(SNR, γ)
            w = {"epsilon": clipped / snr, "sample": clipped, "v_prediction": clipped / (snr + 1)}
            loss = loss * w[self.prediction_type]
        return loss.mean() if reduction == "mean" else loss


def moment_z_scores(samples: torch.Tensor, mean: torch.Tensor | float, var: torch.Tensor | float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """How far the sample moments of `samples` (n, …) lie from a Gaussian's mean and variance, in standard errors.

    z_mean = (m̂ − μ) / √(σ²/n) and z_var = (σ̂² − σ²) / (σ²·√(2/(n−1))), elementwise over the trailing dims
    (the standard errors of a Gaussian sample's mean and variance). If the samples do come from N(μ, σ²),
    each z is roughly N(0, 1): |z| > 5 happens about once in 1.7 million.
    """
    n = samples.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 samples (along the first dimension) to estimate a variance, got {n}")
    x = samples.double()
    mean = torch.as_tensor(mean, dtype=torch.float64, device=x.device)
    var = torch.as_tensor(var, dtype=torch.float64, device=x.device)
    if bool((var <= 0).any()):
        raise ValueError("the expected variance must be positive (at t = 0 it is β_0 > 0; never pass 0)")
    z_mean = (x.mean(0) - mean) / (var / n).sqrt()                                  # (m̂ − μ) / (σ/√n)
    z_var = (x.var(0) - var) / (var * math.sqrt(2.0 / (n - 1)))                     # (σ̂² − σ²) / (σ²√(2/(n−1)))
    return z_mean, z_var


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(x.shape) for name, x in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"these tensors must have the same shape, got {shapes}")
