"""How fast training runs, without changing what it computes: one `SpeedConfig` per profile (profiles.py).

    precision      "auto" (bf16 autocast on CUDA GPUs that support it, else fp32), "fp32" or "bf16" (CPU too).
                   Under autocast the convolutions and matmuls run in bf16; normalizations, the softmax of
                   attention, the losses, the decoder's output and LPIPS stay in fp32 (see nn.GroupNorm32).
    compile        torch.compile the U-Net and the autoencoder's encoder and decoder; skipped with a message
                   where it cannot work (no C compiler for the CPU backend, Windows, Apple MPS).
    channels_last  NHWC memory layout for the convolutions (faster on GPUs with tensor cores).
    tf32           TF32 matmuls and convolutions on CUDA (Ampere or newer): fp32 range, 10-bit mantissa.
    sync_every     read the losses back to the host every this many steps (0: every step on CPU, where it costs
                   nothing, every 25 steps on a GPU, where each read waits for the device to drain its queue).
    ae_minutes, ldm_minutes   opt-in time caps of every training run in this profile unless the caller gives
                   its own max_minutes (None: no cap, the step counts decide). No shipped profile sets one.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..utils import PRECISIONS, autocast, precision_dtype

__all__ = ["SpeedConfig", "PRECISIONS", "precision_dtype", "autocast", "sync_interval", "compile_unsupported",
           "maybe_compile", "apply_speed", "ThreadGovernor", "NO_COMPILE_ENV"]

NO_COMPILE_ENV = "MINILDM_NO_COMPILE"     # set to 1 to switch torch.compile off everywhere (e.g. while debugging)
GPU_SYNC_EVERY = 25


@dataclass(frozen=True)
class SpeedConfig:
    precision: str = "auto"
    compile: bool = False
    channels_last: bool = False
    tf32: bool = True
    sync_every: int = 0
    ae_minutes: float | None = None
    ldm_minutes: float | None = None

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"SpeedConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if isinstance(self.sync_every, bool) or not isinstance(self.sync_every, int) or self.sync_every < 0:
            raise ValueError(f"SpeedConfig.sync_every must be 0 (automatic) or a positive number of steps, "
                             f"got {self.sync_every!r}")
        for name in ("ae_minutes", "ldm_minutes"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"SpeedConfig.{name} must be None (no cap) or a positive number of minutes, "
                                 f"got {value!r}")


def sync_interval(device: torch.device | str, speed: SpeedConfig) -> int:
    """How many steps pass between reads of the losses (see the module docstring)."""
    if speed.sync_every:
        return speed.sync_every
    return 1 if torch.device(device).type == "cpu" else GPU_SYNC_EVERY


def compile_unsupported(device: torch.device | str | None = None) -> str | None:
    """Why torch.compile cannot run here, or None when it can."""
    if os.environ.get(NO_COMPILE_ENV, "").strip() not in ("", "0"):
        return f"${NO_COMPILE_ENV} is set"
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    kind = torch.device(device).type if device is not None else "cpu"
    if kind == "mps":
        return "torch.compile does not support Apple MPS well yet"
    if platform.system() == "Windows":
        return "torch.compile's default backend needs Triton/a C++ toolchain that Windows setups rarely have"
    if kind == "cpu" and not any(shutil.which(cc) for cc in (os.environ.get("CXX", ""), "g++", "c++", "clang++")
                                 if cc):
        return "no C++ compiler found (torch.compile's CPU backend generates C++); install gcc or clang"
    return None


def maybe_compile(module: nn.Module, enabled: bool = True, what: str = "model",
                  device: torch.device | str | None = None) -> bool:
    """`module.compile()` in place (state_dict keys unchanged) when enabled and supported; otherwise
    print why it was skipped and leave the module eager (same results). Returns whether it was compiled."""
    if not enabled:
        return False
    reason = compile_unsupported(device)
    if reason is not None:
        print(f"torch.compile skipped for the {what}: {reason}; running eagerly (same results, slower)")
        return False
    module.compile()
    return True


def apply_speed(modules: dict[str, nn.Module], speed: SpeedConfig, device: torch.device) -> None:
    """Apply a SpeedConfig's switches to the named modules (TF32, channels-last, compile)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = speed.tf32
        torch.backends.cudnn.allow_tf32 = speed.tf32
    for what, module in modules.items():
        if speed.channels_last:
            module.to(memory_format=torch.channels_last)
        maybe_compile(module, speed.compile, what, device)


