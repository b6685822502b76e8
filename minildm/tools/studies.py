"""The paper's experiments at mini scale (LDM Sec. 4.1, Fig. 6-7, Tab. 8; DDIM Tab. 1; CFG Sec. 4.3), and one
beyond the paper (e).

    (a) f_study           pixel space (f = 1) vs latent spaces f = 2, 4, 8 at equal training steps (the
                          paper's Fig. 6) or time: Shapes-FID along training, training steps/s, DDIM images/s.
                          The paper: f = 1 trains far slower; f = 4-16 strike the balance (Sec. 4.1).
    (b) sampler_sweep     DDIM steps × η on one trained text LDM: FID vs number of steps per η.
    (c) guidance_sweep    classifier-free guidance scale s: FID vs prompt accuracy (the trade-off).
    (d) rate_distortion   autoencoders f = 2, 4, 8: rate (latent numbers per pixel value) vs PSNR, SSIM,
                          LPIPS and reconstruction Shapes-FID (rFID).
    (e) ode_sampler_sweep DDIM (η = 0, 1), DPM-Solver++(2M) and Heun at 5-50 model evaluations on one trained
                          text LDM: prompt accuracy and FID against the cost of sampling, the DPM-Solver++
                          paper's axis.

Each experiment returns a list of rows (dicts of plain numbers); `run_experiment` writes them into
results.md and results.json. Budgets come from `ExperimentBudget.for_profile(profile)`; any of them can be
overridden by keyword. Reading the rows (tables, the f-study's verdict) is course/results.py's job.

Every FID of generated images comes with its unpaired real-vs-real floor at the same sample count
(eval.accuracy.shapes_generative_metrics explains the protocols); rFID is paired, so its floor is 0.
Training is seeded and deterministic on the CPU for a given number of steps; with an equal *time* budget
the number of steps depends on the machine, which is the point of the comparison. Checkpoints and
finished evaluations are kept in the output folder, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..autoencoder import CHECKPOINT_KIND as AE_KIND
from ..autoencoder import AEConfig, PixelSpace, load_autoencoder, reconstruct
from ..course import pretrained
from ..course.results import Row, load_json, write_json, write_results
from ..course.viz import save_figure
from ..data.datasets import ShapesDataset
from ..eval.accuracy import evaluate_text_model, shapes_generative_metrics
from ..eval.metrics import binomial_interval, lpips, psnr, ssim
from ..ldm import CHECKPOINT_KIND as LDM_KIND
from ..ldm import LatentDiffusion
from ..perceptual import lpips_weights_missing
from ..train.profiles import ExperimentBudget, Profile, get_profile
from ..train.stages import AE_CHECKPOINT, LDM_CHECKPOINT, train_autoencoder, train_ldm
from ..utils import count_parameters, get_device, load_checkpoint, to_plain
from .bench import _ldm_and_batch, _train_step, throughput

__all__ = ["f_study", "sampler_sweep", "guidance_sweep", "rate_distortion", "ode_sampler_sweep", "ode_sampler_figure",
           "run_experiment", "train_first_stage", "autoencoder_config", "latent_rate", "sampling_throughput",
           "step_speeds", "model_calls", "NFE_SAMPLERS", "DEFAULT_CHECKPOINT"]
DEFAULT_CHECKPOINT = "outputs/demo/ldm.pt"     # the text LDM `minildm demo` trains


def _budget(profile: Profile, budget: ExperimentBudget | None, overrides: dict[str, Any]) -> ExperimentBudget:
    """`budget` (default: the profile's) with the keyword overrides that are not None, by field name."""
    budget = budget or ExperimentBudget.for_profile(profile)
    return dataclasses.replace(budget, **{k: v for k, v in overrides.items() if v is not None})


def _say(verbose: bool, text: str) -> None:
    if verbose:
        print(text, flush=True)


# --- First stages for each f, and the rate ------------------------------------------------------------------


def _check_factors(factors: Sequence[int], profile: Profile, unet: bool) -> None:
    """--factors: powers of two that divide the image side (and leave latents the U-Net can halve)."""
    res, levels = profile.data.resolution, len(profile.ldm.channel_mult) - 1
    for f in factors:
        if f < 1 or f & (f - 1) or res % f:
            raise ValueError(f"the downsampling factor f must be a power of two (1 = pixel space, 2, 4, 8, ...) "
                             f"that divides the image size {res}, got {f!r}")
        if unet and (res // f) % 2**levels:
            raise ValueError(f"f={f} gives {res // f}×{res // f} latents, which the U-Net (channel_mult "
                             f"{profile.ldm.channel_mult}) cannot halve {levels} times; drop this f or use a "
                             "larger resolution")


def autoencoder_config(ae: AEConfig, f: int) -> AEConfig:
    """The profile's autoencoder with ch_mult set for factor f = 2^(len(ch_mult) − 1): (1, 2), (1, 2, 4),
    (1, 2, 4, 4), ... as in the reference's kl-f4 / kl-f8; f = 1 is the identity PixelSpace config."""
    if f == 1:
        return AEConfig(kind="pixel", ch_mult=(1,), z_channels=3)
    ch_mult = ((1, 2) + (4,) * f.bit_length())[:f.bit_length()]
    kind = ae.kind if ae.kind != "pixel" else "kl"
    attn = tuple(a for a in ae.attn_resolutions if a <= f)        # attention only at factors that exist
    return dataclasses.replace(ae, kind=kind, ch_mult=ch_mult, attn_resolutions=attn)


def latent_rate(resolution: int, f: int, z_channels: int) -> float:
    """Latent numbers per pixel value: (h·w·c) / (H·W·3) with h = w = H/f (1.0 for pixel space, f = 1, c = 3)."""
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


def _train_until(train: Callable[..., Any], path: Path, kind: str, minutes: float | None = None,
                 steps: int | None = None, at_least: int = 0) -> dict[str, float]:
    """Train the run whose checkpoint is `path` on (train(**kwargs): train_autoencoder or train_ldm resuming
    from it) until it holds `minutes` of training time, or `steps` steps, and at least `at_least` more steps
    than it had (a step that overshot the previous target may leave no time to go). -> _read_progress."""
    have = _read_progress(path, kind) or {"steps": 0, "seconds": 0.0, "val_psnr": None}
    if minutes is not None and minutes > have["seconds"] / 60:
        train(steps=10**9, max_minutes=minutes - have["seconds"] / 60)       # the training minutes still to go
    elif steps is not None and steps > have["steps"]:
        train(steps=steps)
    done = _read_progress(path, kind) or have
    if done["steps"] < have["steps"] + at_least:                              # time was up before a step
        train(steps=have["steps"] + at_least)
        done = _read_progress(path, kind)
    return done


def train_first_stage(profile: str | Profile | None, f: int, out_dir: str | Path, *, minutes: float | None = None,
                      steps: int | None = None, device: str | torch.device | None = None, download: bool = True,
                      finish: bool = True, verbose: bool = True) -> dict[str, Any]:
    """Train (or reuse) the autoencoder for factor f in out_dir/f{f} for `minutes` of training time or `steps`
    steps (Sec. 3.1); returns {"path", "config", "steps", "minutes", "val_psnr"}. f = 1: nothing to train.

    An existing checkpoint that has not used up the budget (an interrupted run) is trained on; with
    finish=False any existing checkpoint is used as it is (so a reader never changes the f-study's models)."""
    profile = get_profile(profile)
    cfg = autoencoder_config(profile.ae, f)
    if f == 1:
        return {"path": None, "config": cfg, "steps": 0, "minutes": 0.0, "val_psnr": None}
    folder = Path(out_dir) / f"f{f}"
    path = folder / AE_CHECKPOINT

    def train(**kwargs: Any) -> None:
        random_lpips = None if lpips_weights_missing(profile.ae_loss.lpips_net, download) is None else True
        _say(verbose, f"  autoencoder f={f} (ch_mult {cfg.ch_mult}, z={cfg.z_channels})"
                      + (" with a RANDOM LPIPS backbone (no pretrained weights)" if random_lpips else ""))
        train_autoencoder(profile.replace(ae=dataclasses.asdict(cfg)), folder, device=device, resume=True,
                          random_lpips=random_lpips, lpips_download=download, progress=False, **kwargs)

    done = _read_progress(path, AE_KIND)
    if done is None or finish:
        done = _train_until(train, path, AE_KIND, minutes, steps)
    return {"path": path, "config": cfg, "steps": done["steps"], "minutes": done["seconds"] / 60,
            "val_psnr": done["val_psnr"]}


# --- (a) The downsampling-factor study ----------------------------------------------------------------------


@torch.no_grad()
def sampling_throughput(ldm: torch.nn.Module, batch_size: int = 16, steps: int = 50, guidance_scale: float = 3.0,
                        seed: int = 0) -> float:
    """Images/s of one guided DDIM-`steps` batch (conditioning, sampling and decoding; after a 1-step warm-up)."""
    ds = ShapesDataset("test", size=max(batch_size, 1000), resolution=ldm.resolution)
    raw = ldm.prompt_condition(prompts=[ds.scene(i).caption for i in range(batch_size)])

    def sample(n_steps: int) -> torch.Tensor:
        return ldm.sample(raw, steps=n_steps, guidance_scale=guidance_scale,
                          generator=torch.Generator().manual_seed(seed))

    sample(1)                                                                    # warm-up
    return batch_size * throughput(lambda: sample(steps), 0.0, warmup=0, device=ldm.scale_factor.device)["per_s"]


def step_speeds(profile: str | Profile | None = None, factors: Sequence[int] = (1, 4, 8), batch_size: int | None = None,
                seconds: float = 2.0, ddim_steps: int = 4, device: str | torch.device | None = None) -> list[Row]:
    """What one step costs at each f on this machine, now (the paper's Fig. 7 axis), for the f-study's models:
    the same text LDM configuration in pixel space (f = 1) and on an autoencoder with f's `ch_mult`, random
    weights (speed does not depend on them). Per f: train_steps_per_s (τθ + U-Net + AdamW on a batch of
    `batch_size`, None: the profile's) and ddim_image_steps_per_s (images × guided DDIM steps per second, decoding
    included: DDIM-S on a batch of B images takes about B·S / that seconds). Each timing runs for `seconds`
    after one untimed call. A study's own minutes were measured on its machine under its load; these are yours."""
    profile = get_profile(profile)
    _check_factors(factors, profile, unet=True)
    device = get_device(device)
    batch = batch_size or profile.ldm_train.batch_size
    rows: list[Row] = []
    for f in factors:
        p = profile.replace(ae=dataclasses.asdict(autoencoder_config(profile.ae, f)), ldm={"cond": "text"})
        ldm, z0, tokens = _ldm_and_batch(p, device, batch)
        mods = ldm.denoiser_modules().train()
        g = torch.Generator().manual_seed(0)
        train = throughput(_train_step(lambda: ldm.training_step(z0, tokens, generator=g), mods, p.ldm_train, device),
                           seconds, device=device)
        ldm.eval()
        with torch.no_grad():
            sample = throughput(lambda: ldm.sample(tokens, steps=ddim_steps, guidance_scale=p.ldm_train.guidance_scale),
                                seconds, device=device)
        rows.append({"f": f, "latent_size": p.data.resolution // f, "batch": batch, "train_steps_per_s": train["per_s"],
                     "ddim_image_steps_per_s": sample["per_s"] * batch * ddim_steps,
                     "unet_parameters": count_parameters(ldm.unet)})
    return rows


def _ae_budget(profile: Profile, b: ExperimentBudget, equal: str) -> dict[str, float]:
    """train_first_stage's budget: b.ae_minutes of training time (equal="time") or b.ae_steps steps (None: the
    profile's ae_train.steps)."""
    return {"minutes": b.ae_minutes} if equal == "time" else {"steps": b.ae_steps or profile.ae_train.steps}


def f_study(profile: str | Profile | None = None, out_dir: str | Path = "outputs/experiments",
            budget: ExperimentBudget | None = None, *, equal: str = "time", seed: int = 0,
            device: str | torch.device | None = None, download: bool = True, verbose: bool = True,
            **overrides: Any) -> list[Row]:
    """Sec. 4.1 / Fig. 6: train a text LDM with the SAME LDMConfig in pixel space (f = 1) and on autoencoders
    f = 2, 4, 8, each for the same budget, evaluating after every segment of it. `overrides`: fields of the
    ExperimentBudget (factors, ae_minutes, ldm_minutes, segments, eval_samples, …).

    equal="steps" (the paper's Fig. 6: every LDM gets the same number of training steps, deterministic on the
    CPU): `ae_steps` and `ldm_steps` (None: the profile's ae_train.steps and ldm_train.steps); equal="time" (what
    a lab's minutes buy): every autoencoder gets `ae_minutes`, every LDM `ldm_minutes` of training time. Every LDM
    has the same LDMConfig and batch size (`ldm_batch`, None: the profile's).
    One row per (f, segment): f, segment, minutes (LDM training time so far), steps, train_steps_per_s (in
    that segment), Shapes-FID, its unpaired floor, KID, precision, recall, prompt accuracies, sample_images_per_s
    (evaluation sampling, DDIM-eval_steps); the last segment adds ddim_images_per_s (DDIM-throughput_steps,
    guided), and every row the latent size, channels, rate and the autoencoder's steps, minutes and PSNR.
    Time spent encoding the latent cache and evaluating is not training time and is not counted.
    """
    profile = get_profile(profile)
    b = _budget(profile, budget, overrides)
    _check_factors(b.factors, profile, unet=True)
    device = get_device(device)
    out_dir = Path(out_dir)
    ldm_profile = profile.replace(ldm={"cond": "text"}, ldm_train={"sample_every": 0, "batch_size": b.ldm_batch
                                                                   or profile.ldm_train.batch_size})
    total = b.ldm_minutes if equal == "time" else b.ldm_steps or profile.ldm_train.steps
    ae_budget = next(iter(_ae_budget(profile, b, equal).values()))          # minutes or steps
    key = {"profile": profile.name, "equal": equal, "seed": seed, "ae": ae_budget, "ldm": total,
           "segments": b.segments, "eval": [b.eval_samples, b.eval_steps, b.guidance_scale],
           "ldm_config": {**to_plain(ldm_profile.ldm), **to_plain(ldm_profile.ldm_train)}}
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
    saved = load_json(folder / "f_study.json")
    if saved is not None and saved["key"] != key:
        diff = {k: (saved["key"].get(k), v) for k, v in key.items() if saved["key"].get(k) != v}
        raise ValueError(f"{folder} holds an f-study run with other settings (stored vs requested: {diff}); "
                         "use another output folder or delete this one")
    done = {r["segment"]: r for r in saved["rows"]} if saved else {}
    write_json({"key": key, "rows": list(done.values())}, folder / "f_study.json")
    stage = train_first_stage(profile, f, folder.parent, device=device, download=download, verbose=verbose,
                              **_ae_budget(profile, b, equal))
    res, c = profile.data.resolution, stage["config"].z_channels
    base = {"f": f, "equal": equal, "checkpoint": str(folder / LDM_CHECKPOINT), "latent_size": res // f,
            "latent_channels": c, "rate": latent_rate(res, f, c),
            "ae_steps": stage["steps"], "ae_minutes": stage["minutes"], "ae_psnr": stage["val_psnr"]}
    ckpt, ae_module, prev = folder / LDM_CHECKPOINT, None, {"steps": 0, "seconds": 0.0}

    def train(**kwargs: Any) -> None:
        train_ldm(ldm_profile, ae_module, folder, cond="text", device=device, resume=True, seed=seed,
                  progress=False, **kwargs)

    for k in range(1, b.segments + 1):
        if k in done:
            prev = {"steps": done[k]["steps"], "seconds": 60 * done[k]["minutes"]}
            continue
        if ae_module is None:
            ae_module = PixelSpace() if f == 1 else load_autoencoder(stage["path"], device, config=stage["config"])
        target = {"minutes": k * key["ldm"] / b.segments} if equal == "time" else {
            "steps": round(k * key["ldm"] / b.segments)}
        have = _train_until(train, ckpt, LDM_KIND, at_least=1, **target)   # every segment trains ≥ 1 step
        ldm = LatentDiffusion.from_checkpoint(ckpt, device)
        m = evaluate_text_model(ldm, b.eval_samples, b.eval_steps, 0.0, b.guidance_scale, seed, b.eval_batch)
        row = {**base, "segment": k, "minutes": have["seconds"] / 60, "steps": have["steps"],
               "train_steps_per_s": (have["steps"] - prev["steps"]) / max(have["seconds"] - prev["seconds"], 1e-9),
               **m, "ddim_steps": b.eval_steps, "guidance_scale": b.guidance_scale,
               "unet_parameters": count_parameters(ldm.unet)}
        if k == b.segments:
            row["ddim_images_per_s"] = sampling_throughput(ldm, b.throughput_batch, b.throughput_steps,
                                                           b.guidance_scale, seed)
            row["throughput_steps"] = b.throughput_steps
        prev, done[k] = have, row
        write_json({"key": key, "rows": [done[j] for j in sorted(done)]}, folder / "f_study.json")
        _say(verbose, f"  f={f} segment {k}/{b.segments}: {row['minutes']:.2f} min, {row['steps']} steps "
                      f"({row['train_steps_per_s']:.2f} steps/s), Shapes-FID {row['fid']:.1f} (floor "
                      f"{row['fid_floor']:.1f}), precision {row['precision']:.2f}, recall {row['recall']:.2f}, "
                      f"prompt accuracy {row['accuracy']:.0%}")
    return [done[k] for k in range(1, b.segments + 1)]


# --- (b) DDIM steps × η and (c) guidance scale, on one trained text LDM -------------------------------------


def _sweep(checkpoint: str | Path | LatentDiffusion, device: str | torch.device | None, title: tuple[str, str],
           settings: Sequence[dict[str, Any]], num_samples: int, b: ExperimentBudget, seed: int,
           verbose: bool) -> list[Row]:
    """evaluate_text_model of the text LDM `checkpoint` (a file or the model) once per setting ({"steps", "eta",
    "guidance_scale"}, optionally "sampler": LatentDiffusion.sample's, default DDIM), each on the same prompts
    and starting noise; every row adds the 95 % Wilson interval of its prompt accuracy (accuracy_low/high). The
    floor (the same for every setting: it does not depend on the model) is measured once and copied into every row.
    `title`: what to print before and after the model's name (its file, or its kind: not a module's repr)."""
    ldm = checkpoint
    if not isinstance(ldm, LatentDiffusion):
        if not Path(ldm).is_file():
            raise FileNotFoundError(f"no LDM checkpoint at {ldm}; train one with `minildm demo` (writes "
                                    f"{DEFAULT_CHECKPOINT}) or pass the f-study's <out>/f4/ldm.pt")
        ldm = LatentDiffusion.from_checkpoint(ldm, device)
    if ldm.cond_mode != "text":
        raise ValueError(f"the sweeps need a text-conditional LDM, got a {ldm.cond_mode!r} one")
    _say(verbose, f"{title[0]}: {'a text LDM' if ldm is checkpoint else checkpoint}, {title[1]}")
    rows, floor = [], None
    for s in settings:
        sampler = s.get("sampler", "ddim")
        m = evaluate_text_model(ldm, num_samples, s["steps"], s["eta"], s["guidance_scale"], seed, b.eval_batch,
                                with_floor=floor is None, sampler=sampler)
        floor = floor or {k: v for k, v in m.items() if k.endswith("_floor")}
        low, high = binomial_interval(round(m["accuracy"] * m["samples"]), m["samples"])
        rows.append({**s, **m, **floor, "accuracy_low": low, "accuracy_high": high})
        calls = f" ({s['nfe']} model calls)" if "nfe" in s else ""
        _say(verbose, f"  {sampler}-{s['steps']}{calls} η={s['eta']} s={s['guidance_scale']}: Shapes-FID "
                      f"{m['fid']:.1f} ± {m['fid_spread']:.1f} (floor {floor['fid_floor']:.1f}), prompt accuracy "
                      f"{m['accuracy']:.1%} ({low:.1%}-{high:.1%})")
    return rows


def sampler_sweep(profile: str | Profile | None = None, checkpoint: str | Path | LatentDiffusion = DEFAULT_CHECKPOINT,
                  budget: ExperimentBudget | None = None, *, seed: int = 0, device: str | torch.device | None = None,
                  verbose: bool = True, **overrides: Any) -> list[Row]:
    """DDIM (Song et al. 2021, Tab. 1) with S steps and stochasticity η on a trained text LDM: one row per
    (steps, eta) with Shapes-FID (+ unpaired floor), precision, recall, prompt accuracy and images/s.
    `checkpoint`: a text LDM's checkpoint file, or the model itself; `overrides`: ExperimentBudget fields
    (sampler_steps, sampler_etas, sampler_samples, guidance_scale)."""
    b = _budget(get_profile(profile), budget, overrides)
    settings = [{"steps": s, "eta": float(eta), "guidance_scale": b.guidance_scale}
                for eta in b.sampler_etas for s in b.sampler_steps]
    title = ("sampler sweep", f"guidance {b.guidance_scale}, {b.sampler_samples} samples each")
    return _sweep(checkpoint, device, title, settings, b.sampler_samples, b, seed, verbose)


def guidance_sweep(profile: str | Profile | None = None, checkpoint: str | Path | LatentDiffusion = DEFAULT_CHECKPOINT,
                   budget: ExperimentBudget | None = None, *, seed: int = 0, device: str | torch.device | None = None,
                   verbose: bool = True, **overrides: Any) -> list[Row]:
    """Classifier-free guidance ε̂ = ε̂(∅) + s·(ε̂(y) − ε̂(∅)) for several s (Sec. 4.3): one row per scale with
    Shapes-FID (+ unpaired floor), precision, recall (diversity) and prompt accuracy (fidelity to the caption).
    `overrides`: ExperimentBudget fields (guidance_scales, guidance_samples, guidance_steps)."""
    b = _budget(get_profile(profile), budget, overrides)
    settings = [{"steps": b.guidance_steps, "eta": 0.0, "guidance_scale": float(s)} for s in b.guidance_scales]
    return _sweep(checkpoint, device, ("guidance sweep", f"DDIM-{b.guidance_steps}, {b.guidance_samples} samples each"),
                  settings, b.guidance_samples, b, seed, verbose)


# --- (e) Samplers against model evaluations (NFE), on one trained text LDM ---------------------------------

# name -> (LatentDiffusion.sample's sampler, η, the table's name). Euler is not in the default sweep: an Euler step
# of the probability-flow ODE between the model's own timesteps IS deterministic DDIM (samplers.euler_step), so
# its rows would repeat DDIM η = 0's. DDIM η = 1 on S of the T steps is the strided ancestral (DDPM-like) sampler.
NFE_SAMPLERS: dict[str, tuple[str, float, str]] = {
    "ddim": ("ddim", 0.0, "DDIM η = 0"), "ddim-eta1": ("ddim", 1.0, "DDIM η = 1"),
    "dpmpp_2m": ("dpmpp_2m", 0.0, "DPM-Solver++(2M)"), "heun": ("heun", 0.0, "Heun"), "euler": ("euler", 0.0, "Euler")}
DEFAULT_NFE_SAMPLERS = ("ddim", "ddim-eta1", "dpmpp_2m", "heun")


def model_calls(sampler: str, steps: int) -> int:
    """U-Net evaluations (NFE) of one `steps`-step run: Heun 2·steps − 1 (two per step, one on the last), every
    other sampler one per step. Classifier-free guidance doubles the batch of a call, not the number of calls."""
    return 2 * steps - 1 if sampler == "heun" else steps


def _steps_within(sampler: str, nfe: int) -> int:
    """The most steps whose model calls do not exceed `nfe`: Heun ⌊(nfe + 1)/2⌋ (5, 10, 20, 50 calls -> 3, 5, 10,
    25 steps = 5, 9, 19, 49 calls), the others nfe."""
    return max(1, (nfe + 1) // 2) if sampler == "heun" else nfe


def ode_sampler_sweep(profile: str | Profile | None = None,
                      checkpoint: str | Path | LatentDiffusion = DEFAULT_CHECKPOINT,
                      budget: ExperimentBudget | None = None, *, samplers: Sequence[str] = DEFAULT_NFE_SAMPLERS,
                      seed: int = 0, device: str | torch.device | None = None, verbose: bool = True,
                      **overrides: Any) -> list[Row]:
    """Quality against cost: each of `samplers` (names of NFE_SAMPLERS) at about each of the budget's `nfe` model
    evaluations, on the same prompts and the same starting noise (paired), guidance `guidance_scale`. One row per
    (sampler, nfe): label, sampler, eta, steps, nfe (the exact model calls), nfe_target, Shapes-FID with its
    bootstrap s.d. (fid_spread) and unpaired floor, precision, recall, prompt accuracy with its 95 % Wilson
    interval, images/s. `overrides`: ExperimentBudget fields (nfe, nfe_samples, guidance_scale, eval_batch)."""
    unknown = [s for s in samplers if s not in NFE_SAMPLERS]
    if unknown or not samplers:
        raise ValueError(f"unknown sampler(s) {unknown or list(samplers)!r} for the NFE sweep; choose from "
                         f"{', '.join(NFE_SAMPLERS)} (ddim-eta1 is DDIM with η = 1; DDPM needs all T steps)")
    b = _budget(get_profile(profile), budget, overrides)
    settings = []
    for name in samplers:
        sampler, eta, label = NFE_SAMPLERS[name]
        for target in b.nfe:
            steps = _steps_within(sampler, target)
            settings.append({"label": label, "sampler": sampler, "eta": eta, "steps": steps, "nfe_target": target,
                             "nfe": model_calls(sampler, steps), "guidance_scale": b.guidance_scale})
    return _sweep(checkpoint, device, ("samplers against model evaluations", f"guidance {b.guidance_scale}, "
                  f"{b.nfe_samples} prompts each, NFE {list(b.nfe)}"), settings, b.nfe_samples, b, seed, verbose)


def ode_sampler_figure(rows: Sequence[Row]) -> Any:
    """Prompt accuracy (95 % Wilson interval) and Shapes-FID (± 2 bootstrap s.d.) against model evaluations (log
    scale), one line per sampler, the real-vs-real FID floor dashed: ode_sampler_sweep's rows in one figure."""
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_fid) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    for i, label in enumerate(labels):
        rs = sorted((r for r in rows if r["label"] == label), key=lambda r: r["nfe"])
        # nudge each sampler a little sideways (×1.04 per line) so that the error bars do not hide each other
        x = [r["nfe"] * 1.04 ** (i - (len(labels) - 1) / 2) for r in rs]
        acc = [100 * r["accuracy"] for r in rs]
        acc_err = [[a - 100 * r["accuracy_low"] for a, r in zip(acc, rs)],
                   [100 * r["accuracy_high"] - a for a, r in zip(acc, rs)]]
        ax_acc.errorbar(x, acc, yerr=acc_err, marker="o", capsize=3, label=label)
        ax_fid.errorbar(x, [r["fid"] for r in rs], yerr=[2 * r["fid_spread"] for r in rs], marker="o", capsize=3,
                        label=label)
    n = rows[0]["samples"]
    ax_fid.axhline(rows[0]["fid_floor"], color="0.4", linestyle="--", label=f"real vs real (floor, n = {n})")
    targets = sorted({r["nfe_target"] for r in rows})
    for ax, ylabel in ((ax_acc, "prompt accuracy (%), 95 % Wilson interval"),
                       (ax_fid, "Shapes-FID, ± 2 bootstrap s.d. (lower is better)")):
        ax.set_xscale("log")
        ax.set_xticks(targets, [str(t) for t in targets])
        ax.minorticks_off()
        ax.set_xlabel("model evaluations per sample (NFE, log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8)
    ax_fid.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"Samplers against cost: {n} test prompts each, the same prompts and starting noise for every "
                 f"sampler, guidance {rows[0]['guidance_scale']:g}", fontsize=10)
    fig.tight_layout()
    return fig


# --- (d) Rate-distortion of the autoencoders ----------------------------------------------------------------


@torch.no_grad()
def rate_distortion(profile: str | Profile | None = None, out_dir: str | Path = "outputs/experiments",
                    budget: ExperimentBudget | None = None, *, equal: str = "time",
                    device: str | torch.device | None = None, download: bool = True, verbose: bool = True,
                    **overrides: Any) -> list[Row]:
    """Tab. 8 in miniature: for each f (the f-study's autoencoders as they are, trained here if missing) the rate
    (h·w·c)/(H·W·3) against PSNR, SSIM, LPIPS (None without pretrained weights) and reconstruction
    Shapes-FID of test images (paired with the originals: a perfect autoencoder scores 0; no floor). f = 1 is
    lossless and skipped.
    `overrides`: ExperimentBudget fields (factors, ae_minutes, rd_images)."""
    profile = get_profile(profile)
    b = _budget(profile, budget, overrides)
    _check_factors(b.factors, profile, unet=False)
    res, device = profile.data.resolution, get_device(device)
    with_lpips = lpips_weights_missing(profile.ae_loss.lpips_net, download) is None
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
                                      verbose=verbose, **_ae_budget(profile, b, equal))
        ae = load_autoencoder(stage["path"], device, config=stage["config"])
        p, s, lp, recons = [], [], [], []
        for i in range(0, n, 100):
            x = data.batch(range(i, min(i + 100, n)))["image"].to(device)
            xr = reconstruct(ae, x).clamp(-1, 1)
            p.append(psnr(x, xr).cpu())
            s.append(ssim(x, xr).cpu())
            if with_lpips:
                lp.append(lpips(x, xr, net=profile.ae_loss.lpips_net, download=False, random_backbone=False).cpu())
            recons.append(xr.cpu())
        m = shapes_generative_metrics(torch.cat(recons), split="test", max_objects=profile.data.max_objects,
                                      protocol="paired", with_floor=False)
        c = stage["config"].z_channels
        row = {"f": f, "latent_size": res // f, "latent_channels": c, "rate": latent_rate(res, f, c),
               "psnr": float(torch.cat(p).mean()), "psnr_se": float(torch.cat(p).std() / len(torch.cat(p)) ** 0.5),
               "ssim": float(torch.cat(s).mean()),
               "lpips": float(torch.cat(lp).mean()) if lp else None, "rfid": m["fid"],
               "images": n, "ae_steps": stage["steps"], "ae_minutes": stage["minutes"]}
        rows.append(row)
        _say(verbose, f"  f={f}: rate {row['rate']:.4f}, PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}, "
                      f"rFID {row['rfid']:.1f} (paired: a perfect autoencoder scores 0)")
    return rows


# --- Running one experiment by name (`minildm experiments`) -------------------------------------------------


def run_experiment(name: str, profile: str | Profile | None = None, out_dir: str | Path | None = None,
                   checkpoint: str | Path | None = None, budget: ExperimentBudget | None = None, *, seed: int = 0,
                   device: str | torch.device | None = None, equal: str = "time", download: bool = True,
                   **overrides: Any) -> list[Row]:
    """Run one experiment by name (see EXPERIMENTS) and write its rows into out_dir/results.{json,md}
    (ode-samplers also its figure, out_dir/ode_samplers.png). The sweeps' `checkpoint` defaults to the demo's
    text LDM, or where there is none, to the f-study's f = 4 model in out_dir; ode-samplers' in the `cpu` profile
    to the shipped text model (data/pretrained/cpu). `overrides`: ExperimentBudget fields."""
    profile = get_profile(profile)
    out_dir = Path(out_dir or f"outputs/experiments/{profile.name}")
    b = _budget(profile, budget, overrides)
    t0, where = time.time(), {}
    if name == "ode-samplers" and checkpoint is None and profile.name == pretrained.SHIPPED_PROFILE:
        model = pretrained.load_ldm(pretrained.SHIPPED_PROFILE, "text", device)
        if model is None:
            raise FileNotFoundError(f"no shipped text model in {pretrained.DIR / pretrained.SHIPPED_PROFILE}; restore "
                                    "data/pretrained from the repository or pass --checkpoint a text LDM's ldm.pt")
        where = {"checkpoint": f"the shipped {pretrained.SHIPPED_PROFILE} text model "
                               f"(data/pretrained/{pretrained.SHIPPED_PROFILE}/ldm-text.safetensors)"}
        rows = ode_sampler_sweep(profile, model, b, seed=seed, device=device)
    elif name in ("sampler", "guidance", "ode-samplers"):
        if checkpoint is None:
            checkpoint = Path(DEFAULT_CHECKPOINT)
            if not checkpoint.is_file() and (out_dir / "f4" / LDM_CHECKPOINT).is_file():
                checkpoint = out_dir / "f4" / LDM_CHECKPOINT
                print(f"note: no {DEFAULT_CHECKPOINT}; the sweeps use the f-study's f = 4 model {checkpoint}")
        sweep = {"sampler": sampler_sweep, "guidance": guidance_sweep, "ode-samplers": ode_sampler_sweep}[name]
        rows, where = sweep(profile, Path(checkpoint), b, seed=seed, device=device), {"checkpoint": str(checkpoint)}
    elif name == "f-study":
        rows = f_study(profile, out_dir, b, equal=equal, seed=seed, device=device, download=download)
    elif name == "rate-distortion":
        rows = rate_distortion(profile, out_dir, b, equal=equal, device=device, download=download)
    else:
        raise ValueError(f"unknown experiment {name!r}; one of f-study, sampler, guidance, rate-distortion, "
                         "ode-samplers")
    meta = {"profile": profile.name, **where, "device": str(get_device(device)),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "wall_minutes": round((time.time() - t0) / 60, 2)}
    write_results(out_dir, name, rows, meta)
    if name == "ode-samplers" and rows:
        save_figure(ode_sampler_figure(rows), out_dir / "ode_samplers.png")
    return rows
