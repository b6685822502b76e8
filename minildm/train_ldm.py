"""Training the second stage: the U-Net and τθ on the frozen autoencoder's latents (LDM Sec. 3.2, 4).

What happens, in order:
  1. load the trained autoencoder (frozen) and build LatentDiffusion for the profile's conditioning mode;
  2. optionally encode `cache_size` training images once (posterior μ, σ and the conditioning inputs):
     every step then draws z = μ + σ·ε from the cache instead of running the encoder (much faster on CPU);
  3. measure the scale factor 1/std(z) on the first batch; it is stored with the model;
  4. AdamW with linear warm-up, EMA of the trained weights, L_simple with 10 % conditioning dropout;
     checkpoints (atomic, with the config and the autoencoder) every `checkpoint_every` steps and at the end;
     sample grids every `sample_every` steps; a NaN/inf loss stops with the step in the message.

Batch k of a run depends only on (seed, k), so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import (check_config_matches, check_finite, config_from_dict, load_checkpoint, rng_state,
                         save_checkpoint, set_rng_state)
from .data import ShapesDataset
from .ldm import LatentDiffusion, sample_latent
from .nn import EMA
from .profiles import AEConfig, DataConfig, LDMConfig, Profile, get_profile
from .train_ae import load_autoencoder
from .autoencoder import build_autoencoder
from .utils import autocast_dtype, fused_optimizer, get_device, seed_everything

CHECKPOINT_NAME = "ldm.pt"
CHECKPOINT_KIND = "ldm"
# fields that may differ between a run and its resumption (they only say how long or how often)
RESUMABLE_FIELDS = ("steps", "sample_every", "checkpoint_every", "sample_steps", "guidance_scale")

# word_influence pairs that evaluate-ldm reports: one per attribute, circle/square being the closest shapes
INFLUENCE_PAIRS = (("circle", "square"), ("red", "blue"), ("small", "large"))

DEFAULT_PROMPTS = (
    "a large red circle in the top left", "a small blue square in the center",
    "a large yellow triangle in the bottom right", "a small green star in the top middle",
    "a large purple square in the middle left", "a small orange circle in the bottom middle",
    "a large blue star in the middle right", "a small red triangle in the bottom left",
)


def denoiser_modules(ldm: LatentDiffusion) -> nn.ModuleDict:
    """The modules trained in stage two, as one module (for EMA and optimizers)."""
    mods = {"unet": ldm.unet}
    if ldm.cond_encoder is not None and any(True for _ in ldm.cond_encoder.parameters()):
        mods["cond_encoder"] = ldm.cond_encoder
    return nn.ModuleDict(mods)


@torch.no_grad()
def encode_cache(ldm: LatentDiffusion, dataset: ShapesDataset, size: int, batch_size: int,
                 device: torch.device, progress: bool = True) -> dict[str, torch.Tensor]:
    """Encode samples 0..size-1 once: posterior μ, σ (unscaled) and the raw conditioning inputs, on the CPU."""
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


def _batch(ldm: LatentDiffusion, cache: dict | None, dataset: ShapesDataset, batch_size: int, seed: int, k: int,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, torch.Generator]:
    """Batch k of the run: scaled latents z0 and raw conditioning; a function of (seed, k) only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + k)
    if cache is not None:
        idx = torch.randint(cache["mean"].shape[0], (batch_size,), generator=g)
        mean, std = cache["mean"][idx].to(device), cache["std"][idx].to(device)
        raw = cache["raw"][idx].to(device) if ldm.cond_mode != "none" else None
    else:
        b = dataset.batch(torch.randint(len(dataset), (batch_size,), generator=g), device=device)
        mean, std = ldm.latent_moments(b["image"])
        raw = ldm.raw_condition(b)
    z0 = sample_latent(mean, std, g) * float(ldm.scale_factor)
    return z0, raw, g


