"""The paper's experiments at mini scale (LDM Sec. 4.1, Fig. 6-7, Tab. 8; DDIM Tab. 1; CFG Sec. 4.3).

    (a) f_study           pixel space (f = 1) vs latent spaces f = 2, 4, 8 at an equal training budget:
                          Shapes-FID vs training time, training steps/s, DDIM sampling images/s.
                          The paper: f = 1 trains far slower; f = 4-16 strike the balance (Sec. 4.1).
    (b) sampler_sweep     DDIM steps × η on one trained text LDM: FID vs number of steps per η.
    (c) guidance_sweep    classifier-free guidance scale s: FID vs prompt accuracy (the trade-off).
    (d) rate_distortion   autoencoders f = 2, 4, 8: rate (latent numbers per pixel value) vs PSNR, SSIM,
                          LPIPS and reconstruction Shapes-FID (rFID).

Each experiment returns a list of rows (dicts of plain numbers); `run_experiment` writes them into
results.md and results.json. Budgets (minutes, sample counts, sweep grids) come from
`ExperimentBudget.for_profile(profile)`; any of them can be overridden by keyword. Reading the rows
(tables, the f-study's verdict) is results.py's job.

Every FID of generated images comes with its unpaired real-vs-real floor at the same sample count
(shapes_eval.shapes_generative_metrics explains the protocols); rFID is paired, so its floor is 0.
Training is seeded and deterministic on the CPU for a given number of steps; with an equal *time* budget
the number of steps depends on the machine, which is the point of the comparison. Checkpoints and
finished evaluations are kept in the output folder, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..autoencoder import CHECKPOINT_KIND as AE_KIND
from ..autoencoder import AEConfig, PixelSpace, load_autoencoder, reconstruct
from ..course.results import EXPERIMENTS, Row, load_json, write_json, write_results
from ..data.datasets import ShapesDataset
from ..eval.accuracy import evaluate_text_model, shapes_generative_metrics
from ..eval.metrics import lpips, psnr, ssim
from ..ldm import CHECKPOINT_KIND as LDM_KIND
from ..ldm import LatentDiffusion
from ..perceptual import lpips_weights_missing
from ..train.profiles import BUDGETS, ExperimentBudget, Profile, get_profile
from ..train.stages import AE_CHECKPOINT, LDM_CHECKPOINT, train_autoencoder, train_ldm
from ..utils import get_device, load_checkpoint, to_plain

__all__ = ["ExperimentBudget", "BUDGETS", "EXPERIMENTS", "f_study", "sampler_sweep", "guidance_sweep",
           "rate_distortion", "run_experiment", "train_first_stage", "autoencoder_config", "latent_rate",
           "check_factor", "sampling_throughput", "DEFAULT_CHECKPOINT"]
DEFAULT_CHECKPOINT = "outputs/demo/ldm.pt"     # the text LDM `minildm demo` trains
# encoder widths per level for f = 2^k, the reference's kl-f4 / kl-f8 pattern (1, 2, 4) / (1, 2, 4, 4)
CH_MULT_PATTERN = (1, 2, 4, 4, 4, 4)


def _budget(profile: Profile, budget: ExperimentBudget | None, **overrides: Any) -> ExperimentBudget:
    budget = budget or ExperimentBudget.for_profile(profile)
    return dataclasses.replace(budget, **{k: v for k, v in overrides.items() if v is not None})


def _say(verbose: bool, text: str) -> None:
    if verbose:
        print(text, flush=True)


# --- First stages for each f, and the rate ------------------------------------------------------------------


def check_factor(f: int, resolution: int) -> int:
    """f must be a power of two (1, 2, 4, ...) that divides the image side; returns f."""
    if isinstance(f, bool) or not isinstance(f, int) or f < 1 or f & (f - 1):
        raise ValueError(f"the downsampling factor f must be a power of two (1 = pixel space, 2, 4, 8, ...), "
                         f"got {f!r}")
    if resolution % f:
        ok = [2**k for k in range(8) if resolution % 2**k == 0]
        raise ValueError(f"image size {resolution} is not divisible by f={f}; use one of {ok}")
    return f


def autoencoder_config(ae: AEConfig, f: int, resolution: int = 32) -> AEConfig:
    """The profile's autoencoder with ch_mult set for factor f = 2^(len(ch_mult) − 1): (1, 2), (1, 2, 4),
    (1, 2, 4, 4), ... as in the reference's kl-f4 / kl-f8; f = 1 is the identity PixelSpace config."""
    check_factor(f, resolution)
    if f == 1:
        return AEConfig(kind="pixel", ch_mult=(1,), z_channels=3)
    levels = int(math.log2(f)) + 1
    ch_mult = CH_MULT_PATTERN[:levels] if levels <= len(CH_MULT_PATTERN) else CH_MULT_PATTERN + (4,) * (
        levels - len(CH_MULT_PATTERN))
    kind = ae.kind if ae.kind != "pixel" else "kl"
    attn = tuple(a for a in ae.attn_resolutions if a <= f)        # attention only at factors that exist
    return dataclasses.replace(ae, kind=kind, ch_mult=ch_mult, attn_resolutions=attn)


