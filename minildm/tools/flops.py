"""FLOPs per call, achieved TFLOP/s and the share of a device's peak (for `minildm bench`), and a plan of a
profile's training time from counted FLOPs (`minildm bench --plan gpu`).

    count_flops(fn)              FLOPs of one call, counted by torch.utils.flop_counter (matmuls, convolutions,
                                 attention; forward and backward), and the number of kernel-launching ops
    measure_call(fn, device)     the same plus the peak memory of that call (CUDA; None on other devices)
    peak_tflops(device, dtype)   the device's dense peak from the datasheet table PEAKS (None when unknown)
    plan_profile(profile, ...)   predicted minutes of each stage the course trains, at an assumed utilization

What is counted: 2 FLOPs per multiply-add of every matmul, convolution and attention product (the convention
of torch.utils.flop_counter and of MFU figures); a backward pass counts its two products (input and weight
gradient), so a training step of a linear stack is 3x its forward. Normalization, activations, the loss and
the optimizer are not counted: on these models they are a few per cent of the FLOPs (and all of the memory
traffic), which is one reason why the utilization of small models stays far below the peak.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import torch
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode

from ..autoencoder import build_autoencoder
from ..data.datasets import ShapesDataset
from ..train.profiles import Profile, get_profile
from ..train.stages import AutoencoderTraining, LatentDiffusionTraining

__all__ = ["PEAKS", "H100_BF16_TFLOPS", "ASSUMED_UTILIZATION", "OP_MICROSECONDS", "count_flops", "measure_call", "perf_columns",
           "peak_tflops", "achieved", "max_rss_bytes", "count_ae_step", "count_ldm_step", "count_encode",
           "course_stages", "plan_profile", "format_plan"]

aten = torch.ops.aten

# Dense (not 2:4-sparse) tensor-core peaks in TFLOP/s: (bf16, tf32, fp32 without tensor cores), matched to
# torch.cuda.get_device_name by the regular expressions, first match wins. From the vendors' datasheets, which
# print the sparse figure with an asterisk; the dense one is half of it:
#   H100 SXM / H200 SXM / GH200: BF16 1,979* -> 989.4, TF32 989* -> 494.7, FP32 67 (H100 datasheet 2023, H200 2024)
#   H100 PCIe: BF16 1,513* -> 756.5, TF32 756* -> 378, FP32 51;  H100 NVL / H200 NVL: BF16 1,671* -> 835.5, TF32 835*
#   B200 (HGX B200, per GPU): BF16 4.5 PF* -> 2,250, TF32 2.2 PF* -> 1,100, FP32 75 (approximate, per GPU of 8)
#   A100 (SXM and PCIe): BF16 624* -> 312, TF32 312* -> 156, FP32 19.5
#   L40S: BF16 733* -> 362, TF32 366* -> 183, FP32 91.6;  L40: BF16 362* -> 181, TF32 181* -> 90.5, FP32 90.5
#   L4: BF16 242* -> 121, TF32 120* -> 60, FP32 30.3;  A10: BF16 250* -> 125, TF32 125* -> 62.5, FP32 31.2
#   RTX 4090 (Ada whitepaper, FP32 accumulate): BF16 165.2, TF32 82.6, FP32 82.6
#   RTX 3090 (Ampere GA102 whitepaper, FP32 accumulate): BF16 71, TF32 35.6, FP32 35.6
#   T4: no bf16 (FP16 tensor 65), FP32 8.1;  V100 SXM2: no bf16 (FP16 tensor 125), FP32 15.7
PEAKS: list[tuple[str, str, float | None, float | None, float]] = [
    (r"\bB200\b", "B200", 2250.0, 1100.0, 75.0),
    (r"\bH100\b.*\bPCIe\b", "H100 PCIe", 756.5, 378.0, 51.2),
    (r"\bH[12]00\b.*\bNVL\b", "H100/H200 NVL", 835.5, 417.5, 60.0),
    (r"\bH100\b|\bH200\b|\bGH200\b", "H100/H200 SXM", 989.4, 494.7, 66.9),
    (r"\bA100\b", "A100", 312.0, 156.0, 19.5),
    (r"\bL40S\b", "L40S", 362.0, 183.0, 91.6),
    (r"\bL40\b", "L40", 181.0, 90.5, 90.5),
    (r"\bL4\b", "L4", 121.0, 60.0, 30.3),
    (r"\bA10\b", "A10", 125.0, 62.5, 31.2),
    (r"RTX 4090", "RTX 4090", 165.2, 82.6, 82.6),
    (r"RTX 3090", "RTX 3090", 71.0, 35.6, 35.6),
    (r"\bT4\b", "T4", None, None, 8.1),
    (r"\bV100\b", "V100", None, None, 15.7),
]
H100_BF16_TFLOPS = 989.4
# The assumed share of the H100's bf16 peak that the course's models reach (model FLOPs utilization). They are
# small: U-Net widths 128-256 on an 8x8 latent, an autoencoder and VGG-LPIPS of width 64-512 on 32x32 images.
# Large transformers reach 40-55 %; a bf16 convolution with 64-256 channels fills the tensor cores far less
# (measured cuDNN kernels of this size run at roughly 30-40 % of peak), and the uncounted memory-bound ops
# (GroupNorm, SiLU, softmax, their backward, the optimizer) take about as long again. So 20 % with the gpu
# profile's compiled bf16 step; the launch floor below covers the regime where the batch is too small to matter.
ASSUMED_UTILIZATION = 0.2
# The launch-bound floor: eager PyTorch spends ~5-10 µs of host time per op (Python, dispatcher, launch), so a
# step of N ops takes at least N·OP_MICROSECONDS µs however few FLOPs it has. torch.compile fuses most of the
# elementwise ops and lowers this floor; CUDA graphs remove it.
OP_MICROSECONDS = 8.0

# ops that launch no kernel (views and metadata); every other aten op is counted as one launch
_NO_KERNEL = {aten.view, aten._unsafe_view, aten.t, aten.transpose, aten.permute, aten.expand, aten.slice,
              aten.select, aten.unsqueeze, aten.squeeze, aten.as_strided, aten.detach, aten.alias, aten.split,
              aten.split_with_sizes, aten.unbind, aten._reshape_alias, aten.lift_fresh, aten.empty,
              aten.empty_like, aten.empty_strided, aten.unflatten, aten.chunk, aten.is_same_size}


def _cpu_sdpa(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(q, k, v)


def _cpu_sdpa_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, q, k, v)


# torch's table knows the CUDA attention kernels; the CPU's flash attention has the same FLOPs
_CPU_ATTENTION = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
                  aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward}


class _OpCounter(TorchDispatchMode):
    """Counts the aten ops that launch a kernel (a rough count of kernel launches on a GPU)."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket not in _NO_KERNEL:
            self.ops += 1
        return func(*args, **(kwargs or {}))