def load_ldm(path: str | os.PathLike, device: str | torch.device | None = None,
             use_ema: bool = True) -> LatentDiffusion:
    """Rebuild a LatentDiffusion (autoencoder included) from its checkpoint alone, EMA weights by default."""
    ckpt = load_checkpoint(path, kind=CHECKPOINT_KIND)
    cfg = config_from_dict(LDMConfig, ckpt["config"])
    data = config_from_dict(DataConfig, ckpt["data_config"])
    ae = build_autoencoder(config_from_dict(AEConfig, ckpt["autoencoder"]["config"]))
    ae.load_state_dict(ckpt["autoencoder"]["state_dict"])
    ldm = LatentDiffusion(ae, cfg, max_objects=data.max_objects)
    ldm.scale_factor.fill_(float(ckpt["scale_factor"]))
    mods = denoiser_modules(ldm)
    state = ckpt["ema"]["shadow"] if use_ema and ckpt.get("ema") else ckpt["state_dict"]
    try:
        mods.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"the weights in {path} do not fit the model built from its config: {e}") from e
    ldm.resolution = data.resolution
    return ldm.to(get_device(device)).eval()


def save_sample_grid(ldm: LatentDiffusion, path: Path, resolution: int, dataset: ShapesDataset | None = None,
                     n: int = 8, seed: int = 0, title: str | None = None) -> Path:
    """A grid of samples for the model's conditioning mode (fixed prompts / classes / validation layouts)."""
    from .data import class_name
    from .viz import image_grid, save_figure

    g = torch.Generator().manual_seed(seed)
    captions = None
    if ldm.cond_mode == "text":
        captions = list(DEFAULT_PROMPTS[:n])
        raw = ldm.prompt_condition(prompts=captions)
    elif ldm.cond_mode == "class":
        labels = [(7 * i) % 24 for i in range(n)]
        raw, captions = ldm.prompt_condition(labels=labels), [class_name(c) for c in labels]
    elif ldm.cond_mode in ("layout", "sr"):
        val = (dataset or ShapesDataset("val", resolution=resolution, size=max(n, 8))).batch(range(n))
        raw = ldm.raw_condition(val).to(ldm.scale_factor.device)
        captions = val["caption"]
    else:
        raw = None
    images = ldm.sample(raw, num_samples=n if raw is None else None, resolution=resolution, generator=g)
    return save_figure(image_grid(images, captions, ncols=min(8, n), title=title), path)


