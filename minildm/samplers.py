"""Samplers: turn noise into latents with a trained denoiser (LDM Sec. 3.2 and 4; DDPM; DDIM; ODE solvers).

The paper samples with DDPM and DDIM. Beyond the paper, deterministic sampling is solving an ODE, and three
solvers of it close the file: Euler (which is DDIM), Heun (Karras et al. 2022) and DPM-Solver++(2M) (Lu et
al. 2022, in the multistep form libraries use by default); the last two are second order: fewer steps.
A flow-matching model (diffusion.RectifiedFlow) is sampled by the same two ODE methods on its own ODE,
dx/dt = v_θ(x, t), t from 1 to 0: `flow_euler_step` / `flow_heun_step` and their loops, at the very end.

One update of each sampler is a public function, `ddpm_step`, `ddim_step`, `euler_step`, `heun_step` and
`dpmpp_2m_step` (diffusers calls it `scheduler.step`). Every sampling loop is the same loop (as in
k-diffusion): from x_T, one step per pair (t, t_prev) of its list of timesteps, which ends at the clean data
(t = −1; a flow's t = 0), and one call of the same per-step callback; the samplers differ only in their step
and their list (`ddim_invert`, which runs the other way, from x_0 to x_T, has its own):

    model_fn(x_t: (B, C, h, w), t: (B,) int64, cond) -> (B, C, h, w)      the network's raw output
    callback(step: int, t: int, x_t: Tensor, pred_x0: Tensor) -> None     once per step, every sampler

`cond` is None, a tensor, or a dict of batch-first tensors ({"context": (B, L, d), "context_mask": (B, L)},
{"y": (B,)}, {"concat": (B, c, h, w)}, …); `uncond` has the same form and holds the "null" condition.

Classifier-free guidance (Ho & Salimans 2022) with scale s runs the model once on a doubled batch
[cond; uncond] and combines  out = out_uncond + s·(out_cond − out_uncond)  (s = 1: conditional only,
s = 0: unconditional only; neither doubles the batch). We guide the *raw* model output. That is exactly
guidance on ε̂ for all three parameterizations: at fixed (x_t, t), ε̂ is an affine function of the output
(ε̂ = out; ε̂ = (x_t − √ᾱ·out)/√(1−ᾱ); ε̂ = √(1−ᾱ)·x_t + √ᾱ·out), and affine maps preserve the combination
(1 − s)·out_uncond + s·out_cond because its weights sum to 1.

Random numbers: noise is drawn with the given torch.Generator on the generator's device (a CPU generator
draws on the CPU) and then moved to `device`, so a seed gives the same samples on every device. Stochastic
samplers draw z only at steps whose noise scale is non-zero, so DDPM and DDIM(η = 1, all steps) consume
the same random stream.

x̂_0 is never clipped: latents are unbounded.

The loops check their arguments once, before the first model call (`steps` in `ddim_timesteps`, η, strength);
the steps and the coefficient table trust theirs.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch

from .diffusion import GaussianDiffusion, ModelFn, RectifiedFlow
from .utils import randn

__all__ = ["ddpm_step", "ddpm_sample", "ddim_timesteps", "ddim_coefficients", "ddim_step", "ddim_sample",
           "ddim_invert", "img2img", "ddim_inpaint", "euler_step", "euler_sample", "heun_step", "heun_sample",
           "dpmpp_2m_step", "dpmpp_2m_sample", "ODE_SAMPLERS", "flow_timesteps", "flow_euler_step", "flow_heun_step",
           "flow_euler_sample", "flow_heun_sample", "FLOW_SAMPLERS", "guided_model_output", "concat_cond", "SPACINGS",
           "Cond", "Callback"]
Cond = Union[None, torch.Tensor, Mapping[str, Optional[torch.Tensor]]]
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
_Step = Callable[[torch.Tensor, Any, Any], tuple[torch.Tensor, torch.Tensor]]   # (x_t, t, t_prev) -> (x_prev, x̂_0)
SPACINGS = ("trailing", "leading", "linspace")


# --- Classifier-free guidance -------------------------------------------------------------------------------
def _expand(value: torch.Tensor | None, batch: int, what: str) -> torch.Tensor | None:
    """A batch-1 null condition is broadcast to the batch; any other mismatch is an error."""
    if value is None or value.shape[0] == batch:
        return value
    if value.shape[0] == 1:
        return value.expand(batch, *value.shape[1:])
    raise ValueError(f"{what} has batch size {value.shape[0]} but the samples have batch size {batch}; "
                     f"give one condition per sample (or a batch of 1 for the null condition)")


def _expand_cond(cond: Cond, batch: int, what: str) -> Cond:
    """`_expand` for a tensor or each tensor of a dict; None stays None."""
    if isinstance(cond, torch.Tensor):
        return _expand(cond, batch, what)
    if isinstance(cond, Mapping):
        return {k: _expand(v, batch, f"{what}[{k!r}]") for k, v in cond.items()}
    return cond


def concat_cond(cond: Cond, uncond: Cond, batch: int) -> Cond:
    """[cond; uncond] along dim 0 (per key for dicts), the doubled batch of classifier-free guidance."""
    cond, uncond = _expand_cond(cond, batch, "cond"), _expand_cond(uncond, batch, "uncond")
    if isinstance(cond, torch.Tensor) and isinstance(uncond, torch.Tensor):
        return torch.cat([cond, uncond])
    if isinstance(cond, Mapping) and isinstance(uncond, Mapping):
        return {key: None if c is None else torch.cat([c, uncond[key]]) for key, c in cond.items()}
    raise TypeError(f"guidance needs `cond` and the null condition `uncond` (empty caption / null class) the model "
                    f"was trained with, both tensors or both dicts of tensors; got {type(cond).__name__} and "
                    f"{type(uncond).__name__} (guidance_scale=1.0 needs no uncond)")


def guided_model_output(model_fn: ModelFn, x_t: torch.Tensor, t: int | torch.Tensor, cond: Cond = None,
                        uncond: Cond = None, guidance_scale: float = 1.0) -> torch.Tensor:
    """out = out_uncond + s·(out_cond − out_uncond) from one doubled batch (classifier-free guidance, Ho & Salimans)."""
    batch = x_t.shape[0]
    if isinstance(t, int):
        t = torch.full((batch,), t, dtype=torch.long, device=x_t.device)
    s = float(guidance_scale)
    if s == 1.0:                                                   # conditional only
        return model_fn(x_t, t, _expand_cond(cond, batch, "cond"))
    if s == 0.0:                                                   # unconditional only
        return model_fn(x_t, t, _expand_cond(uncond, batch, "uncond"))
    out = model_fn(torch.cat([x_t, x_t]), torch.cat([t, t]), concat_cond(cond, uncond, batch))  # (2B, C, h, w)
    out_cond, out_uncond = out.chunk(2)
    return out_uncond + s * (out_cond - out_uncond)


# --- The loop every sampler shares: x_T, then one step per pair (t, t_prev) -----------------------------------
def _initial_noise(shape: Sequence[int] | None, generator: torch.Generator | None, x_T: torch.Tensor | None,
                   device: torch.device | str | None, cond: Cond) -> torch.Tensor:
    """x_T ~ N(0, I) of `shape` (or the given x_T) on `device`; no device: x_T's, else that of the first tensor
    in `cond`, else the CPU."""
    if device is None:
        tensors = [x_T, cond, *(cond.values() if isinstance(cond, Mapping) else ())]
        device = next((v.device for v in tensors if isinstance(v, torch.Tensor)), "cpu")
    device = torch.device(device)
    return randn(shape, generator, device) if x_T is None else x_T.to(device)


class _Trajectory:
    """Calls the callback and, if asked, keeps x_t / x̂_0 / t of every step (detached, on the CPU)."""

    def __init__(self, callback: Callback | None, keep: bool) -> None:
        self.callback, self.keep = callback, keep
        self.record: dict[str, list] = dict(x_t=[], pred_x0=[], timesteps=[])

    def __call__(self, step: int, t: int, x_t: torch.Tensor, pred_x0: torch.Tensor) -> None:
        if self.callback is not None:
            self.callback(step, t, x_t, pred_x0)
        if self.keep:
            self.record["x_t"].append(x_t.detach().cpu())
            self.record["pred_x0"].append(pred_x0.detach().cpu())
            self.record["timesteps"].append(t)

    def result(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, dict]:
        return (x, self.record) if self.keep else x


def _loop(step_fn: _Step, x: torch.Tensor, times: Sequence, callback: Callback | None, return_intermediates: bool
          ) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """x ← step_fn(x, t, t_prev) for each pair of consecutive `times`, calling back after each step with the x_t
    and x̂_0 of t. Returns the last x, or (x, {"x_t", "pred_x0", "timesteps"}) with `return_intermediates`:
    x_t[i] is the sampler's state at timesteps[i] and pred_x0[i] the x̂_0 predicted from it."""
    trajectory = _Trajectory(callback, return_intermediates)
    for step, (t, t_prev) in enumerate(zip(times, times[1:])):
        x_prev, x0_hat = step_fn(x, t, t_prev)
        trajectory(step, t, x, x0_hat)
        x = x_prev
    return trajectory.result(x)


