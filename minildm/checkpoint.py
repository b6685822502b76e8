"""Checkpoints that carry their config, are written atomically, cannot hold NaN weights, and are verified on load.

A checkpoint is a plain dict of tensors and Python primitives:
    {"kind": "autoencoder" | "ldm" | ..., "config": {...}, "state_dict": {...}, ..., "checksum": "<sha256>"}

  * `torch.load(path, weights_only=True)` reads it: no pickled code runs.
  * `save_checkpoint` writes a temporary file in the same folder, fsyncs it and renames it over the old one,
    so a crash mid-write leaves the previous checkpoint untouched. It refuses to write a checkpoint with a NaN
    or infinite tensor (or model weights of absurd size): a diverged run never replaces the last good one.
  * the checksum is a SHA-256 over every value; `load_checkpoint` recomputes it, so a flipped byte is a clear
    error instead of a silently wrong weight. Every failure to read says which file, what is wrong, and what
    to do about it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import random
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError", "UnsafeWeightsError", "checkpoint_digest",
           "unsafe_tensors", "remove_stale_temporaries", "to_plain", "config_from_dict", "check_config_matches",
           "rng_state", "set_rng_state", "MAX_WEIGHT"]

MAX_WEIGHT = 1e6        # |w| above this in a model's weights means training diverged (trained weights are O(1))
_WHAT_TO_DO = ("Delete it and train again from the previous checkpoint (or from scratch), or download the "
               "pretrained checkpoint again.")


class CheckpointError(ValueError):
    """A checkpoint file that is damaged, truncated, or not a minildm checkpoint."""


class UnsafeWeightsError(RuntimeError):
    """A checkpoint was not written because some of its tensors are NaN/inf or its weights absurdly large."""


# --- What a checkpoint holds --------------------------------------------------------------------------------


def to_plain(obj: Any) -> Any:
    """Dataclasses -> dicts, tuples kept, recursively; the form stored in checkpoints."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def _items(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every leaf, in a fixed order: dict keys sorted, list items in order."""
    if isinstance(obj, Mapping):
        for k in sorted(obj, key=str):
            yield from _items(obj[k], f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        yield f"{prefix}:[{len(obj)}]", None
        for i, v in enumerate(obj):
            yield from _items(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def checkpoint_digest(obj: Any) -> str:
    """SHA-256 over every key and value of a checkpoint dict (tensors by dtype, shape and raw bytes)."""
    h = hashlib.sha256()
    for path, value in _items({k: v for k, v in obj.items() if k != "checksum"}):
        h.update(path.encode())
        if torch.is_tensor(value):
            t = value.detach().contiguous().cpu()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def unsafe_tensors(obj: Any, weights: Sequence[str] = (), max_weight: float = MAX_WEIGHT) -> list[str]:
    """Names of floating-point tensors in `obj` that are not finite, and of tensors under the top-level keys
    `weights` (model state dicts) whose largest |value| exceeds `max_weight`; with the offending value."""
    bad = []
    for path, t in _items(obj):
        if not (torch.is_tensor(t) and t.is_floating_point() and t.numel()):
            continue
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad.append(f"{path} ({int((~finite).sum())} of {t.numel()} values NaN/inf)")
        elif path.split(".")[0] in weights and float(t.abs().max()) > max_weight:
            bad.append(f"{path} (max |w| = {float(t.abs().max()):.3g})")
    return bad


# --- Writing and reading ------------------------------------------------------------------------------------


def save_checkpoint(obj: Mapping[str, Any], path: str | os.PathLike, weights: Sequence[str] = ()) -> Path:
    """Check, checksum and atomically write `obj` to `path`; returns the path.

    Refuses (UnsafeWeightsError, nothing written) when a floating tensor is NaN/inf or, under the top-level
    keys in `weights`, larger than MAX_WEIGHT in magnitude.
    """
    path = Path(path)
    plain = to_plain(dict(obj))
    bad = unsafe_tensors(plain, weights)
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        kept = (f"{path} still holds the previous checkpoint" if path.is_file()
                else f"no checkpoint exists at {path} yet")
        raise UnsafeWeightsError(f"refusing to write a checkpoint whose tensors diverged: {shown}. Nothing was "
                                 f"written; {kept}.")
    plain["checksum"] = checkpoint_digest(plain)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(plain, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())           # mkstemp makes it private; give it a normal file's permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder: str | os.PathLike, name: str) -> list[Path]:
    """Delete the temporary files that killed writes of checkpoint `name` left in `folder` (.name.XXXX.tmp)."""
    folder = Path(folder)
    stale = sorted(folder.glob(f".{name}.*.tmp")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _read_error(path: Path, e: Exception) -> str:
    """What went wrong reading `path`, in words (never torch's advice to load with weights_only=False)."""
    if isinstance(e, (zipfile.BadZipFile, EOFError)) or "zip archive" in str(e) or "central directory" in str(e):
        return "it is not a complete torch checkpoint (truncated, damaged, or another kind of file)"
    if isinstance(e, pickle.UnpicklingError) or "weights_only" in str(e) or "Unpickl" in type(e).__name__:
        return "its contents cannot be read as a minildm checkpoint (damaged, or written by other software)"
    return f"it cannot be read ({type(e).__name__})"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    kind: str | None = None) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`, verify its checksum, check its `kind` when one is expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one first or check the path")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a write that never finished or a failed "
                              f"copy. {_WHAT_TO_DO}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated / not a torch file / damaged or foreign pickle
        raise CheckpointError(f"checkpoint {path} is damaged or not a minildm checkpoint: {_read_error(path, e)}. "
                              f"{_WHAT_TO_DO}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a minildm checkpoint (expected a dict with 'config' and 'state_dict'). "
                              f"{_WHAT_TO_DO}")
    stored = ckpt.pop("checksum", None)
    if stored is None:
        warnings.warn(f"{path} has no checksum (written by an older minildm), so damage to it cannot be detected; "
                      "it is loaded as it is", stacklevel=2)
    elif stored != checkpoint_digest(ckpt):
        raise CheckpointError(f"checkpoint {path} is damaged: its contents no longer match the checksum written "
                              f"with it (some bytes changed after it was saved). {_WHAT_TO_DO}")
    if kind is not None and ckpt.get("kind") != kind:
        raise ValueError(f"{path} holds a {ckpt.get('kind')!r} checkpoint, expected {kind!r}")
    return _to_device(ckpt, torch.device(map_location)) if torch.device(map_location).type != "cpu" else ckpt


def _to_device(obj: Any, device: torch.device) -> Any:
    if torch.is_tensor(obj):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


# --- Configs and random state -------------------------------------------------------------------------------


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
            + "\nUse the same profile and options as the run that wrote it, or start over in a new folder "
              "(CLI: --out NEW_FOLDER or --no-resume). To just use the model, load it with its own config "
              "(load_autoencoder / LatentDiffusion.from_checkpoint)."
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
