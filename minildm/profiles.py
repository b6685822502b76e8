"""The three hardware presets every training entry point and notebook reads: `ci`, `cpu`, `gpu`.

    ci   seconds per notebook: tiny models, a handful of steps; for tests and nbval.
    cpu  a laptop CPU in minutes: small models that still learn Shapes well.
    gpu  best results on one GPU.

Select one with the MINILDM_PROFILE environment variable (default: `gpu` when CUDA is available,
`cpu` otherwise) or pass a name to `get_profile`. Every size, step count and learning rate that a
notebook might want to change lives here, not in the code that uses it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import torch

PROFILE_ENV = "MINILDM_PROFILE"


@dataclass(frozen=True)
class DataConfig:
    """The built-in Shapes dataset (see data.py)."""

    resolution: int = 32          # square images, a multiple of 8
    max_objects: int = 2          # scenes hold 1..max_objects objects
    train_size: int = 50_000      # samples are rendered on the fly, so sizes cost no disk
    val_size: int = 1_000
    test_size: int = 1_000


@dataclass(frozen=True)
class AEConfig:
    """Autoencoder (first stage) architecture and training; see autoencoder.py, losses.py, train_ae.py."""

    kind: str = "kl"                       # "kl" (KL-regularized), "vq" (vector-quantized), "pixel" (f = 1, identity)
    # architecture
    ch: int = 32                           # base width
    ch_mult: tuple[int, ...] = (1, 2, 2)   # f = 2 ** (len(ch_mult) - 1)
    num_res_blocks: int = 1                # per encoder level; the decoder uses num_res_blocks + 1
    z_channels: int = 4
    attn_resolutions: tuple[int, ...] = ()  # downsampling factors (1, 2, 4 ...), not pixel sizes
    dropout: float = 0.0
    n_embed: int = 256                     # VQ codebook size
    beta: float = 0.25                     # VQ commitment weight (on ‖z − sg[e]‖², the VQ-VAE form)
    # loss
    lpips_net: str = "alex"                # "vgg" (paper), "alex", "squeeze"
    perceptual_weight: float = 1.0
    kl_weight: float = 1e-6
    codebook_weight: float = 1.0
    disc_start: int = 2_000                # GAN terms are zero and D is not trained before this step
    disc_weight: float = 0.5
    disc_loss: str = "hinge"               # "hinge" or "vanilla"
    disc_ndf: int = 32
    disc_layers: int = 3
    # optimization
    lr: float = 2e-4
    batch_size: int = 32
    steps: int = 4_000
    val_every: int = 500                   # validate (PSNR) and checkpoint every this many steps
    val_images: int = 256                  # validation-split images used for PSNR
    ema_decay: float = 0.0                 # 0 disables the EMA copy
    seed: int = 0

    def __post_init__(self):
        if self.kind not in ("kl", "vq", "pixel"):
            raise ValueError(f"AEConfig.kind must be 'kl', 'vq' or 'pixel', got {self.kind!r}")
        if not self.ch_mult or any(m <= 0 for m in self.ch_mult):
            raise ValueError(f"AEConfig.ch_mult must be a non-empty tuple of positive ints, got {self.ch_mult!r}")
        if self.lpips_net not in ("vgg", "alex", "squeeze"):
            raise ValueError(f"AEConfig.lpips_net must be 'vgg', 'alex' or 'squeeze', got {self.lpips_net!r}")
        if self.disc_loss not in ("hinge", "vanilla"):
            raise ValueError(f"AEConfig.disc_loss must be 'hinge' or 'vanilla', got {self.disc_loss!r}")
        # checkpoints store tuples as lists; normalize so configs compare equal after a round trip
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))

    @property
    def downsample_factor(self) -> int:
        """f = H/h = 2^(len(ch_mult) − 1)."""
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class LDMConfig:
    """Latent diffusion (second stage): U-Net, conditioning, schedule and training; see ldm.py, train_ldm.py."""

    cond: str = "text"                                # "text", "class", "layout", "sr" or "none"
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (1, 2)   # downsampling factors, not pixel sizes
    num_heads: int = 4
    context_dim: int = 64                             # width of τθ(y) (text / layout tokens)
    text_layers: int = 2
    box_bins: int = 16                                # layout coordinates are quantized into this many bins
    coord_channels: bool = False                      # append (x, y) coordinate channels to z_t (see unet.py)
    sr_factor: int = 4                                # super-resolution: low-res side = image side / sr_factor
    dropout: float = 0.0
    timesteps: int = 1000
    schedule: str = "scaled_linear"
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    prediction_type: str = "epsilon"
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
    sample_steps: int = 50
    guidance_scale: float = 3.0


@dataclass(frozen=True)
class Profile:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    ae: AEConfig = field(default_factory=AEConfig)
    ldm: LDMConfig = field(default_factory=LDMConfig)

    def replace(self, **sections) -> "Profile":
        """A copy with some fields changed: `p.replace(ae={"steps": 10})`."""
        changes = {}
        for section, values in sections.items():
            if section not in ("data", "ae", "ldm"):
                raise ValueError(f"unknown profile section {section!r}; expected 'data', 'ae' or 'ldm'")
            changes[section] = dataclasses.replace(getattr(self, section), **values)
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "ci": Profile(
        name="ci",
        data=DataConfig(resolution=32, train_size=512, val_size=64, test_size=64),
        ae=AEConfig(ch=8, ch_mult=(1, 2, 2), z_channels=4, steps=20, batch_size=8, disc_start=10,
                    val_every=10, val_images=32, disc_ndf=8, n_embed=32),
        ldm=LDMConfig(model_channels=16, channel_mult=(1, 2), num_heads=2, context_dim=16, text_layers=1,
                      steps=20, batch_size=8, sample_steps=5, cache_size=64, warmup_steps=5,
                      sample_every=0, checkpoint_every=10, prediction_type="v_prediction", coord_channels=True),
    ),
    # cpu autoencoder: measured on the 2-core (shared) dev machine, random AlexNet LPIPS, lr 1e-3 learns
    # fastest per minute (2e-3 is noisier, 2e-4 much slower); ch 16 with ch_mult (1, 2, 4) beats ch 32 with
    # (1, 2, 2) per minute because the full-resolution convs dominate the cost. Even a random LPIPS trunk at
    # w_p = 1 helps (w_p = 0.1 reached ~4 dB less PSNR after 4 min). The GAN starts late, as in the reference
    # (disc_start 50001 there): within a CPU budget it costs ~35% more time per step and trades PSNR for
    # sharpness, so the default 3-4 minute run (and a 10-minute bench-ae on this machine) stays GAN-free.
    # Measured (bench-ae, 1 thread, shared machine): KL-f4 ~3.6 steps/s, val PSNR 26.2 dB at 600 steps, 27.5 dB
    # at 800, 30.1 dB at 1800; 30.6 dB test PSNR after 10 minutes (2165 steps). VQ-f4 ~4.5 steps/s, 26.9 dB
    # test PSNR after 10 minutes (2740 steps; measured with disc_start 2500, where the GAN's start cost ~1 dB
    # over the last 240 steps, hence 5000 now).
    "cpu": Profile(
        name="cpu",
        ae=AEConfig(ch=16, ch_mult=(1, 2, 4), z_channels=4, batch_size=16, lr=1e-3, perceptual_weight=1.0,
                    lpips_net="alex", steps=1_400, disc_start=5_000, val_every=200, val_images=256),
        # cpu LDM, measured on the 2-core dev machine (uncontended, 2 threads), 6-minute runs, 100 one-object
        # test prompts judged by the Shapes evaluator at guidance 3: with ε-prediction (the paper's default)
        # color/size reach 97-99 % but positions stay at chance (13 %, also with Min-SNR weighting and with
        # coordinate channels): under ε-loss the high-noise steps, where the layout is decided, carry almost no
        # gradient (the x0 part of ε is scaled by √ᾱ_t ≈ 0.07). With v-prediction positions reach 100 % at the
        # same budget. model_channels 32 runs at ~165-190 ms/step at batch 64 (64 channels: ~360 ms). Step counts
        # are sized so that `make demo` from a fresh clone stays under 15 minutes on this machine (uncontended,
        # the autoencoder runs at ~10 steps/s, the LDM at ~5.5-5.9 steps/s; at a busy moment the demo's 9.5-minute cap
        # stops it a little before 3,200 steps). 200 one-object test prompts, DDIM-50, guidance 3; 1,400-step
        # autoencoders:
        #   - Shapes and the text encoder: with GPT/CLIP-style 0.02-std word embeddings the encoder's outputs for
        #     "circle" and "square" were 5 % apart at the shape word, the U-Net ignored that word (train_ldm's
        #     `word_influence` 0.01-0.02 at every t, against 0.95 for red/blue at t = 800) and drew rounded
        #     squares for both: 77.5 % at 3,200 steps, and runs that differed only in rounding scored 72.5-91 %
        #     at ~3,000 steps, depending on when the distinction happened to emerge. With unit-variance embeddings
        #     (conditioning.py) the influence is 0.3-0.55 and two seeds scored 95.5 / 93 % at 2,500 steps and
        #     100 / 97 % at 3,200 (two-object prompts 72 %, Shapes-FID 37.8, first seed).
        #   - EMA: with the reference warm-up d_n = min(decay, (1+n)/(10+n)) the EMA averages over the last ~n/10
        #     steps whatever the decay, so 0.999 and 0.995 score the same, and in a steep stretch it lags: one
        #     run scored 71 % (EMA 0.999) / 77 % (EMA 0.99) / 83 % (raw weights) at 2,500 steps, 86 / 91 / 93.5 %
        #     at 3,000. Raw weights are not safe either: another run's raw weights scored 21.5 % at 3,100 steps (a
        #     loss spike; its EMA 0.99 75.5 %). Hence ema_decay 0.99.
        #   - Rejected, all measured before the embedding fix: lr 2e-3 (loss 0.45 vs 0.35, 4 % right at 2,500
        #     steps); the mean text token added to the time embedding (Imagen/SDXL-style pooled conditioning:
        #     72.5 % at 3,100); a linear LR decay over the last 800 of 3,100 steps (loss 0.328 vs 0.351, but 77 %);
        #     trading autoencoder steps for LDM steps (1,200 + 3,362: 73.5 %); at 2,500 steps cosine LR decay
        #     (53.5 %) and batch 32 for 4,000 steps (49 %) or 5,000 steps with cosine decay (66 %); capping the
        #     v-loss weight of the low-noise steps (gradient norm at t = 10 five times that at t >= 200): 75.5 %.
        ldm=LDMConfig(model_channels=32, context_dim=64, lr=1e-3, batch_size=64, steps=3_200, ema_decay=0.99,
                      prediction_type="v_prediction", coord_channels=True, checkpoint_every=200, sample_every=0),
    ),
    "gpu": Profile(
        name="gpu",
        data=DataConfig(resolution=32, train_size=200_000),
        ae=AEConfig(ch=64, ch_mult=(1, 2, 4), num_res_blocks=2, lpips_net="vgg", steps=20_000, batch_size=64,
                    lr=2e-4, disc_ndf=64, disc_start=10_000, ema_decay=0.999),
        ldm=LDMConfig(model_channels=128, channel_mult=(1, 2, 2), num_res_blocks=2, context_dim=128,
                      text_layers=4, steps=50_000, batch_size=128, ema_decay=0.9999,
                      prediction_type="v_prediction", coord_channels=True),
    ),
}


def default_profile_name() -> str:
    """$MINILDM_PROFILE if set, else `gpu` when CUDA is available, else `cpu`."""
    name = os.environ.get(PROFILE_ENV)
    if name:
        return name.strip()
    return "gpu" if torch.cuda.is_available() else "cpu"


def get_profile(name: str | None = None) -> Profile:
    """Look up a preset by name (default: `default_profile_name()`); unknown names are a clear error."""
    name = default_profile_name() if name is None else name
    if name not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r}; choose one of {', '.join(sorted(PROFILES))} "
            f"(via the ${PROFILE_ENV} environment variable or get_profile(name))"
        )
    return PROFILES[name]