def latent_rate(resolution: int, f: int, z_channels: int) -> float:
    """Latent numbers per pixel value: (h·w·c) / (H·W·3) with h = w = H/f (1.0 for pixel space, f = 1, c = 3)."""
    check_factor(f, resolution)
    h = resolution // f
    return h * h * z_channels / (resolution * resolution * 3)


def _read_progress(path: Path, kind: str) -> dict[str, float] | None:
    """Step count and training seconds stored in a checkpoint (None if there is none)."""
    if not path.is_file():
        return None
    ckpt = load_checkpoint(path, kind=kind)
    hist = ckpt.get("history") or []
    psnrs = [h["val_psnr"] for h in hist if "val_psnr" in h]
    return {"steps": int(ckpt["step"]), "seconds": float(ckpt.get("elapsed", 0.0)),
            "val_psnr": float(psnrs[-1]) if psnrs else None}


def train_first_stage(profile: str | Profile | None, f: int, out_dir: str | Path, *, minutes: float | None = None,
                      steps: int | None = None, device: str | torch.device | None = None, download: bool = True,
                      finish: bool = True, verbose: bool = True) -> dict[str, Any]:
    """Train (or reuse) the autoencoder for factor f in out_dir/f{f} for `minutes` of training time or `steps`
    steps (Sec. 3.1); returns {"path", "config", "steps", "minutes", "val_psnr"}. f = 1: nothing to train.

    An existing checkpoint that has not used up the budget (an interrupted run) is trained on; with
    finish=False any existing checkpoint is used as it is (so a reader never changes the f-study's models)."""
    profile = get_profile(profile)
    cfg = autoencoder_config(profile.ae, f, profile.data.resolution)
    if f == 1:
        return {"path": None, "config": cfg, "steps": 0, "minutes": 0.0, "val_psnr": None}
    if (minutes is None) == (steps is None):
        raise ValueError("give the autoencoder budget as exactly one of minutes=... or steps=...")
    folder = Path(out_dir) / f"f{f}"
    path = folder / AE_CHECKPOINT
    done = _read_progress(path, AE_KIND)
    if done is not None and not finish:
        need, kwargs = False, {}
    elif minutes is not None:
        todo = minutes - (done["seconds"] / 60 if done else 0.0)     # training minutes still to go
        need = todo > 0
        kwargs = {"steps": 10**9, "max_minutes": todo}
    else:
        need = done is None or done["steps"] < steps
        kwargs = {"steps": steps}
    if need:
        random_lpips = None if lpips_weights_missing(cfg.lpips_net, download) is None else True
        _say(verbose, f"  autoencoder f={f} (ch_mult {cfg.ch_mult}, z={cfg.z_channels})"
                      + (" with a RANDOM LPIPS backbone (no pretrained weights)" if random_lpips else ""))
        train_autoencoder(profile.replace(ae=dataclasses.asdict(cfg)), folder, device=device, resume=True,
                          random_lpips=random_lpips, lpips_download=download, progress=False, **kwargs)
        done = _read_progress(path, AE_KIND)
    return {"path": path, "config": cfg, "steps": done["steps"], "minutes": done["seconds"] / 60,
            "val_psnr": done["val_psnr"]}


