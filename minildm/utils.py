"""Small helpers every part of minildm shares: device choice, seeding, seeded noise, the checkpoint file format."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

__all__ = ["PRECISIONS", "precision_dtype", "autocast", "get_device", "seed_everything", "randn",
           "rand", "randint", "warmup_cosine", "count_parameters", "DEVICE_ENV", "save_checkpoint",
           "load_checkpoint", "CheckpointError", "UnsafeWeightsError", "checkpoint_digest", "unsafe_tensors",
           "to_plain", "config_from_dict", "MAX_WEIGHT"]

DEVICE_ENV = "MINILDM_DEVICE"
PRECISIONS = ("auto", "fp32", "bf16")


def get_device(preference: str | torch.device | None = None) -> torch.device:
    """Pick the device: an explicit `preference`, else $MINILDM_DEVICE, else CUDA, then MPS, then CPU.

    `preference` may be "cpu", "cuda", "cuda:1", "mps" or "auto" (same as None).
    Asking for a device that is not present is an error rather than a silent CPU fallback.
    """
    if isinstance(preference, torch.device):
        preference = str(preference)
    if preference is None or preference == "auto":
        preference = os.environ.get(DEVICE_ENV) or "auto"
    pref = preference.strip().lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = pref.split(":")[0]
    present = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if kind not in present:
        raise ValueError(f"unknown device {preference!r}; expected auto, cpu, cuda, cuda:N or mps (${DEVICE_ENV} too)")
    if not present[kind]:
        raise RuntimeError(f"device {preference!r} was requested but torch {torch.__version__} (built for CUDA "
                           f"{torch.version.cuda}) sees no {kind.upper()}; use 'cpu' or unset ${DEVICE_ENV}")
    return torch.device(pref)


def precision_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`, or None for plain fp32."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return None
    bf16_ok = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and bf16_ok else None
    if not bf16_ok:
        raise ValueError(f"bf16 needs a CPU or an Ampere+ CUDA GPU, not {device}; use precision 'auto' or 'fp32'")
    return torch.bfloat16


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast for `dtype` on `device`; a no-op context when dtype is None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and all GPUs); return a CPU generator with that seed.

    On CPU this makes every minildm run bit-for-bit repeatable. On GPUs some kernels stay
    non-deterministic unless `torch.use_deterministic_algorithms(True)` is also set.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def _generator_device(generator: torch.Generator | None, device: torch.device | str) -> torch.device | str:
    return generator.device if generator is not None else device


def randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, I) noise drawn on the generator's device (a CPU generator → CPU), then moved to `device`.

    Drawing on the generator's device makes a seeded CPU generator give the same numbers on CPU, CUDA and MPS.
    """
    gen_device = _generator_device(generator, device)
    return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)


def rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """U[0, 1) numbers drawn like `randn`: on the generator's device, then moved to `device`."""
    return torch.rand(tuple(shape), generator=generator, device=_generator_device(generator, device)).to(device)


def randint(high: int, shape: Sequence[int], generator: torch.Generator | None,
            device: torch.device | str) -> torch.Tensor:
    """Integers uniform in {0, …, high − 1} drawn like `randn`: on the generator's device, then moved."""
    gen_device = _generator_device(generator, device)
    return torch.randint(0, high, tuple(shape), generator=generator, device=gen_device).to(device)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, cosine: bool = True) -> float:
    """Learning-rate multiplier: linear warm-up over `warmup_steps`, then constant (cosine=False, the reference)
    or a cosine decay to 0 at `total_steps`."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    if not cosine or step < warmup_steps:
        return warm
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with requires_grad)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# --- Checkpoints -----------------------------------------------------------------------------------------
# A checkpoint is a plain dict of tensors and Python primitives, read with weights_only=True (no pickled code runs):
#     {"kind": "autoencoder" | "ldm" | ..., "config": {...}, "state_dict": {...}, ..., "checksum": "<sha256>"}
# It is written atomically (a crash mid-write leaves the previous one), never with a NaN or absurd weight (a
# diverged run never replaces the last good one), and its checksum is verified on load (a flipped byte is an error).
MAX_WEIGHT = 1e6        # |w| above this in a model's weights means training diverged (trained weights are O(1))
_WHAT_TO_DO = ("Delete it and train again from the previous checkpoint (or from scratch), or download the "
               "pretrained checkpoint again.")


class CheckpointError(ValueError):
    """A checkpoint file that is damaged, truncated, or not a minildm checkpoint."""


class UnsafeWeightsError(RuntimeError):
    """A checkpoint was not written because some of its tensors are NaN/inf or its weights absurdly large."""


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


def save_checkpoint(obj: Mapping[str, Any], path: str | os.PathLike, weights: Sequence[str] = ()) -> Path:
    """Check, checksum and atomically write `obj` to `path`; returns the path.

    Refuses (UnsafeWeightsError, nothing written) when a floating tensor is NaN/inf or, under the top-level
    keys in `weights`, larger than MAX_WEIGHT in magnitude.
    """
    path = Path(path)
    plain = to_plain(dict(obj))
    bad = unsafe_tensors(plain, weights)
    if bad:
        raise UnsafeWeightsError(f"refusing to write a checkpoint whose tensors diverged: {'; '.join(bad)}. Nothing "
                                 f"was written: {path} holds the previous checkpoint, if any.")
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


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    kind: str | None = None) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`, verify its checksum, check its `kind` when one is expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one first or check the path")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # empty, truncated, not a torch file, damaged or foreign pickle: all one failure for the user
        ckpt = None
    readable = isinstance(ckpt, dict) and "state_dict" in ckpt
    stored = ckpt.pop("checksum", None) if readable else None
    if readable and stored is None:
        warnings.warn(f"{path} has no checksum (written by an older minildm), so damage to it cannot be detected; "
                      "it is loaded as it is", stacklevel=2)
    if not readable or stored not in (None, checkpoint_digest(ckpt)):
        raise CheckpointError(f"checkpoint {path} is damaged or not a minildm checkpoint (it cannot be read as a dict "
                              f"with 'config' and 'state_dict' matching the checksum written with it). {_WHAT_TO_DO}")
    if kind is not None and ckpt.get("kind") != kind:
        raise ValueError(f"{path} holds a {ckpt.get('kind')!r} checkpoint, expected {kind!r}")
    return ckpt


# --- Configs -------------------------------------------------------------------------------------------


def config_from_dict(cls: type, d: Mapping[str, Any]):
    """Rebuild a config dataclass from a checkpoint's dict, lists back to tuples. Fields that are not the class's
    own are left out: a checkpoint may store other configs' fields in the same dict (before the configs were split
    by concern, the autoencoder's and the LDM's loss and training fields were stored with their architecture)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields})