# --- DDPM: ancestral sampling with the posterior variance ---------------------------------------------------
@torch.no_grad()
def ddpm_sample(model_fn: ModelFn, diffusion: GaussianDiffusion, shape: Sequence[int] | None, cond: Cond = None,
                uncond: Cond = None, guidance_scale: float = 1.0, generator: torch.Generator | None = None,
                x_T: torch.Tensor | None = None, callback: Callback | None = None, return_intermediates: bool = False,
                device: torch.device | str | None = None) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """x_{t−1} = μ̃_t(x_t, x̂_0) + √β̃_t·z for t = T−1 … 0, no noise at the last step (DDPM Alg. 2, Eq. 7).

    Returns x̂_0 (B, C, h, w), or (x̂_0, {"x_t", "pred_x0", "timesteps"}) with `return_intermediates` (`_loop`).
    x_T (B, C, h, w) replaces the drawn noise (then `shape` may be None); `device` defaults to x_T's or cond's.
    """
    def step(x: torch.Tensor, t: int, t_prev: int) -> tuple[torch.Tensor, torch.Tensor]:   # t_prev = t − 1
        out = guided_model_output(model_fn, x, t, cond, uncond, guidance_scale)
        return ddpm_step(diffusion, out, t, x, generator)

    x = _initial_noise(shape, generator, x_T, device, cond)                              # x_T ~ N(0, I)
    times = list(range(diffusion.num_timesteps - 1, -2, -1))                             # T−1 … 0, then the data
    return _loop(step, x, times, callback, return_intermediates)


