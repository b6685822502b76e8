"""Training both stages of the paper with one loop (LDM Sec. 3.1-3.2, 4; App. G).

    fit(run, folder, steps)        the loop both stages share (loop.py): resume, a time cap, a NaN guard,
                                   atomic checkpoints that never hold diverged weights, a progress bar, a
                                   callback(step, record, run) after every step (for live plots in notebooks)
    AutoencoderTraining            one step of the first stage: generator step on the autoencoder
                                   (L_rec + L_reg + λ·L_GAN), then, from `disc_start` on, a discriminator step
    LatentDiffusionTraining        one step of the second stage: L_simple on (cached) latents of the frozen
                                   autoencoder, with 10 % conditioning dropout, AdamW, LR warm-up and an EMA
    train_autoencoder / train_ldm  build one of them from a profile and fit it
    SampleSnapshots, loss_trend    watching a run: the same prompts and seed sampled at chosen steps; the loss trend

Batch k of a run depends only on (seed, k), and the random state is stored in every checkpoint, so on the
CPU a resumed run is bit-for-bit the run that was never interrupted. How fast a step runs (bf16, compile,
channels-last, how often losses are read back) is the profile's `speed` section (speed.py); several processes
started by torchrun each compute a share of every batch (distributed.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from ..autoencoder import CHECKPOINT_KIND as AE_KIND
from ..autoencoder import AEConfig, build_autoencoder, load_autoencoder
from ..course.viz import save_sample_grid
from ..data.datasets import DataConfig, ShapesDataset
from ..eval.metrics import reconstruction_psnr
from ..ldm import CHECKPOINT_KIND as LDM_KIND
from ..ldm import LatentDiffusion, LDMConfig, sample_latent
from ..losses import AutoencoderLoss
from ..nn import EMA
from ..utils import (
    fused_optimizer,
    get_device,
    linear_decay,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    to_plain,
    unsafe_tensors,
    warmup_cosine,
)
from .distributed import Dist, setup_distributed, wrap_ddp
from .loop import Callback, NonFiniteLossError, _positive_steps, check_finite, fit, guard
from .profiles import Profile, get_profile
from .speed import SpeedConfig, apply_speed, autocast, precision_dtype, sync_interval

__all__ = ["fit", "train_autoencoder", "train_ldm", "AutoencoderTraining", "LatentDiffusionTraining", "SampleSnapshots",
           "loss_trend", "NonFiniteLossError", "check_finite", "encode_cache", "AE_CHECKPOINT", "LDM_CHECKPOINT"]

AE_CHECKPOINT, LDM_CHECKPOINT = "autoencoder.pt", "ldm.pt"


# --- Stage 1: the autoencoder (Sec. 3.1, App. G) ------------------------------------------------------------


class AutoencoderTraining:
    """The first stage's state and step. Each step, on one batch x:
      1. generator step      x̃ = D(E(x));  L_AE = L_rec + L_reg + λ·L_GAN  -> Adam step on the autoencoder
      2. discriminator step  (from `disc_start` on) L_D(x, sg[x̃])          -> Adam step on the discriminator
    Both Adams use betas (0.5, 0.9) and the same learning rate, as in the reference. The discriminator step
    reuses the x̃ of the generator step (detached) instead of re-running the autoencoder.
    """

    kind, checkpoint_name, what = AE_KIND, AE_CHECKPOINT, "autoencoder"
    resumable = ("steps", "val_every", "val_images")        # may change between a run and its resumption
    weight_keys = ("state_dict", "discriminator", "ema")
    shown, eval_keys = ("loss", "l1", "lpips", "g", "d_loss", "val_psnr"), ("val_psnr",)
    advice = "Try a lower learning rate, fp32 instead of bf16, or check the input data."
    guarded = ("loss", "d_loss")

    def __init__(self, config: AEConfig, data: DataConfig, device: torch.device, profile: str = "custom",
                 random_lpips: bool | None = None, lpips_download: bool = True,
                 batches: Callable[[int], Iterator[dict]] | None = None, dataset: Any = None, val_dataset: Any = None,
                 speed: SpeedConfig = SpeedConfig(), dist: Dist = Dist()):
        self.config, self.data, self.device, self.profile, self.batches = config, data, device, profile, batches
        self.dataset, self.val_dataset, self.speed, self.dist = dataset, val_dataset, speed, dist
        self.name, self.sync_every = f"AE-{config.kind}", sync_interval(device, speed)
        if dist.active and batches is not None:
            raise ValueError("several processes need batches they can split: pass dataset=..., not batches=...")
        seed_everything(config.seed)
        self.model = build_autoencoder(config).to(device)
        self.loss_fn = AutoencoderLoss(config, lpips_download=lpips_download, random_backbone=random_lpips).to(device)
        self.disc = self.loss_fn.discriminator
        apply_speed({"encoder": self.model.encoder, "decoder": self.model.decoder}, speed, device)
        self.forward, self.disc_forward = wrap_ddp(self.model, dist, device), wrap_ddp(self.disc, dist, device)
        adam = dict(lr=config.lr, betas=(0.5, 0.9), **fused_optimizer(device))   # both as in the reference
        self.opt_ae = torch.optim.Adam(self.model.parameters(), **adam)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), **adam)
        self.ema = EMA(self.model, config.ema_decay) if config.ema_decay > 0 else None

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config, "data_config": self.data, "profile": self.profile,
                "state_dict": self.model.state_dict(), "discriminator": self.disc.state_dict(),
                "opt_ae": self.opt_ae.state_dict(), "opt_d": self.opt_d.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["state_dict"])
        self.disc.load_state_dict(ckpt["discriminator"])
        self.opt_ae.load_state_dict(ckpt["opt_ae"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema.load_state_dict(ckpt["ema"])

    def start(self, step: int, steps: int, resumed: bool) -> None:
        cfg = self.config
        if self.batches is None:                   # batch k depends on (seed, k) only: resumable
            source = self.dataset if self.dataset is not None else ShapesDataset("train", config=self.data)
            self.stream = source.random_batches(cfg.batch_size, seed=cfg.seed, start=step, device=self.device,
                                                rows=self.dist.rows(cfg.batch_size))
        else:
            self.stream = self.batches(step)
        val = self.val_dataset if self.val_dataset is not None else ShapesDataset("val", config=self.data)
        n = min(cfg.val_images, len(val))
        b = cfg.batch_size
        self.val_images = [val.batch(range(i, min(i + b, n)))["image"] for i in range(0, n, b)]
        amp = precision_dtype(self.device, self.speed.precision)
        self.autocast = lambda: autocast(self.device, amp)
        self.model.train()
        self.disc.train()

    def step(self, step: int) -> dict[str, Any]:
        cfg, x = self.config, next(self.stream)["image"].to(self.device)
        lr = cfg.lr * linear_decay(step, cfg.steps, cfg.lr_decay)         # a function of the step: resumable
        for group in (*self.opt_ae.param_groups, *self.opt_d.param_groups):
            group["lr"] = lr
        if self.speed.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast():                                     # 1. generator step: L_AE = L_rec + L_reg + λ·L_GAN
            if cfg.kind == "kl":
                recon, posterior = self.forward(x)
                reg = posterior.kl()                              # (B,)  KL summed over C, H, W
            else:
                recon, reg, info = self.forward(x)
        loss, logs = self.loss_fn.generator_loss(x, recon, reg, step, self.model.last_layer)
        guard(self, step, loss=loss)
        self.opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_ae.step()
        if self.ema is not None:
            self.ema.update(self.model)
        if self.loss_fn.gan_active(step):                         # 2. discriminator step (once the GAN is on)
            d_loss, d_logs = self.loss_fn.discriminator_loss(x, recon, self.disc_forward)   # fp32, like every loss
            guard(self, step, d_loss=d_loss)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            logs.update(d_logs)
        out = {"loss": loss.detach(), **logs, "lr": lr}
        if cfg.kind == "vq":
            out.update(perplexity=info["perplexity"], usage=info["usage"])
        return out

    def evaluate(self) -> dict[str, float]:
        """Validation PSNR (dB) of reconstructions, with the EMA weights when there is an EMA."""
        if not self.val_images:
            return {}
        with self.ema.applied_to(self.model) if self.ema is not None else contextlib.nullcontext():
            return {"val_psnr": reconstruction_psnr(self.model, self.val_images, self.device)}

    def after_step(self, step: int, record: dict) -> None:
        pass

    def wants_record(self, step: int) -> bool:
        """True when after_step needs this step's weights (so the loop reads its losses back now)."""
        return False


