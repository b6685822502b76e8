"""minildm: latent diffusion (Rombach et al. 2022) at mini scale: train, sample, evaluate, benchmark.

Every command's arguments are declared in build_parser; each `cmd_<command>` below it reads them, calls the
package and prints what a user wants to see; it returns an exit status, or None for 0."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import __version__
from ..conditioning import MASK_KINDS, LowResConcat
from ..course import pretrained
from ..course.lesson import REPO_ROOT, RESULTS_DIR
from ..course.results import EXPERIMENTS, experiment_markdown
from ..course.runner import run_course, self_check
from ..course.student import STUDENT_DIR, write_student_edition
from ..course.viz import SampleGrids, image_grid, save_figure
from ..data.datasets import DATASETS, ShapesDataset, make_dataset
from ..data.shapes import NUM_CLASSES, class_name, parse_layout, render_semantic
from ..diffusion import PROCESSES
from ..eval.accuracy import (autoencoder_shape_fidelity, evaluate_text_ldm, fidelity_lines, inpainting_tasks,
                             real_images, text_report)
from ..eval.judge import DEFAULT_EVALUATOR_PATH, EvaluatorConfig, train_evaluator
from ..ldm import CLASS_ROUTES, COND_MODES, CONCAT_MODES, GUIDANCE_SCALE, SAMPLERS, LatentDiffusion
from ..train.distributed import main_process
from ..train.profiles import PROFILES, default_profile_name, explain_profile, get_profile
from ..train.stages import train_autoencoder, train_ldm
from ..utils import get_device
from .bench import (DEFAULT_SECONDS, bench_autoencoder, bench_data, bench_ddim, bench_ldm_step, format_plan,
                    format_table, machine_info, run_bench)
from .demo import AE_MINUTES, LDM_MINUTES, SAMPLE_ETA, SAMPLE_GUIDANCE, run_demo
from .flops import ASSUMED_UTILIZATION, H100_BF16_TFLOPS, plan_profile
from .studies import DEFAULT_CHECKPOINT, run_experiment

__all__ = ["main", "build_parser"]


def _number(kind: type, minimum: float, strict: bool, what: str, maximum: float = float("inf")):
    """An argparse type: a number of `kind` above (strict) or at least `minimum`, else a clear message."""
    def parse(text: str):
        value = kind(text)
        if value < minimum or (strict and value == minimum) or value > maximum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value
    return parse


_positive_int = _number(int, 1, False, "a positive whole number")
_positive_float = _number(float, 0.0, True, "a positive number")
_minutes = _number(float, 0.0, False, "0 or more minutes (a time cap)")
_share = _number(float, 0.0, True, "a share of the peak above 0 and at most 1", maximum=1.0)
_index = _number(int, 0, False, "0 or a positive whole number")


def _common(p: argparse.ArgumentParser, *names: str) -> None:
    if "profile" in names:
        p.add_argument("--profile", default=None, help="ci (tested in CI), cpu (measured) or gpu (predicted, never run "
                       "on a GPU); default: $MINILDM_PROFILE, else cpu, on a GPU too")
    if "device" in names:
        p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    if "random-lpips" in names:
        p.add_argument("--random-lpips", action="store_const", const=True, default=None,
                       help="use a random LPIPS backbone when the pretrained one is not available (offline)")
    if "offline" in names:
        p.add_argument("--offline", action="store_true", help="never download (LPIPS weights must be on disk)")
    if "data" in names:
        p.add_argument("--data", default="shapes", help=f"{', '.join(DATASETS)} (default shapes)")
        p.add_argument("--data-root", default="data/downloads", help="where MNIST files are (default %(default)s)")
        p.add_argument("--download", action="store_true", help="download missing MNIST files (checksummed)")


def _model(p: argparse.ArgumentParser, required: bool, checkpoint: str | None = None) -> None:
    """--pretrained NAME (a shipped model) or --checkpoint PATH (a trained one), never both."""
    which = p.add_mutually_exclusive_group(required=required)
    which.add_argument("--pretrained", metavar="NAME", default=None,
                       help=f"a shipped model, no training needed: {', '.join(pretrained.shipped())} "
                            f"(the {pretrained.SHIPPED_PROFILE} profile's, in data/pretrained/)")
    which.add_argument("--checkpoint", metavar="PATH", default=checkpoint,
                       help="an LDM checkpoint from `minildm demo` or `minildm train-ldm`, e.g. outputs/demo/ldm.pt"
                            + (" (default: %(default)s)" if checkpoint else ""))


def _sampling(p: argparse.ArgumentParser, eta: float, guidance: float | None, guidance_help: str) -> None:
    p.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help="ddim; ddpm (all T steps, --steps unused); the ODE solvers euler, heun (2·steps − 1 model "
                        "calls; the others: steps) and dpmpp_2m (DPM-Solver++(2M)). Default: the model's, ddim for a "
                        "diffusion model, euler for a flow model (which takes euler or heun only)")
    p.add_argument("--steps", type=_positive_int, default=50, help="sampling steps (default %(default)s)")
    p.add_argument("--eta", type=float, default=None,
                   help=f"DDIM's η (0: deterministic, 1: DDPM-like; default {eta:g}); only --sampler ddim takes it")
    p.add_argument("--guidance", type=float, default=guidance, help=guidance_help)
    p.add_argument("--seed", type=int, default=0)
    _common(p, "device")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minildm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help: str, description: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description or help)
        p.set_defaults(func=func)
        return p

    add("info", cmd_info, "show the device and profile minildm would use")

    p = add("demo", cmd_demo, "train a small LDM on Shapes (or reuse it) and write samples + a filmstrip")
    p.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    _common(p, "profile", "device", "offline")
    p.add_argument("--ae-minutes", type=_minutes, default=AE_MINUTES,
                   help="time cap for the autoencoder (default: none, the profile's steps decide)")
    p.add_argument("--ldm-minutes", type=_minutes, default=LDM_MINUTES,
                   help="time cap for the diffusion model (default: none; a cap trades prompt accuracy for time)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, default=None, help="fixed CPU thread count (bit-reproducible; "
                   "default: switch between 1 and all cores, whichever trains faster at the moment)")

    p = add("preview", cmd_preview, "render a captioned grid of Shapes samples")
    p.add_argument("--out", default="outputs/shapes_preview.png")
    p.add_argument("--resolution", type=_positive_int, default=32)
    p.add_argument("-n", type=_positive_int, default=24)
    p.add_argument("--ncols", type=_positive_int, default=8)

    p = add("bench-data", cmd_bench_data, "measure Shapes rendering speed (images/s)")
    p.add_argument("--resolutions", type=_positive_int, nargs="+", default=[32, 64])
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--seconds", type=_positive_float, default=5.0)
    _common(p, "device")

    p = add("train-ae", cmd_train_ae, "train the first-stage autoencoder (KL or VQ)")
    _common(p, "profile", "device", "random-lpips", "data")
    p.add_argument("--kind", choices=("kl", "vq"), default=None, help="override the profile's autoencoder kind")
    p.add_argument("--out", default=None, help="output folder (default runs/ae-<profile>-<kind>)")
    p.add_argument("--steps", type=_positive_int, default=None, help="override the profile's step count")
    p.add_argument("--minutes", type=_positive_float, default=None, help="stop after this many minutes")
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    p.add_argument("--pixel-loss", choices=("l1", "l2"), default=None,
                   help="override the profile's pixel loss (notebook 01 compares l2 with l1)")
    p.add_argument("--perceptual-weight", type=_number(float, 0, False, "a weight ≥ 0"), default=None,
                   help="override the profile's LPIPS weight (0 switches LPIPS off)")
    p.add_argument("--disc-start", type=_number(int, 0, False, "a step ≥ 0"), default=None,
                   help="override the step at which the GAN switches on (the cpu profile's lies after its steps)")

    p = add("bench-ae", cmd_bench_ae, "train an autoencoder for N minutes on Shapes, report PSNR/SSIM/LPIPS "
                                      "and shape fidelity by shape and size")
    _common(p, "profile", "device", "random-lpips")
    p.add_argument("--kind", choices=("kl", "vq"), default="kl")
    p.add_argument("--minutes", type=_positive_float, default=10.0)
    p.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    p.add_argument("--no-progress", action="store_true")

    p = add("train-ldm", cmd_train_ldm, "train the latent diffusion model on a trained autoencoder")
    p.add_argument("--autoencoder", required=True,
                   help="autoencoder checkpoint (from `minildm train-ae`), or `shipped`: the profile's shipped one "
                        "(data/pretrained/<profile>), on which the shipped second stages were trained")
    _common(p, "profile", "device", "data")
    p.add_argument("--cond", choices=COND_MODES, default=None,
                   help="default: the profile's on Shapes; class (labelled data) or none on other data; seg (semantic "
                        "maps) and inpaint (masked images; boxes and whole objects as training masks) need Shapes")
    p.add_argument("--class-route", choices=CLASS_ROUTES, default=None,
                   help="class models: the label enters through the time embedding (time, ADM's route, the default) "
                        "or as one cross-attention token (crossattn, the paper's class-conditional models)")
    p.add_argument("--process", choices=PROCESSES, default=None,
                   help="diffusion (the paper's, the default) or flow (flow matching on the same latents and U-Net: "
                        "velocity target, logit-normal times; sampled with Euler or Heun)")
    p.add_argument("--out", default=None, help="output folder (default runs/ldm-<profile>-<cond>; flow models: "
                                               "runs/flow-<profile>-<cond>)")
    p.add_argument("--steps", type=_positive_int, default=None)
    p.add_argument("--minutes", type=_positive_float, default=None, help="stop after this many minutes (checkpoint kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--sample-every", type=_number(int, 0, False, "0 (never) or a number of steps"), default=None,
                   help="write a grid of EMA samples every N steps (default: the profile's ldm_train.sample_every)")

    p = add("sample", cmd_sample, "sample images from a shipped model (--pretrained) or a trained checkpoint",
            description="Sample a grid of images with classifier-free guidance, from a model shipped with minildm "
                        "(--pretrained text|class|class-token|layout|sr|text-flow|seg|inpaint: no training, under a "
                        "minute on a laptop CPU) or from a checkpoint you trained (--checkpoint PATH). A diffusion "
                        "model's defaults, DDIM-50 with η = 1 and guidance 2.5, are the demo's sampler, the best "
                        "measured on the shipped text model; a flow model (text-flow) samples with Euler-50 and "
                        "guidance 3. "
                        'Example: minildm sample --pretrained text --prompt "a large red circle in the top left" '
                        "--out x.png")
    _model(p, required=True)
    _sampling(p, SAMPLE_ETA, None, f"classifier-free guidance scale s (default {SAMPLE_GUIDANCE:g} with DDIM, the "
                                   f"demo's, {GUIDANCE_SCALE:g} with the other samplers; sr models: 1, no guidance, as "
                                   "they are trained without dropping the condition)")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--prompt", default=None, help='text models: e.g. "a large red circle in the top left"')
    given.add_argument("--class", dest="label", type=int, default=None,
                       help=f"class models: a class id 0..{NUM_CLASSES - 1} (color × shape, e.g. 3 = {class_name(3)})")
    given.add_argument("--layout", default=None, help='layout models: "<color> <shape>@x0,y0,x1,y1" per object, '
                                                      'fractions of the side, ";" between objects, e.g. '
                                                      '"red circle@0.1,0.1,0.45,0.45; blue star@0.5,0.5,0.9,0.9"')
    given.add_argument("--scene", type=_index, default=None,
                       help="sr, seg and inpaint models: Shapes test scene N (default 0) gives the input: its "
                            "downsampled rendering (sr), its semantic map (seg), its image with a hole (inpaint); the "
                            "grid shows the input, the samples and the original")
    p.add_argument("--mask", choices=MASK_KINDS, default=None,
                   help="inpaint models: the hole in --scene's image, box (the default: one half of an object's box, "
                        "the rest of the object visible) or object (the whole object)")
    p.add_argument("-n", type=_positive_int, default=8, help="number of samples (default %(default)s)")
    p.add_argument("--out", default="samples.png", help="the PNG to write (default %(default)s)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads (default on a CPU: 1; these small models sample fastest on one, and a busy "
                        "2-core laptop up to 10x faster than on two)")

    p = add("evaluate-ldm", cmd_evaluate_ldm, "prompt accuracy and Shapes-FID of a text-conditional LDM")
    _model(p, required=False, checkpoint="outputs/demo/ldm.pt")
    _sampling(p, 0.0, 3.0, "classifier-free guidance scale s (default %(default)g)")
    p.add_argument("-n", type=_positive_int, default=200, help="prompts per type (one-object, two-object)")
    p.add_argument("--no-fid", action="store_true", help="skip Shapes-FID")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the numbers to this JSON file")

    p = add("bench-ldm", cmd_bench_ldm, "LDM training steps/s and DDIM sampling images/s")
    _common(p, "profile", "device")
    p.add_argument("--seconds", type=_positive_float, default=20.0)
    p.add_argument("--steps", type=_positive_int, default=50)
    p.add_argument("--sample-batch", type=_positive_int, default=64)

    p = add("bench", cmd_bench, "measure data, autoencoder and LDM training, and DDIM sampling speed "
                                "(next to diffusers when it is installed)")
    _common(p, "profile", "device", "random-lpips", "offline")
    p.add_argument("--seconds", type=_positive_float, default=DEFAULT_SECONDS,
                   help=f"seconds per measurement and side (default {DEFAULT_SECONDS:g}: ~4 min in all on a 2-core CPU)")
    p.add_argument("--no-peer", action="store_true", help="skip the diffusers comparison")
    p.add_argument("--sample-batch", type=_positive_int, default=None, help="DDIM batch size (default: the profile's)")
    p.add_argument("--steps", type=_positive_int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the numbers to this JSON file")
    p.add_argument("--peak-tflops", type=_positive_float, default=None, help="the device's peak for the %% of peak "
                   "column (default: the datasheet value of a known GPU; none on CPU)")
    p.add_argument("--compile", action="store_true", help="add a row with the compiled U-Net (compiling takes minutes)")
    p.add_argument("--plan", default=None, metavar="PROFILE", help="measure nothing: predict PROFILE's course training "
                   "time from counted FLOPs at --assume-util of --peak-tflops (default: an H100's bf16 peak)")
    p.add_argument("--assume-util", type=_share, default=None, help="assumed share of the peak for --plan")

    p = add("train-evaluator", cmd_train_evaluator, "train the Shapes evaluator (Shapes-FID features, prompt accuracy)")
    p.add_argument("--out", default=str(DEFAULT_EVALUATOR_PATH), help="checkpoint path (default: %(default)s)")
    p.add_argument("--steps", type=_positive_int, default=None, help=f"training steps (default {EvaluatorConfig.steps})")
    p.add_argument("--seed", type=int, default=None, help=f"seed (default {EvaluatorConfig.seed})")
    p.add_argument("--minutes", type=_positive_float, default=None, help="stop early after this many minutes")
    _common(p, "device")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")

    p = add("course", cmd_course, "run the course's notebooks in order in one profile, timing each")
    _common(p, "profile")
    p.add_argument("--strict", action="store_true", help="a finding that does not hold stops the notebook (and the run)")
    p.add_argument("--notebooks", nargs="*", default=None, help="only these (prefixes: 00 03 …)")
    p.add_argument("--course-dir", default=None, help="the course folder (default outputs/course/<profile>)")
    p.add_argument("--no-record", action="store_true", help="do not write docs/course/<profile>.json")

    p = add("check", cmd_check, "before a lab: device, LPIPS weights, shipped checkpoints, expected run times here")
    _common(p, "profile")
    p.add_argument("--seconds", type=_positive_float, default=10.0, help="length of the speed probe")

    p = add("student", cmd_student, "write the student edition of the notebooks (solutions taken out)")
    p.add_argument("--source", default=str(STUDENT_DIR.parent), help="the course notebooks (default: %(default)s)")
    p.add_argument("--out", default=str(STUDENT_DIR), help="where to write (default: %(default)s)")

    p = add("export-pretrained", cmd_export, "write the shipped inference checkpoints (safetensors + manifest)")
    p.add_argument("--profile", required=True, help="the profile the checkpoints were trained in")
    p.add_argument("--autoencoder", default=None, help="autoencoder.pt from `minildm train-ae` (default: keep the "
                                                         "profile's shipped one, which the --ldm models were trained on)")
    p.add_argument("--ldm", nargs="*", default=[], metavar="COND=PATH", help="e.g. text=runs/ldm-cpu-text/ldm.pt, "
                                                                               "class-token=kit/class-token/ldm.pt")
    p.add_argument("--compare", nargs="*", default=[], metavar="KEY=PATH",
                   help=f"notebook 01's autoencoders ({', '.join(pretrained.COMPARISON)}), e.g. l2=kit/ae-l2/autoencoder.pt")
    p.add_argument("--f-study", default=None, metavar="DIR", help="notebook 09's f-study: the --out folder of "
                   "`minildm experiments f-study --equal steps` (its rows and samples, no weights)")
    p.add_argument("--half", nargs="*", default=[], metavar="NAME",
                   help="store these files of this export in float16 (half the bytes; they load into float32 "
                        "models): COND names of --ldm (e.g. text-flow), or autoencoder")
    p.add_argument("--halve", nargs="*", default=[], metavar="NAME",
                   help="convert already shipped second stages to float16 in place (e.g. sr for ldm-sr), keeping "
                        "their manifest entries; re-measure their metrics on the written files")
    p.add_argument("--provenance", default=None, help="JSON file: per file, the command, seed, minutes, metrics")
    p.add_argument("--root", default=str(pretrained.DIR), help="where to write (default: %(default)s)")

    p = add("experiments", cmd_experiments, "the paper's experiments at mini scale, and samplers against model "
            "evaluations (ode-samplers); writes results.md/.json (ode-samplers also ode_samplers.png)")
    p.add_argument("experiment", choices=(*EXPERIMENTS, "all"))
    _common(p, "profile", "device", "offline")
    p.add_argument("--checkpoint", default=None, help=f"text LDM for the sweeps (default {DEFAULT_CHECKPOINT}; "
                   f"ode-samplers in the {pretrained.SHIPPED_PROFILE} profile: the shipped text model)")
    p.add_argument("--out", default=None, help="output folder (default outputs/experiments/<profile>)")
    p.add_argument("--equal", choices=("time", "steps"), default="time",
                   help="f-study budget: equal training minutes (default) or equal steps, as the paper's Fig. 6 "
                        "(--ae-steps/--ldm-steps, else the profile's step counts)")
    p.add_argument("--factors", type=_positive_int, nargs="+", default=None, help="downsampling factors (default 1 2 4 8)")
    p.add_argument("--ae-minutes", type=_positive_float, default=None, help="training minutes per autoencoder")
    p.add_argument("--ldm-minutes", type=_positive_float, default=None, help="training minutes per LDM (f-study)")
    p.add_argument("--ae-steps", type=_positive_int, default=None, help="steps per autoencoder (--equal steps)")
    p.add_argument("--ldm-steps", type=_positive_int, default=None, help="steps per LDM (--equal steps)")
    p.add_argument("--ldm-batch", type=_positive_int, default=None, help="the f-study LDMs' batch size")
    p.add_argument("--segments", type=_positive_int, default=None, help="f-study evaluations along the LDM budget")
    p.add_argument("--nfe", type=_positive_int, nargs="+", default=None,
                   help="ode-samplers: model evaluations per sample (default 5 10 20 50)")
    p.add_argument("--nfe-samples", type=_positive_int, default=None, help="ode-samplers: prompts per row")
    p.add_argument("--seed", type=int, default=0)
    return parser


# --- Commands ---------------------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int | None:
    print(f"minildm {__version__}, torch {torch.__version__}")
    print(f"device: {get_device()} (override with $MINILDM_DEVICE)")
    print(f"profile: {default_profile_name()} (override with $MINILDM_PROFILE; available: {', '.join(PROFILES)})")
    print(f"  {explain_profile()}")
    print(f"shipped models ({pretrained.DIR / pretrained.SHIPPED_PROFILE}): {', '.join(pretrained.shipped()) or 'none'}"
          " (minildm sample --pretrained NAME)")


def cmd_demo(args: argparse.Namespace) -> int | None:
    print(explain_profile(args.profile))
    run_demo(args.out, profile=args.profile, device=args.device, ae_minutes=args.ae_minutes,
             ldm_minutes=args.ldm_minutes, seed=args.seed, download=not args.offline, threads=args.threads)


def cmd_preview(args: argparse.Namespace) -> int | None:
    b = ShapesDataset("train", resolution=args.resolution).batch(range(args.n))
    fig = image_grid(b["image"], b["caption"], ncols=args.ncols,
                     title=f"Shapes {args.resolution}x{args.resolution}: samples 0-{args.n - 1} of the train split")
    print(f"wrote {save_figure(fig, args.out)}")


def cmd_bench_data(args: argparse.Namespace) -> int | None:
    device = get_device(args.device)
    print(f"Shapes rendering on {device}, torch threads={torch.get_num_threads()}, batch {args.batch_size}")
    for res in args.resolutions:
        rate = bench_data(get_profile().replace(data={"resolution": res}), args.seconds, device,
                          args.batch_size)["ours"]
        print(f"  {res}x{res}: {rate:,.0f} images/s")


def _dataset(args: argparse.Namespace, profile, split: str):
    """--data as a dataset (None for Shapes: the training code's own default)."""
    if args.data == "shapes":
        return None
    return make_dataset(args.data, split, profile.data, root=args.data_root, download=args.download)


def _training_profile(args: argparse.Namespace, section: str, *options: str):
    """The --profile, told (by the main process only, under DDP), with the given options that are set overriding
    the same-named fields of its `section`."""
    profile = get_profile(args.profile)
    if main_process():
        print(explain_profile(args.profile))
    return profile.replace(**{section: {name: getattr(args, name) for name in options
                                        if getattr(args, name) is not None}})


def cmd_train_ae(args: argparse.Namespace) -> int | None:
    profile = _training_profile(args, "ae_loss", "pixel_loss", "perceptual_weight", "disc_start")
    out = args.out or os.path.join("runs", f"ae-{profile.name}-{args.kind or profile.ae.kind}")
    train, val = (_dataset(args, profile, split) for split in ("train", "val"))
    r = train_autoencoder(profile, out, device=args.device, max_minutes=args.minutes, kind=args.kind,
                          steps=args.steps, random_lpips=args.random_lpips, resume=not args.no_resume,
                          dataset=train, val_dataset=val)
    vals = [h["val_psnr"] for h in r["history"] if "val_psnr" in h]
    if main_process():
        print(f"trained to step {r['step']}; checkpoint {r['path']}" + (f"; val PSNR {vals[-1]:.2f} dB" if vals else ""))


def cmd_bench_ae(args: argparse.Namespace) -> int | None:
    out = args.out or tempfile.mkdtemp(prefix=f"minildm-bench-ae-{args.kind}-")
    for line in bench_autoencoder(args.profile, args.kind, args.minutes, out, args.device,
                                  args.random_lpips, progress=not args.no_progress):
        print(line)


def cmd_train_ldm(args: argparse.Namespace) -> int | None:
    profile = _training_profile(args, "ldm", "class_route", "process")
    data, cond = _dataset(args, profile, "train"), args.cond
    if data is not None and cond is None:           # text and layouts are Shapes features; labels when there are
        cond = "class" if data.num_classes else "none"
    if data is not None and cond in ("text", "layout", "seg", "inpaint"):
        raise ValueError(f"--cond {cond} needs Shapes (captions, boxes, semantic maps and segmentations are Shapes "
                         f"features); on --data {args.data} use --cond class (labelled images) or --cond none")
    kind = "flow" if profile.ldm.process == "flow" else "ldm"
    out = Path(args.out or f"runs/{kind}-{profile.name}-{cond or profile.ldm.cond}")
    every = profile.ldm_train.sample_every if args.sample_every is None else args.sample_every
    autoencoder = args.autoencoder
    if autoencoder == "shipped":
        autoencoder = pretrained.load_autoencoder(profile.name, "cpu")
        if autoencoder is None:
            raise ValueError(f"there is no shipped autoencoder for the {profile.name} profile (shipped: "
                             f"{pretrained.SHIPPED_PROFILE}); train one with `minildm train-ae --profile "
                             f"{profile.name}` and pass its autoencoder.pt, or use --profile {pretrained.SHIPPED_PROFILE}")
    r = train_ldm(profile, autoencoder, out, cond=cond, device=args.device, steps=args.steps,
                  max_minutes=args.minutes, resume=not args.no_resume, seed=args.seed, dataset=data,
                  callback=SampleGrids(every, out) if every else None)
    if main_process():
        print(f"trained {r['step']} steps in {r['minutes']:.1f} min; checkpoint: {r['path']}")


def _load_model(args: argparse.Namespace) -> tuple[LatentDiffusion, str]:
    """The model of --pretrained NAME or --checkpoint PATH, and how to name it in a title."""
    if args.pretrained is None:
        ldm = LatentDiffusion.from_checkpoint(args.checkpoint, args.device)
        return ldm, f"{ldm.cond_mode} model {args.checkpoint}"
    names = pretrained.shipped()
    if args.pretrained not in names:
        extra = (" There is no shipped unconditional model: train one with `minildm train-ldm --cond none`."
                 if args.pretrained in ("unconditional", "none", "uncond") else "")
        raise ValueError(f"no shipped model {args.pretrained!r}; the shipped models are {', '.join(names) or 'none'} "
                         f"({pretrained.DIR / pretrained.SHIPPED_PROFILE}): --pretrained "
                         f"{' | '.join(names) or 'NAME'}, or --checkpoint PATH for a model you trained.{extra}")
    ldm = pretrained.load_ldm(pretrained.SHIPPED_PROFILE, args.pretrained, args.device)
    return ldm, f"shipped {args.pretrained} model"


# the models that sample from an input (concatenated to their latents, trained without dropping it: no guidance),
# by what they are called and which picture of a Shapes test scene they take
_INPUT_MODELS = {"sr": ("super-resolution", "downsampled rendering"), "seg": ("semantic-synthesis", "semantic map"),
                 "inpaint": ("inpainting", "image with a hole")}


def _sample_condition(ldm: LatentDiffusion, args: argparse.Namespace
                      ) -> tuple[torch.Tensor | None, list[str] | None, tuple[torch.Tensor, torch.Tensor] | None]:
    """The raw condition for `minildm sample`, the grid's captions and, for the models of _INPUT_MODELS, the
    pictures shown before and after the samples (the input, the original); errors in the command line's words."""
    n, mode = args.n, ldm.cond_mode
    flags = {"text": "--prompt", "class": "--class", "layout": "--layout", "sr": "--scene"}
    given = next((f for f, v in zip(flags.values(), (args.prompt, args.label, args.layout, args.scene))
                  if v is not None), None)
    if args.mask is not None and mode != "inpaint":
        raise ValueError(f"--mask chooses the hole of an inpainting model's input; this is a {mode} model")
    if mode in _INPUT_MODELS:
        what, picture = _INPUT_MODELS[mode]
        if given not in (None, "--scene"):
            raise ValueError(f"this is a {what} model: it takes no prompt; give --scene N (the Shapes test scene "
                             f"whose {picture} is the input; default 0)"
                             + (" and --mask box|object" if mode == "inpaint" else "") + f", not {given}")
        if args.guidance not in (None, 1.0):
            raise ValueError(f"this {what} model samples without guidance (it is trained without dropping its "
                             "condition): leave --guidance out")
        scene = args.scene or 0
        if mode == "sr":                                 # shown: the low-resolution input, blocky as it is
            truth = real_images(1, "test", ldm.max_objects or 2, ldm.resolution, start=scene)
            low = LowResConcat.degrade(truth, ldm.config.sr_factor)
            raw = low.expand(n, -1, -1, -1).to(ldm.scale_factor.device)
            shown = F.interpolate(low, size=truth.shape[-2:], mode="nearest")
            picture = f"{low.shape[-1]}x{low.shape[-1]}"
        elif mode == "seg":                              # shown: the semantic map in color
            b = ShapesDataset("test", size=max(1000, scene + 1), resolution=ldm.resolution,
                              max_objects=ldm.max_objects or 2).batch([scene])
            raw = ldm.semantic_condition(b["semantic"].expand(n, -1, -1))
            truth, shown = b["image"], render_semantic(b["semantic"])
        else:                                            # shown: the image with the hole as a grey checkerboard
            tasks = inpainting_tasks(scene + 1, ldm.resolution, ldm.max_objects or 2)
            truth, m = tasks["images"][scene:scene + 1], tasks["masks"][args.mask or "box"][scene:scene + 1]
            raw = ldm.inpaint_condition(truth.expand(n, -1, -1, -1), m.expand(n, -1, -1, -1))
            checker = ((torch.arange(truth.shape[-1])[:, None] // 2 + torch.arange(truth.shape[-1])[None] // 2) % 2)
            shown = truth * (1 - m) + (checker * 0.6 - 0.3).expand_as(truth) * m
            picture = f"hole ({args.mask or 'box'})"
        samples = [f"×{ldm.config.sr_factor} sample {i + 1}" if mode == "sr" else f"sample {i + 1}" for i in range(n)]
        return raw, [f"input: test scene {scene}, {picture}", *samples, "the original"], (shown, truth)
    if mode == "none":
        if given:
            raise ValueError(f"this is an unconditional model: it takes no {given}")
        return None, None, None
    if given != flags[mode]:
        wanted = {"text": '--prompt "a large red circle in the top left"', "class": f"--class N (0..{NUM_CLASSES - 1})",
                  "layout": '--layout "red circle@0.1,0.1,0.45,0.45"'}[mode]
        raise ValueError(f"this is a {mode}-conditional model: give {wanted}" + (f" (not {given})" if given else ""))
    if mode == "text":
        return ldm.prompt_condition(prompts=[args.prompt] * n), [args.prompt] * n, None
    if mode == "class":
        if not 0 <= args.label < ldm.num_classes:
            raise ValueError(f"--class must be between 0 and {ldm.num_classes - 1}, got {args.label}")
        names = [class_name(args.label) if ldm.num_classes == NUM_CLASSES else f"class {args.label}"] * n
        return ldm.prompt_condition(labels=[args.label] * n), names, None
    layout = parse_layout(args.layout, ldm.max_objects)
    return ldm.prompt_condition(layouts=layout.expand(n, -1, -1)), [args.layout] * n, None


_SAMPLER_NAMES = {"ddim": "DDIM", "ddpm": "DDPM", "euler": "Euler", "heun": "Heun", "dpmpp_2m": "DPM-Solver++(2M)"}


def _sampler(ldm: LatentDiffusion, args: argparse.Namespace, ddim_eta: float) -> tuple[str, float, str]:
    """(sampler, η, its name for a title: "DDIM-50, η = 1", "Euler-50", …) from --sampler, --eta and --steps
    (--sampler left out: the model's own default; --eta left out: `ddim_eta` for DDIM), with errors in the
    command's words."""
    sampler = args.sampler or ldm.default_sampler
    if ldm.is_flow and sampler not in ("euler", "heun"):
        raise ValueError(f"--sampler {sampler} is written for a diffusion model; this is a flow model (trained by flow "
                         f"matching, it solves dx/dt = v): use --sampler euler (its default) or --sampler heun")
    if args.eta is not None and sampler != "ddim":
        if ldm.is_flow:
            raise ValueError(f"--eta is DDIM's noise; this is a flow model, sampled deterministically with {sampler}: "
                             f"leave --eta out")
        raise ValueError(f"--eta is DDIM's noise; the {sampler} sampler takes none: leave --eta out, or use "
                         f"--sampler ddim --eta {args.eta:g}")
    eta = (ddim_eta if args.eta is None else args.eta) if sampler == "ddim" else 0.0
    if sampler == "ddim":
        label = f"DDIM-{args.steps}, η = {eta:g}"
    elif sampler == "ddpm":
        label = f"DDPM (all {ldm.diffusion.num_timesteps} steps)"
    elif sampler == "heun":
        label = f"Heun-{args.steps} ({2 * args.steps - 1} model calls)"
    else:
        label = f"{_SAMPLER_NAMES[sampler]}-{args.steps}"
    return sampler, eta, label


def cmd_sample(args: argparse.Namespace) -> int | None:
    ldm, what = _load_model(args)
    sampler, eta, label = _sampler(ldm, args, SAMPLE_ETA)
    raw, captions, frame = _sample_condition(ldm, args)
    default = SAMPLE_GUIDANCE if sampler == "ddim" else GUIDANCE_SCALE   # the demo's with DDIM, else sample()'s
    unguided = ldm.cond_mode in (*CONCAT_MODES, "none")          # trained without dropping a condition, or none
    guidance = 1.0 if unguided else (default if args.guidance is None else args.guidance)
    settings = f"{label}, guidance {guidance:g}, seed {args.seed}"
    print(f"sampling {args.n} image{'s' * (args.n > 1)} from the {what}: {settings}")
    g, before = torch.Generator().manual_seed(args.seed), torch.get_num_threads()
    if args.threads or ldm.scale_factor.device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    try:
        images = ldm.sample(raw, num_samples=args.n if raw is None else None, steps=args.steps, eta=eta,
                            guidance_scale=guidance, sampler=sampler, generator=g).cpu()
    finally:
        torch.set_num_threads(before)
    if frame:                                           # the input, the samples, the original
        images = torch.cat([frame[0], images, frame[1]])
    title = f"minildm, {what}: {settings}"
    print(f"wrote {save_figure(image_grid(images, captions, ncols=min(8, len(images)), title=title), args.out)}")


def cmd_evaluate_ldm(args: argparse.Namespace) -> int | None:
    ldm, what = _load_model(args)
    sampler, eta, label = _sampler(ldm, args, 0.0)
    t0 = time.time()
    r = evaluate_text_ldm(ldm, n=args.n, guidance_scale=args.guidance, steps=args.steps, seed=args.seed,
                          fid=not args.no_fid, eta=eta, sampler=sampler)
    print(f"{what}: {label}, guidance {args.guidance:g}, {args.n} prompts per type "
          f"(judged by the Shapes evaluator; all conditions must hold)")
    print("\n".join(text_report(r, args.n)))
    if ldm.is_flow:
        print("  word influence: not measured (the probe noises at a diffusion model's timesteps; this is a flow model)")
    fidelity = autoencoder_shape_fidelity(ldm.autoencoder, resolution=ldm.resolution)
    print("  " + "\n  ".join(fidelity_lines(fidelity)))
    seconds = time.time() - t0
    print(f"  ({seconds:.0f} s)")
    if args.json:
        settings = {"model": what, "sampler": sampler, "steps": args.steps, "eta": eta, "guidance": args.guidance,
                    "n": args.n, "seed": args.seed, "threads": torch.get_num_threads(), "seconds": round(seconds, 1)}
        _write_json(args.json, {**settings, **r, "autoencoder_shape_fidelity": fidelity}, indent=1, default=float)


def cmd_bench_ldm(args: argparse.Namespace) -> int | None:
    device, t0 = get_device(args.device), time.perf_counter()
    rows = [bench_ldm_step(args.profile, args.seconds, device, rounds=1),
            bench_ddim(args.profile, args.seconds, device, batch_size=args.sample_batch, steps=args.steps,
                       peer=False, rounds=1)]
    print(format_table({"machine": machine_info(device), "profile": get_profile(args.profile).name, "rows": rows,
                        "rounds": 1, "seconds": args.seconds, "wall_s": time.perf_counter() - t0}))


def cmd_bench(args: argparse.Namespace) -> int | None:
    if args.plan:
        print(format_plan(plan_profile(args.plan, args.peak_tflops or H100_BF16_TFLOPS,
                                       args.assume_util or ASSUMED_UTILIZATION)))
        return None
    result = run_bench(args.profile, args.device, seconds=args.seconds, peer=not args.no_peer,
                       sample_batch=args.sample_batch, steps=args.steps,
                       random_lpips=args.random_lpips, lpips_download=not args.offline,
                       peak=args.peak_tflops, compile=args.compile)
    print(format_table(result))
    if args.json:
        _write_json(args.json, result, indent=2, default=str)


def _write_json(path: str, data: dict, **dumps) -> None:
    """--json PATH: the numbers a command printed, as json.dumps(data, **dumps) writes them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, **dumps))
    print(f"wrote {path}")


def cmd_train_evaluator(args: argparse.Namespace) -> int | None:
    if args.threads:
        torch.set_num_threads(args.threads)
    res = train_evaluator(args.out, steps=args.steps, seed=args.seed, max_minutes=args.minutes, device=args.device,
                          progress=not args.no_progress)
    m, t = res["metrics"], res["train"]
    print(f"trained {t['steps']} steps in {t['seconds']:.0f} s ({t['pool_seconds']:.0f} s rendering) -> {res['path']}")
    print("test split (max_objects=2): " + "  ".join(f"{k} {v:.4f}" for k, v in m.items() if k != "images"))


def cmd_export(args: argparse.Namespace) -> int | None:
    ldms = dict(item.split("=", 1) for item in args.ldm)
    provenance = json.loads(Path(args.provenance).read_text()) if args.provenance else {}
    if not (args.autoencoder or ldms or args.compare or args.f_study or args.halve):
        raise ValueError("nothing to export: pass --autoencoder, --ldm COND=PATH, --compare KEY=PATH, --f-study DIR "
                         "or --halve NAME")
    if args.half and not (args.autoencoder or ldms):
        raise ValueError("--half names files of this export (--ldm COND=PATH, --autoencoder); to convert a file "
                         "already shipped, use --halve NAME")
    if args.autoencoder or ldms:
        full = pretrained.export(args.autoencoder, ldms, args.profile, provenance, root=args.root, half=args.half)
    if args.compare:
        full = pretrained.export_comparison(dict(item.split("=", 1) for item in args.compare), args.profile,
                                            provenance, root=args.root)
    if args.f_study:
        full = pretrained.export_f_study(args.f_study, args.profile, provenance.get("f-study", {}), root=args.root)
    if args.halve:
        full = pretrained.halve(args.profile, [f"ldm-{name}" for name in args.halve], root=args.root,
                                provenance=provenance)
    for name, entry in sorted(full["files"].items()):
        if name.startswith(f"{args.profile}/"):
            print(f"{name}: {entry['bytes'] / 1e6:.2f} MB, sha256 {entry['sha256'][:16]}…")


def cmd_course(args: argparse.Namespace) -> int | None:
    profile = get_profile(args.profile).name
    print(explain_profile(args.profile))
    folder = Path(args.course_dir or REPO_ROOT / "outputs" / "course" / profile)
    record = run_course(profile, folder, args.notebooks, strict=args.strict,
                        results_dir=None if args.no_record else RESULTS_DIR)
    failed = [n for n, r in record["notebooks"].items() if not r["ok"]]
    print(f"course in the {profile} profile: {record['total_minutes']:.1f} min" +
          (f"; failed: {', '.join(failed)}" if failed else "; every notebook ran"))
    return 1 if failed else 0


def cmd_check(args: argparse.Namespace) -> int | None:
    self_check(args.profile, seconds=args.seconds)


def cmd_student(args: argparse.Namespace) -> int | None:
    for path in write_student_edition(args.source, args.out):
        print(f"wrote {path}")


def cmd_experiments(args: argparse.Namespace) -> int | None:
    profile = get_profile(args.profile)
    out = Path(args.out or f"outputs/experiments/{profile.name}")
    for name in list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]:
        rows = run_experiment(name, profile, out, args.checkpoint, seed=args.seed, device=args.device,
                              equal=args.equal, download=not args.offline, factors=args.factors,
                              ae_minutes=args.ae_minutes, ldm_minutes=args.ldm_minutes, ae_steps=args.ae_steps,
                              ldm_steps=args.ldm_steps, ldm_batch=args.ldm_batch, segments=args.segments,
                              nfe=args.nfe, nfe_samples=args.nfe_samples)
        print()
        print(experiment_markdown(name, rows))
    figure = out / "ode_samplers.png" if args.experiment in ("ode-samplers", "all") else None
    print(f"wrote {out / 'results.md'} and {out / 'results.json'}" + (f" and {figure}" if figure else ""))


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