def count_flops(fn: Callable[[], Any]) -> dict[str, int]:
    """Run fn() once and count: {"flops": matmul/conv/attention FLOPs (forward and backward), "ops": aten ops
    that launch a kernel}. fn runs for real (an optimizer step in it is taken)."""
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION)
    ops = _OpCounter()
    with counter, ops:
        fn()
    return {"flops": int(counter.get_total_flops()), "ops": ops.ops}


def measure_call(fn: Callable[[], Any], device: torch.device | str) -> dict[str, Any]:
    """count_flops(fn) plus "peak_mem": bytes allocated at the peak of that call (torch.cuda.max_memory_allocated,
    reset before it, models and optimizer states included) on CUDA; None elsewhere (see max_rss_bytes)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    out = count_flops(fn)
    if cuda:
        torch.cuda.synchronize(device)
    out["peak_mem"] = torch.cuda.max_memory_allocated(device) if cuda else None
    return out


def max_rss_bytes() -> int | None:
    """The process's peak resident memory so far (all of it, not one call's), or None where unknown."""
    try:
        import resource
    except ImportError:                      # not on Windows
        return None
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024      # macOS reports bytes, Linux KiB


def peak_tflops(device: torch.device | str, dtype: torch.dtype | None = None, name: str | None = None
                ) -> float | None:
    """The dense peak TFLOP/s of a CUDA device for `dtype` (bf16; fp32 means TF32 when torch allows TF32
    matmuls, else plain FP32), from PEAKS; None on CPU/MPS or for a GPU not in the table (pass --peak-tflops)."""
    device = torch.device(device)
    if name is None:
        if device.type != "cuda":
            return None
        name = torch.cuda.get_device_name(device)
    for pattern, _, bf16, tf32, fp32 in PEAKS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            if dtype in (torch.bfloat16, torch.float16):
                return bf16
            return tf32 if torch.backends.cuda.matmul.allow_tf32 and tf32 is not None else fp32
    return None


def achieved(flops: int | None, calls_per_s: float | None, peak: float | None = None) -> dict[str, float | None]:
    """{"tflops": flops·calls/s / 1e12, "peak_share": tflops / peak (None without a peak)}."""
    if flops is None or calls_per_s is None:
        return {"tflops": None, "peak_share": None}
    if peak is not None and not peak > 0:
        raise ValueError(f"the peak must be a positive number of TFLOP/s, got {peak}")
    tflops = flops * calls_per_s / 1e12
    return {"tflops": tflops, "peak_share": None if peak is None else tflops / peak}


# --- Planning a profile from counted FLOPs ------------------------------------------------------------------


def _cpu() -> torch.device:
    return torch.device("cpu")


def count_ae_step(profile: str | Profile | None, batch: int = 4, gan: bool = False) -> dict[str, int]:
    """count_flops of one step of train_autoencoder's AutoencoderTraining at batch `batch`, on the CPU: the
    generator step (autoencoder, L1 + LPIPS + KL, Adam) and, with gan=True (a step after disc_start), the
    discriminator's terms, the adaptive weight's two gradients and the discriminator's step. LPIPS runs with
    a random backbone (the same FLOPs as the pretrained one)."""
    p = get_profile(profile)
    cfg = dataclasses.replace(p.ae, batch_size=_batch(batch), val_images=0)
    run = AutoencoderTraining(cfg, p.data, _cpu(), random_lpips=True, lpips_download=False)
    run.start(0, cfg.steps, False)
    step = cfg.disc_start if gan else 0
    run.step(step)                                      # the first step creates the optimizers' states
    return count_flops(lambda: run.step(step))


def count_ldm_step(profile: str | Profile | None, cond: str = "text", batch: int = 4) -> dict[str, int]:
    """count_flops of one step of train_ldm's LatentDiffusionTraining (τθ, U-Net, L_simple, AdamW, EMA) for
    the conditioning `cond` at batch `batch`, on the CPU, on a random autoencoder (the FLOPs do not depend on
    the weights)."""
    p = get_profile(profile)
    cfg = dataclasses.replace(p.ldm, cond=cond, batch_size=_batch(batch), cache_size=_batch(batch))
    run = LatentDiffusionTraining(cfg, p.data, build_autoencoder(p.ae), _cpu(), progress=False)
    run.start(0, cfg.steps, False)
    run.step(0)
    return count_flops(lambda: run.step(1))


def count_encode(profile: str | Profile | None, batch: int = 4) -> dict[str, int]:
    """count_flops of encoding `batch` images (the latent cache every train_ldm builds once)."""
    p = get_profile(profile)
    model = build_autoencoder(p.ae).eval()
    x = ShapesDataset("val", p.data).batch(range(_batch(batch)))["image"]
    with torch.no_grad():
        return count_flops(lambda: model.encode(x))


def _batch(batch: int) -> int:
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"the batch size to count at must be a positive whole number, got {batch!r}")
    return batch


def course_stages(profile: str | Profile | None) -> list[dict[str, Any]]:
    """What the course trains with a profile's step counts: notebook 01's autoencoder, notebook 05's text LDM
    and notebook 08's class, layout and super-resolution LDMs (course.autoencoder / course.ldm)."""
    p = get_profile(profile)
    ldm = [{"name": f"{nb} {cond} LDM", "kind": "ldm", "cond": cond, "steps": p.ldm.steps}
           for nb, cond in (("05", "text"), ("08", "class"), ("08", "layout"), ("08", "sr"))]
    return [{"name": "01 autoencoder", "kind": "ae", "steps": p.ae.steps}] + ldm