def _first_stage_module(stage: dict[str, Any], device: torch.device) -> torch.nn.Module:
    return PixelSpace() if stage["path"] is None else load_autoencoder(stage["path"], device, config=stage["config"])


# --- (a) The downsampling-factor study ----------------------------------------------------------------------


@torch.no_grad()
def sampling_throughput(ldm: torch.nn.Module, batch_size: int = 16, steps: int = 50, guidance_scale: float = 3.0,
                        seed: int = 0) -> float:
    """Images/s of one guided DDIM-`steps` batch (conditioning, sampling and decoding; after a 1-step warm-up)."""
    ds = ShapesDataset("test", size=max(batch_size, 1000), resolution=ldm.resolution)
    raw = ldm.prompt_condition(prompts=[ds.scene(i).caption for i in range(batch_size)])
    ldm.sample(raw, steps=1, guidance_scale=guidance_scale,
               generator=torch.Generator().manual_seed(seed))                      # warm-up
    device = ldm.scale_factor.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    ldm.sample(raw, steps=steps, guidance_scale=guidance_scale,
               generator=torch.Generator().manual_seed(seed))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch_size / (time.perf_counter() - t0)


def f_study(profile: str | Profile | None = None, out_dir: str | Path = "outputs/experiments",
            budget: ExperimentBudget | None = None, *, factors: Sequence[int] | None = None,
            ae_minutes: float | None = None, ldm_minutes: float | None = None, segments: int | None = None,
            num_samples: int | None = None, equal: str = "time", seed: int = 0,
            device: str | torch.device | None = None, download: bool = True, verbose: bool = True) -> list[Row]:
    """Sec. 4.1 / Fig. 6: train a text LDM with the SAME LDMConfig in pixel space (f = 1) and on autoencoders
    f = 2, 4, 8, each for the same budget, evaluating after every segment of it.

    equal="time": every autoencoder gets `ae_minutes`, every LDM `ldm_minutes` of training time (the paper's
    "equal compute"); equal="steps": the profile's ae.steps and ldm.steps instead (deterministic on CPU).
    One row per (f, segment): f, segment, minutes (LDM training time so far), steps, train_steps_per_s (in
    that segment), Shapes-FID, its unpaired floor, KID, precision, recall, prompt accuracies, sample_images_per_s
    (evaluation sampling, DDIM-eval_steps); the last segment adds ddim_images_per_s (DDIM-throughput_steps,
    guided), and every row the latent size, channels, rate and the autoencoder's steps, minutes and PSNR.
    Time spent encoding the latent cache and evaluating is not training time and is not counted.
    """
    profile = get_profile(profile)
    b = _budget(profile, budget, factors=tuple(factors) if factors is not None else None, ae_minutes=ae_minutes,
                ldm_minutes=ldm_minutes, segments=segments, eval_samples=num_samples)
    if equal not in ("time", "steps"):
        raise ValueError(f"equal must be 'time' (equal training minutes) or 'steps' (equal step counts), got {equal!r}")
    res = profile.data.resolution
    unet_down = 2 ** (len(profile.ldm.channel_mult) - 1)
    for f in b.factors:
        check_factor(f, res)
        if (res // f) % unet_down:
            raise ValueError(f"f={f} gives {res // f}×{res // f} latents, which the U-Net (channel_mult "
                             f"{profile.ldm.channel_mult}) cannot halve {len(profile.ldm.channel_mult) - 1} times; "
                             "drop this f or use a larger resolution")
    device = get_device(device)
    out_dir = Path(out_dir)
    ldm_profile = profile.replace(ldm={"cond": "text", "sample_every": 0})
    total = b.ldm_minutes if equal == "time" else profile.ldm.steps
    key = {"profile": profile.name, "equal": equal, "seed": seed, "ae": b.ae_minutes if equal == "time" else
           profile.ae.steps, "ldm": total, "segments": b.segments, "eval": [b.eval_samples, b.eval_steps,
           b.guidance_scale], "ldm_config": to_plain(ldm_profile.ldm)}
    key = json.loads(json.dumps(key))                              # tuples -> lists, as stored
    _say(verbose, f"f-study: profile={profile.name} device={device} threads={torch.get_num_threads()} "
                  f"equal {equal}: {total} {'min' if equal == 'time' else 'steps'} per LDM in {b.segments} segments, "
                  f"out={out_dir}")
    rows: list[Row] = []
    for f in b.factors:
        rows += _f_study_one(profile, ldm_profile, f, out_dir / f"f{f}", key, b, equal, seed, device, download,
                             verbose)
    return rows


def _f_study_one(profile: Profile, ldm_profile: Profile, f: int, folder: Path, key: dict, b: ExperimentBudget,
                 equal: str, seed: int, device: torch.device, download: bool, verbose: bool) -> list[Row]:
    """The f-study's rows for one f: train (or reuse) its autoencoder, then train its LDM segment by segment
    and evaluate after each; finished segments are read back from folder/f_study.json."""
    res = profile.data.resolution
    total = b.ldm_minutes if equal == "time" else profile.ldm.steps
    saved = load_json(folder / "f_study.json")
    if saved is not None and saved["key"] != key:
        diff = {k: (saved["key"].get(k), v) for k, v in key.items() if saved["key"].get(k) != v}
        raise ValueError(f"{folder} holds an f-study run with other settings (stored vs requested: {diff}); "
                         "use another output folder or delete this one")
    done = {r["segment"]: r for r in saved["rows"]} if saved else {}
    write_json({"key": key, "rows": list(done.values())}, folder / "f_study.json")
    stage = train_first_stage(profile, f, folder.parent, device=device, download=download, verbose=verbose,
                              **({"minutes": b.ae_minutes} if equal == "time" else {"steps": profile.ae.steps}))
    base = {"f": f, "latent_size": res // f, "latent_channels": stage["config"].z_channels,
            "rate": latent_rate(res, f, stage["config"].z_channels), "ae_steps": stage["steps"],
            "ae_minutes": stage["minutes"], "ae_psnr": stage["val_psnr"]}
    ckpt = folder / LDM_CHECKPOINT
    rows, ae_module, have, prev = [], None, None, {"steps": 0, "seconds": 0.0}
    for k in range(1, b.segments + 1):
        if k in done:
            rows.append(done[k])
            prev = {"steps": done[k]["steps"], "seconds": 60 * done[k]["minutes"]}
            continue
        if have is None:     # where the checkpoint stands (if any)
            have = _read_progress(ckpt, LDM_KIND) or {"steps": 0, "seconds": 0.0}
        if equal == "time":
            todo = k * total / b.segments - have["seconds"] / 60
            # a step that overshot the previous target may leave nothing to do: every segment trains ≥ 1 step
            kwargs = {"steps": 10**9, "max_minutes": todo} if todo > 0 else {"steps": have["steps"] + 1}
        else:
            kwargs = {"steps": max(round(k * total / b.segments), have["steps"] + 1)}
        ae_module = ae_module or _first_stage_module(stage, device)
        train = dict(cond="text", device=device, resume=True, seed=seed, progress=False)
        if train_ldm(ldm_profile, ae_module, folder, **train, **kwargs)["step"] == have["steps"]:
            train_ldm(ldm_profile, ae_module, folder, **train, steps=have["steps"] + 1)   # time was up: one step
        have = _read_progress(ckpt, LDM_KIND)    # the checkpoint's own record of its training time
        ldm = LatentDiffusion.from_checkpoint(ckpt, device)
        m = evaluate_text_model(ldm, b.eval_samples, b.eval_steps, 0.0, b.guidance_scale, seed, b.eval_batch)
        row = {**base, "segment": k, "minutes": have["seconds"] / 60, "steps": have["steps"],
               "train_steps_per_s": (have["steps"] - prev["steps"]) / max(have["seconds"] - prev["seconds"], 1e-9),
               **m, "ddim_steps": b.eval_steps}
        if k == b.segments:
            row["ddim_images_per_s"] = sampling_throughput(ldm, b.throughput_batch, b.throughput_steps,
                                                           b.guidance_scale, seed)
            row["throughput_steps"] = b.throughput_steps
        prev, done[k] = have, row
        rows.append(row)
        write_json({"key": key, "rows": [done[j] for j in sorted(done)]}, folder / "f_study.json")
        _say(verbose, f"  f={f} segment {k}/{b.segments}: {row['minutes']:.2f} min, {row['steps']} steps "
                      f"({row['train_steps_per_s']:.2f} steps/s), Shapes-FID {row['fid']:.1f} (floor "
                      f"{row['fid_floor']:.1f}), precision {row['precision']:.2f}, recall {row['recall']:.2f}, "
                      f"prompt accuracy {row['accuracy']:.0%}")
    return rows


# --- (b) DDIM steps × η and (c) guidance scale, on one trained text LDM -------------------------------------


def _load_text_ldm(checkpoint: str | Path | LatentDiffusion, device: str | torch.device | None) -> LatentDiffusion:
    if isinstance(checkpoint, LatentDiffusion):
        if checkpoint.cond_mode != "text":
            raise ValueError(f"the sweeps need a text-conditional LDM, got a {checkpoint.cond_mode!r} one")
        return checkpoint
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"no LDM checkpoint at {path}; train one with `minildm demo` (writes "
                                f"{DEFAULT_CHECKPOINT}) or pass the f-study's <out>/f4/ldm.pt")
    ldm = LatentDiffusion.from_checkpoint(path, device)
    if ldm.cond_mode != "text":
        raise ValueError(f"{path} is a {ldm.cond_mode!r}-conditional LDM; the sweeps need a text-conditional one")
    return ldm