def train_autoencoder(profile_or_cfg: str | Profile | AEConfig | None, out_dir: str | os.PathLike,
                      device: str | torch.device | None = None, max_minutes: float | None = None,
                      resume: bool = True, *, kind: str | None = None, steps: int | None = None,
                      random_lpips: bool | None = None, lpips_download: bool = True, progress: bool = True,
                      data_config: DataConfig | None = None,
                      batches: Callable[[int], Iterator[dict]] | None = None,
                      callback: Callback | None = None, dataset: Any = None, val_dataset: Any = None,
                      speed: SpeedConfig | None = None) -> dict[str, Any]:
    """Train (or resume) the first-stage autoencoder in `out_dir` (Sec. 3.1 / App. G); returns fit()'s result,
    whose "history" has one record per step (`val_psnr` on validation steps).

    profile_or_cfg: profile name, Profile or AEConfig (then `data_config` or DataConfig() for the data);
    kind / steps override the config; max_minutes stops early (a checkpoint is written either way);
    random_lpips opts into a random LPIPS backbone (None: $MINILDM_LPIPS_RANDOM_BACKBONE);
    batches: optional factory start_step -> iterator of {"image": (B,3,H,W)} batches (default: Shapes);
    dataset / val_dataset: train and validate on these instead (data.make_dataset: MNIST, a folder of images);
    speed: precision, compile, time cap … (default: the profile's; speed.py). Started by torchrun: distributed.py.
    """
    if profile_or_cfg is None or isinstance(profile_or_cfg, str):
        profile_or_cfg = get_profile(profile_or_cfg)
    if isinstance(profile_or_cfg, Profile):
        cfg, data, name = profile_or_cfg.ae, profile_or_cfg.data, profile_or_cfg.name
        speed = speed or profile_or_cfg.speed
    elif isinstance(profile_or_cfg, AEConfig):
        cfg, data, name = profile_or_cfg, DataConfig(), "custom"
    else:
        raise TypeError(f"expected a profile name, a Profile or an AEConfig, got {type(profile_or_cfg).__name__}")
    cfg = dataclasses.replace(cfg, **({"kind": kind} if kind else {}),
                              **({"steps": _positive_steps(steps)} if steps is not None else {}))
    if cfg.kind == "pixel":
        raise ValueError("kind='pixel' is the identity first stage (f = 1): it has nothing to train; pass "
                         "autoencoder.PixelSpace() to train_ldm directly")
    d, device, speed = *setup_distributed(get_device(device)), speed or SpeedConfig()
    max_minutes = speed.ae_minutes if max_minutes is None else max_minutes
    run = AutoencoderTraining(cfg, data_config or data, device, name, random_lpips, lpips_download, batches, dataset,
                              val_dataset if val_dataset is not None else dataset, speed, d)
    _announce(d, cfg.batch_size, cfg.lr, progress)
    return fit(run, out_dir, cfg.steps, max_minutes=max_minutes, resume=resume, checkpoint_every=cfg.val_every,
               eval_every=cfg.val_every if cfg.val_images > 0 else 0, callback=callback, progress=progress)


