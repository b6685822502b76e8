"""What each `minildm` command does: read the parsed arguments, call the package, print what a user wants to see.

The arguments themselves are declared in cli.py; every handler here is one `cmd_<command>(args) -> exit status`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from .. import __version__
from ..autoencoder import load_autoencoder
from ..course import pretrained
from ..course.lesson import REPO_ROOT, RESULTS_DIR
from ..course.results import experiment_markdown
from ..course.runner import run_course, self_check
from ..course.student import write_student_edition
from ..course.viz import image_grid, save_figure
from ..data.datasets import ShapesDataset, benchmark, make_dataset
from ..data.shapes import NUM_CLASSES, class_name, parse_layout
from ..eval.accuracy import evaluate_text_ldm, text_report
from ..eval.fidelity import autoencoder_shape_fidelity, fidelity_lines
from ..eval.judge import train_evaluator
from ..ldm import LatentDiffusion
from ..train.distributed import main_process
from ..train.profiles import PROFILES, default_profile_name, get_profile
from ..train.stages import AE_CHECKPOINT, train_autoencoder, train_ldm
from ..utils import get_device
from .bench import bench_autoencoder, bench_ddim, bench_ldm_step, format_table, machine_info, run_bench
from .demo import run_demo
from .flops import ASSUMED_UTILIZATION, H100_BF16_TFLOPS, format_plan, plan_profile
from .studies import DEFAULT_CHECKPOINT, EXPERIMENTS, ExperimentBudget, run_experiment

__all__ = ["cmd_info", "cmd_demo", "cmd_preview", "cmd_bench_data", "cmd_train_ae", "cmd_bench_ae",
           "cmd_train_ldm", "cmd_sample", "cmd_evaluate_ldm", "cmd_bench_ldm", "cmd_bench", "cmd_train_evaluator",
           "cmd_export", "cmd_course", "cmd_check", "cmd_student", "cmd_experiments"]


def cmd_info(args: argparse.Namespace) -> int:
    print(f"minildm {__version__}, torch {torch.__version__}")
    print(f"device: {get_device()} (override with $MINILDM_DEVICE)")
    print(f"profile: {default_profile_name()} (override with $MINILDM_PROFILE; available: {', '.join(PROFILES)})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(args.out, profile=args.profile, device=args.device, ae_minutes=args.ae_minutes,
             ldm_minutes=args.ldm_minutes, seed=args.seed, download=not args.offline, threads=args.threads)
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    b = ShapesDataset("train", resolution=args.resolution).batch(range(args.n))
    fig = image_grid(b["image"], b["caption"], ncols=args.ncols,
                     title=f"Shapes {args.resolution}x{args.resolution}: samples 0-{args.n - 1} of the train split")
    print(f"wrote {save_figure(fig, args.out)}")
    return 0


def cmd_bench_data(args: argparse.Namespace) -> int:
    device = get_device(args.device)
    print(f"Shapes rendering on {device}, torch threads={torch.get_num_threads()}, batch {args.batch_size}")
    for res in args.resolutions:
        rate = benchmark(res, batch_size=args.batch_size, seconds=args.seconds, device=device)
        print(f"  {res}x{res}: {rate:,.0f} images/s")
    return 0


def _dataset(args: argparse.Namespace, profile, split: str):
    """--data as a dataset (None for Shapes: the training code's own default)."""
    if args.data == "shapes":
        return None
    return make_dataset(args.data, split, profile.data, root=args.data_root, download=args.download)


def cmd_train_ae(args: argparse.Namespace) -> int:
    profile = get_profile(args.profile)
    out = args.out or os.path.join("runs", f"ae-{profile.name}-{args.kind or profile.ae.kind}")
    train, val = (_dataset(args, profile, split) for split in ("train", "val"))
    r = train_autoencoder(profile, out, device=args.device, max_minutes=args.minutes, kind=args.kind,
                          steps=args.steps, random_lpips=True if args.random_lpips else None, resume=not args.no_resume,
                          dataset=train, val_dataset=val)
    vals = [h["val_psnr"] for h in r["history"] if "val_psnr" in h]
    if main_process():
        print(f"trained to step {r['step']}; checkpoint {r['path']}" + (f"; val PSNR {vals[-1]:.2f} dB" if vals else ""))
    return 0


def cmd_bench_ae(args: argparse.Namespace) -> int:
    out = args.out or tempfile.mkdtemp(prefix=f"minildm-bench-ae-{args.kind}-")
    for line in bench_autoencoder(args.profile, args.kind, args.minutes, out, args.device,
                                  True if args.random_lpips else None, progress=not args.no_progress):
        print(line)
    ae = load_autoencoder(os.path.join(out, AE_CHECKPOINT), device=args.device)     # small shapes: issue 15
    fidelity = autoencoder_shape_fidelity(ae, resolution=get_profile(args.profile).data.resolution)
    print("\n".join(fidelity_lines(fidelity)))
    return 0


def cmd_train_ldm(args: argparse.Namespace) -> int:
    profile = get_profile(args.profile)
    data, cond = _dataset(args, profile, "train"), args.cond
    if data is not None and cond is None:           # text and layouts are Shapes features; labels when there are
        cond = "class" if data.num_classes else "none"
    if data is not None and cond in ("text", "layout"):
        raise ValueError(f"--cond {cond} needs Shapes (captions and boxes are Shapes features); on --data "
                         f"{args.data} use --cond class (labelled images) or --cond none")
    out = Path(args.out or f"runs/ldm-{profile.name}-{cond or profile.ldm.cond}")
    r = train_ldm(profile, args.autoencoder, out, cond=cond, device=args.device, steps=args.steps,
                  max_minutes=args.minutes, resume=not args.no_resume, seed=args.seed, dataset=data)
    if main_process():
        print(f"trained {r['step']} steps in {r['minutes']:.1f} min; checkpoint: {r['path']}")
    return 0


def _sample_condition(ldm: LatentDiffusion, args: argparse.Namespace) -> tuple[torch.Tensor | None, list | None]:
    """The raw condition for `minildm sample`, with errors in the command line's words."""
    n, mode = args.n, ldm.cond_mode
    given = [flag for flag, v in (("--prompt", args.prompt), ("--class", args.label), ("--layout", args.layout))
             if v is not None]
    wanted = {"text": "--prompt \"a large red circle in the top left\"", "class": f"--class N (0..{NUM_CLASSES - 1})",
              "layout": "--layout \"red circle@0.1,0.1,0.45,0.45\""}.get(mode)
    if mode in ("none", "sr"):
        if given:
            raise ValueError(f"this is a {mode!r} model: it takes none of {', '.join(given)}")
        if mode == "sr":
            raise ValueError("`minildm sample` does not sample super-resolution models; use the Python API "
                             "(LatentDiffusion.sample with a low-res image)")
        return None, None
    flag = {"text": "--prompt", "class": "--class", "layout": "--layout"}[mode]
    if given != [flag]:
        raise ValueError(f"this is a {mode}-conditional model: give {wanted}" +
                         (f" (not {', '.join(g for g in given if g != flag)})" if set(given) - {flag} else ""))
    if mode == "text":
        return ldm.prompt_condition(prompts=[args.prompt] * n), [args.prompt] * n
    if mode == "class":
        if not 0 <= args.label < ldm.num_classes:
            raise ValueError(f"--class must be between 0 and {ldm.num_classes - 1}, got {args.label}")
        names = [class_name(args.label) if ldm.num_classes == NUM_CLASSES else f"class {args.label}"] * n
        return ldm.prompt_condition(labels=[args.label] * n), names
    layout = parse_layout(args.layout, ldm.max_objects)
    return ldm.prompt_condition(layouts=layout.expand(n, -1, -1)), [args.layout] * n


def cmd_sample(args: argparse.Namespace) -> int:
    ldm = LatentDiffusion.from_checkpoint(args.checkpoint, args.device)
    raw, captions = _sample_condition(ldm, args)
    g = torch.Generator().manual_seed(args.seed)
    images = ldm.sample(raw, num_samples=args.n if raw is None else None, steps=args.steps, eta=args.eta,
                        guidance_scale=args.guidance, generator=g)
    title = f"DDIM {args.steps} steps, η={args.eta}, guidance {args.guidance}, seed {args.seed}"
    print(f"wrote {save_figure(image_grid(images, captions, ncols=min(8, args.n), title=title), args.out)}")
    return 0


def cmd_evaluate_ldm(args: argparse.Namespace) -> int:
    ldm = LatentDiffusion.from_checkpoint(args.checkpoint, args.device)
    t0 = time.time()
    r = evaluate_text_ldm(ldm, n=args.n, guidance_scale=args.guidance, steps=args.steps, seed=args.seed,
                          fid=not args.no_fid, eta=args.eta)
    print(f"{args.checkpoint}: DDIM-{args.steps}, η={args.eta}, guidance {args.guidance}, {args.n} prompts per type "
          f"(judged by the Shapes evaluator; all conditions must hold)")
    print("\n".join(text_report(r, args.n)))
    print("  " + "\n  ".join(fidelity_lines(autoencoder_shape_fidelity(ldm.autoencoder, resolution=ldm.resolution))))
    print(f"  ({time.time() - t0:.0f} s)")
    return 0


def cmd_bench_ldm(args: argparse.Namespace) -> int:
    device, t0 = get_device(args.device), time.perf_counter()
    rows = [bench_ldm_step(args.profile, args.seconds, device),
            bench_ddim(args.profile, args.seconds, device, batch_size=args.sample_batch, steps=args.steps,
                       peer=False, rounds=1)]
    print(format_table({"machine": machine_info(device), "profile": get_profile(args.profile).name, "rows": rows,
                        "rounds": 1, "seconds": args.seconds, "wall_s": time.perf_counter() - t0}))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.plan:
        print(format_plan(plan_profile(args.plan, args.peak_tflops or H100_BF16_TFLOPS,
                                       args.assume_util or ASSUMED_UTILIZATION)))
        return 0
    result = run_bench(args.profile, args.device, seconds=args.seconds, peer=not args.no_peer,
                       sample_batch=args.sample_batch, steps=args.steps,
                       random_lpips=True if args.random_lpips else None, lpips_download=not args.offline,
                       peak=args.peak_tflops, compile=args.compile)
    print(format_table(result))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {path}")
    return 0


def cmd_train_evaluator(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    res = train_evaluator(args.out, steps=args.steps, seed=args.seed, max_minutes=args.minutes, device=args.device,
                          progress=not args.no_progress)
    m, t = res["metrics"], res["train"]
    print(f"trained {t['steps']} steps in {t['seconds']:.0f} s ({t['pool_seconds']:.0f} s rendering) -> {res['path']}")
    print("test split (max_objects=2): " + "  ".join(f"{k} {v:.4f}" for k, v in m.items() if k != "images"))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    ldms = dict(item.split("=", 1) for item in args.ldm)
    provenance = json.loads(Path(args.provenance).read_text()) if args.provenance else {}
    full = pretrained.export(args.autoencoder, ldms, args.profile, provenance, root=args.root)
    for name, entry in sorted(full["files"].items()):
        if name.startswith(f"{args.profile}/"):
            print(f"{name}: {entry['bytes'] / 1e6:.2f} MB, sha256 {entry['sha256'][:16]}…")
    return 0


def cmd_course(args: argparse.Namespace) -> int:
    profile = get_profile(args.profile).name
    folder = Path(args.course_dir or REPO_ROOT / "outputs" / "course" / profile)
    record = run_course(profile, folder, args.notebooks, strict=args.strict,
                        results_dir=None if args.no_record else RESULTS_DIR)
    failed = [n for n, r in record["notebooks"].items() if not r["ok"]]
    print(f"course in the {profile} profile: {record['total_minutes']:.1f} min" +
          (f"; failed: {', '.join(failed)}" if failed else "; every notebook ran"))
    return 1 if failed else 0


def cmd_check(args: argparse.Namespace) -> int:
    self_check(args.profile, seconds=args.seconds)
    return 0


def cmd_student(args: argparse.Namespace) -> int:
    for path in write_student_edition(args.source, args.out):
        print(f"wrote {path}")
    return 0


def cmd_experiments(args: argparse.Namespace) -> int:
    profile = get_profile(args.profile)
    out = Path(args.out or f"outputs/experiments/{profile.name}")
    overrides = {k: v for k, v in (("ae_minutes", args.ae_minutes), ("ldm_minutes", args.ldm_minutes),
                                   ("segments", args.segments), ("factors", tuple(args.factors) if args.factors
                                                                 else None)) if v is not None}
    budget = dataclasses.replace(ExperimentBudget.for_profile(profile), **overrides)
    for name in list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]:
        kwargs = {"device": args.device} if name == "rate-distortion" else {"seed": args.seed, "device": args.device}
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


# --- Arguments ----------------------------------------------------------------------------------------------
