"""The three hardware presets every training entry point and notebook reads: `ci`, `cpu`, `gpu`.

    ci   seconds per notebook: tiny models, a handful of steps; for tests and nbval.   (tested in CI)
    cpu  a laptop CPU in minutes: small models that still learn Shapes well.           (measured)
    gpu  larger models sized for one GPU by counted FLOPs.                 (predicted, never run on a GPU)

Select one with $MINILDM_PROFILE or `get_profile(name)`; the default is `cpu` on every machine, a GPU included
(`default_profile_name`, `explain_profile`). No profile caps training time: the step counts decide. Every size,
step count and learning rate that a notebook might want to change lives here; the measurements behind the `cpu`
choices are in docs/design-notes.md. The paper's studies have a budget per profile too (ExperimentBudget).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import torch

from ..autoencoder import AEConfig
from ..data.datasets import DataConfig
from ..ldm import LDMConfig
from ..losses import LossConfig
from .configs import AETrainConfig, LDMTrainConfig
from .speed import SpeedConfig

__all__ = ["Profile", "PROFILES", "get_profile", "default_profile_name", "explain_profile", "PROFILE_ENV",
           "DEFAULT_PROFILE", "STATUSES", "ExperimentBudget", "BUDGETS"]

PROFILE_ENV = "MINILDM_PROFILE"
DEFAULT_PROFILE = "cpu"              # the measured recipe: the default on every machine, a GPU included
# What is known about each preset, printed wherever a profile is chosen (setup(), minildm check / info).
STATUSES = {"ci": "tested in CI", "cpu": "measured", "gpu": "predicted, never run on a GPU"}


@dataclass(frozen=True)
class Profile:
    """A named preset: the data; the autoencoder (first stage): its network, its objective and its training; the
    latent diffusion model (second stage): its network and its training; and how fast training runs (precision,
    compile, time caps: speed.SpeedConfig; never what it computes). `status` says what is known about it:
    "measured", "tested in CI", "predicted, never run on a GPU" (STATUSES); "" for a profile made by hand."""

    name: str
    data: DataConfig = field(default_factory=DataConfig)
    ae: AEConfig = field(default_factory=AEConfig)
    ae_loss: LossConfig = field(default_factory=LossConfig)
    ae_train: AETrainConfig = field(default_factory=AETrainConfig)
    ldm: LDMConfig = field(default_factory=LDMConfig)
    ldm_train: LDMTrainConfig = field(default_factory=LDMTrainConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    status: str = ""

    def replace(self, **sections) -> "Profile":
        """A copy with some fields changed: `p.replace(ae_train={"steps": 10}, ldm={"cond": "class"})`."""
        known = [f.name for f in dataclasses.fields(self) if f.name not in ("name", "status")]
        changes = {}
        for section, values in sections.items():
            if section not in known:
                raise ValueError(f"unknown profile section {section!r}; expected one of {', '.join(known)}")
            changes[section] = dataclasses.replace(getattr(self, section), **values)
        return dataclasses.replace(self, **changes)


# the presets' sections by name; the name and its STATUSES entry complete each Profile
PROFILES: dict[str, Profile] = {name: Profile(name, status=STATUSES[name], **sections) for name, sections in {
    "ci": dict(
        data=DataConfig(resolution=32, train_size=512, val_size=64, test_size=64),
        ae=AEConfig(ch=8, ch_mult=(1, 2, 2), z_channels=4, n_embed=32),
        ae_loss=LossConfig(disc_start=10, disc_ndf=8),
        ae_train=AETrainConfig(steps=20, batch_size=8, val_every=10, val_images=32),
        ldm=LDMConfig(model_channels=16, channel_mult=(1, 2), num_heads=2, context_dim=16, text_layers=1,
                      prediction_type="v_prediction", coord_channels=True),
        ldm_train=LDMTrainConfig(steps=20, batch_size=8, sample_steps=5, cache_size=64, warmup_steps=5,
                                 sample_every=0, checkpoint_every=10),
    ),
    "cpu": dict(
        # lr 1e-3 learns fastest per CPU-minute; width 16 with ch_mult (1, 2, 4) beats 32 with (1, 2, 2);
        # the GAN starts after the short budget, as the reference starts it late; lr falls to 0 over the last 30 %
        # of the steps: +1.0 / +1.9 dB validation PSNR over a constant lr on two seeds (docs/design-notes.md)
        ae=AEConfig(ch=16, ch_mult=(1, 2, 4), z_channels=4),
        ae_loss=LossConfig(perceptual_weight=1.0, lpips_net="alex", disc_start=5_000),
        ae_train=AETrainConfig(batch_size=16, lr=1e-3, lr_decay=0.3, steps=1_400, val_every=200, val_images=256),
        # v-prediction: under the ε-loss the high-noise steps that decide positions get almost no gradient
        # (positions at chance after 6 minutes, 100 % with v); EMA 0.99: the reference's warm-up makes 0.999
        # lag by ~n/10 steps in this short run; 3,200 steps: fewer cost prompt accuracy (2,000 steps: 92.5 % /
        # 45.5 % of one- / two-object prompts against 99 / 80 %), an LR decay lowers the loss but not the errors
        ldm=LDMConfig(model_channels=32, context_dim=64, prediction_type="v_prediction", coord_channels=True),
        ldm_train=LDMTrainConfig(lr=1e-3, batch_size=64, steps=3_200, ema_decay=0.99, checkpoint_every=200,
                                 sample_every=0),
    ),
    "gpu": dict(
        # Runs only when asked for ($MINILDM_PROFILE=gpu, --profile gpu): a GPU alone selects the measured cpu
        # recipe. bf16 autocast, compiled U-Net and autoencoder, NHWC, TF32 (speed.py); never run on a GPU yet.
        speed=SpeedConfig(precision="auto", compile=True, channels_last=True, tf32=True),
        data=DataConfig(resolution=32, train_size=200_000),
        # Sized by counted FLOPs, not yet measured (`minildm bench --plan gpu`, flops.py): one H100, an ASSUMED
        # 20 % of its 989 TFLOP/s bf16 peak and >= 8 µs per launched op; predicted minutes: autoencoder 1.1,
        # LDMs text 2.8, class 2.0, layout 2.6, sr 2.0: 10.4 for the course's five models, 15 the promise.
        # The LDM steps are launch-bound (~1,000-1,500 ops each), so batch 256 costs little more than 128.
        ae=AEConfig(ch=64, ch_mult=(1, 2, 4), num_res_blocks=2),
        ae_loss=LossConfig(lpips_net="vgg", disc_ndf=64, disc_start=4_000),
        ae_train=AETrainConfig(steps=8_000, batch_size=64, lr=2e-4, ema_decay=0.999),
        ldm=LDMConfig(model_channels=128, channel_mult=(1, 2, 2), num_res_blocks=2, context_dim=128,
                      text_layers=4, prediction_type="v_prediction", coord_channels=True),
        ldm_train=LDMTrainConfig(steps=14_000, batch_size=256, cache_size=50_000, ema_decay=0.999),
    ),
}.items()}


def default_profile_name() -> str:
    """$MINILDM_PROFILE if set, else `cpu` (DEFAULT_PROFILE, the measured recipe), also when a GPU is present:
    the larger `gpu` recipe is predicted, never run, so it runs only when asked for."""
    name = os.environ.get(PROFILE_ENV, "").strip()
    return name or DEFAULT_PROFILE


def explain_profile(name: str | Profile | None = None) -> str:
    """One line: which recipe runs and why, e.g. "profile cpu (measured): the default; a GPU is present (it runs
    this recipe) — MINILDM_PROFILE=gpu for the larger, predicted recipe"."""
    profile = get_profile(name)
    env = os.environ.get(PROFILE_ENV, "").strip()
    why = "asked for" if name is not None else f"from ${PROFILE_ENV}" if env else "the default"
    line = f"profile {profile.name} ({profile.status or 'made by hand'}): {why}"
    if profile.name == "gpu":
        return line + f"; sized by counted FLOPs, not measured (profile {DEFAULT_PROFILE} is the measured recipe)"
    if why != "the default":
        return line
    if torch.cuda.is_available():
        return line + f"; a GPU is present (it runs this recipe) — {PROFILE_ENV}=gpu for the larger, predicted recipe"
    return line + f" ({PROFILE_ENV}=ci or gpu for the others)"