def ddpm_step(diffusion: GaussianDiffusion, model_output: torch.Tensor, t: int, x_t: torch.Tensor,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One ancestral step x_t -> x_{t−1} ~ q(x_{t−1} | x_t, x_0 = x̂_0) (DDPM Alg. 2, Eq. 6–7) -> (x_{t−1}, x̂_0).

    x̂_0 is read from the model output under the diffusion's prediction_type; the step adds √β̃_t·z, except at
    t = 0, where x_{−1} = μ̃_0 = x̂_0 (no noise).
    """
    x0_hat, _ = diffusion.predict_x0_and_eps(x_t, t, model_output)
    mean, _, _ = diffusion.posterior_mean_variance(x0_hat, x_t, t)       # μ̃_t(x_t, x̂_0)
    if t == 0:
        return mean, x0_hat                                               # μ̃_0 = x̂_0: no noise at the last step
    std = diffusion.coefficient("posterior_variance", t, x_t).sqrt()      # √β̃_t, broadcast over x_t
    return mean + std * randn(x_t.shape, generator, x_t.device, x_t.dtype), x0_hat


# --- DDIM: S of the T steps, η interpolates between deterministic (0) and DDPM-like (1) ---------------------
def ddim_timesteps(num_train_timesteps: int, steps: int, spacing: str = "trailing") -> list[int]:
    """The S sampling timesteps, strictly decreasing, all in [0, T−1] (DDIM Sec. 4.2, "τ" sub-sequence).

        trailing  t_i = ⌊T·(S−i)/S⌋ − 1         starts at T−1 for every S (default; Lin et al. 2024 and
                                                 diffusers round T·(S−i)/S to nearest instead of down: the
                                                 lists agree whenever S divides T)
        leading   t_i = (S−1−i)·⌊T/S⌋           the classic choice; ends at 0 but starts well below T−1
                                                 when S does not divide T (e.g. T=1000, S=3: 666, 333, 0)
        linspace  t_i = T−1 − round(i·(T−1)/(S−1))   both ends, T−1 … 0
    (The reference's range(0, T, T//S) + 1 is none of these: it never starts at T−1.)

    Why trailing by default: the sampler starts from x_T ~ N(0, I), which is only right at t = T−1; leading
    feeds pure noise to a model told t = 900 (for S = 10), where it expects √ᾱ_900 ≈ 0.03 of signal (the
    instructor guide, notebook 06). The price: with very few steps deterministic DDIM under-disperses a little
    more (exact Gaussian oracle, LDM betas, s = 0.3: std 0.158 vs 0.186 at S = 10; 0.248 vs 0.262 at S = 50).
    """
    T, S = num_train_timesteps, steps
    if not isinstance(S, int) or not 1 <= S <= T:
        raise ValueError(f"steps must be an int in [1, {T}] (the number of training timesteps T), got {steps!r}")
    if spacing == "trailing":
        return [T * (S - i) // S - 1 for i in range(S)]
    if spacing == "leading":
        return [(S - 1 - i) * (T // S) for i in range(S)]
    if spacing == "linspace":
        if S == 1:
            return [T - 1]
        # round(i(T−1)/(S−1)) = ⌊(2i(T−1) + S−1) / (2(S−1))⌋, in exact integer arithmetic
        return [T - 1 - (2 * i * (T - 1) + S - 1) // (2 * (S - 1)) for i in range(S)]
    raise ValueError(f"unknown timestep spacing {spacing!r}; expected one of {SPACINGS}")


def ddim_coefficients(diffusion: GaussianDiffusion, timesteps: Sequence[int], eta: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ᾱ_t, ᾱ_prev, σ) per step of a decreasing list of timesteps, in float64 (DDIM Eq. 16).

    ᾱ_prev is ᾱ of the *next entry of the list* (not t − T/S); after the last entry it is 1, the clean
    data, so the last step returns x̂_0 (and σ = 0 there).
    """
    alpha_bar = diffusion.alpha_bar[torch.as_tensor(list(timesteps), dtype=torch.long)]          # ᾱ_t
    alpha_bar_prev = torch.cat([alpha_bar[1:], torch.ones(1, dtype=torch.float64)])              # ᾱ_prev
    # σ = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev)
    sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()
    return alpha_bar, alpha_bar_prev, sigma


def ddim_step(diffusion: GaussianDiffusion, model_output: torch.Tensor, t: int, x_t: torch.Tensor,
              t_prev: int, eta: float = 0.0, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update from timestep t to t_prev < t (DDIM Eq. 12) -> (x_{t_prev}, x̂_0).

        x̂_0, ε̂ from the model output (prediction_type),   σ = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev)
        x_prev = √ᾱ_prev·x̂_0 + √(1 − ᾱ_prev − σ²)·ε̂ + σ·z

    t_prev = −1 means the clean data (ᾱ_prev = 1): the step returns x̂_0. z is drawn with `generator` only
    when σ > 0, so η = 0 is deterministic.
    """
    # ᾱ_prev and σ: the first row of the table for the list [t, t_prev] ([t] alone when t_prev = −1)
    _, alpha_bar_prev, sigma = ddim_coefficients(diffusion, [t, t_prev] if t_prev >= 0 else [t], eta)
    x0_hat, eps_hat = diffusion.predict_x0_and_eps(x_t, t, model_output)
    a_prev, s = float(alpha_bar_prev[0]), float(sigma[0])         # float64 scalars
    # x_prev = √ᾱ_prev·x̂_0 + √(1 − ᾱ_prev − σ²)·ε̂ + σ·z
    x = math.sqrt(a_prev) * x0_hat + math.sqrt(1.0 - a_prev - s * s) * eps_hat
    if s > 0:
        x = x + s * randn(x.shape, generator, x.device, x.dtype)
    return x, x0_hat


def _ddim(model_fn: ModelFn, diffusion: GaussianDiffusion, cond: Cond, uncond: Cond, guidance_scale: float,
          eta: float, generator: torch.Generator | None) -> _Step:
    """The step of the three DDIM loops (ddim_sample, img2img, ddim_inpaint): `ddim_step` on the guided output.
    Each loop builds it before its first model call, so η is checked here, once for all three."""
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must lie in [0, 1] (0: deterministic DDIM, 1: DDPM-like; a larger η can push σ² past "
                         f"1 − ᾱ_prev, and √(1 − ᾱ_prev − σ²) must be real), got {eta!r}")

    def step(x: torch.Tensor, t: int, t_prev: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = guided_model_output(model_fn, x, t, cond, uncond, guidance_scale)
        return ddim_step(diffusion, out, t, x, t_prev, eta, generator)

    return step


@torch.no_grad()
def ddim_sample(model_fn: ModelFn, diffusion: GaussianDiffusion, shape: Sequence[int] | None, cond: Cond = None,
                uncond: Cond = None, guidance_scale: float = 1.0, steps: int = 50, eta: float = 0.0,
                spacing: str = "trailing", generator: torch.Generator | None = None, x_T: torch.Tensor | None = None,
                callback: Callback | None = None, return_intermediates: bool = False,
                device: torch.device | str | None = None) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """x_prev = √ᾱ_prev·x̂_0 + √(1−ᾱ_prev−σ²)·ε̂ + σ·z over S = `steps` timesteps (DDIM Eq. 12).

    η = 0 is deterministic (what LDM samples with), η = 1 with all T steps is DDPM. The timesteps are
    `ddim_timesteps(T, steps, spacing)`; the last step returns x̂_0 (ᾱ_prev = 1), see `ddim_coefficients`.
    Returns like `ddpm_sample`.
    """
    step = _ddim(model_fn, diffusion, cond, uncond, guidance_scale, eta, generator)
    x = _initial_noise(shape, generator, x_T, device, cond)                              # x_T ~ N(0, I)
    times = ddim_timesteps(diffusion.num_timesteps, steps, spacing) + [-1]               # …, then the data
    return _loop(step, x, times, callback, return_intermediates)


@torch.no_grad()
def ddim_invert(model_fn: ModelFn, diffusion: GaussianDiffusion, x0: torch.Tensor, steps: int = 50, cond: Cond = None,
                uncond: Cond = None, guidance_scale: float = 1.0, spacing: str = "trailing",
                callback: Callback | None = None, return_intermediates: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """Run deterministic DDIM backwards, x_0 → x_T, through the same timesteps (DDIM Sec. 4.3, Eq. 13).

    Each step moves from ᾱ_cur (1 for the clean start) up to ᾱ_t of the next timestep t:
        ε̂ = model(x_cur, t)  (the output read as if at t),  x̂_0 = (x_cur − √(1−ᾱ_cur)·ε̂)/√ᾱ_cur,
        x_t = √ᾱ_t·x̂_0 + √(1−ᾱ_t)·ε̂.
    Evaluating ε̂ at x_cur instead of the unknown x_t is the only approximation: with a model whose
    ε̂ does not depend on x it is exact, in general its error shrinks with the step size. `ddim_sample`
    with the same steps, spacing, cond and guidance, η = 0 and `x_T=` the result maps it back.
    The callback gets (step, t, x_t, x̂_0) with x_t the latent *after* the step, now at timestep t.
    """
    timesteps = ddim_timesteps(diffusion.num_timesteps, steps, spacing)[::-1]        # increasing
    trajectory = _Trajectory(callback, return_intermediates)
    x, a_cur = x0, 1.0
    for step, t in enumerate(timesteps):
        out = guided_model_output(model_fn, x, t, cond, uncond, guidance_scale)
        _, eps_hat = diffusion.predict_x0_and_eps(x, t, out)
        x0_hat = (x - math.sqrt(1.0 - a_cur) * eps_hat) / math.sqrt(a_cur)   # x̂_0 = (x_cur − √(1−ᾱ_cur)·ε̂)/√ᾱ_cur
        a_cur = float(diffusion.alpha_bar[t])
        x = math.sqrt(a_cur) * x0_hat + math.sqrt(1.0 - a_cur) * eps_hat      # x_t = √ᾱ_t·x̂_0 + √(1−ᾱ_t)·ε̂
        trajectory(step, t, x, x0_hat)
    return trajectory.result(x)


@torch.no_grad()
def img2img(model_fn: ModelFn, diffusion: GaussianDiffusion, x0: torch.Tensor, strength: float = 0.75, steps: int = 50,
            eta: float = 0.0, cond: Cond = None, uncond: Cond = None, guidance_scale: float = 1.0,
            spacing: str = "trailing", generator: torch.Generator | None = None, callback: Callback | None = None,
            return_intermediates: bool = False) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """SDEdit (Meng et al. 2022): noise x_0 to the timestep picked by `strength`, then run DDIM from there.

    Of the S = `steps` DDIM timesteps the last n = round(strength·S) are run, starting from
    x_{t_start} = √ᾱ·x_0 + √(1−ᾱ)·ε at their first timestep. strength = 0 returns x_0 unchanged,
    strength = 1 starts at t = T−1 (close to sampling from scratch).
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must lie in [0, 1] (0 keeps the input, 1 starts from pure noise), got {strength!r}")
    step = _ddim(model_fn, diffusion, cond, uncond, guidance_scale, eta, generator)
    n = int(round(strength * steps))
    timesteps = ddim_timesteps(diffusion.num_timesteps, steps, spacing)[steps - n:]
    if n == 0:
        x = x0.clone()                                               # no step to run: x_0 unchanged
    else:                                                            # x_t ~ q(x_t | x_0)
        x = diffusion.add_noise(x0, randn(x0.shape, generator, x0.device, x0.dtype), timesteps[0])
    return _loop(step, x, timesteps + [-1], callback, return_intermediates)


@torch.no_grad()
def ddim_inpaint(model_fn: ModelFn, diffusion: GaussianDiffusion, z0: torch.Tensor, mask: torch.Tensor, steps: int = 50,
                 eta: float = 0.0, cond: Cond = None, uncond: Cond = None, guidance_scale: float = 1.0,
                 spacing: str = "trailing", generator: torch.Generator | None = None, callback: Callback | None = None,
                 return_intermediates: bool = False) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """Training-free inpainting by blending (RePaint, Lugmayr et al. 2022, without its resampling): DDIM from
    x_T ~ N(0, I), where before every model call the known region is replaced by a fresh draw of the forward
    process of the known latent,

        x_t ← m·x_t + (1 − m)·q(x_t | z0),   q(x_t | z0) = √ᾱ_t·z0 + √(1 − ᾱ_t)·ε,

    so the model sees a noisy image whose known part is right for its noise level and fills the hole (m = 1) to
    agree with it. After the last step the known region is z0 itself: the result equals z0 exactly where m = 0.
    mask: (B or 1, 1, h, w) of 0/1 on the latent grid (conditioning.latent_mask). The model never learned what a hole
    is; it only sees the blend, so the seam and the content are only as coherent as its denoising makes them.
    """
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[-2:] != z0.shape[-2:]:
        raise ValueError(f"the latent mask {tuple(mask.shape)} must be (B, 1, h, w), (h, w) = {tuple(z0.shape[-2:])}")
    ddim = _ddim(model_fn, diffusion, cond, uncond, guidance_scale, eta, generator)
    hole = mask.to(z0.device) > 0.5

    def blend(x: torch.Tensor, t: int) -> torch.Tensor:       # x_t ← m·x_t + (1 − m)·q(x_t | z0); at t = −1, z0
        known = z0 if t < 0 else diffusion.add_noise(z0, randn(z0.shape, generator, z0.device, z0.dtype), t)
        return torch.where(hole, x, known.to(x.dtype))

    def step(x: torch.Tensor, t: int, t_prev: int) -> tuple[torch.Tensor, torch.Tensor]:
        x_prev, x0_hat = ddim(x, t, t_prev)
        return blend(x_prev, t_prev), x0_hat                  # blended for the next model call

    timesteps = ddim_timesteps(diffusion.num_timesteps, steps, spacing)
    x = blend(randn(z0.shape, generator, z0.device, z0.dtype), timesteps[0])              # x_T ~ N(0, I)
    return _loop(step, x, timesteps + [-1], callback, return_intermediates)


# --- Fast ODE solvers: deterministic sampling is solving the probability-flow ODE ----------------------------
# In the variables of Karras et al. (2022), x̃ = x_t/√ᾱ_t and σ_t = √((1−ᾱ_t)/ᾱ_t), deterministic sampling
# solves  dx̃/dσ = (x̃ − x̂_0(x̃, σ))/σ = ε̂  from σ_max down to σ = 0 (Song et al. 2021b; DDIM Eq. 14). An
# ODE solver of order p makes an error ∝ (step)^p, so doubling the steps divides it by 2^p: 2 for Euler (which
# is DDIM), 4 for Heun and DPM-Solver++(2M). The solvers below step between the model's own timesteps (the
# lists of `ddim_timesteps`), so the model is only asked about the t it was trained on; the state they
# carry, hand to the callback and return is the sampler's usual x_t = √ᾱ_t·x̃.
def _alpha_bar(diffusion: GaussianDiffusion, t: int) -> float:
    """ᾱ_t as a float64 scalar, with ᾱ_{−1} = 1 (t = −1 is the clean data, σ = 0)."""
    return 1.0 if t < 0 else float(diffusion.alpha_bar[t])


def euler_step(diffusion: GaussianDiffusion, model_output: torch.Tensor, t: int, x_t: torch.Tensor, t_prev: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler step of dx̃/dσ = (x̃ − x̂_0)/σ from σ_t to σ_{t_prev} (Karras et al. 2022, Alg. 1 without
    churn) -> (x_{t_prev}, x̂_0).

    The slope d = (x̃ − x̂_0)/σ is ε̂, so x̃_prev = x̂_0 + σ_prev·ε̂: this is deterministic DDIM (η = 0) read as
    an ODE step (Karras et al. Sec. 3). t_prev = −1 is the clean data (σ = 0): the step returns x̂_0.
    """
    a, a_prev = _alpha_bar(diffusion, t), _alpha_bar(diffusion, t_prev)
    sigma, sigma_prev = math.sqrt((1 - a) / a), math.sqrt((1 - a_prev) / a_prev)   # σ = √((1−ᾱ)/ᾱ)
    x0_hat, _ = diffusion.predict_x0_and_eps(x_t, t, model_output)
    x = x_t / math.sqrt(a)                                     # x̃ = x_t/√ᾱ_t
    d = (x - x0_hat) / sigma                                   # d = dx̃/dσ = (x̃ − x̂_0)/σ
    x = x + (sigma_prev - sigma) * d                           # x̃_prev = x̃ + (σ_prev − σ)·d
    return math.sqrt(a_prev) * x, x0_hat                       # back to x_{t_prev} = √ᾱ_prev·x̃_prev


def heun_step(diffusion: GaussianDiffusion, model_output: torch.Tensor, t: int, x_t: torch.Tensor, t_prev: int,
              output_fn: Callable[[torch.Tensor, int], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One Heun step (Karras et al. 2022, Alg. 2 without churn) -> (x_{t_prev}, x̂_0):

        d  = (x̃ − x̂_0)/σ                       the slope here (from model_output at t)
        x̃_E = x̃ + (σ_prev − σ)·d                an Euler step to σ_prev ...
        d' = (x̃_E − x̂_0')/σ_prev                 ... the slope there (x̂_0' from output_fn(x_E, t_prev))
        x̃_prev = x̃ + (σ_prev − σ)·(d + d')/2     the trapezoid rule: second order

    `output_fn(x, t)` is the (guided) model output at another point: the second model call. The step to the
    clean data (t_prev = −1) is a plain Euler step, as in Alg. 2: d' would divide by σ_prev = 0.
    """
    x_euler, x0_hat = euler_step(diffusion, model_output, t, x_t, t_prev)
    if t_prev < 0:
        return x_euler, x0_hat
    a, a_prev = _alpha_bar(diffusion, t), _alpha_bar(diffusion, t_prev)
    sigma, sigma_prev = math.sqrt((1 - a) / a), math.sqrt((1 - a_prev) / a_prev)
    x0_euler, _ = diffusion.predict_x0_and_eps(x_euler, t_prev, output_fn(x_euler, t_prev))   # x̂_0' at x̃_E
    x = x_t / math.sqrt(a)                                     # x̃
    d = (x - x0_hat) / sigma                                   # d = (x̃ − x̂_0)/σ
    d_prime = (x_euler / math.sqrt(a_prev) - x0_euler) / sigma_prev   # d' = (x̃_E − x̂_0')/σ_prev
    x = x + (sigma_prev - sigma) * (d + d_prime) / 2           # x̃_prev = x̃ + (σ_prev − σ)·(d + d')/2
    return math.sqrt(a_prev) * x, x0_hat


def _half_log_snr(a: float) -> float:
    """λ = log(α/σ) = ½·log(ᾱ/(1−ᾱ)), the time variable of DPM-Solver (it grows as the noise shrinks)."""
    return 0.5 * math.log(a / (1.0 - a))


def dpmpp_2m_step(diffusion: GaussianDiffusion, model_output: torch.Tensor, t: int, x_t: torch.Tensor,
                  t_prev: int, x0_last: torch.Tensor | None = None, t_last: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One DPM-Solver++(2M) step from t to t_prev (Lu et al. 2022, Alg. 2, data prediction) -> (x_{t_prev}, x̂_0).

        α = √ᾱ, σ = √(1−ᾱ), λ = log(α/σ),  h = λ_prev − λ_t
        x_prev = (σ_prev/σ_t)·x_t − α_prev·(e^{−h} − 1)·D
        first order   D = x̂_0                                  (this is deterministic DDIM)
        second order  D = (1 + 1/(2r))·x̂_0 − 1/(2r)·x̂_0,last,   r = (λ_t − λ_last)/h

    x̂_0,last is the x̂_0 of the previous step, predicted at t_last: reusing it makes the step second order
    for one model call (a multistep method). Without it (the first step) the step is first order; so is the
    step to the clean data (t_prev = −1: σ_prev = 0, λ = ∞, r = 0), which returns x̂_0, as diffusers does
    with its default final σ = 0 (`lower_order_final`).
    """
    x0_hat, _ = diffusion.predict_x0_and_eps(x_t, t, model_output)
    if t_prev < 0:
        return x0_hat, x0_hat                                  # α_prev = 1, σ_prev = 0: x_0 = x̂_0
    a, a_prev = _alpha_bar(diffusion, t), _alpha_bar(diffusion, t_prev)
    lam = _half_log_snr(a)
    h = _half_log_snr(a_prev) - lam                            # h = λ_prev − λ_t > 0
    D = x0_hat
    if x0_last is not None:
        r = (lam - _half_log_snr(_alpha_bar(diffusion, t_last))) / h      # r = h_last/h
        D = (1 + 1 / (2 * r)) * x0_hat - 1 / (2 * r) * x0_last           # D = (1 + 1/2r)·x̂_0 − 1/2r·x̂_0,last
    # x_prev = (σ_prev/σ_t)·x_t − α_prev·(e^{−h} − 1)·D
    return math.sqrt((1 - a_prev) / (1 - a)) * x_t - math.sqrt(a_prev) * math.expm1(-h) * D, x0_hat


@torch.no_grad()
def _ode_sample(solver: str, model_fn: ModelFn, diffusion: GaussianDiffusion, shape: Sequence[int] | None,
                cond: Cond = None, uncond: Cond = None, guidance_scale: float = 1.0, steps: int = 50,
                spacing: str = "trailing", generator: torch.Generator | None = None, x_T: torch.Tensor | None = None,
                callback: Callback | None = None, return_intermediates: bool = False,
                device: torch.device | str | None = None) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """The three ODE samplers: `ddim_sample`'s arguments without η, one `solver` step per timestep."""
    timesteps = ddim_timesteps(diffusion.num_timesteps, steps, spacing)      # checks `steps`, `spacing`
    x = _initial_noise(shape, generator, x_T, device, cond)                  # x_T ~ N(0, I)
    x0_last = t_last = None                            # DPM-Solver++(2M) reuses the x̂_0 of the previous step

    def output_fn(x: torch.Tensor, t: int) -> torch.Tensor:
        return guided_model_output(model_fn, x, t, cond, uncond, guidance_scale)

    def step(x: torch.Tensor, t: int, t_prev: int) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal x0_last, t_last
        if solver == "euler":
            return euler_step(diffusion, output_fn(x, t), t, x, t_prev)
        if solver == "heun":
            return heun_step(diffusion, output_fn(x, t), t, x, t_prev, output_fn)
        x_prev, x0_hat = dpmpp_2m_step(diffusion, output_fn(x, t), t, x, t_prev, x0_last, t_last)
        x0_last, t_last = x0_hat, t
        return x_prev, x0_hat

    return _loop(step, x, timesteps + [-1], callback, return_intermediates)


def euler_sample(model_fn: ModelFn, diffusion: GaussianDiffusion, shape: Sequence[int] | None, *args: Any,
                 **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """`euler_step` over `ddim_timesteps(T, steps, spacing)`: first order, one model call per step (Karras
    et al. 2022, Alg. 1 without churn; the same samples as `ddim_sample` with η = 0). Arguments and result as
    `ddim_sample`'s, without η."""
    return _ode_sample("euler", model_fn, diffusion, shape, *args, **kwargs)


def heun_sample(model_fn: ModelFn, diffusion: GaussianDiffusion, shape: Sequence[int] | None, *args: Any,
                **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """`heun_step` over `ddim_timesteps(T, steps, spacing)`: second order, 2·steps − 1 model calls (two per
    step, one on the last; Karras et al. 2022, Alg. 2 without churn). Arguments and result as `euler_sample`'s."""
    return _ode_sample("heun", model_fn, diffusion, shape, *args, **kwargs)


def dpmpp_2m_sample(model_fn: ModelFn, diffusion: GaussianDiffusion, shape: Sequence[int] | None, *args: Any,
                    **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """`dpmpp_2m_step` over `ddim_timesteps(T, steps, spacing)`, each step reusing the previous x̂_0: second
    order for one model call per step (Lu et al. 2022, DPM-Solver++(2M); first and last step first order).
    Arguments and result as `euler_sample`'s."""
    return _ode_sample("dpmpp_2m", model_fn, diffusion, shape, *args, **kwargs)


ODE_SAMPLERS = {"dpmpp_2m": dpmpp_2m_sample, "euler": euler_sample, "heun": heun_sample}


# --- Flow matching: Euler and Heun on dx/dt = v_θ(x, t), t from 1 (noise) to 0 (data) ---------------------------
# A rectified-flow model (diffusion.RectifiedFlow) predicts the velocity itself, so its ODE needs no change of
# variables: an Euler step is x_prev = x_t + (t_prev − t)·v̂. On exactly straight paths (one data point) a single
# Euler step would be exact; the learned average velocity bends them, which is what more steps or Heun's second
# order correct. Guidance combines the velocities, v̂ = v̂(∅) + s·(v̂(y) − v̂(∅)), like ε̂ above.
# The callback and the recorded "timesteps" get the flow time t ∈ [0, 1] (a float), not an integer step.
def flow_timesteps(steps: int) -> list[float]:
    """The S + 1 times 1 = t_0 > t_1 > … > t_S = 0 of an S-step flow sampler, evenly spaced (t_i = 1 − i/S)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int (model calls: Euler S, Heun 2·S − 1), got {steps!r}")
    return [1.0 - i / steps for i in range(steps)] + [0.0]


def flow_euler_step(flow: RectifiedFlow, velocity: torch.Tensor, t: float, x_t: torch.Tensor, t_prev: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler step of dx/dt = v̂ from t to t_prev < t -> (x_{t_prev}, x̂_0):  x_prev = x_t + (t_prev − t)·v̂,
    with x̂_0 = x_t − t·v̂ (to t_prev = 0 the step returns exactly x̂_0)."""
    x0_hat, _ = flow.predict_x0_and_eps(x_t, t, velocity)
    return x_t + (t_prev - t) * velocity, x0_hat


def flow_heun_step(flow: RectifiedFlow, velocity: torch.Tensor, t: float, x_t: torch.Tensor, t_prev: float,
                   output_fn: Callable[[torch.Tensor, float], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One Heun step (the trapezoid rule, second order) -> (x_{t_prev}, x̂_0):

        x_E    = x_t + (t_prev − t)·v̂                  an Euler step ...
        v̂'     = output_fn(x_E, t_prev)                 ... and the velocity there (the second model call)
        x_prev = x_t + (t_prev − t)·(v̂ + v̂')/2

    The step to the data (t_prev = 0) stays an Euler step, as in Karras et al.'s Alg. 2: the model is never asked
    about t = 0, a time that logit-normal training almost never shows it, and the sampler makes 2·S − 1 calls.
    """
    x_euler, x0_hat = flow_euler_step(flow, velocity, t, x_t, t_prev)
    if t_prev <= 0:
        return x_euler, x0_hat
    velocity_prime = output_fn(x_euler, t_prev)                          # v̂' at (x_E, t_prev)
    return x_t + (t_prev - t) * (velocity + velocity_prime) / 2, x0_hat   # x_prev = x_t + (t_prev − t)·(v̂ + v̂')/2


@torch.no_grad()
def _flow_sample(solver: str, model_fn: ModelFn, flow: RectifiedFlow, shape: Sequence[int] | None, cond: Cond = None,
                 uncond: Cond = None, guidance_scale: float = 1.0, steps: int = 50,
                 generator: torch.Generator | None = None, x_T: torch.Tensor | None = None,
                 callback: Callback | None = None, return_intermediates: bool = False,
                 device: torch.device | str | None = None) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """Both flow samplers: `euler_sample`'s arguments without spacing (x_T is the starting noise x_1), one
    `solver` step per interval of `flow_timesteps(steps)`; the recorded timesteps are flow times."""
    times = flow_timesteps(steps)                                            # checks `steps`
    x = _initial_noise(shape, generator, x_T, device, cond)                  # x_1 ~ N(0, I)

    def output_fn(x: torch.Tensor, t: float) -> torch.Tensor:         # v̂(x, t), guided; the U-Net sees t·(T − 1)
        t_model = flow.model_time(torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device))
        return guided_model_output(model_fn, x, t_model, cond, uncond, guidance_scale)

    def step(x: torch.Tensor, t: float, t_prev: float) -> tuple[torch.Tensor, torch.Tensor]:
        if solver == "euler":
            return flow_euler_step(flow, output_fn(x, t), t, x, t_prev)
        return flow_heun_step(flow, output_fn(x, t), t, x, t_prev, output_fn)

    return _loop(step, x, times, callback, return_intermediates)


def flow_euler_sample(model_fn: ModelFn, flow: RectifiedFlow, shape: Sequence[int] | None, *args: Any,
                      **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """`flow_euler_step` over `flow_timesteps(steps)`: first order, one model call per step. Arguments and
    result as `euler_sample`'s without spacing (x_T is the starting noise x_1; the timesteps are flow times)."""
    return _flow_sample("euler", model_fn, flow, shape, *args, **kwargs)


def flow_heun_sample(model_fn: ModelFn, flow: RectifiedFlow, shape: Sequence[int] | None, *args: Any,
                     **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """`flow_heun_step` over `flow_timesteps(steps)`: second order, 2·steps − 1 model calls. Arguments and
    result as `flow_euler_sample`'s."""
    return _flow_sample("heun", model_fn, flow, shape, *args, **kwargs)


FLOW_SAMPLERS = {"euler": flow_euler_sample, "heun": flow_heun_sample}