def plan_profile(profile: str | Profile | None, peak: float = H100_BF16_TFLOPS,
                 utilization: float = ASSUMED_UTILIZATION, op_us: float = OP_MICROSECONDS, count_batch: int = 4,
                 stages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Predicted minutes of each stage the course trains (course_stages) from counted FLOPs, NOT a measurement.

    FLOPs of one step are counted on the CPU at batch `count_batch` and scaled by profile batch / count_batch
    (every counted FLOP is per image: tests/test_flops.py checks that the count is linear in the batch).
    A step takes max(FLOPs / (utilization · peak), ops · op_us): compute-bound, or bound by launching its ops
    (the GPU runs while the host launches, so the larger of the two). An LDM also encodes its latent cache once.
    """
    p = get_profile(profile)
    if not (peak > 0 and 0 < utilization <= 1 and op_us >= 0):
        raise ValueError(f"need peak > 0 TFLOP/s, 0 < utilization <= 1 and op_us >= 0; got peak={peak}, "
                         f"utilization={utilization}, op_us={op_us}")
    rate, b = peak * 1e12 * utilization, _batch(count_batch)
    enc = count_encode(p, b)
    rows, counted = [], {}
    for stage in stages or course_stages(p):
        batch = p.ae.batch_size if stage["kind"] == "ae" else p.ldm.batch_size
        if stage["kind"] == "ae":
            plain = min(stage["steps"], p.ae.disc_start)
            parts = [(plain, counted.setdefault("ae", count_ae_step(p, b))),
                     (stage["steps"] - plain, counted.setdefault("ae-gan", count_ae_step(p, b, gan=True)))]
            once = 0.0
        else:
            key = "ldm-" + stage["cond"]
            parts = [(stage["steps"], counted.setdefault(key, count_ldm_step(p, stage["cond"], b)))]
            once = min(p.ldm.cache_size, p.data.train_size) * enc["flops"] / b / rate
        seconds, flops = once, 0.0
        for steps, c in parts:
            step_flops = c["flops"] * batch / b
            seconds += steps * max(step_flops / rate, c["ops"] * op_us * 1e-6)
            flops += steps * step_flops
        main = parts[0][1]
        rows.append({**stage, "batch": batch, "gflop_per_step": main["flops"] * batch / b / 1e9, "ops": main["ops"],
                     "compute_ms": main["flops"] * batch / b / rate * 1e3, "launch_ms": main["ops"] * op_us * 1e-3,
                     "flops": flops, "minutes": seconds / 60})
    return {"profile": p.name, "peak_tflops": peak, "utilization": utilization, "op_us": op_us,
            "count_batch": b, "stages": rows, "minutes": sum(r["minutes"] for r in rows)}


def format_plan(plan: dict[str, Any]) -> str:
    """plan_profile's result as a table that says what it is: a prediction, not a measurement."""
    lines = [f"predicted training time of the {plan['profile']} profile's course models: counted FLOPs at an ASSUMED "
             f"{plan['utilization']:.0%} of {plan['peak_tflops']:g} TFLOP/s, and at least {plan['op_us']:g} µs per "
             f"launched op (a prediction, not a measurement)",
             f"{'stage':<16} {'steps':>7} {'batch':>5} {'GFLOP/step':>10} {'ops/step':>8} {'compute ms':>10} "
             f"{'launch ms':>9} {'PFLOP':>7} {'minutes':>7}"]
    for r in plan["stages"]:
        lines.append(f"{r['name']:<16} {r['steps']:>7,} {r['batch']:>5} {r['gflop_per_step']:>10.1f} {r['ops']:>8,} "
                     f"{r['compute_ms']:>10.2f} {r['launch_ms']:>9.2f} {r['flops'] / 1e15:>7.1f} {r['minutes']:>7.2f}")
    lines.append(f"{'all':<16} {'':>7} {'':>5} {'':>10} {'':>8} {'':>10} {'':>9} "
                 f"{sum(r['flops'] for r in plan['stages']) / 1e15:>7.1f} {plan['minutes']:>7.2f}")
    lines.append(f"FLOPs counted at batch {plan['count_batch']} on the CPU and scaled by the batch; the autoencoder's "
                 f"row shows its step before disc_start (after it the GAN terms add to it)")
    return "\n".join(lines)


def perf_columns(ours: Callable[[], Any], per_s: float, device: torch.device | str,
                 theirs: Callable[[], Any] | None = None, their_per_s: float | None = None) -> dict[str, Any]:
    """The bench's columns for a row: FLOPs and peak memory of one more call of each side (measure_call) and the
    achieved TFLOP/s at the measured calls/s (keys flops, calls_per_s, tflops, peak_mem; *_diffusers for theirs)."""
    out = {}
    for side, fn, rate in (("", ours, per_s), ("_diffusers", theirs, their_per_s)):
        m = measure_call(fn, device) if fn is not None else {"flops": None, "peak_mem": None}
        rate = rate if fn is not None else None
        out.update({f"flops{side}": m["flops"], f"calls_per_s{side}": rate,
                    f"tflops{side}": achieved(m["flops"], rate)["tflops"], f"peak_mem{side}": m["peak_mem"]})
    return out


def with_peak(row: dict[str, Any], peak: float | None) -> dict[str, Any]:
    """The row with "peak_share" (and "peak_share_diffusers"): achieved TFLOP/s / peak; None without a peak."""
    for side in ("", "_diffusers"):
        t = row.get(f"tflops{side}")
        row[f"peak_share{side}"] = None if t is None or peak is None else achieved(1, t * 1e12, peak)["peak_share"]
    return row


def with_flops(row: dict[str, Any], flops: int | None) -> dict[str, Any]:
    """The row with FLOPs per call taken from another row of the same computation (the compiled step)."""
    return {**row, "flops": flops, "tflops": achieved(flops, row.get("calls_per_s"))["tflops"]}


def _si(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{prefix}{unit}"
    return f"{v:.3g}{unit}"


PERF_HEADER = f"{'FLOP/call':>9} {'TFLOP/s ours / diffusers':>24} {'% of peak':>9} {'peak mem':>9}"


def format_perf(row: dict[str, Any]) -> str:
    """A row's FLOPs per call, achieved TFLOP/s (ours / diffusers), share of peak (ours) and peak memory (ours)."""
    def tf(v):
        return "-" if v is None else f"{v:.3g}"

    share = row.get("peak_share")
    return (f"{_si(row.get('flops')):>9} {tf(row.get('tflops')) + ' / ' + tf(row.get('tflops_diffusers')):>24} "
            f"{'-' if share is None else f'{share:.1%}':>9} {_si(row.get('peak_mem'), 'B'):>9}")


def perf_footer(result: dict[str, Any]) -> str:
    """What the FLOP columns mean, where the peak comes from, and what the memory column is on this device."""
    peak = result.get("peak_tflops")
    rss = result.get("max_rss")
    mem = ("peak mem = torch.cuda.max_memory_allocated during one call (reset before it)"
           if str(result["machine"]["device"]).startswith("cuda") else
           "peak mem: n/a on this device" + (f" (the whole process's max RSS: {_si(rss, 'B')})" if rss else ""))
    return (f"FLOP/call: matmul/conv/attention FLOPs of one call (torch.utils.flop_counter, forward + backward); "
            f"TFLOP/s = FLOP/call x calls/s; % of peak: "
            f"{f'of {peak:g} TFLOP/s' if peak else 'no known peak for this device (pass --peak-tflops)'}; "
            f"{mem}")