def _sweep(ldm: LatentDiffusion, settings: Sequence[dict[str, Any]], num_samples: int, b: ExperimentBudget,
           seed: int, verbose: bool) -> list[Row]:
    """evaluate_text_model once per setting ({"steps", "eta", "guidance_scale"}); the floor (the same for
    every setting: it does not depend on the model) is measured once and copied into every row."""
    rows, floor = [], None
    for s in settings:
        m = evaluate_text_model(ldm, num_samples, s["steps"], s["eta"], s["guidance_scale"], seed, b.eval_batch,
                                with_floor=floor is None)
        floor = floor or {k: v for k, v in m.items() if k.endswith("_floor")}
        rows.append({**s, **m, **floor})
        _say(verbose, f"  DDIM-{s['steps']} η={s['eta']} s={s['guidance_scale']}: Shapes-FID {m['fid']:.1f} (floor "
                      f"{floor['fid_floor']:.1f}), prompt accuracy {m['accuracy']:.0%}")
    return rows


def sampler_sweep(profile: str | Profile | None = None, checkpoint: str | Path | LatentDiffusion = DEFAULT_CHECKPOINT,
                  budget: ExperimentBudget | None = None, *, steps: Sequence[int] | None = None,
                  etas: Sequence[float] | None = None, num_samples: int | None = None,
                  guidance_scale: float | None = None, seed: int = 0, device: str | torch.device | None = None,
                  verbose: bool = True) -> list[Row]:
    """DDIM (Song et al. 2021, Tab. 1) with S steps and stochasticity η on a trained text LDM: one row per
    (steps, eta) with Shapes-FID (+ unpaired floor), precision, recall, prompt accuracy and images/s.
    `checkpoint`: a text LDM's checkpoint file, or the model itself."""
    profile = get_profile(profile)
    b = _budget(profile, budget, sampler_steps=tuple(steps) if steps is not None else None,
                sampler_etas=tuple(etas) if etas is not None else None, sampler_samples=num_samples,
                guidance_scale=guidance_scale)
    for s in b.sampler_steps:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"DDIM steps must be positive ints, got {s!r}")
    for e in b.sampler_etas:
        if not 0.0 <= e <= 1.0:
            raise ValueError(f"η must be in [0, 1] (0: deterministic DDIM, 1: DDPM-like noise), got {e!r}")
    ldm = _load_text_ldm(checkpoint, device)
    _say(verbose, f"sampler sweep: {checkpoint}, guidance {b.guidance_scale}, {b.sampler_samples} samples each")
    settings = [{"steps": s, "eta": float(eta), "guidance_scale": b.guidance_scale}
                for eta in b.sampler_etas for s in b.sampler_steps]
    return _sweep(ldm, settings, b.sampler_samples, b, seed, verbose)


