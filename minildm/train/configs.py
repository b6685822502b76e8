"""How the two stages are trained, apart from what they are: the networks' configs (autoencoder.AEConfig,
ldm.LDMConfig) are stored with their weights; these are the optimisation, the run's schedule and (for the LDM) its
conditioning dropout, loss weighting and sample grids. The first stage's objective is losses.LossConfig."""

from __future__ import annotations

from dataclasses import dataclass

from ..ldm import GUIDANCE_SCALE, SAMPLE_STEPS

__all__ = ["AETrainConfig", "LDMTrainConfig"]


@dataclass(frozen=True)
class AETrainConfig:
    """Training the autoencoder (train_autoencoder): two Adams with betas (0.5, 0.9), one for it, one for D."""

    lr: float = 2e-4
    lr_decay: float = 0.0                  # the last fraction of the steps over which lr falls linearly to 0
    batch_size: int = 32
    steps: int = 4_000
    val_every: int = 500                   # validate (PSNR) and checkpoint every this many steps
    val_images: int = 256                  # validation-split images used for PSNR
    ema_decay: float = 0.0                 # 0 disables the EMA copy
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.lr_decay < 1.0:          # the last fraction of the steps, over which lr falls to 0
            raise ValueError(f"AETrainConfig.lr_decay must be a fraction of the steps in [0, 1), "
                             f"got {self.lr_decay!r}")


@dataclass(frozen=True)
class LDMTrainConfig:
    """Training the latent diffusion model (train_ldm): L_simple with conditioning dropout, AdamW, LR warm-up,
    an EMA; and the sample grids written during the run."""

    loss_weighting: str = "simple"                    # "simple" (the paper's L_simple) or "min_snr" (diffusion.py)
    cond_drop_prob: float = 0.1                       # classifier-free guidance: train with y = ∅ this often
    lr: float = 3e-4
    warmup_steps: int = 100
    lr_schedule: str = "constant"                     # after warm-up: "constant" (reference) or "cosine" (to 0)
    weight_decay: float = 0.01
    batch_size: int = 64
    steps: int = 6_000
    ema_decay: float = 0.999
    cache_size: int = 20_000                          # training images encoded once into cached latents (0: off)
    sample_every: int = 1_000                         # write a sample grid every this many steps (0: never)
    checkpoint_every: int = 500
    sample_steps: int = SAMPLE_STEPS                  # the grids' DDIM steps
    guidance_scale: float = GUIDANCE_SCALE            # the grids' guidance s

    def __post_init__(self):
        if self.loss_weighting not in ("simple", "min_snr"):
            raise ValueError(f"LDMTrainConfig.loss_weighting must be 'simple' or 'min_snr', "
                             f"got {self.loss_weighting!r}")
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise ValueError(f"LDMTrainConfig.cond_drop_prob must be a probability in [0, 1], "
                             f"got {self.cond_drop_prob!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"LDMTrainConfig.lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
