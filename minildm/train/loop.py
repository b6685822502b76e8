"""The training loop both stages share (train.py defines their steps): resume, a time cap, a NaN guard, atomic
checkpoints that never hold diverged weights, a progress bar, a callback after every step, and several processes.

Reading a loss back to the host makes the host wait until the device has finished everything queued before it.
On a CPU that costs nothing, so every step's loss is read and checked before the update. On a GPU the losses stay
on the device and are read every `run.sync_every` steps in one transfer (speed.SpeedConfig.sync_every); a NaN is
then caught up to that many steps late, after it may have reached the weights in memory, but still before any
checkpoint could hold it (every save checks every tensor). With a callback (a notebook watching the run) every
step is read, so the callback sees each step as it happens.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..utils import (
    UnsafeWeightsError,
    check_config_matches,
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .distributed import Dist

__all__ = ["fit", "NonFiniteLossError", "check_finite", "guard", "Callback"]

Callback = Callable[[int, dict, Any], None]
ONE_PROCESS = Dist()


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; training stops (before the update when losses are read every step)."""


def check_finite(step: int, **losses: torch.Tensor | float) -> None:
    """Raise NonFiniteLossError naming the step and the offending losses when any is NaN/inf."""
    values = {k: float(v.detach().float().item() if torch.is_tensor(v) else v) for k, v in losses.items()}
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(f"non-finite loss at step {step}: " + ", ".join(f"{k}={v}" for k, v in bad.items()))


def guard(run: Any, step: int, **losses: torch.Tensor) -> None:
    """The check a run's step makes before its update when losses are read every step. With several processes
    it checks their average, so that all of them stop together (one stopping alone would leave the others
    waiting for it in the gradient all-reduce)."""
    if getattr(run, "sync_every", 1) != 1:
        return
    d = getattr(run, "dist", ONE_PROCESS)
    if d.active:
        values = d.mean(torch.stack([v.detach().float().reshape(()) for v in losses.values()]))
        losses = dict(zip(losses, values))
    check_finite(step, **losses)


