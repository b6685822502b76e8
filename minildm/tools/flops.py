"""FLOPs per call, achieved TFLOP/s and the share of a device's peak (the columns of `minildm bench`), and a
plan of a profile's training time from counted FLOPs (`minildm bench --plan gpu`; bench.format_plan prints it).

What is counted: 2 FLOPs per multiply-add of every matmul, convolution and attention product (the convention
of torch.utils.flop_counter and of MFU figures); a backward pass counts its two products (input and weight
gradient), so a training step of a linear stack is 3x its forward. Normalization, activations, the loss and
the optimizer are not counted: on these models they are a few per cent of the FLOPs (and all of the memory
traffic), which is one reason why the utilization of small models stays far below the peak.
"""

from __future__ import annotations

import contextlib
import re
import sys
import tempfile
from typing import Any, Callable

import torch
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode

from ..autoencoder import build_autoencoder
from ..data.datasets import ShapesDataset
from ..train.profiles import Profile, get_profile
from ..train.speed import SpeedConfig
from ..train.stages import train_autoencoder, train_ldm

__all__ = ["PEAKS", "H100_BF16_TFLOPS", "ASSUMED_UTILIZATION", "OP_MICROSECONDS", "count_flops", "peak_tflops",
           "max_rss_bytes", "count_ae_step", "count_ldm_step", "count_encode", "plan_profile"]

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


# torch's table knows the CUDA attention kernels; the CPU's flash attention (torch 2.2 and later) has the same
# FLOPs. Before 2.2 the CPU computes attention with matmuls, which the table counts.
_CPU_ATTENTION = {getattr(aten, name): count for name, count in (
    ("_scaled_dot_product_flash_attention_for_cpu",
     lambda q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_flop_count(q, k, v)),
    ("_scaled_dot_product_flash_attention_for_cpu_backward",
     lambda g, q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_backward_flop_count(g, q, k, v)),
) if hasattr(aten, name)}


class _OpCounter(TorchDispatchMode):
    """Counts the aten ops that launch a kernel (a rough count of kernel launches on a GPU)."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket not in _NO_KERNEL:
            self.ops += 1
        return func(*args, **(kwargs or {}))


def count_flops(fn: Callable[[], Any], device: torch.device | str = "cpu") -> dict[str, Any]:
    """Run fn() once (for real: an optimizer step in it is taken) and count {"flops": matmul/conv/attention
    FLOPs, forward and backward; "ops": aten ops that launch a kernel; "peak_mem": on CUDA, bytes allocated at
    the peak of that call (reset before it; models and optimizer states included), else None (max_rss_bytes)}."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    counter, ops = flop_counter.FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION), _OpCounter()
    with counter, ops:
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    return {"flops": int(counter.get_total_flops()), "ops": ops.ops,
            "peak_mem": torch.cuda.max_memory_allocated(device) if cuda else None}


def max_rss_bytes() -> int | None:
    """The process's peak resident memory so far (all of it, not one call's), or None where unknown."""
    try:
        import resource
    except ImportError:                      # not on Windows
        return None
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


# --- Planning a profile from counted FLOPs ------------------------------------------------------------------


def count_ae_step(profile: str | Profile | None, batch: int = 4, gan: bool = False) -> dict[str, int]:
    """count_flops of one step of train_autoencoder, on the CPU: the generator step (autoencoder, L1 + LPIPS + KL,
    Adam) and, with gan=True (the GAN on from the start), the discriminator's terms, the adaptive weight's two
    gradients and the discriminator's step. LPIPS runs with a random backbone (the same FLOPs as the pretrained one)."""
    p = get_profile(profile).replace(ae_train={"batch_size": batch, "val_images": 0},
                                     ae_loss={"disc_start": 0 if gan else 10**9})
    return _second_step(lambda folder, count: train_autoencoder(
        p, folder, "cpu", steps=2, random_lpips=True, lpips_download=False, progress=False, callback=count,
        speed=SpeedConfig()))