# --- Stage 2: latent diffusion on the frozen autoencoder (Sec. 3.2-3.3, 4) ----------------------------------


@torch.no_grad()
def encode_cache(ldm: LatentDiffusion, dataset: Any, size: int, batch_size: int, device: torch.device,
                 progress: bool = True) -> dict[str, torch.Tensor]:
    """Encode samples 0..size-1 once: posterior μ, σ (unscaled) and the raw conditioning inputs, on the CPU.
    Every training step then draws z = μ + σ·ε from the cache instead of running the encoder."""
    size = min(size, len(dataset))
    means, stds, raws = [], [], []
    for start in tqdm(range(0, size, batch_size), desc="encoding latents", disable=not progress, mininterval=2):
        b = dataset.batch(range(start, min(size, start + batch_size)), device=device)
        mean, std = ldm.latent_moments(b["image"])
        means.append(mean.float().cpu())
        stds.append(std.float().cpu())
        raw = ldm.raw_condition(b)
        raws.append(raw.cpu() if raw is not None else torch.zeros(mean.shape[0]))
    return {"mean": torch.cat(means), "std": torch.cat(stds), "raw": torch.cat(raws)}


class LatentDiffusionTraining:
    """The second stage's state and step: batch k = latents z0 and raw conditions y, a function of (seed, k);
    L_simple(z0, y) with conditioning dropout (LatentDiffusion.training_step); AdamW; LR warm-up; EMA."""

    kind, checkpoint_name, what = LDM_KIND, LDM_CHECKPOINT, "latent diffusion"
    resumable = ("steps", "sample_every", "checkpoint_every", "sample_steps", "guidance_scale")
    weight_keys = ("state_dict", "ema", "autoencoder")
    shown, eval_keys = ("loss",), ()
    advice = "Try a lower learning rate, fp32 instead of bf16, or check the input data."

    def __init__(self, config: LDMConfig, data: DataConfig, autoencoder: str | os.PathLike | nn.Module,
                 device: torch.device, seed: int = 0, profile: str = "custom", folder: str | os.PathLike = ".",
                 dataset: Any = None, progress: bool = True, speed: SpeedConfig = SpeedConfig(), dist: Dist = Dist()):
        self.config, self.data, self.device, self.seed, self.profile = config, data, device, seed, profile
        self.folder, self.name, self.progress = Path(folder), f"LDM ({config.cond})", progress and dist.main
        self.speed, self.dist, self.sync_every = speed, dist, sync_interval(device, speed)
        seed_everything(seed)         # before the autoencoder is built: its init draws from the same RNG
        if not isinstance(autoencoder, nn.Module):
            autoencoder = load_autoencoder(autoencoder, device)
        bad = unsafe_tensors({"autoencoder": autoencoder.state_dict()}, ("autoencoder",))
        if bad:
            raise ValueError(f"the autoencoder given to train_ldm has diverged weights ({'; '.join(bad[:3])}"
                             f"{'; …' if len(bad) > 3 else ''}); train it again or use an earlier checkpoint of it")
        self.dataset = dataset if dataset is not None else ShapesDataset("train", data)
        ds = self.dataset
        self.ldm = LatentDiffusion(autoencoder.to(device), config, tokenizer=ds.tokenizer, num_classes=ds.num_classes,
                                   max_objects=ds.max_objects, resolution=data.resolution).to(device)
        self.model = self.ldm
        self.mods = self.ldm.denoiser_modules()
        self.opt = torch.optim.AdamW(self.mods.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                     **fused_optimizer(device))
        cosine = config.lr_schedule == "cosine"
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda k: warmup_cosine(k, config.warmup_steps, config.steps, cosine))
        self.ema = EMA(self.mods, config.ema_decay) if config.ema_decay > 0 else None
        apply_speed({"U-Net": self.ldm.unet}, speed, device)
        self.rows = dist.rows(config.batch_size)
        self.loss_of = wrap_ddp(_TrainingLoss(self.ldm), dist, device) if dist.active else _TrainingLoss(self.ldm)

    def state_dict(self) -> dict[str, Any]:
        return {**self.ldm.checkpoint_model(), "data_config": self.data, "profile": self.profile,
                "state_dict": self.mods.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else None,
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "seed": self.seed}

    def load_state(self, ckpt: dict) -> None:
        self.mods.load_state_dict(ckpt["state_dict"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema.load_state_dict(ckpt["ema"])
        self.ldm.scale_factor.fill_(float(ckpt["scale_factor"]))

    def start(self, step: int, steps: int, resumed: bool) -> None:
        cfg, ldm = self.config, self.ldm
        self.cache = None
        if cfg.cache_size > 0 and step < steps:   # nothing to encode when the run is already complete
            self.cache = encode_cache(ldm, self.dataset, cfg.cache_size, 256, self.device, self.progress)
            _check_latents(self.cache["mean"], self.cache["std"])
            self.cache = {k: v.to(self.device) for k, v in self.cache.items()}   # on the device: no copies per step
        if not resumed:                            # scale factor from the first training batch: 1/std(z)
            if self.cache is not None:
                first = (self.cache["mean"][: cfg.batch_size].to(self.device),
                         self.cache["std"][: cfg.batch_size].to(self.device))
            else:
                first = ldm.latent_moments(self.dataset.batch(range(cfg.batch_size), device=self.device)["image"])
                _check_latents(*first)
            scale = ldm.set_scale_factor(first, torch.Generator().manual_seed(self.seed))
            if not math.isfinite(scale):
                raise ValueError(f"the latents of the first batch have std {1 / scale:.3g}, so the scale factor "
                                 "1/std(z) is not finite; is the autoencoder trained?")
        amp = precision_dtype(self.device, self.speed.precision)
        self.autocast = lambda: autocast(self.device, amp)
        self.scale = float(ldm.scale_factor)       # read once, not every step
        self.mods.train()

    def batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Generator]:
        """Batch k of the run: scaled latents z0 and raw conditioning; a function of (seed, k) only."""
        ldm, B, device = self.ldm, self.config.batch_size, self.device
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
        if self.cache is not None:
            idx = torch.randint(self.cache["mean"].shape[0], (B,), generator=g).to(device)
            mean, std = self.cache["mean"][idx], self.cache["std"][idx]
            raw = self.cache["raw"][idx] if ldm.cond_mode != "none" else None
        else:
            b = self.dataset.batch(torch.randint(len(self.dataset), (B,), generator=g), device=device)
            mean, std = ldm.latent_moments(b["image"])
            raw = ldm.raw_condition(b)
        z0 = sample_latent(mean, std, g) * self.scale
        if self.speed.channels_last:
            z0 = z0.contiguous(memory_format=torch.channels_last)
        return z0, raw, g

    def step(self, step: int) -> dict[str, Any]:
        z0, raw, g = self.batch(step)
        with self.autocast():
            loss = self.loss_of(z0, raw, g, self.rows)        # this process's rows (all of them with one)
        guard(self, step, loss=loss)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        if self.ema is not None:
            self.ema.update(self.mods)
        return {"loss": loss.detach(), "lr": self.sched.get_last_lr()[0]}

    def evaluate(self) -> dict[str, float]:
        return {}

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[LatentDiffusion]:
        """The model with its EMA weights (raw weights if there is no EMA), in eval mode; put back afterwards."""
        with self.ema.applied_to(self.mods) if self.ema is not None else contextlib.nullcontext():
            self.mods.eval()
            try:
                yield self.ldm
            finally:
                self.mods.train()

    def after_step(self, step: int, record: dict) -> None:
        if self.wants_record(step) and self.dist.main:
            with self.ema_weights() as ldm:
                save_sample_grid(ldm, self.folder / f"samples_{step:06d}.png", title=f"step {step} (EMA weights)")

    def wants_record(self, step: int) -> bool:
        """True when after_step needs this step's weights (so the loop reads its losses back now)."""
        return bool(self.config.sample_every) and step % self.config.sample_every == 0


class _TrainingLoss(nn.Module):
    """LatentDiffusion.training_step as a module's forward, so that DDP can wrap it (distributed.py)."""

    def __init__(self, ldm: LatentDiffusion):
        super().__init__()
        self.ldm = ldm

    def forward(self, z0: torch.Tensor, raw: torch.Tensor | None, generator: torch.Generator,
                rows: slice | None) -> torch.Tensor:
        return self.ldm.training_step(z0, raw, generator=generator, rows=rows)


def _check_latents(mean: torch.Tensor, std: torch.Tensor) -> None:
    if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(std).all())):
        raise ValueError("the autoencoder's latents are not finite (NaN/inf) for the training images; the "
                         "autoencoder is broken: train it again or use an earlier checkpoint of it")


