"""The chores both training loops share (stages.py writes the loops themselves): resume, atomic checkpoints that
never hold diverged weights, the NaN guard, a progress bar, losses read back every `sync_every` steps, a time cap,
and several processes (distributed.py).

Reading a loss back to the host makes the host wait until the device has finished everything queued before it.
On a CPU that costs nothing, so every step's loss is read and checked before the update. On a GPU the losses stay
on the device and are read every `sync_every` steps in one transfer (speed.SpeedConfig.sync_every); a NaN is then
caught up to that many steps late, after it may have reached the weights in memory, but still before any
checkpoint could hold it (every save checks every tensor). With a callback (a notebook watching the run) every
step is read, so the callback sees each step as it happens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from ..utils import UnsafeWeightsError, load_checkpoint, save_checkpoint, to_plain
from .distributed import Dist
from .speed import SpeedConfig, sync_interval

__all__ = ["Run", "Callback", "NonFiniteLossError", "with_steps", "fused_optimizer", "linear_decay",
           "remove_stale_temporaries", "check_config_matches", "rng_state", "set_rng_state"]

Callback = Callable[[int, dict, "Run"], None]
ADVICE = "Try a lower learning rate, fp32 instead of bf16, or check the input data."
GUARDED = ("loss", "d_loss")          # the losses whose NaN/inf stops a run


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; training stops (before the update when losses are read every step)."""


def with_steps(train_config: Any, steps: Any) -> Any:
    """`train_config` with `steps` training steps (None: its own), which must be a positive whole number."""
    steps = train_config.steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive number of training steps, got {steps!r}")
    return dataclasses.replace(train_config, steps=steps)


def fused_optimizer(device: torch.device | str) -> dict:
    """Keyword arguments that select torch's fused Adam/AdamW kernel where it exists (CUDA; the CPU from torch
    2.4): the same update rule in one kernel for all parameters, ~5 % faster for the cpu profile's LDM step."""
    kind = torch.device(device).type
    return {"fused": True} if kind == "cuda" or (kind == "cpu" and torch.__version__ >= (2, 4)) else {}


def linear_decay(step: int, total_steps: int, fraction: float) -> float:
    """Learning-rate multiplier: 1, then over the last `fraction` of `total_steps` a straight line to 0 (step
    total_steps would get 0; the last step taken gets 1/(fraction·total_steps)). fraction 0: always 1."""
    start = total_steps * (1.0 - fraction)
    if fraction <= 0 or step < start:
        return 1.0
    return max(0.0, (total_steps - step) / (total_steps - start))


