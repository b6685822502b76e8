"""The paper's experiments at mini scale (LDM Sec. 4.1, Fig. 6-7, Tab. 8; DDIM Tab. 1; CFG Sec. 4.3).

    (a) f_study           pixel space (f = 1) vs latent spaces f = 2, 4, 8 at an equal training budget:
                          Shapes-FID vs training time, training steps/s, DDIM sampling images/s.
                          The paper: f = 1 trains far slower; f = 4-16 strike the balance (Sec. 4.1).
    (b) sampler_sweep     DDIM steps × η on one trained text LDM: FID vs number of steps per η.
    (c) guidance_sweep    classifier-free guidance scale s: FID vs prompt accuracy (the trade-off).
    (d) rate_distortion   autoencoders f = 2, 4, 8: rate (latent numbers per pixel value) vs PSNR, SSIM,
                          LPIPS and reconstruction Shapes-FID (rFID).

Each experiment returns a list of rows (dicts of plain numbers); `results_table` renders them as markdown
and `minildm experiments ...` writes results.md and results.json. Budgets (minutes, sample counts, sweep
grids) come from `ExperimentBudget.for_profile(profile)`; any of them can be overridden by keyword.

Every FID comes with its real-vs-real floor at the same sample count (evaluation.shapes_generative_metrics).
Training is seeded and deterministic on the CPU for a given number of steps; with an equal *time* budget
the number of steps depends on the machine, which is the point of the comparison. Checkpoints and
finished evaluations are kept in the output folder, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .autoencoder import PixelSpace
from .checkpoint import load_checkpoint, to_plain
from .profiles import AEConfig, Profile, get_profile
from .utils import get_device

Row = dict[str, Any]
EXPERIMENTS = ("f-study", "sampler", "guidance", "rate-distortion")
DEFAULT_CHECKPOINT = "outputs/demo/ldm.pt"     # the text LDM `minildm demo` trains
# encoder widths per level for f = 2^k, the reference's kl-f4 / kl-f8 pattern (1, 2, 4) / (1, 2, 4, 4)
CH_MULT_PATTERN = (1, 2, 4, 4, 4, 4)


# ==========================================================================================================
# Budgets
# ==========================================================================================================


@dataclass(frozen=True)
class ExperimentBudget:
    """How much each experiment may spend; presets per profile in BUDGETS (a: f-study, b: sampler,
    c: guidance, d: rate-distortion)."""

    # (a) downsampling-factor study
    factors: tuple[int, ...] = (1, 2, 4, 8)
    ae_minutes: float = 3.0            # each autoencoder trains this long (f = 1 has none)
    ldm_minutes: float = 6.0           # each LDM trains this long in total, the same for every f
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

    def __post_init__(self):
        for name in ("factors", "sampler_steps", "sampler_etas", "guidance_scales"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.segments < 1:
            raise ValueError(f"ExperimentBudget.segments must be ≥ 1, got {self.segments}")
        for name in ("eval_samples", "sampler_samples", "guidance_samples", "rd_images"):
            if getattr(self, name) < 4:
                raise ValueError(f"ExperimentBudget.{name} must be ≥ 4 (precision/recall use k = 3 neighbours), "
                                 f"got {getattr(self, name)}")

    @staticmethod
    def for_profile(profile: str | Profile | None = None) -> "ExperimentBudget":
        """The preset for a profile (by name; profiles made with Profile.replace keep their name)."""
        name = _profile(profile).name
        if name not in BUDGETS:
            raise ValueError(f"no experiment budget for profile {name!r}; pass budget=ExperimentBudget(...) "
                             f"or use one of {', '.join(BUDGETS)}")
        return BUDGETS[name]


BUDGETS: dict[str, ExperimentBudget] = {
    # seconds: shows the machinery, the numbers mean nothing
    "ci": ExperimentBudget(ae_minutes=0.02, ldm_minutes=0.05, segments=2, eval_samples=8, eval_steps=5,
                           eval_batch=16, throughput_batch=2, throughput_steps=5, sampler_steps=(5, 10, 20),
                           sampler_samples=16, guidance_scales=(1.0, 3.0, 7.5), guidance_samples=16,
                           guidance_steps=5, rd_images=32),
    # a laptop CPU: pixel space is ~40x slower per step than f = 4. Sized so that `minildm experiments all
    # --profile cpu` takes about 40 minutes on a 2-core machine (f-study ~26, sweeps ~12, rate-distortion ~1).
    "cpu": ExperimentBudget(ae_minutes=2.0, ldm_minutes=4.0, segments=2),
    # one GPU (not yet run)
    "gpu": ExperimentBudget(ae_minutes=15.0, ldm_minutes=30.0, segments=5, eval_samples=1000, eval_steps=50,
                            eval_batch=250, throughput_batch=64, sampler_samples=1000, guidance_samples=1000,
                            rd_images=1000),
}


def _profile(profile: str | Profile | None) -> Profile:
    return profile if isinstance(profile, Profile) else get_profile(profile)


def _budget(profile: Profile, budget: ExperimentBudget | None, **overrides: Any) -> ExperimentBudget:
    budget = budget or ExperimentBudget.for_profile(profile)
    return dataclasses.replace(budget, **{k: v for k, v in overrides.items() if v is not None})


def _say(verbose: bool, text: str) -> None:
    if verbose:
        print(text, flush=True)


# ==========================================================================================================
# First stages for each f, and the rate
# ==========================================================================================================


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


def _lpips_pretrained(net: str, download: bool) -> bool:
    """Are the pretrained LPIPS backbone weights on disk (or, with `download`, downloadable now)?"""
    from .losses import LPIPSWeightsMissingError, _env_random_backbone, load_backbone_state

    if _env_random_backbone():
        return False
    try:
        load_backbone_state(net, download=download)
        return True
    except LPIPSWeightsMissingError:
        return False


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
    from .train_ae import CHECKPOINT_NAME, CHECKPOINT_KIND, train_autoencoder

    profile = _profile(profile)
    cfg = autoencoder_config(profile.ae, f, profile.data.resolution)
    if f == 1:
        return {"path": None, "config": cfg, "steps": 0, "minutes": 0.0, "val_psnr": None}
    if (minutes is None) == (steps is None):
        raise ValueError("give the autoencoder budget as exactly one of minutes=... or steps=...")
    folder = Path(out_dir) / f"f{f}"
    path = folder / CHECKPOINT_NAME
    done = _read_progress(path, CHECKPOINT_KIND)
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
        random_lpips = None if _lpips_pretrained(cfg.lpips_net, download) else True
        _say(verbose, f"  autoencoder f={f} (ch_mult {cfg.ch_mult}, z={cfg.z_channels})"
                      + (" with a RANDOM LPIPS backbone (no pretrained weights)" if random_lpips else ""))
        train_autoencoder(profile.replace(ae=dataclasses.asdict(cfg)), folder, device=device, resume=True,
                          random_lpips=random_lpips, lpips_download=download, progress=False, **kwargs)
        done = _read_progress(path, CHECKPOINT_KIND)
    return {"path": path, "config": cfg, "steps": done["steps"], "minutes": done["seconds"] / 60,
            "val_psnr": done["val_psnr"]}


def _first_stage_module(stage: dict[str, Any], device: torch.device) -> torch.nn.Module:
    from .train_ae import load_autoencoder

    return PixelSpace() if stage["path"] is None else load_autoencoder(stage["path"], device, config=stage["config"])


# ==========================================================================================================
# Evaluating a text LDM: one pass of samples gives FID (+ floor), precision, recall and prompt accuracy
# ==========================================================================================================


@torch.no_grad()
def evaluate_text_model(ldm: torch.nn.Module, num_samples: int = 200, steps: int = 50, eta: float = 0.0,
                        guidance_scale: float = 3.0, seed: int = 0, batch_size: int = 100,
                        with_floor: bool = True) -> Row:
    """Sample the first `num_samples` test-split captions (1-2 objects) with DDIM(steps, η) and guidance s;
    -> Shapes-FID, KID, precision, recall (Kynkäänniemi et al.) with their real-vs-real floors, and prompt
    accuracy (all, one-object, two-object prompts), plus sampling images/s.

    Same captions, seeds and FID protocol as `train_ldm.evaluate_text_ldm`'s FID set (so at η = 0 the FID
    agrees with `minildm evaluate-ldm`); accuracy here is measured on those same samples.
    """
    from .data import ShapesDataset, parse_caption
    from .evaluation import prompt_accuracy, shapes_generative_metrics
    from .train_ldm import sample_prompts

    if getattr(ldm, "cond_mode", None) != "text":
        raise ValueError(f"this experiment needs a text-conditional LDM, got cond={getattr(ldm, 'cond_mode', None)!r}")
    n = int(num_samples)
    res = getattr(ldm, "resolution", 32)
    ds = ShapesDataset("test", size=max(n, 1000), resolution=res, min_objects=1, max_objects=2)
    captions = [ds.scene(i).caption for i in range(n)]
    t0 = time.perf_counter()
    images = sample_prompts(ldm, captions, steps, eta, guidance_scale, seed, batch_size)
    seconds = time.perf_counter() - t0
    m = shapes_generative_metrics(images, split="test", max_objects=2, with_floor=with_floor)
    acc = prompt_accuracy(images, captions)
    counts = torch.tensor([len(parse_caption(c)["objects"]) for c in captions])
    correct = acc["correct"].float()

    def mean_or_none(mask: torch.Tensor) -> float | None:
        return float(correct[mask].mean()) if mask.any() else None

    row = {k: float(v) for k, v in m.items() if k.startswith(("fid", "kid", "precision", "recall"))}
    row.update(accuracy=float(acc["accuracy"]), one_object_accuracy=mean_or_none(counts == 1),
               two_object_accuracy=mean_or_none(counts == 2), samples=n,
               sample_images_per_s=n / seconds)
    return row


@torch.no_grad()
def sampling_throughput(ldm: torch.nn.Module, batch_size: int = 16, steps: int = 50, guidance_scale: float = 3.0,
                        seed: int = 0) -> float:
    """Images/s of one guided DDIM-`steps` batch (conditioning, sampling and decoding; after a 1-step warm-up)."""
    from .data import ShapesDataset

    res = getattr(ldm, "resolution", 32)
    ds = ShapesDataset("test", size=max(batch_size, 1000), resolution=res)
    raw = ldm.prompt_condition(prompts=[ds.scene(i).caption for i in range(batch_size)])
    ldm.sample(raw, resolution=res, steps=1, guidance_scale=guidance_scale,
               generator=torch.Generator().manual_seed(seed))                      # warm-up
    device = ldm.scale_factor.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    ldm.sample(raw, resolution=res, steps=steps, guidance_scale=guidance_scale,
               generator=torch.Generator().manual_seed(seed))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch_size / (time.perf_counter() - t0)


# ==========================================================================================================
# (a) The downsampling-factor study
# ==========================================================================================================


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_json(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


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
    that segment), Shapes-FID, its floor, KID, precision, recall, prompt accuracies, sample_images_per_s
    (evaluation sampling, DDIM-eval_steps); the last segment adds ddim_images_per_s (DDIM-throughput_steps,
    guided), and every row the latent size, channels, rate and the autoencoder's steps, minutes and PSNR.
    Time spent encoding the latent cache and evaluating is not training time and is not counted.
    """
    from .train_ldm import CHECKPOINT_KIND, CHECKPOINT_NAME, load_ldm, train_ldm

    profile = _profile(profile)
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
        folder = out_dir / f"f{f}"
        saved = _load_json(folder / "f_study.json")
        if saved is not None and saved["key"] != key:
            diff = {k: (saved["key"].get(k), v) for k, v in key.items() if saved["key"].get(k) != v}
            raise ValueError(f"{folder} holds an f-study run with other settings (stored vs requested: {diff}); "
                             "use another output folder or delete this one")
        done = {r["segment"]: r for r in saved["rows"]} if saved else {}
        _write_json({"key": key, "rows": list(done.values())}, folder / "f_study.json")
        stage = train_first_stage(profile, f, out_dir, device=device, download=download, verbose=verbose,
                                  **({"minutes": b.ae_minutes} if equal == "time" else {"steps": profile.ae.steps}))
        h = res // f
        base = {"f": f, "latent_size": h, "latent_channels": stage["config"].z_channels,
                "rate": latent_rate(res, f, stage["config"].z_channels), "ae_steps": stage["steps"],
                "ae_minutes": stage["minutes"], "ae_psnr": stage["val_psnr"]}
        ckpt = folder / CHECKPOINT_NAME
        ae_module, have = None, None
        prev = {"steps": 0, "seconds": 0.0}
        for k in range(1, b.segments + 1):
            if k in done:
                rows.append(done[k])
                prev = {"steps": done[k]["steps"], "seconds": 60 * done[k]["minutes"]}
                continue
            if have is None:     # where the checkpoint stands (if any)
                have = _read_progress(ckpt, CHECKPOINT_KIND) or {"steps": 0, "seconds": 0.0}
            if equal == "time":
                todo = k * total / b.segments - have["seconds"] / 60
                # a step that overshot the previous target may leave nothing to do: every segment trains ≥ 1 step
                kwargs = {"steps": 10**9, "max_minutes": todo} if todo > 0 else {"steps": have["steps"] + 1}
            else:
                target = round(k * total / b.segments)
                kwargs = {"steps": max(target, have["steps"] + 1)}
            if ae_module is None:
                ae_module = _first_stage_module(stage, device)
            result = train_ldm(ldm_profile, ae_module, folder, cond="text", device=device, resume=True, seed=seed,
                               progress=False, **kwargs)
            if result["step"] == have["steps"]:      # the time was up before the first step: take one anyway
                train_ldm(ldm_profile, ae_module, folder, cond="text", device=device, resume=True, seed=seed,
                          progress=False, steps=have["steps"] + 1)
            # the checkpoint's own record of its training time (what a resumed run continues from)
            have = _read_progress(ckpt, CHECKPOINT_KIND)
            ldm = load_ldm(ckpt, device)
            m = evaluate_text_model(ldm, b.eval_samples, b.eval_steps, 0.0, b.guidance_scale, seed, b.eval_batch)
            row = {**base, "segment": k, "minutes": have["seconds"] / 60, "steps": have["steps"],
                   "train_steps_per_s": (have["steps"] - prev["steps"]) / max(have["seconds"] - prev["seconds"], 1e-9),
                   **m, "ddim_steps": b.eval_steps}
            if k == b.segments:
                row["ddim_images_per_s"] = sampling_throughput(ldm, b.throughput_batch, b.throughput_steps,
                                                               b.guidance_scale, seed)
                row["throughput_steps"] = b.throughput_steps
            prev = have
            rows.append(row)
            done[k] = row
            _write_json({"key": key, "rows": [done[j] for j in sorted(done)]}, folder / "f_study.json")
            _say(verbose, f"  f={f} segment {k}/{b.segments}: {row['minutes']:.2f} min, {row['steps']} steps "
                          f"({row['train_steps_per_s']:.2f} steps/s), Shapes-FID {row['fid']:.1f} (floor "
                          f"{row['fid_floor']:.1f}), precision {row['precision']:.2f}, recall {row['recall']:.2f}, "
                          f"prompt accuracy {row['accuracy']:.0%}")
    return rows


