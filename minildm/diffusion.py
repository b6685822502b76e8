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

Inputs are checked once, where a schedule is made (`make_beta_schedule`, `GaussianDiffusion(...)`). The maps
trust their arguments: t is an int (shared by the batch) or a (B,) int64 tensor in [0, T−1], and the tensors
they combine have one shape. (The course's instruments that measure this process live in eval/process.py.)

Beyond the paper, `RectifiedFlow` closes the file: the straight path x_t = (1 − t)·x_0 + t·ε from data to noise
that flow matching learns (Liu et al. 2023; Lipman et al. 2023; Stable Diffusion 3, Esser et al. 2024), with the
same U-Net and the same latents. It sits here because it is the same thing, a forward process with its target and
its loss, and ends with how its velocity relates to ε, x_0 and v.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .utils import randint, randn

__all__ = ["GaussianDiffusion", "make_beta_schedule", "SCHEDULES", "PREDICTION_TYPES", "ModelFn", "RectifiedFlow",
           "PROCESSES", "flow_time"]

SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
PROCESSES = ("diffusion", "flow")          # LDMConfig.process: GaussianDiffusion or RectifiedFlow

# model_fn(x_t: (B, C, h, w), t: (B,) int64, cond) -> (B, C, h, w); cond is None, a tensor or a dict.
ModelFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


# --- Noise schedules β_t ------------------------------------------------------------------------------------
def make_beta_schedule(schedule: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02,
                       cosine_s: float = 0.008) -> torch.Tensor:
    """β_1 … β_T as a float64 tensor (DDPM Sec. 4 linear; LDM "scaled_linear"; Nichol & Dhariwal 2021 cosine).

    Naming trap: the LDM reference code calls `scaled_linear` "linear" (it is linear in √β) and calls the
    plain DDPM schedule "sqrt_linear". minildm follows diffusers' names, which say what they compute:
        linear          β_t = linspace(β_start, β_end, T)                 pixel DDPM: 1e-4 → 0.02
        scaled_linear   β_t = linspace(√β_start, √β_end, T)²              LDM: 0.0015 → 0.0195
        cosine          ᾱ(t) = cos²(π/2 · (t/T + s)/(1 + s)),  β_t = 1 − ᾱ(t)/ᾱ(t−1) clipped at 0.999
    (`beta_start`/`beta_end` are ignored by `cosine`.)
    """
    if not isinstance(timesteps, int) or timesteps < 1:
        raise ValueError(f"timesteps must be a positive int (the paper uses T = 1000), got {timesteps!r}")
    if schedule in ("linear", "scaled_linear") and not 0 < beta_start < beta_end < 1:
        raise ValueError(f"need 0 < beta_start < beta_end < 1 (LDM: 0.0015 → 0.0195), got {beta_start} → {beta_end}")
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
        raise ValueError(f"unknown noise schedule {schedule!r}; expected one of {SCHEDULES} "
                         f"(the LDM reference's 'linear' is minildm's 'scaled_linear')")
    return betas


# --- The forward process and its posterior ------------------------------------------------------------------
class GaussianDiffusion:
    """Schedule tables plus the closed-form maps of a Gaussian diffusion (DDPM Sec. 2; LDM Sec. 3.2)."""

    def __init__(self, schedule: str = "scaled_linear", timesteps: int = 1000, beta_start: float = 0.0015,
                 beta_end: float = 0.0195, prediction_type: str = "epsilon") -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")
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
    def coefficient(self, name: str, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """A schedule table (e.g. "alpha_bar", "posterior_variance") at t, shaped (B, 1, 1, …) to broadcast
        against `like` ((1, 1, 1, …) for an int t), in like's dtype and on its device."""
        key = (name, like.device, like.dtype)
        if key not in self._cache:  # the float64 CPU table, cast once per (device, dtype)
            self._cache[key] = getattr(self, name).to(device=like.device, dtype=like.dtype)
        return self._cache[key][t].reshape(-1, *([1] * (like.ndim - 1)))

    # ---- q(x_t | x_0) ------------------------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Sample q(x_t | x_0): x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε (DDPM Eq. 4; diffusers' `add_noise`)."""
        a, b = self.coefficient("sqrt_alpha_bar", t, x0), self.coefficient("sqrt_one_minus_alpha_bar", t, x0)
        return a * x0 + b * noise

    # ---- q(x_{t−1} | x_t, x_0) ---------------------------------------------------------------------
    def posterior_mean_variance(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean μ̃_t, variance β̃_t and clipped log β̃_t of q(x_{t−1} | x_t, x_0) (DDPM Eq. 6–7)."""
        c1, c2 = self.coefficient("posterior_mean_coef1", t, x_t), self.coefficient("posterior_mean_coef2", t, x_t)
        mean = c1 * x0 + c2 * x_t              # μ̃_t = β_t √ᾱ_{t−1}/(1−ᾱ_t)·x_0 + (1−ᾱ_{t−1}) √α_t/(1−ᾱ_t)·x_t
        var = self.coefficient("posterior_variance", t, x_t).expand_as(x_t)                   # β̃_t
        log_var = self.coefficient("posterior_log_variance_clipped", t, x_t).expand_as(x_t)   # log max(β̃_t, 1e-20)
        return mean, var, log_var

    # ---- the three parameterizations -------------------------------------------------------------
    def get_velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 (Salimans & Ho 2022, progressive distillation, Sec. 4)."""
        a, b = self.coefficient("sqrt_alpha_bar", t, x0), self.coefficient("sqrt_one_minus_alpha_bar", t, x0)
        return a * noise - b * x0

    def predict_x0_and_eps(self, x_t: torch.Tensor, t: torch.Tensor | int, model_output: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_0, ε̂) from the model output under this `prediction_type` (ε, x_0 or v)."""
        a, b = self.coefficient("sqrt_alpha_bar", t, x_t), self.coefficient("sqrt_one_minus_alpha_bar", t, x_t)
        if self.prediction_type == "epsilon":
            eps = model_output
            return (x_t - b * eps) / a, eps                  # x̂_0 = (x_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t (DDPM Eq. 15)
        if self.prediction_type == "sample":
            x0 = model_output
            return x0, (x_t - a * x0) / b                    # ε̂ = (x_t − √ᾱ_t·x̂_0) / √(1−ᾱ_t) (Eq. 4 for ε)
        # x̂_0 = √ᾱ_t·x_t − √(1−ᾱ_t)·v̂,   ε̂ = √(1−ᾱ_t)·x_t + √ᾱ_t·v̂
        v = model_output
        return a * x_t - b * v, b * x_t + a * v

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """What the network regresses on: ε (epsilon), x_0 (sample) or v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 (v_prediction)."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        return self.get_velocity(x0, noise, t)

    def snr(self, t: torch.Tensor | int) -> torch.Tensor:
        """Signal-to-noise ratio SNR(t) = ᾱ_t / (1 − ᾱ_t) (Kingma et al. 2021, Eq. 2), float64 on the CPU, shaped
        like t."""
        t = torch.as_tensor(t).cpu()
        return self.alpha_bar[t] / self.one_minus_alpha_bar[t]

    # ---- training ----------------------------------------------------------------------------------
    def draw_timesteps(self, batch: int, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
        """t ~ Uniform{0, …, T−1} for a batch: in range by construction, drawn on the generator's device."""
        return randint(self.num_timesteps, (batch,), generator, device)

    def training_loss(self, model_fn: ModelFn, x0: torch.Tensor, cond: Any = None, t: torch.Tensor | int | None = None,
                      noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                      reduction: str = "mean", weighting: str = "simple", min_snr_gamma: float = 5.0) -> torch.Tensor:
        """L_simple = ‖target − model(x_t, t, y)‖², t ~ U{0 … T−1}, ε ~ N(0, I) (DDPM Eq. 14; LDM Eq. 2).

        `reduction="mean"` gives the scalar loss; `"none"` the per-sample loss (B,) (mean over C, h, w),
        handy for plotting the loss against t. t and ε are drawn with `generator` when not given.

        `weighting="min_snr"` multiplies each sample's loss by min(SNR_t, γ)/SNR_t (for ε; the v and x0 forms
        are adjusted accordingly) — Min-SNR-γ (Hang et al. 2023), a minildm option, not in the paper: it stops
        the many easy low-noise steps from dominating, so the high-noise steps that decide the layout
        ("where is the object?") get their share of the gradient. "simple" is the paper's L_simple.
        """
        if t is None:
            t = self.draw_timesteps(x0.shape[0], generator, x0.device)                  # t ~ U{0, …, T−1}
        elif isinstance(t, int):
            t = torch.full((x0.shape[0],), t, dtype=torch.long, device=x0.device)      # one t for the batch
        if noise is None:
            noise = randn(x0.shape, generator, x0.device, x0.dtype)                   # ε ~ N(0, I)
        x_t = self.add_noise(x0, noise, t)                                             # x_t ~ q(x_t | x_0)
        output = model_fn(x_t, t, cond)
        target = self.training_target(x0, noise, t)                                    # ε, x_0 or v
        loss = F.mse_loss(output.float(), target.float(), reduction="none").flatten(1).mean(1)   # (B,)
        if weighting == "min_snr":
            snr = self.snr(t).to(loss.device, torch.float32)                          # ᾱ_t / (1 − ᾱ_t)
            clipped = snr.clamp(max=min_snr_gamma)                                     # min(SNR, γ)
            w = {"epsilon": clipped / snr, "sample": clipped, "v_prediction": clipped / (snr + 1)}
            loss = loss * w[self.prediction_type]
        return loss.mean() if reduction == "mean" else loss


# --- Beyond the paper: flow matching on the straight path (rectified flow) ---------------------------------
class RectifiedFlow:
    """The straight path from data to noise and its velocity (Liu et al. 2023, rectified flow; Lipman et al. 2023,
    flow matching; the time sampling of Stable Diffusion 3, Esser et al. 2024, Sec. 3.1):

        path       x_t = (1 − t)·x_0 + t·ε,   t ∈ [0, 1]          t = 0: data, t = 1: pure noise N(0, I)
        velocity   u = dx_t/dt = ε − x_0                          the same for every t on one path
        objective  L = E_{t, x_0, ε} ‖u − v_θ(x_t, t, y)‖²,   t = sigmoid(n), n ~ N(m, s²)  (logit-normal)
        sampling   dx/dt = v_θ(x, t, y) from t = 1 to 0 (samplers.flow_euler_sample / flow_heun_sample)

    The network learns the *average* velocity E[ε − x_0 | x_t] of all the straight paths through x_t, so its
    sample paths bend where paths cross; course/toy2d.py measures how much, and how few Euler steps it needs.
    The logit-normal puts most training on the middle times, where the velocity is hardest to guess
    (m = 0, s = 1 is SD3's choice). Times are floats: the U-Net sees `model_time(t)` = t·(T − 1), so that its
    sinusoidal embedding covers the same range 0 … T − 1 as a diffusion model's integer steps (pure noise is
    T − 1 for both); `timesteps` is T. t trusts its callers: a float or a (B,) float tensor in [0, 1].
    """

    def __init__(self, timesteps: int = 1000, logit_mean: float = 0.0, logit_std: float = 1.0) -> None:
        if not isinstance(timesteps, int) or timesteps < 2:
            raise ValueError(f"timesteps must be an int ≥ 2 (the U-Net sees t·(T − 1); minildm: 1000); got {timesteps}")
        if not logit_std > 0:
            raise ValueError(f"logit_std must be > 0 (t = sigmoid(n), n ~ N(m, s²); SD3: s = 1), got {logit_std!r}")
        self.num_timesteps, self.logit_mean, self.logit_std = timesteps, float(logit_mean), float(logit_std)

    @classmethod
    def from_config(cls, cfg: Any) -> "RectifiedFlow":
        """Build from anything with timesteps/logit_mean/logit_std (e.g. LDMConfig)."""
        return cls(cfg.timesteps, cfg.logit_mean, cfg.logit_std)

    def config(self) -> dict:
        return dict(timesteps=self.num_timesteps, logit_mean=self.logit_mean, logit_std=self.logit_std)

    def __repr__(self) -> str:
        return "RectifiedFlow(" + ", ".join(f"{k}={v!r}" for k, v in self.config().items()) + ")"

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """What the U-Net's timestep embedding is given for flow time t ∈ [0, 1]: t·(T − 1), a float."""
        return t * (self.num_timesteps - 1)

    @staticmethod
    def _shaped(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
        """t as (B, 1, 1, …) (or a scalar) to broadcast against `like`, in its dtype and on its device."""
        t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
        return t.reshape(-1, *([1] * (like.ndim - 1))) if t.ndim else t

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """A point of the straight path: x_t = (1 − t)·x_0 + t·ε."""
        t = self._shaped(t, x0)
        return (1 - t) * x0 + t * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The velocity u = dx_t/dt = ε − x_0 that the network regresses on."""
        return noise - x0

    def predict_x0_and_eps(self, x_t: torch.Tensor, t: torch.Tensor | float, velocity: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_0, ε̂) from a velocity û: x̂_0 = x_t − t·û, ε̂ = x_t + (1 − t)·û (the path solved for its ends)."""
        t = self._shaped(t, x_t)
        return x_t - t * velocity, x_t + (1 - t) * velocity

    def draw_timesteps(self, batch: int, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
        """t = sigmoid(n), n ~ N(m, s²) for a batch (logit-normal; SD3 Sec. 3.1), drawn on the generator's device."""
        n = randn((batch,), generator, device)
        return torch.sigmoid(self.logit_mean + self.logit_std * n)

    def training_loss(self, model_fn: ModelFn, x0: torch.Tensor, cond: Any = None, t: torch.Tensor | None = None,
                      noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                      weighting: str = "simple", reduction: str = "mean") -> torch.Tensor:
        """L = ‖u − v_θ(x_t, t, y)‖², u = ε − x_0, t logit-normal, ε ~ N(0, I) (drawn with `generator` when not
        given, t first, as GaussianDiffusion.training_loss does); `reduction` "mean" or "none" (per sample).
        `weighting` must be "simple": the logit-normal time sampling already weights the noise levels."""
        if weighting != "simple":
            raise ValueError(f"loss_weighting={weighting!r} is a diffusion option (Min-SNR weighs the SNR of "
                             f"diffusion's timesteps); a flow model's weighting is its logit-normal time sampling "
                             f"(LDMConfig.logit_mean / logit_std): use loss_weighting='simple'")
        if t is None:
            t = self.draw_timesteps(x0.shape[0], generator, x0.device)                    # t = sigmoid(n)
        if noise is None:
            noise = randn(x0.shape, generator, x0.device, x0.dtype)                  # ε ~ N(0, I)
        x_t = self.add_noise(x0, noise, t)                                            # x_t = (1 − t)·x_0 + t·ε
        output = model_fn(x_t, self.model_time(t), cond)                             # v_θ(x_t, t·(T − 1), y)
        target = self.training_target(x0, noise)                                      # u = ε − x_0
        loss = F.mse_loss(output.float(), target.float(), reduction="none").flatten(1).mean(1)   # (B,)
        return loss.mean() if reduction == "mean" else loss


# One model, four parameterizations. At one noise level, a network's output determines the others by affine maps
# of (x_t, output); only the bookkeeping differs. Diffusion: x_s = α·x_0 + σ·ε with α = √ᾱ_s, σ = √(1 − ᾱ_s);
# flow: x_t = (1 − t)·x_0 + t·ε. Both have the signal-to-noise ratio α/σ = (1 − t)/t when
#     t = σ/(α + σ)                                                       (`flow_time`)
# and then the two states differ only by a scale:  x_t = x_s/(α + σ).  At that t, with u = ε − x_0:
#     ε     = x_t + (1 − t)·u             x_0 = x_t − t·u                           (RectifiedFlow.predict_x0_and_eps)
#     u     = ε − x_0                    = (x_t − x_0)/t = (ε − x_t)/(1 − t)
#     v     = α·ε − σ·x_0                 (Salimans & Ho 2022; GaussianDiffusion.get_velocity)
#           = (α + σ)·[(1 − t)·ε − t·x_0] = (α + σ)·[(1 − 2t)·x_t + ((1 − t)² + t²)·u]
# So an ε-, x_0-, v- or velocity-network is "the same model" up to these maps (and a different loss weighting per
# noise level); what flow matching changes is the path (straight, not the curved √ᾱ/√(1 − ᾱ) one), the target and
# the time sampling. tests/test_flow.py checks every line.
def flow_time(alpha_bar: torch.Tensor | float) -> torch.Tensor:
    """The flow time with the same signal-to-noise ratio as diffusion's ᾱ: t = σ/(α + σ), α = √ᾱ, σ = √(1 − ᾱ)."""
    alpha_bar = torch.as_tensor(alpha_bar, dtype=torch.float64)
    a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    return s / (a + s)
