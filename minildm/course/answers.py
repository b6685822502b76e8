"""The answer key of the course's exercises: what each exercise's check compares the student's answer with.

The check cells call these functions (`check_answer("Exercise 6.2", my_steps, answers.ex_6_2())`) so that the
student edition shows no reference call that would pass if typed as the answer. Read a function here after
trying its exercise: each one computes the answer with the package, the way the notebook's text explains it.
Exercises that measure something (predict, then measure) keep their measurement in the notebook, where the
student sees it run.
"""

from __future__ import annotations

import torch

from minildm.conditioning import drop_rows
from minildm.data.shapes import COLOR_NAMES, class_id, class_name, parse_caption, parse_layout
from minildm.eval.metrics import fid_from_features, latent_statistics, radial_power_spectrum
from minildm.eval.probes import first_conv_input
from minildm.eval.process import timestep_at_snr
from minildm.losses import adaptive_weight, hinge_d_loss
from minildm.nn import EMA, attention_explicit, timestep_embedding
from minildm.samplers import ddim_timesteps, guided_model_output
from minildm.utils import slerp

# ── 00 · Setup and shapes ───────────────────────────────────────────────────────────────────────────────────

# ── 01 · Perceptual compression ─────────────────────────────────────────────────────────────────────────────

# ── 02 · The latent space ───────────────────────────────────────────────────────────────────────────────────

# ── 03 · Forward diffusion ──────────────────────────────────────────────────────────────────────────────────

# ── 04 · The U-Net and cross-attention ──────────────────────────────────────────────────────────────────────

# ── 05 · Training the LDM ───────────────────────────────────────────────────────────────────────────────────

# ── 06 · DDIM sampling ──────────────────────────────────────────────────────────────────────────────────────

# ── 07 · Guidance and attention ─────────────────────────────────────────────────────────────────────────────

# ── 08 · Other conditions ───────────────────────────────────────────────────────────────────────────────────

# ── 09 · Experiments ────────────────────────────────────────────────────────────────────────────────────────

__all__ = sorted(name for name in dir() if name.startswith("ex_"))