def remove_stale_temporaries(folder: str | os.PathLike, name: str) -> list[Path]:
    """Delete the temporary files that killed writes of checkpoint `name` left in `folder` (.name.XXXX.tmp)."""
    folder = Path(folder)
    stale = sorted(folder.glob(f".{name}.*.tmp")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def check_config_matches(saved: Any, current: Any, what: str = "model", ignore: tuple[str, ...] = ()) -> None:
    """Raise a readable error listing every field where a checkpoint's config differs from the current one
    (fields in `ignore`, such as step counts, may differ)."""
    saved, current = to_plain(saved), to_plain(current)
    value = lambda d, k: tuple(d[k]) if isinstance(d.get(k), list) else d.get(k, "<missing>")  # noqa: E731
    diffs = [f"  {k}: checkpoint={value(saved, k)!r} current={value(current, k)!r}"
             for k in sorted((set(saved) | set(current)) - set(ignore)) if value(saved, k) != value(current, k)]
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


class Run:
    """One training run in `folder`, for its loop and for a callback(step, record, run):

        model, trained, ema   the model, the modules its optimizer moves (all of it, or the LDM's denoiser) and
                              their EMA (None without one); `with run.ema_weights() as model:` swaps the EMA in
        history, step         one record ({"step", "loss", …}) per step so far; the steps done
        folder, path          where the checkpoint lives

    `states` names what the checkpoint keeps of the run ({key: module, optimizer, scheduler or EMA; None when
    absent}): `states()` gives their state dicts, `resume` loads them back. Only process 0 (`dist.main`) writes and
    shows progress; every process reads losses back together. A callback makes the run read every step's loss.
    """

    def __init__(self, folder: str | os.PathLike, name: str, kind: str, model: nn.Module, trained: nn.Module,
                 states: dict[str, Any], *, weights: tuple[str, ...], dist: Dist, device: torch.device,
                 speed: SpeedConfig, callback: Callback | None, label: str, shown: tuple[str, ...] = ("loss",),
                 progress: bool = True):
        self.folder, self.kind, self.weights = Path(folder), kind, weights
        self.path = self.folder / name
        self.model, self.trained, self.holders, self.ema = model, trained, states, states.get("ema")
        self.dist, self.device, self.label, self.shown, self.progress = dist, device, label, shown, progress
        self.sync_every = 1 if callback else sync_interval(device, speed)   # a callback sees every step
        self.step = self.start = 0
        self.history: list[dict] = []
        self.saved_at: int | None = None          # the step of the checkpoint on disk
        self.elapsed_before, self.stopped_early, self.pending = 0.0, False, []
        if dist.main:
            remove_stale_temporaries(self.folder, name)    # left by writes that a kill interrupted

    def states(self) -> dict[str, Any]:
        return {key: None if h is None else h.state_dict() for key, h in self.holders.items()}

    def resume(self, configs: Mapping[str, Any], what: str, ignore: tuple[str, ...]) -> dict | None:
        """Continue from the folder's checkpoint if there is one (returned; None if there is none): its configs
        must match `configs` ({checkpoint key: config}; but for the fields in `ignore`); the states and the random
        state are put back. The configs are compared field by field, all together: a checkpoint written before
        the configs were split stores every field under "config", and still resumes."""
        if not self.path.is_file():
            return None
        # on the CPU: each holder moves what it loads to its own device, and torch.set_rng_state takes CPU tensors
        ckpt = load_checkpoint(self.path, kind=self.kind)
        saved = {k: v for key in configs for k, v in to_plain(ckpt.get(key) or {}).items()}
        # a field added to a config after the checkpoint was written counts as its default, which that run used
        # (LDMConfig.process: a run from before flow matching is a diffusion run)
        saved = {**{f.name: to_plain(f.default) for c in configs.values() if dataclasses.is_dataclass(c)
                    for f in dataclasses.fields(c) if f.default is not dataclasses.MISSING}, **saved}
        current = {k: v for config in configs.values() for k, v in to_plain(config).items()}
        check_config_matches(saved, current, what=what, ignore=ignore)
        for key, holder in self.holders.items():
            if holder is not None and ckpt.get(key) is not None:
                holder.load_state_dict(ckpt[key])
        set_rng_state(ckpt["rng"])
        self.step = self.start = self.saved_at = int(ckpt["step"])
        self.history, self.elapsed_before = list(ckpt["history"]), float(ckpt.get("elapsed", 0.0))
        return ckpt

    def begin(self, steps: int, max_minutes: float | None) -> None:
        """Start the clock (stop after `max_minutes`, None: never) and the progress bar of a run to `steps`."""
        self.steps, self.t0 = steps, time.perf_counter()
        self.deadline = None if max_minutes is None else self.t0 + 60.0 * max_minutes
        self.bar = tqdm(total=steps, initial=self.step, desc=self.label, mininterval=1.0, dynamic_ncols=True,
                        disable=not (self.progress and self.dist.main))

    def out_of_time(self) -> bool:
        """Whether the time cap is reached (asked only when every step so far is read back, on every process)."""
        if self.pending or self.deadline is None:
            return False
        self.stopped_early = self.dist.any(time.perf_counter() >= self.deadline, self.device)
        return self.stopped_early

    def guard(self, step: int, **losses: torch.Tensor) -> None:
        """When losses are read every step: stop before the update if one is NaN/inf. With several processes it
        checks their average, so all of them stop together (one alone would leave the others waiting for it)."""
        if self.sync_every == 1:
            values = self.dist.mean(torch.stack([v.detach().float().reshape(()) for v in losses.values()]))
            self._check_finite(step, dict(zip(losses, values.tolist())))

    def log(self, step: int, record: dict[str, Any], now: bool = False) -> None:
        """Keep step `step`'s record. Every `sync_every` steps, at the last step and when `now` (a checkpoint or a
        validation is due), read the pending records back in one transfer (averaged over the processes), check
        them for NaN/inf and add them to the history and the progress bar."""
        self.step = step
        self.pending.append((step, record))
        if not (now or step % self.sync_every == 0 or step == self.steps):
            return
        tensors = [v.detach().float().reshape(()) for _, r in self.pending for v in r.values() if torch.is_tensor(v)]
        values = iter(self.dist.mean(torch.stack(tensors)).tolist() if tensors else [])
        for k, r in self.pending:
            r = {"step": k, **{n: next(values) if torch.is_tensor(v) else float(v) for n, v in r.items()}}
            self._check_finite(k - 1, {n: v for n, v in r.items() if n in GUARDED})
            self.history.append(r)
            self.bar.update(1)
            self.bar.set_postfix({n: f"{v:.3g}" for n, v in r.items() if n in self.shown}, refresh=False)
        self.pending = []

    def save(self, state: dict[str, Any]) -> None:
        """Write the checkpoint (process 0, atomically): `state` with the step, the history, the random state and
        the time trained. Diverged weights (NaN/inf or absurdly large) are refused and the old checkpoint kept."""
        if self.dist.main:
            state = {"kind": self.kind, **state, "step": self.step, "rng": rng_state(), "history": self.history,
                     "elapsed": self.elapsed_before + time.perf_counter() - self.t0}
            try:
                save_checkpoint(state, self.path, weights=self.weights)
            except UnsafeWeightsError as e:
                previous = f" The previous checkpoint is from step {self.saved_at}." if self.saved_at is not None else ""
                raise UnsafeWeightsError(f"training diverged after step {self.step}: {e}{previous} Try a lower "
                                         "learning rate.") from None
        self.saved_at = self.step

    def finish(self, state: dict[str, Any], changed: bool = False) -> dict[str, Any]:
        """The last checkpoint (unless a finished run was only resumed and nothing `changed`) and the run's summary:
        {"path", "history", "step", "minutes", "stopped_early"}."""
        self.bar.close()
        if self.step != self.start or changed or self.saved_at is None:
            self.save(state)
        minutes = (self.elapsed_before + time.perf_counter() - self.t0) / 60
        return {"path": self.path, "history": self.history, "step": self.step, "minutes": minutes,
                "stopped_early": self.stopped_early}

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[nn.Module]:
        """The model with its EMA weights (raw weights if there is no EMA), in eval mode; put back afterwards."""
        with self.ema.applied_to(self.trained) if self.ema is not None else contextlib.nullcontext():
            self.trained.eval()
            try:
                yield self.model
            finally:
                self.trained.train()

    def _check_finite(self, step: int, losses: dict[str, float]) -> None:
        bad = ", ".join(f"{k}={v}" for k, v in losses.items() if not math.isfinite(v))
        if bad:
            where = (f"the last checkpoint (step {self.saved_at}) at {self.path} is intact" if self.saved_at is not None
                     else "no checkpoint was written before it")
            raise NonFiniteLossError(f"non-finite loss at step {step}: {bad}. Training stopped; {where}. {ADVICE}")