def f_study_summary(rows: Sequence[Row]) -> list[Row]:
    """The last segment of each f: the f-study's comparison at equal budget."""
    last: dict[int, Row] = {}
    for r in rows:
        if r["f"] not in last or r["segment"] > last[r["f"]]["segment"]:
            last[r["f"]] = r
    return [last[f] for f in sorted(last)]


def f_study_verdict(rows: Sequence[Row]) -> str:
    """One sentence: which f reached the lowest Shapes-FID at the end, and does f = 4 beat pixel space?"""
    final = f_study_summary(rows)
    if not final:
        return "no f-study rows"
    best = min(final, key=lambda r: r["fid"])
    by_f = {r["f"]: r for r in final}
    text = (f"At the end of the equal budget ({best['minutes']:.2f} min of LDM training for f = {best['f']}), the "
            f"lowest Shapes-FID is f = {best['f']}'s: {best['fid']:.1f} (real-vs-real floor {best['fid_floor']:.1f} "
            f"at n = {best['samples']}).")
    if 1 in by_f and 4 in by_f:
        a, p = by_f[4], by_f[1]
        verdict = "beats" if a["fid"] < p["fid"] else "does not beat"
        text += (f" f = 4 {verdict} pixel space: FID {a['fid']:.1f} vs {p['fid']:.1f}, after {a['steps']} vs "
                 f"{p['steps']} training steps ({a['train_steps_per_s']:.2f} vs {p['train_steps_per_s']:.2f} "
                 "steps/s).")
    return text


