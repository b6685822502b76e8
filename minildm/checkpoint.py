"""Checkpoints that carry their config, are written atomically and load with `weights_only=True`.

A checkpoint is a plain dict of tensors and Python primitives:
    {"kind": "autoencoder" | "ldm" | ..., "config": {...}, "state_dict": {...}, ...anything else}
so `torch.load(path, weights_only=True)` can read it without executing pickled code.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; training stops before anything corrupt is written."""


def check_finite(step: int, **losses: torch.Tensor | float) -> None:
    """Raise NonFiniteLossError naming the step and the offending losses when any is NaN/inf."""
    bad = {}
    for name, value in losses.items():
        v = float(value.detach().float().item() if torch.is_tensor(value) else value)
        if not math.isfinite(v):
            bad[name] = v
    if bad:
        detail = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise NonFiniteLossError(
            f"non-finite loss at step {step}: {detail}. Training stopped; the last checkpoint on disk is "
            "intact. Try a lower learning rate, fp32 instead of bf16, or check the input data."
        )


def to_plain(obj: Any) -> Any:
    """Dataclasses -> dicts, tuples kept, recursively; the form stored in checkpoints."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def save_checkpoint(obj: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write `obj` with torch.save to a temporary file in the same folder, then rename it over `path`.

    The rename is atomic: a crash mid-write leaves the previous checkpoint untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(to_plain(dict(obj)), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    kind: str | None = None) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; check its `kind` when one is expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one first or check the path")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated / not a torch file / unsafe pickle
        raise ValueError(f"could not read checkpoint {path}: {e}") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a minildm checkpoint (expected a dict with 'config' and 'state_dict')")
    if kind is not None and ckpt.get("kind") != kind:
        raise ValueError(f"{path} holds a {ckpt.get('kind')!r} checkpoint, expected {kind!r}")
    return ckpt


def config_from_dict(cls: type, d: Mapping[str, Any]):
    """Rebuild a config dataclass from a checkpoint's dict (lists back to tuples; unknown fields are an error)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ValueError(f"checkpoint config has fields {unknown} unknown to this minildm's {cls.__name__}; "
                         "was it written by a newer version?")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def check_config_matches(saved: Any, current: Any, what: str = "model", ignore: tuple[str, ...] = ()) -> None:
    """Raise a readable error listing every field where a checkpoint's config differs from the current one
    (fields in `ignore`, such as step counts, may differ)."""
    saved, current = to_plain(saved), to_plain(current)
    diffs = []
    for key in sorted((set(saved) | set(current)) - set(ignore)):
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if isinstance(a, list):
            a = tuple(a)
        if isinstance(b, list):
            b = tuple(b)
        if a != b:
            diffs.append(f"  {key}: checkpoint={a!r} current={b!r}")
    if diffs:
        raise ValueError(
            f"the checkpoint's {what} config differs from the one requested:\n" + "\n".join(diffs)
            + "\nBuild the model from the checkpoint's config (e.g. `from_checkpoint`) or retrain."
        )


def rng_state() -> dict[str, Any]:
    """Snapshot of Python's and torch's global RNGs (CPU, and CUDA when present) for exact resume."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
