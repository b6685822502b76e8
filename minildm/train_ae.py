"""Training the first stage (LDM Sec. 3.1, App. G): autoencoder + patch discriminator, alternating steps.

Each batch:
  1. generator step   x̃ = D(E(x));  L_AE = L_rec + L_reg + λ·L_GAN  -> Adam step on the autoencoder
  2. discriminator step (from `disc_start` on)  L_D(x, sg[x̃])        -> Adam step on the discriminator
Both Adams use betas (0.5, 0.9) and the same learning rate, as in the reference. The discriminator step
reuses the x̃ of the generator step (detached) instead of re-running the autoencoder.

Checkpoints (`<out_dir>/autoencoder.pt`) carry the config, both models, both optimizers, the EMA, the RNG
state, the step and the loss history, so an interrupted run resumes exactly where it stopped: on CPU a
resumed run is bit-for-bit the uninterrupted one (the data stream is addressed by step, see
`ShapesDataset.random_batches(start=...)`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm.auto import tqdm

from .autoencoder import AutoencoderKL, AutoencoderVQ, build_autoencoder
from .checkpoint import (check_config_matches, check_finite, config_from_dict, load_checkpoint, rng_state, save_checkpoint,
                         set_rng_state, to_plain)
from .losses import AutoencoderLoss
from .metrics import psnr
from .nn import EMA
from .profiles import AEConfig, DataConfig, Profile, get_profile
from .utils import autocast_dtype, fused_optimizer, get_device, seed_everything

CHECKPOINT_NAME = "autoencoder.pt"
CHECKPOINT_KIND = "autoencoder"
# fields that may change between a run and its resumption (they only say how long / how often)
RESUMABLE_FIELDS = ("steps", "val_every", "val_images")
# fields that decide the autoencoder's weights' shapes and meaning (checked by load_autoencoder)
ARCHITECTURE_FIELDS = ("kind", "ch", "ch_mult", "num_res_blocks", "z_channels", "attn_resolutions", "n_embed")


def _configs(profile_or_cfg: str | Profile | AEConfig | None, kind: str | None) -> tuple[AEConfig, DataConfig, str]:
    if profile_or_cfg is None or isinstance(profile_or_cfg, str):
        profile_or_cfg = get_profile(profile_or_cfg)
    if isinstance(profile_or_cfg, Profile):
        ae, data, name = profile_or_cfg.ae, profile_or_cfg.data, profile_or_cfg.name
    elif isinstance(profile_or_cfg, AEConfig):
        ae, data, name = profile_or_cfg, DataConfig(), "custom"
    else:
        raise TypeError(f"expected a profile name, a Profile or an AEConfig, got {type(profile_or_cfg).__name__}")
    if kind is not None:
        ae = dataclasses.replace(ae, kind=kind)
    return ae, data, name


def load_autoencoder(path: str | os.PathLike, device: str | torch.device | None = None,
                     config: AEConfig | None = None, use_ema: bool = True) -> AutoencoderKL | AutoencoderVQ:
    """Rebuild the autoencoder from a checkpoint's own config (EMA weights if stored), in eval mode.

    Passing `config` checks that its architecture fields (ARCHITECTURE_FIELDS) match the checkpoint's; a
    mismatch is a clear error. (Resuming training checks every field except RESUMABLE_FIELDS.)
    """
    ckpt = load_checkpoint(path, kind=CHECKPOINT_KIND)
    saved = config_from_dict(AEConfig, ckpt["config"])
    if config is not None:
        arch = lambda c: {k: v for k, v in to_plain(c).items() if k in ARCHITECTURE_FIELDS}
        check_config_matches(arch(saved), arch(config), what="autoencoder architecture")
    model = build_autoencoder(saved)
    state = ckpt["ema"]["shadow"] if use_ema and ckpt.get("ema") else ckpt["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"the weights in {path} do not fit the autoencoder built from its config: {e}") from e
    return model.to(get_device(device)).eval()


@torch.no_grad()
def reconstruct(model: AutoencoderKL | AutoencoderVQ, x: torch.Tensor) -> torch.Tensor:
    """x̃ for evaluation: KL decodes the posterior mean, VQ decodes the quantized latent."""
    if isinstance(model, AutoencoderKL):
        return model(x, sample_posterior=False)[0]
    return model(x)[0]


@torch.no_grad()
def evaluate_psnr(model: AutoencoderKL | AutoencoderVQ, images: list[torch.Tensor], device: torch.device) -> float:
    """Mean PSNR (dB) of reconstructions over a list of image batches."""
    was = model.training
    model.eval()
    vals = [psnr(x.to(device), reconstruct(model, x.to(device)).clamp(-1, 1)) for x in images]
    model.train(was)
    return float(torch.cat(vals).mean())


def _val_images(data: DataConfig, n: int, batch_size: int, split: str = "val") -> list[torch.Tensor]:
    from .data import ShapesDataset

    ds = ShapesDataset(split, config=data)
    n = min(n, len(ds))
    return [ds.batch(range(i, min(i + batch_size, n)))["image"] for i in range(0, n, batch_size)]


def train_autoencoder(profile_or_cfg: str | Profile | AEConfig | None, out_dir: str | os.PathLike,
                      device: str | torch.device | None = None, max_minutes: float | None = None,
                      resume: bool = True, *, kind: str | None = None, steps: int | None = None,
                      random_lpips: bool | None = None, lpips_download: bool = True, progress: bool = True,
                      data_config: DataConfig | None = None,
                      batches: Callable[[int], Iterator[dict]] | None = None) -> list[dict[str, float]]:
    """Train (or resume) the first-stage autoencoder; returns the loss history (one dict per step, with
    `val_psnr` on validation steps). Sec. 3.1 / App. G.

    profile_or_cfg: profile name, Profile or AEConfig (then `data_config` or DataConfig() for the data);
    kind / steps override the config; max_minutes stops early (a checkpoint is written either way);
    random_lpips opts into a random LPIPS backbone (None: $MINILDM_LPIPS_RANDOM_BACKBONE);
    batches: optional factory start_step -> iterator of {"image": (B,3,H,W)} batches (default: Shapes).
    """
    cfg, data_cfg, profile_name = _configs(profile_or_cfg, kind)
    if cfg.kind == "pixel":
        raise ValueError("kind='pixel' is the identity first stage (f = 1): it has nothing to train; pass "
                         "autoencoder.PixelSpace() to train_ldm directly")
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=int(steps))
    data_cfg = data_config or data_cfg
    device = get_device(device)
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME

    seed_everything(cfg.seed)
    model = build_autoencoder(cfg).to(device)
    loss_fn = AutoencoderLoss(cfg, lpips_download=lpips_download, random_backbone=random_lpips).to(device)
    disc = loss_fn.discriminator
    opt_ae = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.9), **fused_optimizer(device))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9), **fused_optimizer(device))
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    step, history, elapsed_before = 0, [], 0.0

    if resume and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path, map_location=device, kind=CHECKPOINT_KIND)
        check_config_matches(ckpt["config"], cfg, what="autoencoder", ignore=RESUMABLE_FIELDS)
        model.load_state_dict(ckpt["state_dict"])
        disc.load_state_dict(ckpt["discriminator"])
        opt_ae.load_state_dict(ckpt["opt_ae"])
        opt_d.load_state_dict(ckpt["opt_d"])
        if ema is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        set_rng_state(ckpt["rng"])
        step, history, elapsed_before = int(ckpt["step"]), list(ckpt["history"]), float(ckpt.get("elapsed", 0.0))

    def save() -> None:
        save_checkpoint({
            "kind": CHECKPOINT_KIND, "config": cfg, "data_config": data_cfg, "profile": profile_name,
            "state_dict": model.state_dict(), "discriminator": disc.state_dict(),
            "opt_ae": opt_ae.state_dict(), "opt_d": opt_d.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "step": step, "rng": rng_state(), "history": history,
            "elapsed": elapsed_before + time.perf_counter() - t0,
        }, ckpt_path)

    def validate() -> float:
        if ema is None:
            return evaluate_psnr(model, val_images, device)
        shadow = copy.deepcopy(model)
        ema.copy_to(shadow)
        return evaluate_psnr(shadow, val_images, device)

    if batches is None:
        from .data import ShapesDataset

        train_ds = ShapesDataset("train", config=data_cfg)
        stream = train_ds.random_batches(cfg.batch_size, seed=cfg.seed, start=step, device=device)
    else:
        stream = batches(step)
    val_images = _val_images(data_cfg, cfg.val_images, cfg.batch_size) if cfg.val_images > 0 else []
    amp = autocast_dtype(device)
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else contextlib.nullcontext
    model.train()
    disc.train()

    t0 = time.perf_counter()
    deadline = None if max_minutes is None else t0 + 60.0 * max_minutes
    bar = tqdm(total=cfg.steps, initial=step, mininterval=1.0, disable=not progress, desc=f"AE-{cfg.kind}",
               dynamic_ncols=True)
    while step < cfg.steps and (deadline is None or time.perf_counter() < deadline):
        x = next(stream)["image"].to(device)

        # 1. generator step: L_AE = L_rec + L_reg + λ·L_GAN
        with autocast():
            if cfg.kind == "kl":
                recon, posterior = model(x)
                reg = posterior.kl()                              # (B,)  KL summed over C, H, W
            else:
                recon, reg, info = model(x)
        loss, logs = loss_fn.generator_loss(x, recon, reg, step, model.last_layer)
        check_finite(step, loss=loss)
        opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        opt_ae.step()
        if ema is not None:
            ema.update(model)

        # 2. discriminator step (only once the GAN is on)
        if loss_fn.gan_active(step):
            d_loss, d_logs = loss_fn.discriminator_loss(x, recon)  # fp32, like every loss term
            check_finite(step, d_loss=d_loss)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            logs.update(d_logs)

        step += 1
        record = {"step": step, "loss": float(loss.detach()), **{k: float(v) for k, v in logs.items()}}
        if cfg.kind == "vq":
            record.update(perplexity=float(info["perplexity"]), usage=float(info["usage"]))
        if val_images and (step % cfg.val_every == 0 or step == cfg.steps):
            record["val_psnr"] = validate()
        history.append(record)
        if step % cfg.val_every == 0:
            save()
        bar.update(1)
        if step % 10 == 0 or "val_psnr" in record:
            shown = {k: f"{record[k]:.3g}" for k in ("loss", "l1", "lpips", "g", "d_loss", "val_psnr") if k in record}
            bar.set_postfix(shown, refresh=False)
    bar.close()
    if history and "val_psnr" not in history[-1] and val_images and step < cfg.steps:
        history[-1]["val_psnr"] = validate()                      # stopped by the time budget
    save()
    return history


# ----------------------------------------------------------------------------------------------------------
# Command line: `minildm train-ae`, `minildm bench-ae`
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_split(model: AutoencoderKL | AutoencoderVQ, data: DataConfig, split: str = "test",
                   batch_size: int = 100, lpips_net: str = "alex", random_lpips: bool | None = None,
                   lpips_download: bool = True) -> dict[str, float]:
    """Mean PSNR (dB), SSIM and LPIPS of reconstructions over a whole data split."""
    from .data import ShapesDataset
    from .metrics import lpips, ssim

    ds = ShapesDataset(split, config=data)
    device = next(model.parameters()).device
    model.eval()
    p, s, lp = [], [], []
    for i in range(0, len(ds), batch_size):
        x = ds.batch(range(i, min(i + batch_size, len(ds))), device=device)["image"].to(device)
        xr = reconstruct(model, x).clamp(-1, 1)
        p.append(psnr(x, xr))
        s.append(ssim(x, xr))
        lp.append(lpips(x, xr, net=lpips_net, download=lpips_download, random_backbone=random_lpips))
    return {"psnr": float(torch.cat(p).mean()), "ssim": float(torch.cat(s).mean()),
            "lpips": float(torch.cat(lp).mean()), "images": len(ds)}


def _cmd_train(args: argparse.Namespace) -> int:
    profile = get_profile(args.profile)
    out = args.out or os.path.join("runs", f"ae-{profile.name}-{args.kind or profile.ae.kind}")
    hist = train_autoencoder(profile, out, device=args.device, max_minutes=args.minutes, kind=args.kind,
                             steps=args.steps, random_lpips=True if args.random_lpips else None,
                             resume=not args.no_resume)
    vals = [h["val_psnr"] for h in hist if "val_psnr" in h]
    print(f"trained to step {hist[-1]['step'] if hist else 0}; checkpoint {os.path.join(out, CHECKPOINT_NAME)}"
          + (f"; val PSNR {vals[-1]:.2f} dB" if vals else ""))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    profile = get_profile(args.profile)
    kind = args.kind or "kl"
    random_lpips = True if args.random_lpips else None
    out = args.out or tempfile.mkdtemp(prefix=f"minildm-bench-ae-{kind}-")
    cfg = dataclasses.replace(profile.ae, kind=kind)
    print(f"bench-ae: profile={profile.name} kind={kind} f={cfg.downsample_factor} z={cfg.z_channels} "
          f"ch={cfg.ch} ch_mult={cfg.ch_mult} batch={cfg.batch_size} lpips={cfg.lpips_net} "
          f"w_p={cfg.perceptual_weight} disc_start={cfg.disc_start} res={profile.data.resolution} "
          f"minutes={args.minutes} threads={torch.get_num_threads()} out={out}")
    from .losses import _env_random_backbone

    if args.random_lpips or _env_random_backbone():
        print("bench-ae: LPIPS runs with a RANDOM backbone (opted in): the perceptual loss is a random-feature "
              "loss and the LPIPS number below is not the published metric")
    t0 = time.perf_counter()
    hist = train_autoencoder(profile.replace(ae={"kind": kind, "steps": 10**9}), out, device=args.device,
                             max_minutes=args.minutes, resume=False, random_lpips=random_lpips,
                             progress=not args.no_progress)
    wall = time.perf_counter() - t0
    model = load_autoencoder(os.path.join(out, CHECKPOINT_NAME), device=args.device)
    res = evaluate_split(model, profile.data, "test", lpips_net=cfg.lpips_net, random_lpips=random_lpips)
    n = hist[-1]["step"]
    lp_note = " (RANDOM backbone: not a meaningful metric)" if (args.random_lpips or _env_random_backbone()) else ""
    print(f"steps: {n}  wall: {wall:.1f} s  steps/s: {n / wall:.2f}")
    print(f"test split ({res['images']} images): PSNR {res['psnr']:.2f} dB  SSIM {res['ssim']:.4f}  "
          f"LPIPS-{cfg.lpips_net} {res['lpips']:.4f}{lp_note}")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add `train-ae` and `bench-ae` to the `minildm` command."""
    p = subparsers.add_parser("train-ae", help="train the first-stage autoencoder (KL or VQ)")
    p.add_argument("--profile", default=None, help="ci, cpu or gpu (default: $MINILDM_PROFILE or by hardware)")
    p.add_argument("--kind", choices=("kl", "vq"), default=None, help="override the profile's autoencoder kind")
    p.add_argument("--out", default=None, help="output folder (default runs/ae-<profile>-<kind>)")
    p.add_argument("--steps", type=int, default=None, help="override the profile's step count")
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--random-lpips", action="store_true",
                   help="use a random LPIPS backbone when the pretrained one is not available (offline)")
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    p.set_defaults(func=_cmd_train)

    b = subparsers.add_parser("bench-ae", help="train an autoencoder for N minutes on Shapes, report PSNR/SSIM/LPIPS")
    b.add_argument("--profile", default=None)
    b.add_argument("--kind", choices=("kl", "vq"), default="kl")
    b.add_argument("--minutes", type=float, default=10.0)
    b.add_argument("--device", default=None)
    b.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    b.add_argument("--random-lpips", action="store_true",
                   help="use a random LPIPS backbone when the pretrained one is not available (offline)")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=_cmd_bench)