# ==========================================================================================================
# (b) DDIM steps × η and (c) guidance scale, on one trained text LDM
# ==========================================================================================================


def _load_text_ldm(checkpoint: str | Path, device: str | torch.device | None):
    from .train_ldm import load_ldm

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"no LDM checkpoint at {path}; train one with `minildm demo` (writes "
                                f"{DEFAULT_CHECKPOINT}) or pass the f-study's <out>/f4/ldm.pt")
    ldm = load_ldm(path, device)
    if ldm.cond_mode != "text":
        raise ValueError(f"{path} is a {ldm.cond_mode!r}-conditional LDM; the sweeps need a text-conditional one")
    return ldm


def sampler_sweep(profile: str | Profile | None = None, checkpoint: str | Path = DEFAULT_CHECKPOINT,
                  budget: ExperimentBudget | None = None, *, steps: Sequence[int] | None = None,
                  etas: Sequence[float] | None = None, num_samples: int | None = None,
                  guidance_scale: float | None = None, seed: int = 0, device: str | torch.device | None = None,
                  verbose: bool = True) -> list[Row]:
    """DDIM (Song et al. 2021, Tab. 1) with S steps and stochasticity η on a trained text LDM: one row per
    (steps, eta) with Shapes-FID (+ floor), precision, recall, prompt accuracy and images/s."""
    profile = _profile(profile)
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
    rows, floor = [], None
    for eta in b.sampler_etas:
        for s in b.sampler_steps:
            m = evaluate_text_model(ldm, b.sampler_samples, s, float(eta), b.guidance_scale, seed, b.eval_batch,
                                    with_floor=floor is None)
            floor = floor or {k: v for k, v in m.items() if k.endswith("_floor")}
            rows.append({"steps": s, "eta": float(eta), **m, **floor})
            _say(verbose, f"  DDIM-{s} η={eta}: Shapes-FID {m['fid']:.1f} (floor {floor['fid_floor']:.1f}), "
                          f"prompt accuracy {m['accuracy']:.0%}")
    return rows


