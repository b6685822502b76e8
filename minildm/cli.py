"""The `minildm` command: `demo`, `info`, `preview`, `bench-data`, and the commands the stage modules
register (`train-ae`, `bench-ae`, `train-ldm`, `sample`, `evaluate-ldm`, `bench-ldm`, `train-evaluator`,
`bench`, `experiments`)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Modules that add their own subcommands through `register_cli(subparsers)`.
_COMMAND_MODULES = ("minildm.train_ae", "minildm.train_ldm", "minildm.evaluation", "minildm.bench",
                    "minildm.experiments")


def _cmd_info(args: argparse.Namespace) -> int:
    import torch

    from .profiles import PROFILES, default_profile_name
    from .utils import get_device

    print(f"minildm {__import__('minildm').__version__}, torch {torch.__version__}")
    print(f"device: {get_device()} (override with $MINILDM_DEVICE)")
    print(f"profile: {default_profile_name()} (override with $MINILDM_PROFILE; available: {', '.join(PROFILES)})")
    return 0


def _cmd_bench_data(args: argparse.Namespace) -> int:
    import torch

    from .data import benchmark
    from .utils import get_device

    device = get_device(args.device)
    print(f"Shapes rendering on {device}, torch threads={torch.get_num_threads()}, batch {args.batch_size}")
    for res in args.resolutions:
        rate = benchmark(res, batch_size=args.batch_size, seconds=args.seconds, device=device)
        print(f"  {res}x{res}: {rate:,.0f} images/s")
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    from .data import ShapesDataset
    from .viz import image_grid, save_figure

    ds = ShapesDataset("train", resolution=args.resolution)
    b = ds.batch(range(args.n))
    fig = image_grid(b["image"], b["caption"], ncols=args.ncols,
                     title=f"Shapes {args.resolution}x{args.resolution}: samples 0-{args.n - 1} of the train split")
    path = save_figure(fig, args.out)
    print(f"wrote {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """The README's main job: train both stages (or reuse checkpoints) and write samples + a filmstrip."""
    from .demo import run_demo

    run_demo(args.out, profile=args.profile, device=args.device, ae_minutes=args.ae_minutes,
             ldm_minutes=args.ldm_minutes, seed=args.seed, download=not args.offline)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .demo import AE_MINUTES, LDM_MINUTES

    parser = argparse.ArgumentParser(prog="minildm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="show the device and profile minildm would use")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="train a small LDM on Shapes (or reuse it) and write samples + a filmstrip")
    p.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    p.add_argument("--profile", default=None, help="ci, cpu or gpu (default: $MINILDM_PROFILE or by hardware)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--ae-minutes", type=float, default=AE_MINUTES,
                   help=f"time cap for the autoencoder (default {AE_MINUTES:g})")
    p.add_argument("--ldm-minutes", type=float, default=LDM_MINUTES,
                   help=f"time cap for the diffusion model (default {LDM_MINUTES:g})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--offline", action="store_true", help="never download (LPIPS weights must be on disk)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("preview", help="render a captioned grid of Shapes samples")
    p.add_argument("--out", default="outputs/shapes_preview.png")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("-n", type=int, default=24)
    p.add_argument("--ncols", type=int, default=8)
    p.set_defaults(func=_cmd_preview)

    p = sub.add_parser("bench-data", help="measure Shapes rendering speed (images/s)")
    p.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    p.set_defaults(func=_cmd_bench_data)

    for name in _COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        if os.environ.get("MINILDM_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
