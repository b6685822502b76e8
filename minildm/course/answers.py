"""The answer key of the course's exercises: what each exercise's check compares the student's answer with.

The check cells call these functions (`check_answer("Exercise 6.2", my_steps, answers.ex_6_2())`) so that the
student edition shows no reference call that would pass if typed as the answer. Read a function here after
trying its exercise: each one computes the answer with the package, the way the notebook's text explains it.
Exercises that measure something (predict, then measure) keep their measurement in the notebook, where the
student sees it run.
"""

from __future__ import annotations

import torch

from minildm.conditioning import SemanticConcat, drop_rows
from minildm.data.shapes import COLOR_NAMES, NUM_CLASSES, class_id, class_name, parse_caption, parse_layout
from minildm.eval.metrics import fid_from_features, latent_statistics, radial_power_spectrum
from minildm.eval.probes import first_conv_input
from minildm.eval.process import timestep_at_snr
from minildm.losses import adaptive_weight, hinge_d_loss
from minildm.nn import EMA, attention_explicit, timestep_embedding
from minildm.course.toy2d import straightness
from minildm.course.viz import slerp
from minildm.samplers import ddim_timesteps, flow_euler_step, guided_model_output

# ── 00 · Setup and shapes ───────────────────────────────────────────────────────────────────────────────────

def ex_0_1() -> dict:
    """What parse_caption returns for "a large red circle to the right of a small green triangle"."""
    return parse_caption("a large red circle to the right of a small green triangle")


def ex_0_3(resolution: int, f: int, c: int) -> float:
    """The rate (h·w·c) / (H·W·3) of a latent of side resolution // f with c channels, for a square image."""
    h = resolution // f
    return h * h * c / (resolution * resolution * 3)

# ── 01 · Perceptual compression ─────────────────────────────────────────────────────────────────────────────