def guidance_sweep(profile: str | Profile | None = None, checkpoint: str | Path = DEFAULT_CHECKPOINT,
                   budget: ExperimentBudget | None = None, *, scales: Sequence[float] | None = None,
                   num_samples: int | None = None, steps: int | None = None, seed: int = 0,
                   device: str | torch.device | None = None, verbose: bool = True) -> list[Row]:
    """Classifier-free guidance ε̂ = ε̂(∅) + s·(ε̂(y) − ε̂(∅)) for several s (Sec. 4.3): one row per scale with
    Shapes-FID (+ floor), precision, recall (diversity) and prompt accuracy (fidelity to the caption)."""
    profile = _profile(profile)
    b = _budget(profile, budget, guidance_scales=tuple(scales) if scales is not None else None,
                guidance_samples=num_samples, guidance_steps=steps)
    for s in b.guidance_scales:
        if not s >= 0:
            raise ValueError(f"guidance scales must be ≥ 0 (1 = plain conditional sampling), got {s!r}")
    ldm = _load_text_ldm(checkpoint, device)
    _say(verbose, f"guidance sweep: {checkpoint}, DDIM-{b.guidance_steps}, {b.guidance_samples} samples each")
    rows, floor = [], None
    for s in b.guidance_scales:
        m = evaluate_text_model(ldm, b.guidance_samples, b.guidance_steps, 0.0, float(s), seed, b.eval_batch,
                                with_floor=floor is None)
        floor = floor or {k: v for k, v in m.items() if k.endswith("_floor")}
        rows.append({"guidance_scale": float(s), **m, **floor})
        _say(verbose, f"  s={s}: Shapes-FID {m['fid']:.1f} (floor {floor['fid_floor']:.1f}), "
                      f"prompt accuracy {m['accuracy']:.0%}")
    return rows