def guidance_sweep(profile: str | Profile | None = None, checkpoint: str | Path | LatentDiffusion = DEFAULT_CHECKPOINT,
                   budget: ExperimentBudget | None = None, *, scales: Sequence[float] | None = None,
                   num_samples: int | None = None, steps: int | None = None, seed: int = 0,
                   device: str | torch.device | None = None, verbose: bool = True) -> list[Row]:
    """Classifier-free guidance ε̂ = ε̂(∅) + s·(ε̂(y) − ε̂(∅)) for several s (Sec. 4.3): one row per scale with
    Shapes-FID (+ unpaired floor), precision, recall (diversity) and prompt accuracy (fidelity to the caption)."""
    profile = get_profile(profile)
    b = _budget(profile, budget, guidance_scales=tuple(scales) if scales is not None else None,
                guidance_samples=num_samples, guidance_steps=steps)
    for s in b.guidance_scales:
        if not s >= 0:
            raise ValueError(f"guidance scales must be ≥ 0 (1 = plain conditional sampling), got {s!r}")
    ldm = _load_text_ldm(checkpoint, device)
    _say(verbose, f"guidance sweep: {checkpoint}, DDIM-{b.guidance_steps}, {b.guidance_samples} samples each")
    settings = [{"steps": b.guidance_steps, "eta": 0.0, "guidance_scale": float(s)} for s in b.guidance_scales]
    return _sweep(ldm, settings, b.guidance_samples, b, seed, verbose)