def lr_factor(step: int, cfg: LDMConfig) -> float:
    """Learning-rate multiplier: linear warm-up, then constant (the reference) or a cosine decay to 0 at
    cfg.steps (short runs end on low-noise weights instead of relying on the EMA alone)."""
    if cfg.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"LDMConfig.lr_schedule must be 'constant' or 'cosine', got {cfg.lr_schedule!r}")
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    if cfg.lr_schedule == "constant" or step < cfg.warmup_steps:
        return warm
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def train_ldm(profile: str | Profile | None, autoencoder: str | os.PathLike | nn.Module, out_dir: str | os.PathLike,
              *, cond: str | None = None, device: str | torch.device | None = None, steps: int | None = None,
              max_minutes: float | None = None, resume: bool = True, seed: int = 0,
              progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the latent diffusion model; returns {"path", "history", "step", "minutes"}.

    `autoencoder` is a checkpoint path (train_ae's autoencoder.pt) or a module; `cond` overrides the
    profile's conditioning mode; `steps` its step count; `max_minutes` stops early with a checkpoint.
    """
    profile = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    cfg, data_cfg = profile.ldm, profile.data
    if cond is not None:
        cfg = dataclasses.replace(cfg, cond=cond)
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=int(steps))
    device = get_device(device)
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    seed_everything(seed)

    ae = load_autoencoder(autoencoder, device) if not isinstance(autoencoder, nn.Module) else autoencoder
    ldm = LatentDiffusion(ae.to(device), cfg, max_objects=data_cfg.max_objects).to(device)
    dataset = ShapesDataset("train", data_cfg)
    mods = denoiser_modules(ldm)
    opt = torch.optim.AdamW(mods.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **fused_optimizer(device))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(k, cfg))
    ema = EMA(mods, cfg.ema_decay) if cfg.ema_decay > 0 else None
    step, history, elapsed_before = 0, [], 0.0

    resumed = resume and ckpt_path.is_file()
    if resumed:
        ckpt = load_checkpoint(ckpt_path, map_location=device, kind=CHECKPOINT_KIND)
        check_config_matches(ckpt["config"], cfg, what="latent diffusion", ignore=RESUMABLE_FIELDS)
        mods.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        set_rng_state(ckpt["rng"])
        ldm.scale_factor.fill_(float(ckpt["scale_factor"]))
        step, history, elapsed_before = int(ckpt["step"]), list(ckpt["history"]), float(ckpt["elapsed"])

    cache = None
    if cfg.cache_size > 0 and step < cfg.steps:  # nothing to encode when the run is already complete
        cache = encode_cache(ldm, dataset, cfg.cache_size, 256, device, progress)
    if not resumed:  # scale factor from the first training batch: 1/std(z)
        g0 = torch.Generator().manual_seed(seed)
        if cache is not None:
            first = (cache["mean"][: cfg.batch_size].to(device), cache["std"][: cfg.batch_size].to(device))
        else:
            first = ldm.latent_moments(dataset.batch(range(cfg.batch_size), device=device)["image"])
        ldm.set_scale_factor(first, g0)

    def save(elapsed: float | None = None) -> None:
        save_checkpoint({
            "kind": CHECKPOINT_KIND, "config": cfg, "data_config": data_cfg, "profile": profile.name,
            "autoencoder": {"config": ae.config, "state_dict": ae.state_dict()},
            "scale_factor": float(ldm.scale_factor), "state_dict": mods.state_dict(),
            "ema": ema.state_dict() if ema is not None else None, "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "rng": rng_state(), "step": step, "history": history,
            "elapsed": elapsed_before + time.time() - t0 if elapsed is None else elapsed, "seed": seed,
        }, ckpt_path)

    amp = autocast_dtype(device)
    t0 = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc=f"LDM ({cfg.cond})", disable=not progress, mininterval=2)
    ldm.unet.train()
    stopped_early = False
    while step < cfg.steps:
        if max_minutes is not None and time.time() - t0 > 60 * max_minutes:
            stopped_early = True
            break
        z0, raw, g = _batch(ldm, cache, dataset, cfg.batch_size, seed, step, device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = ldm.training_step(z0, raw, generator=g)
        check_finite(step, loss=loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(mods)
        step += 1
        loss_value = loss.detach().item()
        history.append({"step": step, "loss": loss_value, "lr": sched.get_last_lr()[0]})
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            save()
        if cfg.sample_every and step % cfg.sample_every == 0:
            with ema_weights(ldm, ema):
                save_sample_grid(ldm, out_dir / f"samples_{step:06d}.png", data_cfg.resolution,
                                 title=f"step {step} (EMA weights)")
            ldm.unet.train()
    bar.close()
    elapsed = elapsed_before + time.time() - t0   # one number for the checkpoint and the return value
    save(elapsed)
    minutes = elapsed / 60
    return {"path": ckpt_path, "history": history, "step": step, "minutes": minutes, "stopped_early": stopped_early}


class ema_weights:
    """Context manager: temporarily swap the EMA weights into the model (for sampling during training)."""

    def __init__(self, ldm: LatentDiffusion, ema: EMA | None):
        self.mods, self.ema = denoiser_modules(ldm), ema

    def __enter__(self):
        if self.ema is not None:
            self.backup = {k: v.detach().clone() for k, v in self.mods.state_dict().items()}
            self.ema.copy_to(self.mods)
        self.mods.eval()
        return self

    def __exit__(self, *exc):
        if self.ema is not None:
            self.mods.load_state_dict(self.backup)
        return False


# ----------------------------------------------------------------------------------------------------
# Command line: train-ldm, sample, bench-ldm
# ----------------------------------------------------------------------------------------------------


def parse_layout(spec: str, max_objects: int = 2) -> torch.Tensor:
    """'red circle@0.1,0.1,0.45,0.45; blue star@0.55,0.5,0.95,0.9' -> (1, max_objects, 5) layout tensor."""
    from .data import COLOR_NAMES, SHAPES, class_id

    rows = []
    for part in [p.strip() for p in spec.split(";") if p.strip()]:
        try:
            name, box = part.split("@")
            color, shape = name.split()
            coords = [float(v) for v in box.split(",")]
        except ValueError:
            raise ValueError(f"cannot read layout object {part!r}; expected '<color> <shape>@x0,y0,x1,y1' with "
                             "coordinates in [0, 1], objects separated by ';'") from None
        if color not in COLOR_NAMES or shape not in SHAPES or len(coords) != 4:
            raise ValueError(f"layout object {part!r}: color must be one of {COLOR_NAMES}, shape one of {SHAPES}, "
                             "and the box four numbers x0,y0,x1,y1")
        if not all(0 <= c <= 1 for c in coords) or coords[0] >= coords[2] or coords[1] >= coords[3]:
            raise ValueError(f"layout box {coords} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        rows.append([class_id(shape, color), *coords])
    if not 1 <= len(rows) <= max_objects:
        raise ValueError(f"a layout needs 1 to {max_objects} objects, got {len(rows)}")
    rows += [[-1.0] * 5] * (max_objects - len(rows))
    return torch.tensor([rows], dtype=torch.float32)


def _cmd_train(args) -> int:
    profile = get_profile(args.profile)
    out = Path(args.out or f"runs/ldm-{profile.name}-{args.cond or profile.ldm.cond}")
    result = train_ldm(profile, args.autoencoder, out, cond=args.cond, device=args.device, steps=args.steps,
                       max_minutes=args.minutes, resume=not args.no_resume, seed=args.seed)
    print(f"trained {result['step']} steps in {result['minutes']:.1f} min; checkpoint: {result['path']}")
    return 0


def _cmd_sample(args) -> int:
    from .viz import image_grid, save_figure

    ldm = load_ldm(args.checkpoint, args.device)
    n = args.n
    if args.prompt:
        raw, captions = ldm.prompt_condition(prompts=[args.prompt] * n), [args.prompt] * n
    elif args.label is not None:
        from .data import class_name
        raw, captions = ldm.prompt_condition(labels=[args.label] * n), [class_name(args.label)] * n
    elif args.layout:
        lay = parse_layout(args.layout, ldm.cond_encoder.max_objects)
        raw, captions = ldm.prompt_condition(layouts=lay.expand(n, -1, -1)), [args.layout] * n
    elif ldm.cond_mode == "none":
        raw, captions = None, None
    else:
        raise ValueError(f"this is a {ldm.cond_mode!r}-conditional model: give --prompt, --class or --layout")
    g = torch.Generator().manual_seed(args.seed)
    images = ldm.sample(raw, num_samples=n if raw is None else None, resolution=ldm.resolution, steps=args.steps,
                        eta=args.eta, guidance_scale=args.guidance, generator=g)
    title = f"DDIM {args.steps} steps, η={args.eta}, guidance {args.guidance}, seed {args.seed}"
    path = save_figure(image_grid(images, captions, ncols=min(8, n), title=title), args.out)
    print(f"wrote {path}")
    return 0


def _cmd_bench(args) -> int:
    """LDM training steps/s and DDIM sampling images/s for a profile (random weights: speed only); the
    measurements live in bench.py, which `minildm bench` also runs (with the diffusers comparison)."""
    from .bench import bench_ddim, bench_ldm_step, format_table, machine_info

    device, t0 = get_device(args.device), time.perf_counter()
    rows = [bench_ldm_step(args.profile, args.seconds, device),
            bench_ddim(args.profile, args.seconds, device, batch_size=args.sample_batch, steps=args.steps,
                       peer=False, rounds=1)]
    print(format_table({"machine": machine_info(device), "profile": get_profile(args.profile).name, "rows": rows,
                        "rounds": 1, "seconds": args.seconds, "wall_s": time.perf_counter() - t0}))
    return 0


@torch.no_grad()
def sample_prompts(ldm: LatentDiffusion, captions: list[str], steps: int = 50, eta: float = 0.0,
                   guidance_scale: float = 3.0, seed: int = 0, batch_size: int = 100) -> torch.Tensor:
    """One image per caption, in batches, each batch with its own seeded generator (seed·7919 + first index),
    so a caption's image does not depend on how many others are sampled with it batch-wise."""
    res = getattr(ldm, "resolution", 32)
    images = []
    for start in range(0, len(captions), batch_size):
        raw = ldm.prompt_condition(prompts=list(captions[start:start + batch_size]))
        g = torch.Generator().manual_seed(seed * 7919 + start)
        images.append(ldm.sample(raw, resolution=res, steps=steps, eta=eta, guidance_scale=guidance_scale,
                                 generator=g).cpu())
    return torch.cat(images)


@torch.no_grad()
def evaluate_text_ldm(ldm: LatentDiffusion, n: int = 200, guidance_scale: float = 3.0, steps: int = 50,
                      seed: int = 0, batch_size: int = 100, fid: bool = True, eta: float = 0.0) -> dict[str, Any]:
    """Prompt accuracy of a text-conditional LDM on test-split captions (n one-object, n two-object prompts,
    judged by the Shapes evaluator), Shapes-FID of the two-object-split samples with its real-vs-real floor,
    and `word_influence` for one word pair per attribute (INFLUENCE_PAIRS)."""
    from .evaluation import prompt_accuracy, shapes_generative_metrics

    if ldm.cond_mode != "text":
        raise ValueError(f"evaluate_text_ldm needs a text-conditional model, this one is {ldm.cond_mode!r}")
    res = getattr(ldm, "resolution", 32)
    out: dict[str, Any] = {}
    for label, min_obj, max_obj in (("one_object", 1, 1), ("two_objects", 2, 2), ("mixed", 1, 2)):
        if label == "mixed" and not fid:
            continue
        ds = ShapesDataset("test", size=max(n, 1000), resolution=res, min_objects=min_obj, max_objects=max_obj)
        captions = [ds.scene(i).caption for i in range(n)]
        images = sample_prompts(ldm, captions, steps, eta, guidance_scale, seed, batch_size)
        if label == "mixed":  # the test split's own mix of scenes, for FID against it
            out["fid"] = shapes_generative_metrics(images, split="test", max_objects=2)
        else:
            acc = prompt_accuracy(images, captions)
            out[label] = {"accuracy": float(acc["accuracy"]),
                          "by_attribute": {k: float(v) for k, v in acc["by_attribute"].items()}}
    out["word_influence"] = {f"{a}/{b}": word_influence(ldm, (a, b)) for a, b in INFLUENCE_PAIRS}
    return out


def word_pair_latents(ldm: LatentDiffusion, words: tuple[str, str],
                      n: int = 64) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """n one-object test scenes drawn twice, differing only in one attribute: (z_a, z_b, captions_a, captions_b).

    `words` are two values of the same attribute ("circle", "square"; "red", "blue"; "small", "large"); the
    scenes are the first n one-object test scenes with that attribute set to each word. z_a, z_b are the
    scaled posterior means of the rendered images (everything else equal: position, size, color,
    background), captions_a/b their captions, which differ in that one word.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n (scene pairs) must be a positive int, got {n!r}")
    from .data import COLOR_NAMES, SHAPES, SIZE_NAMES, render_scenes

    attributes = {"shape": SHAPES, "color": COLOR_NAMES, "size": SIZE_NAMES}
    found = [next((a for a, values in attributes.items() if w in values), None) for w in words]
    if len(words) != 2 or None in found or found[0] != found[1] or words[0] == words[1]:
        raise ValueError(f"expected two different words naming the same attribute, e.g. ('circle', 'square'), "
                         f"('red', 'blue') or ('small', 'large'); got {tuple(words)!r}. Shapes: {', '.join(SHAPES)}; "
                         f"colors: {', '.join(COLOR_NAMES)}; sizes: {', '.join(SIZE_NAMES)}")
    attr = found[0]
    res = getattr(ldm, "resolution", 32)
    ds = ShapesDataset("test", size=max(n, 1000), resolution=res, min_objects=1, max_objects=1)
    scenes = [ds.scene(i) for i in range(n)]
    pair = [[dataclasses.replace(s, objects=(dataclasses.replace(s.objects[0], **{attr: w}),)) for s in scenes]
            for w in words]
    device = ldm.scale_factor.device
    with torch.no_grad():
        z = [ldm.latent_moments(render_scenes(sc, res, device=device)[0])[0] * ldm.scale_factor for sc in pair]
    return z[0], z[1], [s.caption for s in pair[0]], [s.caption for s in pair[1]]


@torch.no_grad()
def word_influence(ldm: LatentDiffusion, words: tuple[str, str] = ("circle", "square"), n: int = 64,
                   timesteps: tuple[int, ...] = (100, 300, 500, 800), seed: int = 0) -> list[dict[str, float]]:
    """How far one word of the prompt moves the denoiser's prediction x̂_0 (a probe of cross-attention).

    Take n scene pairs that differ only in that word (`word_pair_latents`: latents z_a, z_b). At step t, noise
    z_a and z_b with the same ε and predict x̂_0 once with each caption. Place every prediction on the line
    between the two images, p = ⟨x̂_0 − z_b, z_a − z_b⟩ / ‖z_a − z_b‖² (1: the words[0] image, 0: the words[1]
    image). The influence at t is p(caption says words[0]) − p(caption says words[1]), averaged over the
    scenes and both starting latents: 0 when the model ignores the word, 1 when the word alone decides.
    Returns one dict per t: {"t", "snr", "influence", "p_a", "p_b"} (p_a, p_b: the mean p per caption).
    """
    if ldm.cond_mode != "text":
        raise ValueError(f"word_influence needs a text-conditional model, this one is {ldm.cond_mode!r}")
    z_a, z_b, caps_a, caps_b = word_pair_latents(ldm, words, n)
    d = z_a - z_b
    d2 = d.flatten(1).pow(2).sum(1)                                                 # ‖z_a − z_b‖², (n,)
    conds = [ldm.encode_condition(ldm.prompt_condition(prompts=c)) for c in (caps_a, caps_b)]
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(z_a.shape, generator=g).to(z_a.device)
    was_training = ldm.unet.training
    ldm.unet.eval()
    rows = []
    for t in timesteps:
        tt = ldm.diffusion.check_timesteps(torch.full((n,), int(t)), n, z_a.device)
        p = []
        for cond in conds:
            per_start = []
            for z in (z_a, z_b):
                x_t = ldm.diffusion.add_noise(z, eps, tt)
                x0, _ = ldm.diffusion.predict_x0_and_eps(x_t, tt, ldm.model_fn(x_t, tt, cond).float())
                per_start.append((((x0 - z_b) * d).flatten(1).sum(1) / d2).mean())
            p.append(float(torch.stack(per_start).mean()))
        rows.append({"t": int(t), "snr": float(ldm.diffusion.snr(int(t))), "influence": p[0] - p[1],
                     "p_a": p[0], "p_b": p[1]})
    ldm.unet.train(was_training)
    return rows


def _cmd_evaluate(args) -> int:
    ldm = load_ldm(args.checkpoint, args.device)
    t0 = time.time()
    r = evaluate_text_ldm(ldm, n=args.n, guidance_scale=args.guidance, steps=args.steps, seed=args.seed,
                          fid=not args.no_fid, eta=args.eta)
    print(f"{args.checkpoint}: DDIM-{args.steps}, η={args.eta}, guidance {args.guidance}, {args.n} prompts per type "
          f"(judged by the Shapes evaluator; all conditions must hold)")
    for kind in ("one_object", "two_objects"):
        attrs = ", ".join(f"{k} {v:.1%}" for k, v in r[kind]["by_attribute"].items())
        print(f"  {kind:12s} prompt accuracy {r[kind]['accuracy']:.1%}  ({attrs})")
    if "fid" in r:
        m = r["fid"]
        print(f"  Shapes-FID {m['fid']:.2f} (real-vs-real floor {m['fid_floor']:.2f} at n={args.n}), "
              f"precision {m['precision']:.3f}, recall {m['recall']:.3f}")
    ts = [row["t"] for row in next(iter(r["word_influence"].values()))]
    print(f"  word influence (0: the word is ignored, 1: it alone decides x̂_0) at t = {', '.join(map(str, ts))}:")
    for pair, rows in r["word_influence"].items():
        print(f"    {pair:14s} " + "  ".join(f"{row['influence']:5.2f}" for row in rows))
    print(f"  ({time.time() - t0:.0f} s)")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add `train-ldm`, `sample`, `evaluate-ldm` and `bench-ldm` to the `minildm` command."""
    p = subparsers.add_parser("train-ldm", help="train the latent diffusion model on a trained autoencoder")
    p.add_argument("--autoencoder", required=True, help="autoencoder checkpoint (from `minildm train-ae`)")
    p.add_argument("--profile", default=None, help="ci, cpu or gpu (default: $MINILDM_PROFILE or by hardware)")
    p.add_argument("--cond", choices=("text", "class", "layout", "sr", "none"), default=None)
    p.add_argument("--out", default=None, help="output folder (default runs/ldm-<profile>-<cond>)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes (checkpoint kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--no-resume", action="store_true")
    p.set_defaults(func=_cmd_train)

    s = subparsers.add_parser("sample", help="sample images from a trained LDM checkpoint")
    s.add_argument("--checkpoint", default="outputs/demo/ldm.pt")
    s.add_argument("--prompt", default=None, help='e.g. "a red circle in the top left" (text models)')
    s.add_argument("--class", dest="label", type=int, default=None, help="class id 0..23 (class models)")
    s.add_argument("--layout", default=None, help='e.g. "red circle@0.1,0.1,0.45,0.45; blue star@0.5,0.5,0.9,0.9"')
    s.add_argument("-n", type=int, default=8, help="number of samples")
    s.add_argument("--steps", type=int, default=50)
    s.add_argument("--eta", type=float, default=0.0)
    s.add_argument("--guidance", type=float, default=3.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default=None)
    s.add_argument("--out", default="samples.png")
    s.set_defaults(func=_cmd_sample)

    e = subparsers.add_parser("evaluate-ldm", help="prompt accuracy and Shapes-FID of a text-conditional LDM")
    e.add_argument("--checkpoint", default="outputs/demo/ldm.pt")
    e.add_argument("-n", type=int, default=200, help="prompts per type (one-object, two-object)")
    e.add_argument("--steps", type=int, default=50)
    e.add_argument("--eta", type=float, default=0.0)
    e.add_argument("--guidance", type=float, default=3.0)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default=None)
    e.add_argument("--no-fid", action="store_true", help="skip Shapes-FID")
    e.set_defaults(func=_cmd_evaluate)

    b = subparsers.add_parser("bench-ldm", help="LDM training steps/s and DDIM sampling images/s")
    b.add_argument("--profile", default=None)
    b.add_argument("--device", default=None)
    b.add_argument("--seconds", type=float, default=20.0)
    b.add_argument("--steps", type=int, default=50)
    b.add_argument("--sample-batch", type=int, default=64)
    b.set_defaults(func=_cmd_bench)
