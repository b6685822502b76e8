"""Training both stages of the paper, each as one loop you can read (LDM Sec. 3.1-3.2, 4; App. G).

    train_autoencoder   the first stage: per step a generator step on the autoencoder (L_rec + L_reg + λ·L_GAN)
                        and, from `disc_start` on, a discriminator step
    train_ldm           the second stage: L_simple on (cached) latents of the frozen autoencoder, with 10 %
                        conditioning dropout, AdamW, LR warm-up and an EMA
    SampleSnapshots, loss_trend   watching a run: the same prompts and seed sampled at chosen steps; the loss trend

Both loops call `callback(step, record, run)` after every step (for live plots in notebooks; loop.Run is what
`run` offers) and leave the chores to loop.Run: resume, a time cap, the NaN guard, atomic checkpoints that never
hold diverged weights, a progress bar. Batch k of a run depends only on (seed, k), and the random state is stored
in every checkpoint, so on the CPU a resumed run is bit-for-bit the run that was never interrupted. How fast a
step runs (bf16, compile, channels-last, how often losses are read back) is the profile's `speed` section
(speed.py); several processes started by torchrun each compute a share of every batch (distributed.py).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..autoencoder import CHECKPOINT_KIND as AE_KIND
from ..autoencoder import AEConfig, build_autoencoder, load_autoencoder
from ..data.datasets import DataConfig, ShapesDataset
from ..eval.metrics import reconstruction_psnr
from ..ldm import CHECKPOINT_KIND as LDM_KIND
from ..ldm import LatentDiffusion, sample_latent
from ..losses import AutoencoderLoss, LossConfig
from ..nn import EMA
from ..utils import (get_device, load_checkpoint, save_checkpoint, seed_everything, to_plain, unsafe_tensors,
                     warmup_cosine)
from .configs import AETrainConfig, LDMTrainConfig
from .distributed import Dist, setup_distributed, wrap_ddp
from .loop import Callback, NonFiniteLossError, Run, fused_optimizer, linear_decay, with_steps
from .profiles import Profile, get_profile
from .speed import SpeedConfig, apply_speed, autocast, precision_dtype

__all__ = ["train_autoencoder", "train_ldm", "SampleSnapshots", "loss_trend", "NonFiniteLossError", "encode_cache",
           "AE_CHECKPOINT", "LDM_CHECKPOINT"]

AE_CHECKPOINT, LDM_CHECKPOINT = "autoencoder.pt", "ldm.pt"


# --- Stage 1: the autoencoder (Sec. 3.1, App. G) ------------------------------------------------------------


def train_autoencoder(profile_or_cfg: str | Profile | AEConfig | None, out_dir: str | os.PathLike,
                      device: str | torch.device | None = None, max_minutes: float | None = None,
                      resume: bool = True, *, kind: str | None = None, steps: int | None = None,
                      random_lpips: bool | None = None, lpips_download: bool = True, progress: bool = True,
                      callback: Callback | None = None, dataset: Any = None, val_dataset: Any = None,
                      speed: SpeedConfig | None = None) -> dict[str, Any]:
    """Train (or resume) the first-stage autoencoder in `out_dir` (Sec. 3.1 / App. G); returns
    {"path", "history", "step", "minutes", "stopped_early"}, with one record per step in "history" (`val_psnr` on
    validation steps, every `val_every` steps and at the end, when the checkpoint is written too).

    profile_or_cfg: profile name, Profile or AEConfig (then DataConfig() for the data);
    kind / steps override the config; max_minutes stops early (a checkpoint is written either way);
    random_lpips opts into a random LPIPS backbone (None: $MINILDM_LPIPS_RANDOM_BACKBONE);
    dataset / val_dataset: train and validate on these instead (data.make_dataset: MNIST, a folder of images);
    speed: precision, compile, time cap … (default: the profile's; speed.py). Started by torchrun: distributed.py.

    Each step, on one batch x (both Adams with betas (0.5, 0.9) and the same learning rate, as in the reference):
      1. generator step      x̃ = D(E(x));  L_AE = L_rec + L_reg + λ·L_GAN  -> Adam step on the autoencoder
      2. discriminator step  (from `disc_start` on) L_D(x, sg[x̃])          -> Adam step on the discriminator
    The discriminator step reuses the x̃ of the generator step (detached) instead of re-running the autoencoder.
    """
    if isinstance(profile_or_cfg, AEConfig):
        cfg, loss_cfg, train_cfg = profile_or_cfg, LossConfig(), AETrainConfig()
        data, name = DataConfig(), "custom"
    else:
        profile = get_profile(profile_or_cfg)
        cfg, loss_cfg, train_cfg = profile.ae, profile.ae_loss, profile.ae_train
        data, name, speed = profile.data, profile.name, speed or profile.speed
    cfg = dataclasses.replace(cfg, **({"kind": kind} if kind else {}))
    train_cfg = with_steps(train_cfg, steps)
    if cfg.kind == "pixel":
        raise ValueError("kind='pixel' is the identity first stage (f = 1): it has nothing to train; pass "
                         "autoencoder.PixelSpace() to train_ldm directly")
    speed = speed or SpeedConfig()
    d, device = setup_distributed(get_device(device))
    seed_everything(train_cfg.seed)
    model = build_autoencoder(cfg).to(device)
    loss_fn = AutoencoderLoss(loss_cfg, lpips_download=lpips_download, random_backbone=random_lpips,
                              kind=cfg.kind).to(device)
    disc = loss_fn.discriminator
    apply_speed({"encoder": model.encoder, "decoder": model.decoder}, speed, device)
    forward, disc_forward = wrap_ddp(model, d, device), wrap_ddp(disc, d, device)   # DDP with several processes
    adam = dict(lr=train_cfg.lr, betas=(0.5, 0.9), **fused_optimizer(device))
    opt_ae, opt_d = torch.optim.Adam(model.parameters(), **adam), torch.optim.Adam(disc.parameters(), **adam)
    ema = EMA(model, train_cfg.ema_decay) if train_cfg.ema_decay > 0 else None
    _announce(d, train_cfg.batch_size, train_cfg.lr, progress)

    run = Run(out_dir, AE_CHECKPOINT, AE_KIND, model, model, {"state_dict": model, "discriminator": disc,
              "opt_ae": opt_ae, "opt_d": opt_d, "ema": ema}, weights=("state_dict", "discriminator", "ema"), dist=d,
              device=device, speed=speed, callback=callback, label=f"AE-{cfg.kind}", progress=progress,
              shown=("loss", "l1", "lpips", "g", "d_loss", "val_psnr"))
    if resume:                # steps and validation may change between a run and its resumption
        run.resume({"config": cfg, "loss_config": loss_cfg, "train_config": train_cfg}, "autoencoder",
                   ignore=("steps", "val_every", "val_images"))

    def checkpoint() -> dict[str, Any]:          # what autoencoder.pt holds (Run.save adds step, history, RNG)
        return {"config": cfg, "loss_config": loss_cfg, "train_config": train_cfg, "data_config": data,
                "profile": name, **run.states()}

    source = dataset if dataset is not None else ShapesDataset("train", config=data)
    stream = source.random_batches(train_cfg.batch_size, seed=train_cfg.seed, start=run.step, device=device,
                                   rows=d.rows(train_cfg.batch_size))          # batch k depends on (seed, k) only
    val = val_dataset if val_dataset is not None else dataset if dataset is not None else ShapesDataset("val", data)
    n = min(train_cfg.val_images, len(val))
    val_images = [val.batch(range(i, min(i + train_cfg.batch_size, n)))["image"]
                  for i in range(0, n, train_cfg.batch_size)]

    def validate() -> dict[str, float]:
        """Validation PSNR (dB) of reconstructions, with the EMA weights when there is an EMA."""
        with run.ema_weights() as autoencoder:
            return {"val_psnr": reconstruction_psnr(autoencoder, val_images, device)}

    validating = train_cfg.val_every > 0 and train_cfg.val_images > 0     # every val_every steps and at the end
    amp = precision_dtype(device, speed.precision)
    model.train()
    disc.train()
    run.begin(train_cfg.steps, max_minutes=speed.ae_minutes if max_minutes is None else max_minutes)
    for step in range(run.step, train_cfg.steps):
        if run.out_of_time():
            break
        x = next(stream)["image"].to(device)
        lr = train_cfg.lr * linear_decay(step, train_cfg.steps, train_cfg.lr_decay)   # a function of the step: resumable
        for group in (*opt_ae.param_groups, *opt_d.param_groups):
            group["lr"] = lr
        if speed.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):                               # 1. generator step: L_AE = L_rec + L_reg + λ·L_GAN
            if cfg.kind == "kl":
                recon, posterior = forward(x)
                reg = posterior.kl()                              # (B,)  KL summed over C, H, W
            else:
                recon, reg, info = forward(x)
        loss, logs = loss_fn.generator_loss(x, recon, reg, step, model.last_layer)
        run.guard(step, loss=loss)
        opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        opt_ae.step()
        if ema is not None:
            ema.update(model)
        if loss_fn.gan_active(step):                              # 2. discriminator step (once the GAN is on)
            d_loss, d_logs = loss_fn.discriminator_loss(x, recon, disc_forward)   # fp32, like every loss
            run.guard(step, d_loss=d_loss)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            logs.update(d_logs)
        if cfg.kind == "vq":
            logs.update(perplexity=info["perplexity"], usage=info["usage"])

        k = step + 1                                              # steps done
        checkpoint_due = train_cfg.val_every > 0 and k % train_cfg.val_every == 0
        validation_due = validating and (checkpoint_due or k == train_cfg.steps)
        run.log(k, {"loss": loss.detach(), **logs, "lr": lr}, now=checkpoint_due or validation_due)
        if validation_due:
            run.history[-1].update(validate())
        if checkpoint_due:
            run.save(checkpoint())
        if callback is not None and d.main:
            callback(k, run.history[-1], run)
    stopped_unvalidated = validating and run.stopped_early and bool(run.history) and "val_psnr" not in run.history[-1]
    if stopped_unvalidated:                                       # stopped by the time cap: validate what we have
        run.history[-1].update(validate())
    return run.finish(checkpoint(), changed=stopped_unvalidated)


# --- Stage 2: latent diffusion on the frozen autoencoder (Sec. 3.2-3.3, 4) ----------------------------------


@torch.no_grad()
def encode_cache(ldm: LatentDiffusion, dataset: Any, size: int, batch_size: int, device: torch.device,
                 progress: bool = True) -> dict[str, torch.Tensor]:
    """Encode samples 0..size-1 once: posterior μ, σ (unscaled) and the raw conditioning inputs, on the CPU.
    Every training step then draws z = μ + σ·ε from the cache instead of running the encoder. An inpainting
    model's masks are drawn afresh at every step, so for it the cache keeps [image, segmentation] (B, 4, H, W)."""
    size = min(size, len(dataset))
    means, stds, raws = [], [], []
    for start in tqdm(range(0, size, batch_size), desc="encoding latents", disable=not progress, mininterval=2):
        b = dataset.batch(range(start, min(size, start + batch_size)), device=device)
        mean, std = ldm.latent_moments(b["image"])
        means.append(mean.float().cpu())
        stds.append(std.float().cpu())
        if ldm.cond_mode == "inpaint":
            raw = torch.cat([b["image"], b["segmentation"][:, None].to(b["image"].dtype)], dim=1)
        else:
            raw = ldm.raw_condition(b)
        raws.append(raw.cpu() if raw is not None else torch.zeros(mean.shape[0]))
    return {"mean": torch.cat(means), "std": torch.cat(stds), "raw": torch.cat(raws)}


def train_ldm(profile: str | Profile | None, autoencoder: str | os.PathLike | nn.Module, out_dir: str | os.PathLike,
              *, cond: str | None = None, device: str | torch.device | None = None, steps: int | None = None,
              max_minutes: float | None = None, resume: bool = True, seed: int = 0, progress: bool = True,
              callback: Callback | None = None, dataset: Any = None, speed: SpeedConfig | None = None) -> dict[str, Any]:
    """Train (or resume) the latent diffusion model in `out_dir`; returns {"path", "history", "step", "minutes",
    "stopped_early"}, with one record per step in "history".

    `autoencoder` is a checkpoint path (train_autoencoder's autoencoder.pt) or a module; `cond` overrides the
    profile's conditioning mode; `steps` its step count; `max_minutes` stops early with a checkpoint;
    `dataset` replaces the profile's Shapes training split (it must give what `cond` needs); `speed` the profile's
    speed section (speed.py). Started by torchrun: see distributed.py.

    Batch k is latents z0 and raw conditions y, a function of (seed, k) (an inpainting model's masks too: drawn
    from batch k's generator); each step takes L_simple(z0, y) with conditioning dropout
    (LatentDiffusion.training_step; none for the concatenation modes sr, seg, inpaint), an AdamW step, an LR
    warm-up step and an EMA update.
    """
    profile = get_profile(profile)
    cfg = dataclasses.replace(profile.ldm, **({"cond": cond} if cond is not None else {}))
    train_cfg = with_steps(profile.ldm_train, steps)
    speed = speed or profile.speed
    d, device = setup_distributed(get_device(device))
    seed_everything(seed)           # before the autoencoder is built: its init draws from the same RNG
    if not isinstance(autoencoder, nn.Module):
        autoencoder = load_autoencoder(autoencoder, device)
    bad = unsafe_tensors({"autoencoder": autoencoder.state_dict()}, ("autoencoder",))
    if bad:
        raise ValueError(f"the autoencoder given to train_ldm has diverged weights ({'; '.join(bad[:3])}"
                         f"{'; …' if len(bad) > 3 else ''}); train it again or use an earlier checkpoint of it")
    ds = dataset if dataset is not None else ShapesDataset("train", profile.data)
    ldm = LatentDiffusion(autoencoder.to(device), cfg, tokenizer=ds.tokenizer, num_classes=ds.num_classes,
                          max_objects=ds.max_objects, resolution=profile.data.resolution).to(device)
    mods = ldm.denoiser_modules()           # what is trained: the U-Net and the condition encoder τθ
    opt = torch.optim.AdamW(mods.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay,
                            **fused_optimizer(device))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: warmup_cosine(k, train_cfg.warmup_steps, train_cfg.steps, train_cfg.lr_schedule == "cosine"))
    ema = EMA(mods, train_cfg.ema_decay) if train_cfg.ema_decay > 0 else None
    apply_speed({"U-Net": ldm.unet}, speed, device)
    rows = d.rows(train_cfg.batch_size)                       # this process's rows of every batch (None: all)
    loss_of = wrap_ddp(_TrainingLoss(ldm, train_cfg), d, device)   # DDP with several processes
    _announce(d, train_cfg.batch_size, train_cfg.lr, progress)

    run = Run(out_dir, LDM_CHECKPOINT, LDM_KIND, ldm, mods, {"state_dict": mods, "ema": ema, "optimizer": opt,
              "scheduler": sched}, weights=("state_dict", "ema", "autoencoder"), dist=d, device=device, speed=speed,
              callback=callback, label=f"LDM ({cfg.cond})", progress=progress)
    resumed = resume and run.resume({"config": cfg, "train_config": train_cfg}, "latent diffusion", ignore=(
        "steps", "sample_every", "checkpoint_every", "sample_steps", "guidance_scale"))
    if resumed:
        ldm.scale_factor.fill_(float(resumed["scale_factor"]))

    def checkpoint() -> dict[str, Any]:          # what ldm.pt holds (Run.save adds step, history, RNG)
        return {**ldm.checkpoint_model(), "train_config": train_cfg, "data_config": profile.data,
                "profile": profile.name, **run.states(), "seed": seed}

    cache = None
    if train_cfg.cache_size > 0 and run.step < train_cfg.steps:     # nothing to encode when the run is already complete
        cache = encode_cache(ldm, ds, train_cfg.cache_size, 256, device, progress and d.main)
        _check_latents(cache["mean"], cache["std"])
        cache = {k: v.to(device) for k, v in cache.items()}    # on the device: no copies per step
    if not resumed:                                     # the scale factor from the first training batch: 1/std(z)
        if cache is not None:
            first = cache["mean"][: train_cfg.batch_size], cache["std"][: train_cfg.batch_size]
        else:
            first = ldm.latent_moments(ds.batch(range(train_cfg.batch_size), device=device)["image"])
            _check_latents(*first)
        if not math.isfinite(ldm.set_scale_factor(first, torch.Generator().manual_seed(seed))):
            raise ValueError(f"the latents of the first batch have std {1 / float(ldm.scale_factor):.3g}, so the "
                             "scale factor 1/std(z) is not finite; is the autoencoder trained?")
    scale = float(ldm.scale_factor)

    def batch(k: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Generator]:
        """Batch k: scaled latents z0 = (μ + σ·ε)·scale, raw conditions, and the generator of the step's t and
        noise; a function of (seed, k) only."""
        g = torch.Generator().manual_seed(seed * 1_000_003 + k)
        if cache is not None:
            idx = torch.randint(cache["mean"].shape[0], (train_cfg.batch_size,), generator=g).to(device)
            mean, std = cache["mean"][idx], cache["std"][idx]
            raw = cache["raw"][idx] if ldm.cond_mode != "none" else None
            if ldm.cond_mode == "inpaint":                # image and segmentation -> masked image and a fresh mask
                raw = ldm.raw_condition({"image": raw[:, :3], "segmentation": raw[:, 3].long()}, g)
        else:
            b = ds.batch(torch.randint(len(ds), (train_cfg.batch_size,), generator=g), device=device)
            mean, std = ldm.latent_moments(b["image"])
            raw = ldm.raw_condition(b, g)
        z0 = sample_latent(mean, std, g) * scale
        return (z0.contiguous(memory_format=torch.channels_last) if speed.channels_last else z0), raw, g

    amp = precision_dtype(device, speed.precision)
    mods.train()
    run.begin(train_cfg.steps, max_minutes=speed.ldm_minutes if max_minutes is None else max_minutes)
    for step in range(run.step, train_cfg.steps):
        if run.out_of_time():
            break
        z0, raw, g = batch(step)
        with autocast(device, amp):
            loss = loss_of(z0, raw, g, rows)            # L_simple with conditioning dropout
        run.guard(step, loss=loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(mods)

        k = step + 1                                    # steps done
        checkpoint_due = bool(train_cfg.checkpoint_every) and k % train_cfg.checkpoint_every == 0
        run.log(k, {"loss": loss.detach(), "lr": sched.get_last_lr()[0]}, now=checkpoint_due)
        if checkpoint_due:
            run.save(checkpoint())
        if callback is not None and d.main:
            callback(k, run.history[-1], run)
    return run.finish(checkpoint())


class _TrainingLoss(nn.Module):
    """LatentDiffusion.training_step as a module's forward, so that DDP can wrap it (distributed.py)."""

    def __init__(self, ldm: LatentDiffusion, config: LDMTrainConfig):
        super().__init__()
        self.ldm, self.config = ldm, config

    def forward(self, z0: torch.Tensor, raw: torch.Tensor | None, generator: torch.Generator,
                rows: slice | None) -> torch.Tensor:
        return self.ldm.training_step(z0, raw, generator=generator, rows=rows,
                                      cond_drop_prob=self.config.cond_drop_prob,
                                      loss_weighting=self.config.loss_weighting)


def _check_latents(mean: torch.Tensor, std: torch.Tensor) -> None:
    if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(std).all())):
        raise ValueError("the autoencoder's latents are not finite (NaN/inf) for the training images; the "
                         "autoencoder is broken: train it again or use an earlier checkpoint of it")


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