def train_ldm(profile: str | Profile | None, autoencoder: str | os.PathLike | nn.Module, out_dir: str | os.PathLike,
              *, cond: str | None = None, device: str | torch.device | None = None, steps: int | None = None,
              max_minutes: float | None = None, resume: bool = True, seed: int = 0, progress: bool = True,
              callback: Callback | None = None, dataset: Any = None, speed: SpeedConfig | None = None) -> dict[str, Any]:
    """Train (or resume) the latent diffusion model in `out_dir`; returns fit()'s result.

    `autoencoder` is a checkpoint path (train_autoencoder's autoencoder.pt) or a module; `cond` overrides the
    profile's conditioning mode; `steps` its step count; `max_minutes` stops early with a checkpoint;
    `dataset` replaces the profile's Shapes training split (it must give what `cond` needs); `speed` the profile's
    speed section (speed.py). Started by torchrun: see distributed.py.
    """
    profile = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    cfg = profile.ldm
    if cond is not None:
        cfg = dataclasses.replace(cfg, cond=cond)
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=_positive_steps(steps))
    d, device, speed = *setup_distributed(get_device(device)), speed or profile.speed
    max_minutes = speed.ldm_minutes if max_minutes is None else max_minutes
    run = LatentDiffusionTraining(cfg, profile.data, autoencoder, device, seed, profile.name, out_dir, dataset, progress,
                                  speed, d)
    _announce(d, cfg.batch_size, cfg.lr, progress)
    return fit(run, out_dir, cfg.steps, max_minutes=max_minutes, resume=resume,
               checkpoint_every=cfg.checkpoint_every, callback=callback, progress=progress)