# --- (d) Rate-distortion of the autoencoders ----------------------------------------------------------------


@torch.no_grad()
def rate_distortion(profile: str | Profile | None = None, out_dir: str | Path = "outputs/experiments",
                    budget: ExperimentBudget | None = None, *, factors: Sequence[int] | None = None,
                    ae_minutes: float | None = None, num_images: int | None = None, equal: str = "time",
                    device: str | torch.device | None = None, download: bool = True,
                    verbose: bool = True) -> list[Row]:
    """Tab. 8 in miniature: for each f (the f-study's autoencoders as they are, trained here if missing) the rate
    (h·w·c)/(H·W·3) against PSNR, SSIM, LPIPS (None without pretrained weights) and reconstruction
    Shapes-FID of test images, with the unpaired real-vs-real floor. f = 1 is lossless and skipped."""
    profile = get_profile(profile)
    b = _budget(profile, budget, factors=tuple(factors) if factors is not None else None, ae_minutes=ae_minutes,
                rd_images=num_images)
    if equal not in ("time", "steps"):
        raise ValueError(f"equal must be 'time' or 'steps', got {equal!r}")
    res = profile.data.resolution
    for f in b.factors:
        check_factor(f, res)
    device = get_device(device)
    with_lpips = lpips_weights_missing(profile.ae.lpips_net, download) is None
    _say(verbose, f"rate-distortion: profile={profile.name}, {b.rd_images} test images"
                  + ("" if with_lpips else "; LPIPS skipped (no pretrained backbone weights)"))
    n = b.rd_images
    data = ShapesDataset("test", size=n, max_objects=profile.data.max_objects, resolution=res)
    rows = []
    for f in b.factors:
        if f == 1:
            continue
        with torch.enable_grad():   # training, when the checkpoint is missing, needs gradients
            stage = train_first_stage(profile, f, out_dir, device=device, download=download, finish=False,
                                      verbose=verbose, **({"minutes": b.ae_minutes} if equal == "time" else
                                                          {"steps": profile.ae.steps}))
        ae = load_autoencoder(stage["path"], device, config=stage["config"])
        p, s, lp, recons = [], [], [], []
        for i in range(0, n, 100):
            x = data.batch(range(i, min(i + 100, n)))["image"].to(device)
            xr = reconstruct(ae, x).clamp(-1, 1)
            p.append(psnr(x, xr).cpu())
            s.append(ssim(x, xr).cpu())
            if with_lpips:
                lp.append(lpips(x, xr, net=profile.ae.lpips_net, download=False, random_backbone=False).cpu())
            recons.append(xr.cpu())
        m = shapes_generative_metrics(torch.cat(recons), split="test", max_objects=profile.data.max_objects,
                                      protocol="paired", with_floor=False)
        c = stage["config"].z_channels
        row = {"f": f, "latent_size": res // f, "latent_channels": c, "rate": latent_rate(res, f, c),
               "psnr": float(torch.cat(p).mean()), "ssim": float(torch.cat(s).mean()),
               "lpips": float(torch.cat(lp).mean()) if lp else None, "rfid": m["fid"],
               "images": n, "ae_steps": stage["steps"], "ae_minutes": stage["minutes"]}
        rows.append(row)
        _say(verbose, f"  f={f}: rate {row['rate']:.4f}, PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}, "
                      f"rFID {row['rfid']:.1f} (paired: a perfect autoencoder scores 0)")
    return rows