# ==========================================================================================================
# (d) Rate-distortion of the autoencoders
# ==========================================================================================================


@torch.no_grad()
def rate_distortion(profile: str | Profile | None = None, out_dir: str | Path = "outputs/experiments",
                    budget: ExperimentBudget | None = None, *, factors: Sequence[int] | None = None,
                    ae_minutes: float | None = None, num_images: int | None = None, equal: str = "time",
                    device: str | torch.device | None = None, download: bool = True,
                    verbose: bool = True) -> list[Row]:
    """Tab. 8 in miniature: for each f (the f-study's autoencoders as they are, trained here if missing) the rate
    (h·w·c)/(H·W·3) against PSNR, SSIM, LPIPS (None without pretrained weights) and reconstruction
    Shapes-FID of test images, with the unpaired real-vs-real floor. f = 1 is lossless and skipped."""
    from .data import ShapesDataset
    from .evaluation import shapes_generative_metrics
    from .metrics import lpips, psnr, ssim
    from .train_ae import load_autoencoder, reconstruct

    profile = _profile(profile)
    b = _budget(profile, budget, factors=tuple(factors) if factors is not None else None, ae_minutes=ae_minutes,
                rd_images=num_images)
    if equal not in ("time", "steps"):
        raise ValueError(f"equal must be 'time' or 'steps', got {equal!r}")
    res = profile.data.resolution
    for f in b.factors:
        check_factor(f, res)
    device = get_device(device)
    with_lpips = _lpips_pretrained(profile.ae.lpips_net, download)
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
        m = shapes_generative_metrics(torch.cat(recons), split="test", max_objects=profile.data.max_objects)
        c = stage["config"].z_channels
        row = {"f": f, "latent_size": res // f, "latent_channels": c, "rate": latent_rate(res, f, c),
               "psnr": float(torch.cat(p).mean()), "ssim": float(torch.cat(s).mean()),
               "lpips": float(torch.cat(lp).mean()) if lp else None, "rfid": m["fid"], "rfid_floor": m["fid_floor"],
               "images": n, "ae_steps": stage["steps"], "ae_minutes": stage["minutes"]}
        rows.append(row)
        _say(verbose, f"  f={f}: rate {row['rate']:.4f}, PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}, "
                      f"rFID {row['rfid']:.1f} (floor {row['rfid_floor']:.1f})")
    return rows