def _announce(d: Dist, batch_size: int, lr: float, progress: bool) -> None:
    if d.active and d.main and progress:
        print(f"{d.world} processes × {batch_size // d.world} images = the profile's batch of {batch_size}; "
              f"learning rate {lr:g}, as with one process (distributed.py)")


class SampleSnapshots:
    """A train_ldm callback: at each step of `at_steps`, sample `prompts` from one seed with the run's EMA weights
    into `.images[step]` (B, 3, H, W), also written to `path` so a resumed or finished run keeps its past.
    `take(step, ldm)` adds a snapshot of a loaded model; `sample_kwargs` go to LatentDiffusion.sample."""

    def __init__(self, prompts: list[str], at_steps: list[int], path: str | os.PathLike | None = None,
                 seed: int = 0, **sample_kwargs: Any):
        self.prompts, self.at_steps, self.seed, self.kwargs = list(prompts), sorted(set(at_steps)), seed, sample_kwargs
        self.path, self.images = None if path is None else Path(path), {}
        self.config = {"prompts": self.prompts, "seed": seed, "sample_kwargs": sample_kwargs}
        saved = load_checkpoint(self.path, kind="snapshots") if self.path is not None and self.path.is_file() else {}
        if saved and saved["config"] == to_plain(self.config):            # else: other prompts or seed, start afresh
            self.images = dict(zip(saved["state_dict"]["steps"].tolist(), saved["state_dict"]["images"]))

    def __call__(self, step: int, record: dict, run: Any) -> None:
        if step in self.at_steps and step not in self.images:
            with run.ema_weights() as ldm:
                self.take(step, ldm)

    @torch.no_grad()
    def take(self, step: int, ldm: LatentDiffusion) -> torch.Tensor:
        raw = ldm.prompt_condition(prompts=self.prompts)
        self.images[step] = ldm.sample(raw, generator=torch.Generator().manual_seed(self.seed), **self.kwargs).cpu()
        if self.path is not None:
            k = sorted(self.images)
            save_checkpoint({"kind": "snapshots", "config": self.config, "state_dict": {
                "steps": torch.tensor(k), "images": torch.stack([self.images[i] for i in k])}}, self.path)
        return self.images[step]


def loss_trend(history: list[dict], key: str = "loss", fraction: float = 0.1) -> tuple[float, float]:
    """(mean of `key` over the first `fraction` of the records, its mean over the last `fraction`)."""
    values = [float(r[key]) for r in history if key in r]
    if not values or not 0 < fraction <= 1:
        raise ValueError(f"need records with {key!r} and 0 < fraction ≤ 1, got {len(values)} and {fraction}")
    n = max(1, round(fraction * len(values)))                   # first and last tenth by default
    return sum(values[:n]) / n, sum(values[-n:]) / n