def get_profile(name: str | Profile | None = None) -> Profile:
    """Look up a preset by name (default: `default_profile_name()`; a Profile is returned as it is); unknown
    names are a clear error."""
    if isinstance(name, Profile):
        return name
    name = default_profile_name() if name is None else name
    if name not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r}; choose one of {', '.join(sorted(PROFILES))} "
            f"(via the ${PROFILE_ENV} environment variable or get_profile(name))"
        )
    return PROFILES[name]


@dataclass(frozen=True)
class ExperimentBudget:
    """How much each experiment may spend; presets per profile in BUDGETS (a: f-study, b: sampler,
    c: guidance, d: rate-distortion, e: ode-samplers)."""

    # (a) downsampling-factor study
    factors: tuple[int, ...] = (1, 2, 4, 8)
    ae_minutes: float = 3.0            # equal="time": each autoencoder trains this long (f = 1 has none)
    ldm_minutes: float = 6.0           # equal="time": each LDM trains this long in total, the same for every f
    ae_steps: int | None = None        # equal="steps": each autoencoder's steps (None: the profile's ae_train.steps)
    ldm_steps: int | None = None       # equal="steps": each LDM's steps (None: the profile's ldm_train.steps)
    ldm_batch: int | None = None       # the f-study LDMs' batch size, the same for every f (None: the profile's)
    segments: int = 3                  # evaluate after each 1/segments of the LDM budget
    eval_samples: int = 128            # samples per evaluation (FID, floor, prompt accuracy)
    eval_steps: int = 25               # DDIM steps of the evaluation samples
    eval_batch: int = 64
    guidance_scale: float = 3.0        # for (a) and (b)
    throughput_batch: int = 16         # sampling speed: one batch of DDIM-`throughput_steps`, guided
    throughput_steps: int = 50
    # (b) sampler sweep
    sampler_steps: tuple[int, ...] = (10, 20, 50, 100, 250)
    sampler_etas: tuple[float, ...] = (0.0, 0.5, 1.0)
    sampler_samples: int = 200
    # (c) guidance sweep
    guidance_scales: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 5.0, 7.5)
    guidance_samples: int = 200
    guidance_steps: int = 50
    # (d) rate-distortion
    rd_images: int = 1000              # test images reconstructed per autoencoder
    # (e) samplers against model evaluations: DDIM η = 0 / 1, DPM-Solver++(2M), Heun at about nfe U-Net calls each
    nfe: tuple[int, ...] = (5, 10, 20, 50)
    nfe_samples: int = 512             # prompts (and starting noises) per row, the same for every sampler

    def __post_init__(self):
        for name in ("factors", "sampler_steps", "sampler_etas", "guidance_scales", "nfe"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.segments < 1:
            raise ValueError(f"ExperimentBudget.segments must be ≥ 1, got {self.segments}")
        if not self.nfe or min(self.nfe) < 1:
            raise ValueError(f"ExperimentBudget.nfe must be model-evaluation counts ≥ 1, got {self.nfe}")
        for name in ("ae_steps", "ldm_steps", "ldm_batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"ExperimentBudget.{name} must be ≥ 1 or None (the profile's), "
                                 f"got {getattr(self, name)}")
        for name in ("eval_samples", "sampler_samples", "guidance_samples", "rd_images", "nfe_samples"):
            if getattr(self, name) < 4:
                raise ValueError(f"ExperimentBudget.{name} must be ≥ 4 (precision/recall use k = 3 neighbours), "
                                 f"got {getattr(self, name)}")

    @staticmethod
    def for_profile(profile: str | Profile | None = None) -> "ExperimentBudget":
        """The preset for a profile (by name; profiles made with Profile.replace keep their name)."""
        name = get_profile(profile).name
        if name not in BUDGETS:
            raise ValueError(f"no experiment budget for profile {name!r}; pass budget=ExperimentBudget(...) "
                             f"or use one of {', '.join(BUDGETS)}")
        return BUDGETS[name]


BUDGETS: dict[str, ExperimentBudget] = {
    # seconds: shows the machinery, the numbers mean nothing
    "ci": ExperimentBudget(ae_minutes=0.02, ldm_minutes=0.05, segments=2, eval_samples=8, eval_steps=5,
                           eval_batch=16, throughput_batch=2, throughput_steps=5, sampler_steps=(5, 10, 20),
                           sampler_samples=16, guidance_scales=(1.0, 3.0, 7.5), guidance_samples=16,
                           guidance_steps=5, rd_images=32, nfe=(4, 5), nfe_samples=16),
    # a laptop CPU: pixel space is ~40x slower per step than f = 4. Sized so that `minildm experiments all
    # --profile cpu` takes about 40 minutes on a 2-core machine (f-study ~26, sweeps ~12, rate-distortion ~1).
    # ode-samplers: 512 prompts put the 95 % Wilson interval of an accuracy near 87 % at ±2.9 points (±4.2 at 256),
    # so a gap of 5-6 points between two samplers shows; ~340 model calls per prompt over the whole sweep: 6.7 min
    # for 256 prompts on one thread beside another job (docs/results.md), so about 13 min at 512.
    "cpu": ExperimentBudget(ae_minutes=2.0, ldm_minutes=4.0, segments=2),
    # one GPU (not yet run)
    "gpu": ExperimentBudget(ae_minutes=15.0, ldm_minutes=30.0, segments=5, eval_samples=1000, eval_steps=50,
                            eval_batch=250, throughput_batch=64, sampler_samples=1000, guidance_samples=1000,
                            rd_images=1000, nfe_samples=1000),
}