# ==========================================================================================================
# Tables and files
# ==========================================================================================================

# (key, header, format) of the columns each experiment shows by default
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "f-study": [("f", "f", "d"), ("segment", "segment", "d"), ("minutes", "LDM minutes", ".2f"),
                ("steps", "steps", "d"), ("fid", "Shapes-FID", ".1f"), ("fid_floor", "floor", ".1f"),
                ("precision", "precision", ".3f"), ("recall", "recall", ".3f"),
                ("one_object_accuracy", "1-object acc.", ".1%"), ("two_object_accuracy", "2-object acc.", ".1%")],
    "f-study-summary": [("f", "f", "d"), ("latent_size", "h = w", "d"), ("latent_channels", "c", "d"),
                        ("rate", "rate", ".4f"), ("ae_minutes", "AE minutes", ".1f"), ("ae_psnr", "AE val PSNR", ".1f"),
                        ("steps", "LDM steps", "d"), ("train_steps_per_s", "train steps/s", ".2f"),
                        ("ddim_images_per_s", "DDIM img/s", ".2f"), ("fid", "Shapes-FID", ".1f"),
                        ("fid_floor", "floor", ".1f"), ("one_object_accuracy", "1-object acc.", ".1%")],
    "sampler": [("steps", "DDIM steps", "d"), ("eta", "η", ".1f"), ("fid", "Shapes-FID", ".1f"),
                ("fid_floor", "floor", ".1f"), ("precision", "precision", ".3f"), ("recall", "recall", ".3f"),
                ("accuracy", "prompt acc.", ".1%"), ("sample_images_per_s", "img/s", ".1f")],
    "guidance": [("guidance_scale", "s", ".1f"), ("fid", "Shapes-FID", ".1f"), ("fid_floor", "floor", ".1f"),
                 ("precision", "precision", ".3f"), ("recall", "recall", ".3f"), ("accuracy", "prompt acc.", ".1%"),
                 ("one_object_accuracy", "1-object", ".1%"), ("two_object_accuracy", "2-object", ".1%")],
    "rate-distortion": [("f", "f", "d"), ("latent_size", "h = w", "d"), ("latent_channels", "c", "d"),
                        ("rate", "rate", ".4f"), ("psnr", "PSNR (dB)", ".2f"), ("ssim", "SSIM", ".4f"),
                        ("lpips", "LPIPS", ".4f"), ("rfid", "rFID", ".2f"), ("rfid_floor", "floor", ".2f")],
}