# --- Running one experiment by name (`minildm experiments`) -------------------------------------------------


def run_experiment(name: str, profile: str | Profile | None = None, out_dir: str | Path | None = None,
                   checkpoint: str | Path | None = None, budget: ExperimentBudget | None = None,
                   **kwargs: Any) -> list[Row]:
    """Run one experiment by name (see EXPERIMENTS) and write its rows into out_dir/results.{json,md}."""
    runners: dict[str, Callable[..., list[Row]]] = {"f-study": f_study, "sampler": sampler_sweep,
                                                     "guidance": guidance_sweep, "rate-distortion": rate_distortion}
    if name not in runners:
        raise ValueError(f"unknown experiment {name!r}; expected one of {', '.join(EXPERIMENTS)} or 'all'")
    profile = get_profile(profile)
    out_dir = Path(out_dir or f"outputs/experiments/{profile.name}")
    b = budget or ExperimentBudget.for_profile(profile)
    t0 = time.time()
    if name in ("sampler", "guidance"):
        checkpoint = Path(checkpoint or DEFAULT_CHECKPOINT)
        rows = runners[name](profile, checkpoint, b, **kwargs)
        where = {"checkpoint": str(checkpoint)}
    else:
        rows = runners[name](profile, out_dir, b, **kwargs)
        where = {}
    meta = {"profile": profile.name, **where, "device": str(get_device(kwargs.get("device"))),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "wall_minutes": round((time.time() - t0) / 60, 2)}
    write_results(out_dir, name, rows, meta)
    return rows