def count_ldm_step(profile: str | Profile | None, cond: str = "text", batch: int = 4) -> dict[str, int]:
    """count_flops of one step of train_ldm (τθ, U-Net, L_simple, AdamW, EMA), on the CPU, on a random
    autoencoder (the FLOPs do not depend on the weights)."""
    p = get_profile(profile).replace(ldm={"cond": cond}, ldm_train={"batch_size": batch, "cache_size": batch})
    return _second_step(lambda folder, count: train_ldm(
        p, build_autoencoder(p.ae), folder, device="cpu", steps=2, progress=False, callback=count,
        speed=SpeedConfig()))


def _second_step(train: Callable[[str, Callable], Any]) -> dict[str, Any]:
    """count_flops of the second step of a two-step run train(folder, callback) (the first creates the optimizers'
    states): its callback starts counting after step 1 and stops after step 2."""
    counter, ops = flop_counter.FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION), _OpCounter()
    counting = contextlib.ExitStack()

    def count(step: int, record: dict, run: Any) -> None:
        if step == 1:
            counting.enter_context(counter)
            counting.enter_context(ops)
        else:
            counting.close()

    with tempfile.TemporaryDirectory() as folder:
        train(folder, count)
    return {"flops": int(counter.get_total_flops()), "ops": ops.ops, "peak_mem": None}


def count_encode(profile: str | Profile | None, batch: int = 4) -> dict[str, int]:
    """count_flops of encoding `batch` images (the latent cache every train_ldm builds once)."""
    p = get_profile(profile)
    model = build_autoencoder(p.ae).eval()
    x = ShapesDataset("val", p.data).batch(range(batch))["image"]
    with torch.no_grad():
        return count_flops(lambda: model.encode(x))


def plan_profile(profile: str | Profile | None, peak: float = H100_BF16_TFLOPS,
                 utilization: float = ASSUMED_UTILIZATION, op_us: float = OP_MICROSECONDS,
                 count_batch: int = 4) -> dict[str, Any]:
    """Predicted minutes of each stage the course trains, from counted FLOPs, NOT a measurement: notebook 01's
    autoencoder, 05's text LDM and 08's class, layout and super-resolution LDMs, at the profile's step counts.

    FLOPs of one step are counted on the CPU at batch `count_batch` and scaled by profile batch / count_batch
    (every counted FLOP is per image: tests/test_flops.py checks that the count is linear in the batch).
    A step takes max(FLOPs / (utilization · peak), ops · op_us): compute-bound, or bound by launching its ops
    (the GPU runs while the host launches, so the larger of the two). An LDM also encodes its latent cache once.
    """
    p = get_profile(profile)
    rate, b = peak * 1e12 * utilization, count_batch
    enc = count_encode(p, b)
    rows = []
    for name, cond in (("01 autoencoder", None), ("05 text LDM", "text"), ("08 class LDM", "class"),
                       ("08 layout LDM", "layout"), ("08 sr LDM", "sr")):
        if cond is None:                                # before disc_start, and with the GAN on
            steps, batch = p.ae_train.steps, p.ae_train.batch_size
            plain = min(steps, p.ae_loss.disc_start)
            parts = [(plain, count_ae_step(p, b)), (steps - plain, count_ae_step(p, b, gan=True))]
            seconds = 0.0
        else:
            steps, batch = p.ldm_train.steps, p.ldm_train.batch_size
            parts = [(steps, count_ldm_step(p, cond, b))]
            seconds = min(p.ldm_train.cache_size, p.data.train_size) * enc["flops"] / b / rate
        k, main = batch / b, parts[0][1]                    # the count at batch b, scaled to the batch
        seconds += sum(n * max(c["flops"] * k / rate, c["ops"] * op_us * 1e-6) for n, c in parts)
        rows.append({"name": name, "kind": "ae" if cond is None else "ldm", "cond": cond, "steps": steps,
                     "batch": batch, "gflop_per_step": main["flops"] * k / 1e9, "ops": main["ops"],
                     "compute_ms": main["flops"] * k / rate * 1e3, "launch_ms": main["ops"] * op_us * 1e-3,
                     "flops": sum(n * c["flops"] * k for n, c in parts), "minutes": seconds / 60})
    return {"profile": p.name, "peak_tflops": peak, "utilization": utilization, "op_us": op_us,
            "count_batch": b, "stages": rows, "minutes": sum(r["minutes"] for r in rows)}
