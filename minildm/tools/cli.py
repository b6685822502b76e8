"""The `minildm` command: every command's arguments, each calling one function of the package (commands.py).

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
import os
import sys

from ..course import pretrained
from ..course.student import STUDENT_DIR
from ..data.datasets import DATASETS
from ..eval.judge import DEFAULT_EVALUATOR_PATH, EvaluatorConfig
from . import commands
from .bench import DEFAULT_SECONDS
from .demo import AE_MINUTES, LDM_MINUTES
from .studies import DEFAULT_CHECKPOINT, EXPERIMENTS

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
    add("info", commands.cmd_info, "show the device and profile minildm would use")

    p = add("demo", commands.cmd_demo, "train a small LDM on Shapes (or reuse it) and write samples + a filmstrip")
    p.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    _common(p, "profile", "device")
    p.add_argument("--ae-minutes", type=_minutes, default=AE_MINUTES,
                   help="time cap for the autoencoder (default: none, the profile's steps decide)")
    p.add_argument("--ldm-minutes", type=_minutes, default=LDM_MINUTES,
                   help="time cap for the diffusion model (default: none; a cap trades prompt accuracy for time)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, default=None, help="fixed CPU thread count (bit-reproducible; "
                   "default: switch between 1 and all cores, whichever trains faster at the moment)")
    p.add_argument("--offline", action="store_true", help="never download (LPIPS weights must be on disk)")

    p = add("preview", commands.cmd_preview, "render a captioned grid of Shapes samples")
    p.add_argument("--out", default="outputs/shapes_preview.png")
    p.add_argument("--resolution", type=_positive_int, default=32)
    p.add_argument("-n", type=_positive_int, default=24)
    p.add_argument("--ncols", type=_positive_int, default=8)

    p = add("bench-data", commands.cmd_bench_data, "measure Shapes rendering speed (images/s)")
    p.add_argument("--resolutions", type=_positive_int, nargs="+", default=[32, 64])
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--seconds", type=_positive_float, default=5.0)
    _common(p, "device")


def _training_commands(add) -> None:
    """train-ae, bench-ae, train-ldm."""
    p = add("train-ae", commands.cmd_train_ae, "train the first-stage autoencoder (KL or VQ)")
    _common(p, "profile", "device", "random-lpips", "data")
    p.add_argument("--kind", choices=("kl", "vq"), default=None, help="override the profile's autoencoder kind")
    p.add_argument("--out", default=None, help="output folder (default runs/ae-<profile>-<kind>)")
    p.add_argument("--steps", type=_positive_int, default=None, help="override the profile's step count")
    p.add_argument("--minutes", type=_positive_float, default=None, help="stop after this many minutes")
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")

    p = add("bench-ae", commands.cmd_bench_ae, "train an autoencoder for N minutes on Shapes, report PSNR/SSIM/LPIPS "
                                               "and shape fidelity by shape and size")
    _common(p, "profile", "device", "random-lpips")
    p.add_argument("--kind", choices=("kl", "vq"), default="kl")
    p.add_argument("--minutes", type=_positive_float, default=10.0)
    p.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    p.add_argument("--no-progress", action="store_true")

    p = add("train-ldm", commands.cmd_train_ldm, "train the latent diffusion model on a trained autoencoder")
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
    p = add("sample", commands.cmd_sample, "sample images from a trained LDM checkpoint")
    _sampling(p)
    p.add_argument("--prompt", default=None, help='e.g. "a red circle in the top left" (text models)')
    p.add_argument("--class", dest="label", type=int, default=None, help="class id, e.g. 0..23 (class models)")
    p.add_argument("--layout", default=None, help='e.g. "red circle@0.1,0.1,0.45,0.45; blue star@0.5,0.5,0.9,0.9"')
    p.add_argument("-n", type=_positive_int, default=8, help="number of samples")
    p.add_argument("--out", default="samples.png")

    p = add("evaluate-ldm", commands.cmd_evaluate_ldm, "prompt accuracy and Shapes-FID of a text-conditional LDM")
    _sampling(p)
    p.add_argument("-n", type=_positive_int, default=200, help="prompts per type (one-object, two-object)")
    p.add_argument("--no-fid", action="store_true", help="skip Shapes-FID")


def _study_commands(add) -> None:
    """bench-ldm, bench, train-evaluator, experiments."""
    p = add("bench-ldm", commands.cmd_bench_ldm, "LDM training steps/s and DDIM sampling images/s")
    _common(p, "profile", "device")
    p.add_argument("--seconds", type=_positive_float, default=20.0)
    p.add_argument("--steps", type=_positive_int, default=50)
    p.add_argument("--sample-batch", type=_positive_int, default=64)

    p = add("bench", commands.cmd_bench, "measure data, autoencoder and LDM training, and DDIM sampling speed "
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
    p.add_argument("--peak-tflops", type=_positive_float, default=None, help="the device's peak for the %% of peak "
                   "column (default: the datasheet value of a known GPU; none on CPU)")
    p.add_argument("--compile", action="store_true", help="add a row with the compiled U-Net (compiling takes minutes)")
    p.add_argument("--plan", default=None, metavar="PROFILE", help="measure nothing: predict PROFILE's course training "
                   "time from counted FLOPs at --assume-util of --peak-tflops (default: an H100's bf16 peak)")
    p.add_argument("--assume-util", type=_positive_float, default=None, help="assumed share of the peak for --plan")

    p = add("train-evaluator", commands.cmd_train_evaluator, "train the Shapes evaluator (Shapes-FID features, prompt accuracy)")
    p.add_argument("--out", default=str(DEFAULT_EVALUATOR_PATH), help="checkpoint path (default: %(default)s)")
    p.add_argument("--steps", type=_positive_int, default=None, help=f"training steps (default {EvaluatorConfig.steps})")
    p.add_argument("--seed", type=int, default=None, help=f"seed (default {EvaluatorConfig.seed})")
    p.add_argument("--minutes", type=_positive_float, default=None, help="stop early after this many minutes")
    _common(p, "device")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")

    p = add("course", commands.cmd_course, "run the course's notebooks in order in one profile, timing each")
    p.add_argument("--profile", default=None, help=PROFILE_HELP)
    p.add_argument("--strict", action="store_true", help="a failed claim stops the notebook (and the run)")
    p.add_argument("--notebooks", nargs="*", default=None, help="only these (prefixes: 00 03 …)")
    p.add_argument("--course-dir", default=None, help="the course folder (default outputs/course/<profile>)")
    p.add_argument("--no-record", action="store_true", help="do not write docs/course/<profile>.json")

    p = add("check", commands.cmd_check, "before a lab: device, LPIPS weights, shipped checkpoints, expected run times here")
    p.add_argument("--profile", default=None, help=PROFILE_HELP)
    p.add_argument("--seconds", type=_positive_float, default=10.0, help="length of the speed probe")

    p = add("student", commands.cmd_student, "write the student edition of the notebooks (solutions taken out)")
    p.add_argument("--source", default=str(STUDENT_DIR.parent), help="the course notebooks (default: %(default)s)")
    p.add_argument("--out", default=str(STUDENT_DIR), help="where to write (default: %(default)s)")

    p = add("export-pretrained", commands.cmd_export, "write the shipped inference checkpoints (safetensors + manifest)")
    p.add_argument("--profile", required=True, help="the profile the checkpoints were trained in")
    p.add_argument("--autoencoder", required=True, help="autoencoder.pt from `minildm train-ae`")
    p.add_argument("--ldm", nargs="*", default=[], metavar="COND=PATH", help="e.g. text=runs/ldm-cpu-text/ldm.pt")
    p.add_argument("--provenance", default=None, help="JSON file: per file, the command, seed, minutes, metrics")
    p.add_argument("--root", default=str(pretrained.DIR), help="where to write (default: %(default)s)")

    p = add("experiments", commands.cmd_experiments, "the paper's experiments at mini scale; writes results.md/.json")
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