class ThreadGovernor:
    """A training callback that keeps a CPU run on whichever thread count trains faster right now: when another
    program holds a core, every op of a two-thread run waits for the thread that lost it (docs/design-notes.md,
    "Threads on a busy CPU", has the measurements).

    Trials train `window` steps at each candidate count (1 and `most`), keep the faster and record the count in
    every record ("threads"). They start at the first step and on multiples of `every` steps; while a trial
    confirms the winner the gap doubles, up to `backoff` × `every`. Between trials, a winner's rate below
    `slowdown` × its trial rate starts a trial at once. The choice depends on timing, so a run is
    bit-reproducible only with a fixed thread count (`minildm demo --threads N`).
    """

    def __init__(self, most: int | None = None, window: int = 12, every: int = 300, backoff: int = 4,
                 slowdown: float = 0.7):
        most = most or torch.get_num_threads()
        self.candidates = sorted({1, most})
        self.window, self.every, self.backoff, self.slowdown = max(2, window), max(1, every), max(1, backoff), slowdown
        self.rates: dict[int, float] = {}      # steps/s per count, measured in the last trial
        self.trial: list[int] = []             # thread counts still to time in the running trial
        self.times: list[float] = []           # step durations of the current window
        self.last: float | None = None         # when the previous step ended
        self.warmup = False                    # the next step is the first at a new count: not timed
        self.gap, self.next_trial, self.winner, self.trials, self.first = 1, 1, None, 0, 1
        self.steps_at: dict[int, int] = {n: 0 for n in self.candidates}

    def __call__(self, step: int, record: dict, run: Any = None) -> None:
        now, threads = time.perf_counter(), torch.get_num_threads()      # `threads` ran the step that just ended
        took, self.last = (None if self.last is None else now - self.last), now
        record["threads"] = threads
        self.steps_at[threads] = self.steps_at.get(threads, 0) + 1
        if len(self.candidates) == 1:
            return
        if took is not None and not self.warmup:
            self.times.append(took)
        self.warmup = False
        if self.trial:
            if len(self.times) >= self.window:
                self.rates[threads] = 1.0 / statistics.median(self.times)   # the median: a validation pass or
                self.trial.pop(0)                                          # a checkpoint write is one slow step
                if self.trial:
                    self._switch(self.trial[0])
                else:
                    self._end_trial()
        elif not self.trials or (step % self.every == 0 and step >= self.next_trial) or self._slowed():
            self.trial, self.trials, self.first = list(self.candidates), self.trials + 1, step
            self._switch(self.trial[0])

    def _slowed(self) -> bool:
        """Whether the winner's rate over the last `window` steps fell below `slowdown` × its trial rate."""
        if self.winner is None or len(self.times) < self.window:
            return False
        rate, self.times = 1.0 / statistics.median(self.times), []
        if rate < self.slowdown * self.rates[self.winner]:
            self.winner = None                                  # so the trial starts the gaps over at `every`
            return True
        return False

    def _end_trial(self) -> None:
        """Keep the faster count; back off while the winner repeats."""
        winner = max(self.rates, key=self.rates.get)
        self.gap = min(2 * self.gap, self.backoff) if winner == self.winner else 1
        self.winner, self.next_trial = winner, (self.first // self.every + self.gap) * self.every
        self._switch(winner)

    def _switch(self, threads: int) -> None:
        self.warmup, self.times = threads != torch.get_num_threads() or bool(self.trial), []
        torch.set_num_threads(threads)

    def summary(self) -> str:
        """How many steps ran at each thread count, how many trials, and the last measured rates."""
        steps = ", ".join(f"{n} thread{'s' * (n > 1)}: {k} steps" for n, k in sorted(self.steps_at.items()) if k)
        rates = ", ".join(f"{n}: {r:.2f} steps/s" for n, r in sorted(self.rates.items()))
        return f"{steps} ({self.trials} trials, the last {rates})" if rates else steps
