"""The `minildm` command: every command's arguments, each calling one function of the package.

    demo             both stages on Shapes, then samples and a denoising filmstrip (demo.run_demo)
    train-ae         the first stage (train.train_autoencoder)        bench-ae   its quality after N minutes
    train-ldm        the second stage (train.train_ldm)               sample     images from a checkpoint
    evaluate-ldm     prompt accuracy, Shapes-FID, word influence (shapes_eval.evaluate_text_ldm)
    experiments      the paper's experiments at mini scale (experiments.run_experiment)
    bench            every speed next to diffusers (bench.run_bench)  bench-data, bench-ldm: single rows
    train-evaluator  the Shapes evaluator (evaluator.train_evaluator)
    info, preview    the device and profile; a captioned grid of the data
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

from . import __version__, pretrained
from .bench import DEFAULT_SECONDS, bench_autoencoder, bench_ddim, bench_ldm_step, format_table, machine_info, run_bench
from .data import DATASETS, ShapesDataset, benchmark, make_dataset
from .demo import AE_MINUTES, LDM_MINUTES, run_demo
from .evaluator import DEFAULT_EVALUATOR_PATH, EvaluatorConfig, train_evaluator
from .experiments import DEFAULT_CHECKPOINT, EXPERIMENTS, ExperimentBudget, run_experiment
from .ldm import LatentDiffusion
from .profiles import PROFILES, default_profile_name, get_profile
from .results import experiment_markdown
from .shapes import NUM_CLASSES, class_name, parse_layout
from .course import REPO_ROOT, RESULTS_DIR
from .course_run import run_course, self_check
from .shapes_eval import evaluate_text_ldm, text_report
from .student import STUDENT_DIR, write_student_edition
from .train import train_autoencoder, train_ldm
from .utils import get_device
from .viz import image_grid, save_figure

__all__ = ["main", "build_parser"]


def _number(kind: type, minimum: float, strict: bool, what: str):
    """An argparse type: a number of `kind` above (strict) or at least `minimum`, else a clear message."""
    def parse(text: str):
        value = kind(text)
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value
    return parse


_positive_int = _number(int, 1, False, "a positive whole number")
_positive_float = _number(float, 0.0, True, "a positive number")
_minutes = _number(float, 0.0, False, "0 or more minutes (a time cap)")


# --- Handlers: read the arguments, call the package, print what a user wants to see -------------------------


def _cmd_info(args: argparse.Namespace) -> int:
    print(f"minildm {__version__}, torch {torch.__version__}")
    print(f"device: {get_device()} (override with $MINILDM_DEVICE)")
    print(f"profile: {default_profile_name()} (override with $MINILDM_PROFILE; available: {', '.join(PROFILES)})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    run_demo(args.out, profile=args.profile, device=args.device, ae_minutes=args.ae_minutes,
             ldm_minutes=args.ldm_minutes, seed=args.seed, download=not args.offline)
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    b = ShapesDataset("train", resolution=args.resolution).batch(range(args.n))
    fig = image_grid(b["image"], b["caption"], ncols=args.ncols,
                     title=f"Shapes {args.resolution}x{args.resolution}: samples 0-{args.n - 1} of the train split")
    print(f"wrote {save_figure(fig, args.out)}")
    return 0


def _cmd_bench_data(args: argparse.Namespace) -> int:
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


def _cmd_train_ae(args: argparse.Namespace) -> int:
    profile = get_profile(args.profile)
    out = args.out or os.path.join("runs", f"ae-{profile.name}-{args.kind or profile.ae.kind}")
    train, val = (_dataset(args, profile, split) for split in ("train", "val"))
    r = train_autoencoder(profile, out, device=args.device, max_minutes=args.minutes, kind=args.kind,
                          steps=args.steps, random_lpips=True if args.random_lpips else None, resume=not args.no_resume,
                          dataset=train, val_dataset=val)
    vals = [h["val_psnr"] for h in r["history"] if "val_psnr" in h]
    print(f"trained to step {r['step']}; checkpoint {r['path']}" + (f"; val PSNR {vals[-1]:.2f} dB" if vals else ""))
    return 0


def _cmd_bench_ae(args: argparse.Namespace) -> int:
    for line in bench_autoencoder(args.profile, args.kind, args.minutes, args.out, args.device,
                                  True if args.random_lpips else None, progress=not args.no_progress):
        print(line)
    return 0


def _cmd_train_ldm(args: argparse.Namespace) -> int:
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


def _cmd_sample(args: argparse.Namespace) -> int:
    ldm = LatentDiffusion.from_checkpoint(args.checkpoint, args.device)
    raw, captions = _sample_condition(ldm, args)
    g = torch.Generator().manual_seed(args.seed)
    images = ldm.sample(raw, num_samples=args.n if raw is None else None, steps=args.steps, eta=args.eta,
                        guidance_scale=args.guidance, generator=g)
    title = f"DDIM {args.steps} steps, η={args.eta}, guidance {args.guidance}, seed {args.seed}"
    print(f"wrote {save_figure(image_grid(images, captions, ncols=min(8, args.n), title=title), args.out)}")
    return 0


def _cmd_evaluate_ldm(args: argparse.Namespace) -> int:
    ldm = LatentDiffusion.from_checkpoint(args.checkpoint, args.device)
    t0 = time.time()
    r = evaluate_text_ldm(ldm, n=args.n, guidance_scale=args.guidance, steps=args.steps, seed=args.seed,
                          fid=not args.no_fid, eta=args.eta)
    print(f"{args.checkpoint}: DDIM-{args.steps}, η={args.eta}, guidance {args.guidance}, {args.n} prompts per type "
          f"(judged by the Shapes evaluator; all conditions must hold)")
    print("\n".join(text_report(r, args.n)))
    print(f"  ({time.time() - t0:.0f} s)")
    return 0


def _cmd_bench_ldm(args: argparse.Namespace) -> int:
    device, t0 = get_device(args.device), time.perf_counter()
    rows = [bench_ldm_step(args.profile, args.seconds, device),
            bench_ddim(args.profile, args.seconds, device, batch_size=args.sample_batch, steps=args.steps,
                       peer=False, rounds=1)]
    print(format_table({"machine": machine_info(device), "profile": get_profile(args.profile).name, "rows": rows,
                        "rounds": 1, "seconds": args.seconds, "wall_s": time.perf_counter() - t0}))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    result = run_bench(args.profile, args.device, seconds=args.seconds, peer=not args.no_peer,
                       sample_batch=args.sample_batch, steps=args.steps,
                       random_lpips=True if args.random_lpips else None, lpips_download=not args.offline)
    print(format_table(result))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {path}")
    return 0


def _cmd_train_evaluator(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    res = train_evaluator(args.out, steps=args.steps, seed=args.seed, max_minutes=args.minutes, device=args.device,
                          progress=not args.no_progress)
    m, t = res["metrics"], res["train"]
    print(f"trained {t['steps']} steps in {t['seconds']:.0f} s ({t['pool_seconds']:.0f} s rendering) -> {res['path']}")
    print("test split (max_objects=2): " + "  ".join(f"{k} {v:.4f}" for k, v in m.items() if k != "images"))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    ldms = dict(item.split("=", 1) for item in args.ldm)
    provenance = json.loads(Path(args.provenance).read_text()) if args.provenance else {}
    full = pretrained.export(args.autoencoder, ldms, args.profile, provenance, root=args.root)
    for name, entry in sorted(full["files"].items()):
        if name.startswith(f"{args.profile}/"):
            print(f"{name}: {entry['bytes'] / 1e6:.2f} MB, sha256 {entry['sha256'][:16]}…")
    return 0


def _cmd_course(args: argparse.Namespace) -> int:
    profile = get_profile(args.profile).name
    folder = Path(args.course_dir or REPO_ROOT / "outputs" / "course" / profile)
    record = run_course(profile, folder, args.notebooks, strict=args.strict,
                        results_dir=None if args.no_record else RESULTS_DIR)
    failed = [n for n, r in record["notebooks"].items() if not r["ok"]]
    print(f"course in the {profile} profile: {record['total_minutes']:.1f} min" +
          (f"; failed: {', '.join(failed)}" if failed else "; every notebook ran"))
    return 1 if failed else 0


def _cmd_check(args: argparse.Namespace) -> int:
    self_check(args.profile, seconds=args.seconds)
    return 0


def _cmd_student(args: argparse.Namespace) -> int:
    for path in write_student_edition(args.source, args.out):
        print(f"wrote {path}")
    return 0


def _cmd_experiments(args: argparse.Namespace) -> int:
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

PROFILE_HELP = "ci, cpu or gpu (default: $MINILDM_PROFILE or by hardware)"
DEVICE_HELP = "cpu, cuda, mps (default: best available)"
RANDOM_LPIPS_HELP = "use a random LPIPS backbone when the pretrained one is not available (offline)"


def _common(p: argparse.ArgumentParser, *names: str) -> None:
    if "profile" in names:
        p.add_argument("--profile", default=None, help=PROFILE_HELP)
    if "device" in names:
        p.add_argument("--device", default=None, help=DEVICE_HELP)
    if "random-lpips" in names:
        p.add_argument("--random-lpips", action="store_true", help=RANDOM_LPIPS_HELP)
    if "data" in names:
        p.add_argument("--data", default="shapes", help=f"{', '.join(DATASETS)} (default shapes)")
        p.add_argument("--data-root", default="data/downloads", help="where MNIST files are (default %(default)s)")
        p.add_argument("--download", action="store_true", help="download missing MNIST files (checksummed)")


def _sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default="outputs/demo/ldm.pt")
    p.add_argument("--steps", type=_positive_int, default=50, help="DDIM steps")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM η (0: deterministic, 1: DDPM-like)")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale s")
    p.add_argument("--seed", type=int, default=0)
    _common(p, "device")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minildm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.set_defaults(func=func)
        return p

    _demo_and_data_commands(add)
    _training_commands(add)
    _sampling_commands(add)
    _study_commands(add)
    return parser


def _demo_and_data_commands(add) -> None:
    """info, demo, preview, bench-data."""
    add("info", _cmd_info, "show the device and profile minildm would use")

    p = add("demo", _cmd_demo, "train a small LDM on Shapes (or reuse it) and write samples + a filmstrip")
    p.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    _common(p, "profile", "device")
    p.add_argument("--ae-minutes", type=_minutes, default=AE_MINUTES,
                   help=f"time cap for the autoencoder (default {AE_MINUTES:g})")
    p.add_argument("--ldm-minutes", type=_minutes, default=LDM_MINUTES,
                   help=f"time cap for the diffusion model (default {LDM_MINUTES:g})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--offline", action="store_true", help="never download (LPIPS weights must be on disk)")

    p = add("preview", _cmd_preview, "render a captioned grid of Shapes samples")
    p.add_argument("--out", default="outputs/shapes_preview.png")
    p.add_argument("--resolution", type=_positive_int, default=32)
    p.add_argument("-n", type=_positive_int, default=24)
    p.add_argument("--ncols", type=_positive_int, default=8)

    p = add("bench-data", _cmd_bench_data, "measure Shapes rendering speed (images/s)")
    p.add_argument("--resolutions", type=_positive_int, nargs="+", default=[32, 64])
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--seconds", type=_positive_float, default=5.0)
    _common(p, "device")


def _training_commands(add) -> None:
    """train-ae, bench-ae, train-ldm."""
    p = add("train-ae", _cmd_train_ae, "train the first-stage autoencoder (KL or VQ)")
    _common(p, "profile", "device", "random-lpips", "data")
    p.add_argument("--kind", choices=("kl", "vq"), default=None, help="override the profile's autoencoder kind")
    p.add_argument("--out", default=None, help="output folder (default runs/ae-<profile>-<kind>)")
    p.add_argument("--steps", type=_positive_int, default=None, help="override the profile's step count")
    p.add_argument("--minutes", type=_positive_float, default=None, help="stop after this many minutes")
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")

    p = add("bench-ae", _cmd_bench_ae, "train an autoencoder for N minutes on Shapes, report PSNR/SSIM/LPIPS")
    _common(p, "profile", "device", "random-lpips")
    p.add_argument("--kind", choices=("kl", "vq"), default="kl")
    p.add_argument("--minutes", type=_positive_float, default=10.0)
    p.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    p.add_argument("--no-progress", action="store_true")

    p = add("train-ldm", _cmd_train_ldm, "train the latent diffusion model on a trained autoencoder")
    p.add_argument("--autoencoder", required=True, help="autoencoder checkpoint (from `minildm train-ae`)")
    _common(p, "profile", "device", "data")
    p.add_argument("--cond", choices=("text", "class", "layout", "sr", "none"), default=None,
                   help="default: the profile's on Shapes; class (labelled data) or none on other data")
    p.add_argument("--out", default=None, help="output folder (default runs/ldm-<profile>-<cond>)")
    p.add_argument("--steps", type=_positive_int, default=None)
    p.add_argument("--minutes", type=_positive_float, default=None, help="stop after this many minutes (checkpoint kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true")


def _sampling_commands(add) -> None:
    """sample, evaluate-ldm."""
    p = add("sample", _cmd_sample, "sample images from a trained LDM checkpoint")
    _sampling(p)
    p.add_argument("--prompt", default=None, help='e.g. "a red circle in the top left" (text models)')
    p.add_argument("--class", dest="label", type=int, default=None, help="class id, e.g. 0..23 (class models)")
    p.add_argument("--layout", default=None, help='e.g. "red circle@0.1,0.1,0.45,0.45; blue star@0.5,0.5,0.9,0.9"')
    p.add_argument("-n", type=_positive_int, default=8, help="number of samples")
    p.add_argument("--out", default="samples.png")

    p = add("evaluate-ldm", _cmd_evaluate_ldm, "prompt accuracy and Shapes-FID of a text-conditional LDM")
    _sampling(p)
    p.add_argument("-n", type=_positive_int, default=200, help="prompts per type (one-object, two-object)")
    p.add_argument("--no-fid", action="store_true", help="skip Shapes-FID")


def _study_commands(add) -> None:
    """bench-ldm, bench, train-evaluator, experiments."""
    p = add("bench-ldm", _cmd_bench_ldm, "LDM training steps/s and DDIM sampling images/s")
    _common(p, "profile", "device")
    p.add_argument("--seconds", type=_positive_float, default=20.0)
    p.add_argument("--steps", type=_positive_int, default=50)
    p.add_argument("--sample-batch", type=_positive_int, default=64)

    p = add("bench", _cmd_bench, "measure data, autoencoder and LDM training, and DDIM sampling speed "
                                 "(next to diffusers when it is installed)")
    _common(p, "profile", "device")
    p.add_argument("--seconds", type=_positive_float, default=DEFAULT_SECONDS,
                   help=f"seconds per measurement and side (default {DEFAULT_SECONDS:g}: ~4 min in all on a 2-core CPU)")
    p.add_argument("--no-peer", action="store_true", help="skip the diffusers comparison")
    p.add_argument("--sample-batch", type=_positive_int, default=None, help="DDIM batch size (default: the profile's)")
    p.add_argument("--steps", type=_positive_int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--random-lpips", action="store_true",
                   help="use a random LPIPS backbone when the pretrained one is not available (speed is the same)")
    p.add_argument("--offline", action="store_true", help="never download LPIPS weights")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the numbers to this JSON file")

    p = add("train-evaluator", _cmd_train_evaluator, "train the Shapes evaluator (Shapes-FID features, prompt accuracy)")
    p.add_argument("--out", default=str(DEFAULT_EVALUATOR_PATH), help="checkpoint path (default: %(default)s)")
    p.add_argument("--steps", type=_positive_int, default=None, help=f"training steps (default {EvaluatorConfig.steps})")
    p.add_argument("--seed", type=int, default=None, help=f"seed (default {EvaluatorConfig.seed})")
    p.add_argument("--minutes", type=_positive_float, default=None, help="stop early after this many minutes")
    _common(p, "device")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")

    p = add("course", _cmd_course, "run the course's notebooks in order in one profile, timing each")
    p.add_argument("--profile", default=None, help=PROFILE_HELP)
    p.add_argument("--strict", action="store_true", help="a failed claim stops the notebook (and the run)")
    p.add_argument("--notebooks", nargs="*", default=None, help="only these (prefixes: 00 03 …)")
    p.add_argument("--course-dir", default=None, help="the course folder (default outputs/course/<profile>)")
    p.add_argument("--no-record", action="store_true", help="do not write docs/course/<profile>.json")

    p = add("check", _cmd_check, "before a lab: device, LPIPS weights, shipped checkpoints, expected run times here")
    p.add_argument("--profile", default=None, help=PROFILE_HELP)
    p.add_argument("--seconds", type=_positive_float, default=10.0, help="length of the speed probe")

    p = add("student", _cmd_student, "write the student edition of the notebooks (solutions taken out)")
    p.add_argument("--source", default=str(STUDENT_DIR.parent), help="the course notebooks (default: %(default)s)")
    p.add_argument("--out", default=str(STUDENT_DIR), help="where to write (default: %(default)s)")

    p = add("export-pretrained", _cmd_export, "write the shipped inference checkpoints (safetensors + manifest)")
    p.add_argument("--profile", required=True, help="the profile the checkpoints were trained in")
    p.add_argument("--autoencoder", required=True, help="autoencoder.pt from `minildm train-ae`")
    p.add_argument("--ldm", nargs="*", default=[], metavar="COND=PATH", help="e.g. text=runs/ldm-cpu-text/ldm.pt")
    p.add_argument("--provenance", default=None, help="JSON file: per file, the command, seed, minutes, metrics")
    p.add_argument("--root", default=str(pretrained.DIR), help="where to write (default: %(default)s)")

    p = add("experiments", _cmd_experiments, "the paper's experiments at mini scale; writes results.md/.json")
    p.add_argument("experiment", choices=(*EXPERIMENTS, "all"))
    _common(p, "profile", "device")
    p.add_argument("--checkpoint", default=None, help=f"text LDM for the sweeps (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--out", default=None, help="output folder (default outputs/experiments/<profile>)")
    p.add_argument("--equal", choices=("time", "steps"), default="time",
                   help="f-study budget: equal training minutes (default) or the profile's step counts")
    p.add_argument("--factors", type=_positive_int, nargs="+", default=None, help="downsampling factors (default 1 2 4 8)")
    p.add_argument("--ae-minutes", type=_positive_float, default=None, help="training minutes per autoencoder")
    p.add_argument("--ldm-minutes", type=_positive_float, default=None, help="training minutes per LDM (f-study)")
    p.add_argument("--segments", type=_positive_int, default=None, help="f-study evaluations along the LDM budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--offline", action="store_true", help="never download (LPIPS weights must be on disk)")


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (0 ok, 2 a usage or input error, explained on stderr)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:                     # --help, or arguments argparse rejected (it printed why)
        return int(e.code or 0)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        if os.environ.get("MINILDM_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