def _positive_steps(steps: Any, what: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{what} must be a positive number of training steps, got {steps!r}")
    return steps


def _read_back(pending: list[tuple[int, dict]], d: Dist, guarded: tuple[str, ...]) -> list[dict]:
    """The records of the pending steps as plain floats: every value in one transfer (averaged over the
    processes); raises NonFiniteLossError at the first step whose guarded losses are not finite."""
    tensors = [v.detach().float().reshape(()) for _, logs in pending for v in logs.values() if torch.is_tensor(v)]
    values = iter(d.mean(torch.stack(tensors)).tolist() if tensors else [])   # plain numbers pass through as they are
    records = []
    for step, logs in pending:
        record = {"step": step, **{k: next(values) if torch.is_tensor(v) else float(v) for k, v in logs.items()}}
        check_finite(step - 1, **{k: v for k, v in record.items() if k in guarded})
        records.append(record)
    return records


def fit(run: Any, folder: str | os.PathLike, steps: int, *, max_minutes: float | None = None, resume: bool = True,
        checkpoint_every: int = 0, eval_every: int = 0, callback: Callback | None = None,
        progress: bool = True) -> dict[str, Any]:
    """Train `run` (an AutoencoderTraining or LatentDiffusionTraining) to `steps` steps in `folder`.

    Resumes from folder/<run.checkpoint_name> when `resume` and it exists (its config must match, except
    run.resumable fields); stops after `max_minutes` of training (a checkpoint is written either way);
    evaluates every `eval_every` steps and at the end (run.evaluate, e.g. validation PSNR); writes a
    checkpoint every `checkpoint_every` steps and at the end; calls `callback(step, record, run)` after each
    step. A NaN/inf loss stops training (see the module docstring); a checkpoint with NaN/inf or diverged
    weights is never written. With several processes (run.dist) only process 0 writes, shows progress and calls
    the callback. Returns {"path", "history", "step", "minutes", "stopped_early"}.
    """
    steps = _positive_steps(steps)
    folder = Path(folder)
    path = folder / run.checkpoint_name
    d: Dist = getattr(run, "dist", ONE_PROCESS)
    sync = 1 if callback is not None else max(1, getattr(run, "sync_every", 1))
    run.sync_every = sync
    if d.main:
        remove_stale_temporaries(folder, run.checkpoint_name)  # left by writes that a kill interrupted
    resumed = resume and path.is_file()
    step, history, elapsed_before = _resume(run, path) if resumed else (0, [], 0.0)
    saved_at = step if resumed else None
    run.start(step, steps, resumed)
    start_step = step

    def save() -> None:
        nonlocal saved_at
        if d.main:
            state = {"kind": run.kind, **run.state_dict(), "step": step, "rng": rng_state(), "history": history,
                     "elapsed": elapsed_before + time.perf_counter() - t0}
            try:
                save_checkpoint(state, path, weights=run.weight_keys)
            except UnsafeWeightsError as e:
                previous = f" The previous checkpoint is from step {saved_at}." if saved_at is not None else ""
                raise UnsafeWeightsError(f"training diverged after step {step}: {e}{previous} Try a lower learning "
                                         "rate.") from None
        saved_at = step

    t0 = time.perf_counter()
    deadline = None if max_minutes is None else t0 + 60.0 * max_minutes
    stopped_early, pending = False, []
    bar = tqdm(total=steps, initial=step, desc=run.name, disable=not (progress and d.main), mininterval=1.0,
               dynamic_ncols=True)
    while step < steps:
        if not pending and deadline is not None and d.any(time.perf_counter() >= deadline, run.device):
            stopped_early = True
            break
        try:
            pending.append((step + 1, run.step(step)))
            step += 1
            due = (step % sync == 0 or step == steps or (eval_every and step % eval_every == 0)
                   or (checkpoint_every and step % checkpoint_every == 0) or _wants_record(run, step))
            records = _read_back(pending, d, getattr(run, "guarded", ("loss",))) if due else []
        except NonFiniteLossError as e:
            raise _stopped(e, run, path, saved_at) from None
        if due:
            pending = []
        for record in records:
            k = record["step"]
            if eval_every and (k % eval_every == 0 or k == steps):
                record.update(run.evaluate())
            history.append(record)
            if checkpoint_every and k % checkpoint_every == 0:
                save()
            run.after_step(k, record)
            if callback is not None and d.main:
                callback(k, record, run)
            bar.update(1)
            bar.set_postfix({n: f"{v:.3g}" for n, v in record.items() if n in run.shown}, refresh=False)
    bar.close()
    evaluated = eval_every and stopped_early and history and history[-1]["step"] == step \
        and not _has_eval(history[-1], run)
    if evaluated:
        history[-1].update(run.evaluate())                       # stopped by the time cap: evaluate what we have
    if step != start_step or evaluated or saved_at is None:      # a finished run that was only resumed writes nothing
        save()
    minutes = (elapsed_before + time.perf_counter() - t0) / 60
    return {"path": path, "history": history, "step": step, "minutes": minutes, "stopped_early": stopped_early}


def _stopped(e: NonFiniteLossError, run: Any, path: Path, saved_at: int | None) -> NonFiniteLossError:
    where = (f"the last checkpoint (step {saved_at}) at {path} is intact" if saved_at is not None
             else "no checkpoint was written before it")
    return NonFiniteLossError(f"{e}. Training stopped; {where}. {run.advice}")


def _resume(run: Any, path: Path) -> tuple[int, list[dict], float]:
    """Load a run's checkpoint into it (its config must match, except run.resumable fields) and the random state;
    returns (step, history, seconds of training before)."""
    ckpt = load_checkpoint(path, map_location=run.device, kind=run.kind)
    check_config_matches(ckpt["config"], run.config, what=run.what, ignore=run.resumable)
    run.load_state(ckpt)
    set_rng_state(ckpt["rng"])
    return int(ckpt["step"]), list(ckpt["history"]), float(ckpt.get("elapsed", 0.0))


def _wants_record(run: Any, step: int) -> bool:
    """Whether the run's after_step needs this step's weights (e.g. it samples), so the losses are read now."""
    return bool(getattr(run, "wants_record", None) and run.wants_record(step))


def _has_eval(record: dict, run: Any) -> bool:
    return any(k in record for k in run.eval_keys)