def ex_1_1(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss L_D from its patch logits on real images and on reconstructions."""
    return hinge_d_loss(logits_real, logits_fake)


def ex_1_2(rec: torch.Tensor, g_loss: torch.Tensor, last: torch.Tensor, disc_weight: float) -> torch.Tensor:
    """The adaptive GAN weight λ from the gradients of L_rec and L_GAN on the decoder's last layer W."""
    return adaptive_weight(rec, g_loss, last, disc_weight)


def ex_1_4(x_test: torch.Tensor) -> torch.Tensor:
    """The radially averaged power spectrum of the first test image, rings k = 1 … H/2."""
    return radial_power_spectrum(x_test[:1].cpu())[1]


# ── 02 · The latent space ───────────────────────────────────────────────────────────────────────────────────

def ex_2_1(ae, first):
    """The scale factor 1/std(z) of the first training batch `first`, z one posterior sample drawn with seed 0."""
    return latent_statistics(ae, [first], generator=torch.Generator().manual_seed(0))["scale_factor"]


def ex_2_4(a, b):
    """The latent 30 % of the way from `a` to `b` along the great circle: slerp(a, b, 0.3)."""
    return slerp(a, b, 0.3)


# ── 03 · Forward diffusion ──────────────────────────────────────────────────────────────────────────────────

def ex_3_1(diffusion, sigma_z):
    """The first step t where latents of standard deviation `sigma_z` hold no more signal than noise (σ_z²·SNR ≤ 1)."""
    return timestep_at_snr(diffusion, 1.0 / sigma_z**2)


def ex_3_2(v_diffusion, z_t, t, v_hat):
    """The estimate x̂_0 = √ᾱ_t·z_t − √(1 − ᾱ_t)·v̂ that the v-prediction `v_hat` at step t gives."""
    return v_diffusion.predict_x0_and_eps(z_t, t, v_hat)[0]


# ── 04 · The U-Net and cross-attention ──────────────────────────────────────────────────────────────────────

def ex_4_1(q, k, v, key_mask) -> torch.Tensor:
    """Masked attention softmax(QKᵀ/√d)·V of q, k, v, the padding keys (False in `key_mask`) left out."""
    return attention_explicit(q, k, v, key_mask)[0]


def ex_4_3(ts, dim) -> torch.Tensor:
    """The sinusoidal timestep embedding [cos(t·ω_i), sin(t·ω_i)] of the steps `ts`, `dim` numbers per step."""
    return timestep_embedding(ts, dim)


# ── 05 · Training the LDM ───────────────────────────────────────────────────────────────────────────────────

def ex_5_1(ldm, z0, raw, t, noise) -> torch.Tensor:
    """L_simple of `ldm` on latents z0 with captions raw, at timesteps t, with noise ε = `noise`."""
    return ldm.diffusion.training_loss(ldm.model_fn, z0, ldm.encode_condition(raw), t=t, noise=noise)


def ex_5_2(weights: list[torch.Tensor], decay: float) -> torch.Tensor:
    """The EMA (nn.EMA, with its warm-up) after a layer's weight took the values weights[1:], from weights[0]."""
    layer = torch.nn.Linear(weights[0].shape[1], weights[0].shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weights[0])
        ema = EMA(layer, decay=decay)
        for w in weights[1:]:
            layer.weight.copy_(w)                   # what an optimizer step would have done
            ema.update(layer)
    return ema.shadow["weight"]


# ── 06 · DDIM sampling ──────────────────────────────────────────────────────────────────────────────────────

def ex_6_1(ldm, raw, x_T) -> torch.Tensor:
    """The latent that deterministic DDIM (η = 0) reaches from x_T in 10 steps, with the model's guidance."""
    return ldm.sample(raw, x_T=x_T, steps=10, eta=0.0, decode=False)


def ex_6_2() -> list[int]:
    """The `trailing` timesteps for T = 1000 and S = 7."""
    return ddim_timesteps(1000, 7, "trailing")


# ── 07 · Guidance and attention ─────────────────────────────────────────────────────────────────────────────

def ex_7_1(ldm, z_t, t, cond, uncond, s) -> torch.Tensor:
    """The guided output out(∅) + s·(out(y) − out(∅)) at z_t and t, from one doubled batch [y; ∅]."""
    with torch.no_grad():
        return guided_model_output(ldm.model_fn, z_t, t, cond, uncond, guidance_scale=s)


# ── 08 · Other conditions ───────────────────────────────────────────────────────────────────────────────────

def ex_8_1(spec) -> torch.Tensor:
    """The layout tensor of the text form `spec` for max_objects = 2: rows [class_id, x0, y0, x1, y1], padded with −1."""
    return parse_layout(spec, max_objects=2)


def ex_8_2(sr, z_t, t, low4) -> torch.Tensor:
    """What the super-resolution U-Net's first convolution receives for z_t at t with the low-res images low4."""
    return first_conv_input(sr, z_t, t, low4)


def ex_8_4(m0, f) -> torch.Tensor:
    """The class shares that SemanticConcat concatenates to z_t for the map m0 (1, H, W): one-hot over the 24
    classes and background, averaged over each f×f block."""
    return SemanticConcat(NUM_CLASSES + 1)(m0, size=(m0.shape[-2] // f, m0.shape[-1] // f))["concat"]


# ── 09 · Experiments ────────────────────────────────────────────────────────────────────────────────────────

def ex_9_1(fa: torch.Tensor, fb: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to the feature sets fa and fb (FID by hand)."""
    return float(fid_from_features(fa, fb))


# ── 10 · Beyond the paper ───────────────────────────────────────────────────────────────────────────────────

def ex_10_2(model, flow, x, t, t_prev) -> torch.Tensor:
    """One Euler step of the flow ODE dx/dt = v̂(x, t) from t to t_prev: x + (t_prev − t)·v̂, the network asked
    at its own time scale, flow.model_time(t) = t·(T − 1)."""
    with torch.no_grad():
        velocity = model(x, flow.model_time(torch.full((x.shape[0],), float(t))))
    return flow_euler_step(flow, velocity, t, x, t_prev)[0]


def ex_10_3(paths) -> float:
    """The straightness of paths (K + 1, N, 2): summed path lengths over summed distances between their ends."""
    return straightness(paths)


def ex_10_4(diffusion, z_t, t, v_hat) -> torch.Tensor:
    """The flow velocity u = ε̂ − x̂_0 that a v-prediction diffusion model's output v̂ at step t implies."""
    x0_hat, eps_hat = diffusion.predict_x0_and_eps(z_t, t, v_hat)
    return eps_hat - x0_hat


__all__ = sorted(name for name in dir() if name.startswith("ex_"))