def _cell(value: Any, fmt: str | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if fmt and isinstance(value, (int, float)) and not isinstance(value, bool):
        if fmt == "d":
            return str(int(round(value)))
        return format(value, fmt)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def results_table(rows: Sequence[Row], columns: Sequence[str | tuple[str, str] | tuple[str, str, str]] | None = None
                  ) -> str:
    """Markdown table of rows; columns are keys or (key, header[, format spec]) tuples (default: every key of
    the first row). Missing values print as —; a column that no row has is an error (a typo)."""
    rows = list(rows)
    if columns is None:
        columns = list(rows[0]) if rows else []
    spec = [(c, c, None) if isinstance(c, str) else (c[0], c[1], c[2] if len(c) > 2 else None) for c in columns]
    known = set().union(*(r.keys() for r in rows)) if rows else set()
    unknown = [k for k, _, _ in spec if rows and k not in known]
    if unknown:
        raise ValueError(f"results_table: no row has the column(s) {unknown}; available: {sorted(known)}")
    lines = ["| " + " | ".join(h for _, h, _ in spec) + " |", "|" + "---|" * len(spec)]
    lines += ["| " + " | ".join(_cell(r.get(k), fmt) for k, _, fmt in spec) + " |" for r in rows]
    return "\n".join(lines)


def experiment_markdown(name: str, rows: Sequence[Row]) -> str:
    """The results.md section of one experiment: its table(s), and for the f-study the verdict."""
    titles = {"f-study": "(a) Downsampling factor f at an equal training budget",
              "sampler": "(b) DDIM steps × η", "guidance": "(c) Classifier-free guidance scale",
              "rate-distortion": "(d) Autoencoder rate–distortion"}
    parts = [f"## {titles[name]}", "", results_table(rows, COLUMNS[name])]
    if name == "f-study" and rows:
        parts += ["", "At the end of the budget:", "", results_table(f_study_summary(rows), COLUMNS["f-study-summary"]),
                  "", f_study_verdict(rows)]
    return "\n".join(parts) + "\n"


def write_results(out_dir: str | Path, name: str, rows: Sequence[Row], meta: dict[str, Any]) -> tuple[Path, Path]:
    """Merge one experiment's rows into out_dir/results.json and rewrite out_dir/results.md from all of them."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of {', '.join(EXPERIMENTS)}")
    out_dir = Path(out_dir)
    path_json, path_md = out_dir / "results.json", out_dir / "results.md"
    results = _load_json(path_json) or {"experiments": {}}
    results["experiments"][name] = {"rows": list(rows), **meta}
    _write_json(results, path_json)
    md = ["# minildm experiments", ""]
    for exp in EXPERIMENTS:
        if exp in results["experiments"]:
            e = results["experiments"][exp]
            conditions = ", ".join(f"{k} {v}" for k, v in e.items() if k != "rows")
            md += [experiment_markdown(exp, e["rows"]), f"*{conditions}*", ""]
    path_md.write_text("\n".join(md))
    return path_json, path_md


# ==========================================================================================================
# Command line: `minildm experiments {f-study,sampler,guidance,rate-distortion,all}`
# ==========================================================================================================


def run_experiment(name: str, profile: str | Profile | None = None, out_dir: str | Path | None = None,
                   checkpoint: str | Path | None = None, budget: ExperimentBudget | None = None,
                   **kwargs: Any) -> list[Row]:
    """Run one experiment by name (see EXPERIMENTS) and write its rows into out_dir/results.{json,md}."""
    runners: dict[str, Callable[..., list[Row]]] = {"f-study": f_study, "sampler": sampler_sweep,
                                                     "guidance": guidance_sweep, "rate-distortion": rate_distortion}
    if name not in runners:
        raise ValueError(f"unknown experiment {name!r}; expected one of {', '.join(EXPERIMENTS)} or 'all'")
    profile = _profile(profile)
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


def _cmd_experiments(args: argparse.Namespace) -> int:
    profile = get_profile(args.profile)
    out = Path(args.out or f"outputs/experiments/{profile.name}")
    overrides = {k: v for k, v in (("ae_minutes", args.ae_minutes), ("ldm_minutes", args.ldm_minutes),
                                   ("segments", args.segments), ("factors", tuple(args.factors) if args.factors
                                                                 else None)) if v is not None}
    budget = dataclasses.replace(ExperimentBudget.for_profile(profile), **overrides)
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    for name in names:
        kwargs: dict[str, Any] = {"seed": args.seed, "device": args.device} if name != "rate-distortion" else \
            {"device": args.device}
        if name in ("f-study", "rate-distortion"):
            kwargs.update(equal=args.equal, download=not args.offline)
        checkpoint = args.checkpoint
        if name in ("sampler", "guidance") and checkpoint is None:
            checkpoint = DEFAULT_CHECKPOINT
            if args.experiment == "all" and not Path(checkpoint).is_file() and (out / "f4" / "ldm.pt").is_file():
                checkpoint = out / "f4" / "ldm.pt"
                print(f"note: no {DEFAULT_CHECKPOINT}; the sweeps use the f-study's f = 4 model {checkpoint}")
        rows = run_experiment(name, profile, out, checkpoint, budget, **kwargs)
        print()
        print(experiment_markdown(name, rows))
    print(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add `experiments` to the `minildm` command."""
    p = subparsers.add_parser("experiments", help="the paper's experiments at mini scale; writes results.md/.json")
    p.add_argument("experiment", choices=(*EXPERIMENTS, "all"))
    p.add_argument("--profile", default=None, help="ci, cpu or gpu (default: $MINILDM_PROFILE or by hardware)")
    p.add_argument("--checkpoint", default=None, help=f"text LDM for the sweeps (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--out", default=None, help="output folder (default outputs/experiments/<profile>)")
    p.add_argument("--equal", choices=("time", "steps"), default="time",
                   help="f-study budget: equal training minutes (default) or the profile's step counts")
    p.add_argument("--factors", type=int, nargs="+", default=None, help="downsampling factors (default 1 2 4 8)")
    p.add_argument("--ae-minutes", type=float, default=None, help="training minutes per autoencoder")
    p.add_argument("--ldm-minutes", type=float, default=None, help="training minutes per LDM (f-study)")
    p.add_argument("--segments", type=int, default=None, help="f-study evaluations along the LDM budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--offline", action="store_true", help="never download (LPIPS weights must be on disk)")
    p.set_defaults(func=_cmd_experiments)
