"""`minildm bench`: every speed that matters, measured in one run, next to diffusers at a matched config.

    data          Shapes rendering (scene drawing + rasterizing + tokenizing)             images/s
    autoencoder   our full first-stage step: L1 + LPIPS + KL, Adam (Sec. 3.1)             steps/s
                  matched step vs diffusers' AutoencoderKL: L1 + KL on the same images    steps/s, ratio
    LDM           our full second-stage step: text encoder τθ + U-Net, L_simple, AdamW    steps/s
                  matched step vs diffusers' UNet2DConditionModel: the same loss          steps/s, ratio
    sampling      DDIM with classifier-free guidance, decoding included (Sec. 4)          images/s, ratio

Models have random weights: this measures speed only. The peer has the same layers and parameter counts
(peer.py), and the matched steps use the same loss on both sides (U-Net: MSE to the profile's target on random
latents with a random context and the padding mask of real captions; autoencoder: L1 + KL, no LPIPS/GAN), so
the ratio (ours / theirs as throughputs: > 1 means minildm is faster) compares the networks and their training
step, not the objectives.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from importlib.metadata import version
from typing import Any, Callable

import torch

from ..autoencoder import AutoencoderKL, build_autoencoder, load_autoencoder
from ..data.datasets import ShapesDataset
from ..diffusion import GaussianDiffusion
from ..eval.accuracy import autoencoder_shape_fidelity, fidelity_lines
from ..eval.metrics import reconstruction_metrics
from ..ldm import LatentDiffusion
from ..losses import AutoencoderLoss
from ..perceptual import LPIPSWeightsMissingError, random_backbone_requested
from ..train.configs import AETrainConfig
from ..train.loop import fused_optimizer
from ..train.profiles import Profile, get_profile
from ..train.speed import autocast, maybe_compile, precision_dtype
from ..train.stages import AE_CHECKPOINT, train_autoencoder
from ..unet import UNet
from ..utils import count_parameters, get_device, seed_everything
from .flops import count_flops, max_rss_bytes, peak_tflops
from .peer import diffusers_available, peer_autoencoder, peer_ddim_sample, peer_scheduler, peer_unet, peer_unet_fn

__all__ = ["throughput", "run_bench", "format_table", "machine_info", "bench_data", "bench_autoencoder_step",
           "bench_autoencoder_matched", "bench_ldm_step", "bench_unet_matched", "bench_ddim", "bench_autoencoder",
           "format_plan", "DEFAULT_SECONDS"]

DEFAULT_SECONDS = 20.0        # per measurement and side; `minildm bench` with the cpu profile then takes ~4 min
DEFAULT_ROUNDS = 2            # ours/theirs alternate this many times; the best round counts


# --- Timing -------------------------------------------------------------------------------------------------


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def throughput(fn: Callable[[], Any], seconds: float, warmup: int = 1, device: torch.device | str | None = None,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Call `fn` `warmup` times untimed, then repeatedly for `seconds` (at least once): {"calls", "seconds", "per_s"}."""
    for _ in range(warmup):
        fn()
    _sync(device)
    calls, t0 = 0, clock()
    while True:
        fn()
        calls += 1
        _sync(device)                     # so that a GPU call is counted when it has finished, not queued
        elapsed = clock() - t0
        if elapsed >= seconds:
            break
    return {"calls": calls, "seconds": elapsed, "per_s": calls / elapsed}


def _profile(profile: str | Profile | None) -> Profile:
    """The profile, with text conditioning (what the demo trains and the peer U-Net's cross-attention matches)."""
    return get_profile(profile).replace(ldm={"cond": "text"})


def _autocast(device: torch.device, precision: str | None = None):
    return autocast(device, precision_dtype(device, precision or "auto"))


def _train_step(loss: Callable[[], torch.Tensor], model: torch.nn.Module, cfg: Any,
                device: torch.device) -> Callable[[], None]:
    """One training step, loss() and an update of `model` by the optimizer the trainer makes for `cfg`:
    Adam with β = (0.5, 0.9) for an AETrainConfig (train_autoencoder), else AdamW (train_ldm)."""
    kw = {"lr": cfg.lr, **fused_optimizer(device)}
    opt = (torch.optim.Adam(model.parameters(), betas=(0.5, 0.9), **kw) if isinstance(cfg, AETrainConfig) else
           torch.optim.AdamW(model.parameters(), weight_decay=cfg.weight_decay, **kw))

    def step():
        value = loss()
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    return step


def _measure(what: str, unit: str, ours: Callable[[], Any], theirs: Callable[[], Any] | None,
             models: tuple[torch.nn.Module | None, torch.nn.Module | None], seconds: float, device: torch.device,
             rounds: int, warmup: int = 2, per_call: int = 1, flops: bool = True, **extra: Any) -> dict[str, Any]:
    """One row of the bench: the best-of-`rounds` calls/s of ours and (if given) theirs, alternating ours, theirs,
    ours, theirs … (the best round is the one least disturbed by other processes on a shared machine), reported
    per item (x per_call); ratio = ours / theirs as throughputs; the parameters of `models`; and per side (keys
    without and with the suffix "_diffusers") the FLOPs and peak memory of one more call (count_flops),
    calls_per_s and the achieved tflops = FLOPs x calls/s / 1e12."""
    a, b = 0.0, None if theirs is None else 0.0
    for r in range(rounds):
        w = warmup if r == 0 else 0
        a = max(a, throughput(ours, seconds / rounds, w, device)["per_s"])
        if theirs is not None:
            b = max(b, throughput(theirs, seconds / rounds, w, device)["per_s"])
    row = {"what": what, "unit": unit, "ours": a * per_call, "diffusers": None if b is None else b * per_call,
           "ratio": None if b is None else a / b, **extra}
    for side, model in zip(("ours", "diffusers"), models):
        row[f"params_{side}"] = None if model is None else count_parameters(model)
    for side, fn, rate in (("", ours, a), ("_diffusers", theirs, b)):
        n = count_flops(fn, device) if flops and fn is not None else {"flops": None, "peak_mem": None}
        row.update({f"flops{side}": n["flops"], f"calls_per_s{side}": rate, f"peak_mem{side}": n["peak_mem"],
                    f"tflops{side}": None if n["flops"] is None else n["flops"] * rate / 1e12})
    return row


def _skipped(what: str, why: str) -> dict[str, Any]:
    """A row that could not be measured here, and why."""
    return {"what": what, "unit": "steps/s", **dict.fromkeys(("ours", "diffusers", "ratio", "params_ours",
                                                               "params_diffusers")), "skipped": why}


def _images(p: Profile, n: int, device: torch.device) -> torch.Tensor:
    return ShapesDataset("train", p.data).batch(range(n), device=device)["image"].to(device)


# --- Measurements (each returns a row: a dict of numbers) ---------------------------------------------------


def bench_data(profile: str | Profile | None = None, seconds: float = DEFAULT_SECONDS,
               device: str | torch.device | None = None, batch_size: int = 256,
               rounds: int = DEFAULT_ROUNDS) -> dict[str, Any]:
    """Images/s of `ShapesDataset.random_batches`."""
    p, device = _profile(profile), get_device(device)
    it = ShapesDataset("train", p.data, size=1_000_000).random_batches(batch_size, seed=0, device=device)
    res = p.data.resolution
    return _measure(f"Shapes data {res}x{res}, batch {batch_size}", "images/s", lambda: next(it), None, (None, None),
                    seconds, device, rounds, warmup=1, per_call=batch_size, flops=False)


def bench_autoencoder_step(profile: str | Profile | None = None, seconds: float = DEFAULT_SECONDS,
                           device: str | torch.device | None = None, random_lpips: bool | None = None,
                           lpips_download: bool = True, rounds: int = DEFAULT_ROUNDS) -> dict[str, Any]:
    """Our full first-stage generator step as train_autoencoder runs it before `disc_start`: L1 + LPIPS + KL, Adam."""
    p, device = _profile(profile), get_device(device)
    cfg, train = p.ae, p.ae_train
    seed_everything(train.seed)
    model = build_autoencoder(cfg).to(device).train()
    loss_fn = AutoencoderLoss(p.ae_loss, lpips_download=lpips_download, random_backbone=random_lpips,
                              kind=cfg.kind).to(device)
    x = _images(p, train.batch_size, device)

    def loss():
        with _autocast(device):
            if cfg.kind == "kl":
                recon, posterior = model(x)
                reg = posterior.kl()
            else:
                recon, reg, _ = model(x)
        return loss_fn.generator_loss(x, recon, reg, 0, model.last_layer)[0]   # step 0: GAN not yet on

    terms = "L1" if loss_fn.perceptual is None else f"L1 + LPIPS-{p.ae_loss.lpips_net}"
    if loss_fn.perceptual is not None and loss_fn.perceptual.random_backbone:
        terms += " (random trunk)"
    return _measure(f"autoencoder step, {terms} + KL, batch {train.batch_size}", "steps/s",
                    _train_step(loss, model, train, device), None, (model, None), seconds, device, rounds,
                    batch_size=train.batch_size)


def bench_autoencoder_matched(profile: str | Profile | None = None, seconds: float = DEFAULT_SECONDS,
                              device: str | torch.device | None = None, peer: bool = True,
                              rounds: int = DEFAULT_ROUNDS) -> dict[str, Any]:
    """Ours vs diffusers' AutoencoderKL, one step each of L = Σ|x − D(z)|/B + w_kl·KL, z ~ q(z|x), Adam."""
    p, device = _profile(profile), get_device(device)
    cfg = dataclasses.replace(p.ae, kind="kl")
    seed_everything(p.ae_train.seed)
    x = _images(p, p.ae_train.batch_size, device)
    B = x.shape[0]

    def step(model: torch.nn.Module, forward: Callable[[torch.Tensor], tuple[torch.Tensor, Any]]):
        def loss():
            with _autocast(device):
                recon, posterior = forward(x)
            return (x - recon.float()).abs().sum() / B + p.ae_loss.kl_weight * posterior.kl().float().mean()
        return _train_step(loss, model, p.ae_train, device)

    def theirs_forward(xx):
        posterior = theirs.encode(xx).latent_dist
        return theirs.decode(posterior.sample()).sample, posterior

    ours = AutoencoderKL(cfg).to(device).train()
    theirs = peer_autoencoder(cfg).to(device).train() if peer else None
    return _measure(f"autoencoder step, L1 + KL (matched), batch {B}", "steps/s", step(ours, ours),
                    None if theirs is None else step(theirs, theirs_forward), (ours, theirs), seconds, device, rounds,
                    batch_size=B)


def _ldm_and_batch(p: Profile, device: torch.device, batch: int | None = None):
    """A LatentDiffusion on a random (frozen) first stage built from p.ae, a scaled latent batch z0 of `batch`
    (default: p.ldm_train.batch_size) training images and their caption tokens."""
    seed_everything(0)
    ae = build_autoencoder(p.ae).to(device).eval()
    ds = ShapesDataset("train", p.data)
    ldm = LatentDiffusion(ae, p.ldm, tokenizer=ds.tokenizer, num_classes=ds.num_classes, max_objects=ds.max_objects,
                          resolution=p.data.resolution).to(device)
    data = ds.batch(range(batch or p.ldm_train.batch_size), device=device)
    image = data["image"].to(device)
    ldm.set_scale_factor(image)
    return ldm, ldm.encode(image), data["tokens"].to(device)


def bench_ldm_step(profile: str | Profile | None = None, seconds: float = DEFAULT_SECONDS,
                   device: str | torch.device | None = None, precision: str | None = None,
                   compile: bool = False, rounds: int = DEFAULT_ROUNDS) -> dict[str, Any] | None:
    """Our full second-stage step as train_ldm runs it: τθ(captions) with 10 % dropout, U-Net, L_simple, AdamW.
    precision ("fp32", "bf16", "auto") overrides the default autocast; compile=True compiles the U-Net first
    (None where that is not supported; its FLOPs are not counted: run_bench gives it the eager step's)."""
    p, device = _profile(profile), get_device(device)
    ldm, z0, tokens = _ldm_and_batch(p, device)
    if compile and not maybe_compile(ldm.unet, True, "U-Net", device):
        return None
    mods = ldm.denoiser_modules().train()
    g = torch.Generator().manual_seed(0)

    def loss():
        with _autocast(device, precision):
            return ldm.training_step(z0, tokens, generator=g)

    how = ("compiled, " if compile else "") + (f"{precision} autocast, " if precision else "")
    return _measure(f"LDM step, {how}text encoder + U-Net, batch {p.ldm_train.batch_size}", "steps/s",
                    _train_step(loss, mods, p.ldm_train, device), None, (mods, None), seconds, device, rounds,
                    warmup=3 if compile else 2, flops=not compile, batch_size=p.ldm_train.batch_size)


def bench_unet_matched(profile: str | Profile | None = None, seconds: float = DEFAULT_SECONDS,
                       device: str | torch.device | None = None, peer: bool = True,
                       rounds: int = DEFAULT_ROUNDS) -> dict[str, Any]:
    """Ours vs diffusers' UNet2DConditionModel: one step of L_simple = ‖target − net(z_t, t, c)‖² (our
    GaussianDiffusion.training_loss, the profile's target) + AdamW each, on the same random latents of the
    profile's latent shape and random context with the padding mask of real captions."""
    p, device = _profile(profile), get_device(device)
    cfg = p.ldm
    ldm, z0, tokens = _ldm_and_batch(p, device)          # only for the latent shape and the captions' mask
    B, c = z0.shape[:2]
    gen = torch.Generator(device=device).manual_seed(0)
    x0 = torch.randn(z0.shape, generator=gen, device=device)
    cond = {"context": torch.randn(B, tokens.shape[1], cfg.context_dim, generator=gen, device=device),
            "context_mask": tokens != ldm.tokenizer.pad_id}
    diffusion = GaussianDiffusion.from_config(cfg)
    del ldm

    def step(model: torch.nn.Module, model_fn: Callable):
        def loss():
            with _autocast(device):
                return diffusion.training_loss(model_fn, x0, cond)      # t ~ U{0 … T−1}, ε ~ N(0, I) each call
        return _train_step(loss, model, p.ldm_train, device)

    ours = UNet.from_config(cfg, in_channels=c, cross_attention=True).to(device).train()
    theirs = peer_unet(cfg, in_channels=c).to(device).train() if peer else None
    return _measure(f"U-Net step, MSE + AdamW (matched), batch {B}", "steps/s",
                    step(ours, lambda x, t, cd: ours(x, t, **cd)),
                    None if theirs is None else step(theirs, peer_unet_fn(theirs, cfg.coord_channels)),
                    (ours, theirs), seconds, device, rounds, batch_size=B)


def bench_ddim(profile: str | Profile | None = None, seconds: float = DEFAULT_SECONDS,
               device: str | torch.device | None = None, batch_size: int | None = None, steps: int = 50,
               peer: bool = True, rounds: int = DEFAULT_ROUNDS) -> dict[str, Any]:
    """DDIM-`steps` with the profile's classifier-free guidance, images/s including decoding:
    `LatentDiffusion.sample` vs diffusers (its U-Net, DDIMScheduler loop and AutoencoderKL decoder) on the same
    captions' τθ(y)."""
    p, device = _profile(profile), get_device(device)
    cfg = p.ldm
    B, s, res = batch_size or p.ldm_train.batch_size, p.ldm_train.guidance_scale, p.data.resolution
    ldm, _, tokens = _ldm_and_batch(p, device)
    ldm.eval()
    tokens = tokens.repeat(-(-B // len(tokens)), 1)[:B]                  # the profile's captions, cycled to B

    def ours(n_steps: int = steps):
        return ldm.sample(tokens, resolution=res, steps=n_steps, guidance_scale=s)

    ours(2)  # a full warm-up run is long on a CPU: warm up with a 2-step run, then time whole runs
    theirs = unet = None
    if peer:
        unet = peer_unet(cfg, in_channels=ldm.latent_channels).to(device).eval()
        vae = peer_autoencoder(p.ae).to(device).eval()
        scheduler, model_fn = peer_scheduler(cfg), peer_unet_fn(unet, cfg.coord_channels)
        with torch.no_grad():
            cond, uncond = ldm.encode_condition(tokens), ldm.encode_condition(ldm.null_condition(tokens))
        scale, hw = float(ldm.scale_factor), ldm.latent_size(res)

        @torch.no_grad()
        def theirs(n_steps: int = steps):
            x_T = torch.randn(B, ldm.latent_channels, hw, hw, device=device)
            z = peer_ddim_sample(model_fn, scheduler, x_T, n_steps, cond, uncond, s)
            return vae.decode(z / scale).sample.clamp(-1, 1)

        theirs(2)
    return _measure(f"DDIM-{steps} sampling, guidance {s:g}, batch {B}, incl. decoding", "images/s", ours, theirs,
                    (ldm.unet, unet), seconds, device, rounds, warmup=0, per_call=B, batch_size=B)


def bench_autoencoder(profile: str | Profile | None, kind: str, minutes: float, out: str, device: str | None = None,
                      random_lpips: bool | None = None, progress: bool = True) -> list[str]:
    """`minildm bench-ae`: train an autoencoder for `minutes` on Shapes, then measure PSNR/SSIM/LPIPS on the test
    split and the shape fidelity by shape and size; returns the report's lines (the settings first)."""
    profile = get_profile(profile)
    cfg = dataclasses.replace(profile.ae, kind=kind)
    lines = [f"bench-ae: profile={profile.name} kind={kind} f={cfg.downsample_factor} z={cfg.z_channels} "
             f"ch={cfg.ch} ch_mult={cfg.ch_mult} batch={profile.ae_train.batch_size} "
             f"lpips={profile.ae_loss.lpips_net} w_p={profile.ae_loss.perceptual_weight} "
             f"disc_start={profile.ae_loss.disc_start} res={profile.data.resolution} "
             f"minutes={minutes} threads={torch.get_num_threads()} out={out}"]
    random_note = random_lpips or random_backbone_requested()
    if random_note:
        lines.append("bench-ae: LPIPS runs with a RANDOM backbone (opted in): the perceptual loss is a random-feature "
                     "loss and the LPIPS number below is not the published metric")
    t0 = time.perf_counter()
    r = train_autoencoder(profile.replace(ae={"kind": kind}, ae_train={"steps": 10**9}), out, device=device,
                          max_minutes=minutes, resume=False, random_lpips=random_lpips, progress=progress)
    wall = time.perf_counter() - t0
    model = load_autoencoder(os.path.join(out, AE_CHECKPOINT), device=device)
    res = reconstruction_metrics(model, ShapesDataset("test", config=profile.data),
                                 lpips_net=profile.ae_loss.lpips_net,
                                 random_lpips=random_lpips)
    note = " (RANDOM backbone: not a meaningful metric)" if random_note else ""
    return lines + [f"steps: {r['step']}  wall: {wall:.1f} s  steps/s: {r['step'] / wall:.2f}",
                    f"test split ({res['images']} images): PSNR {res['psnr']:.2f} dB  SSIM {res['ssim']:.4f}  "
                    f"LPIPS-{profile.ae_loss.lpips_net} {res['lpips']:.4f}{note}",    # and how small shapes fare (issue 15):
                    *fidelity_lines(autoencoder_shape_fidelity(model, resolution=profile.data.resolution))]


# --- Everything, as a table ---------------------------------------------------------------------------------


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"device": str(device), "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "diffusers": version("diffusers") if diffusers_available() else None,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def run_bench(profile: str | Profile | None = None, device: str | torch.device | None = None,
              seconds: float = DEFAULT_SECONDS, peer: bool = True, sample_batch: int | None = None,
              steps: int = 50, random_lpips: bool | None = None, lpips_download: bool = True,
              rounds: int = DEFAULT_ROUNDS, log: Callable[[str], None] | None = print, peak: float | None = None,
              compile: bool = False) -> dict[str, Any]:
    """Run every measurement; returns {"profile", "machine", "seconds", "peak_tflops", "rows": [dict per row], …}.

    The full autoencoder row needs LPIPS backbone weights or `random_lpips=True`; without either it is reported
    as skipped. `peak`: the device's peak TFLOP/s (default: flops.PEAKS by GPU name; none on CPU)."""
    p, device = _profile(profile), get_device(device)
    say = log or (lambda s: None)
    if peer and not diffusers_available():
        say("diffusers is not installed: the peer columns stay empty (pip install 'minildm[peer]')")
        peer = False
    t0 = time.perf_counter()
    peak = peak or peak_tflops(device, precision_dtype(device, "auto"))
    out = {"profile": p.name, "machine": machine_info(device), "seconds": seconds, "rounds": rounds, "peer": peer,
           "peak_tflops": peak, "rows": []}

    def add(row: dict[str, Any]) -> None:
        for side in ("", "_diffusers"):                                 # the share of the device's peak
            t = row.get(f"tflops{side}")
            row[f"peak_share{side}"] = None if t is None or peak is None else t / peak
        out["rows"].append(row)
        say("  measured: " + "  ".join(_cells(row)))

    kw = dict(profile=p, seconds=seconds, device=device, rounds=rounds)
    add(bench_data(**kw))
    try:
        add(bench_autoencoder_step(**kw, random_lpips=random_lpips, lpips_download=lpips_download))
    except LPIPSWeightsMissingError as e:
        say(f"autoencoder step with LPIPS skipped: {str(e).splitlines()[0]}")
        add(_skipped("autoencoder step, L1 + LPIPS + KL", "LPIPS backbone weights missing; rerun with --random-lpips"))
    add(bench_autoencoder_matched(**kw, peer=peer))
    add(ldm_row := bench_ldm_step(**kw))
    if device.type == "cpu":              # a bf16-capable GPU runs bf16 by default; on the CPU fp32 is the default
        add(bench_ldm_step(**kw, precision="bf16"))
    if compile:                           # the compiled step computes what the eager one does: its FLOPs
        row = bench_ldm_step(**kw, compile=True)
        if row:
            row.update(flops=ldm_row["flops"], tflops=ldm_row["flops"] * row["calls_per_s"] / 1e12)
        add(row or _skipped("LDM step, compiled", "torch.compile is not supported here"))
    add(bench_unet_matched(**kw, peer=peer))
    add(bench_ddim(**kw, batch_size=sample_batch, steps=steps, peer=peer))
    out["wall_s"], out["max_rss"] = time.perf_counter() - t0, max_rss_bytes()
    return out


def _num(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 1000 else f"{v:.{digits}g}"


def _si(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{prefix}{unit}"
    return f"{v:.3g}{unit}"


def _table(rows: list[list[str]]) -> list[str]:
    """Rows of cells as aligned text: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]) for r in rows]


COLUMNS = ["what", "unit", "ours", "diffusers", "ratio", "params ours / diffusers", "FLOP/call",
           "TFLOP/s ours / diffusers", "% of peak", "peak mem"]


def _cells(r: dict[str, Any]) -> list[str]:
    """A row of run_bench as the cells of COLUMNS."""
    params = " / ".join("-" if n is None else f"{n / 1e6:.3f}M" for n in (r["params_ours"], r["params_diffusers"]))
    share = "-" if r.get("peak_share") is None else f"{r['peak_share']:.1%}"
    return [r["what"], r["unit"], "skipped" if r.get("skipped") else _num(r["ours"]), _num(r["diffusers"]),
            "-" if r["ratio"] is None else f"{r['ratio']:.2f}x", params, _si(r.get("flops")),
            " / ".join(_num(r.get(k)) for k in ("tflops", "tflops_diffusers")), share, _si(r.get("peak_mem"), "B")]


def format_table(result: dict[str, Any]) -> str:
    """The result of `run_bench` as a readable table, with what its columns mean."""
    m, peak, rss = result["machine"], result.get("peak_tflops"), result.get("max_rss")
    mem = ("peak mem = torch.cuda.max_memory_allocated during one call (reset before it)"
           if str(m["device"]).startswith("cuda") else
           "peak mem: n/a on this device" + (f" (the whole process's max RSS: {_si(rss, 'B')})" if rss else ""))
    return "\n".join([
        f"minildm bench, profile {result['profile']}: device {m['device']} ({m['gpu'] or m['cpu']}), torch "
        f"{m['torch']}, {m['torch_threads']} torch threads of {m['cpu_count']} CPUs, diffusers "
        f"{m['diffusers'] or 'not installed'}",
        *_table([COLUMNS, *(_cells(r) for r in result["rows"])]),
        f"ratio = ours / diffusers as throughputs (> 1: minildm is faster); best of {result['rounds']} alternating "
        f"rounds, {result['seconds']:g} s per measurement; random weights; "
        f"wall {result.get('wall_s', float('nan')):.0f} s",
        f"FLOP/call: matmul/conv/attention FLOPs of one call (torch.utils.flop_counter, forward + backward); "
        f"TFLOP/s = FLOP/call x calls/s; % of peak: "
        f"{f'of {peak:g} TFLOP/s' if peak else 'no known peak for this device (pass --peak-tflops)'}; {mem}"])


def format_plan(plan: dict[str, Any]) -> str:
    """flops.plan_profile's result as a table that says what it is: a prediction, not a measurement."""
    rows = [[r["name"], f"{r['steps']:,}", str(r["batch"]), f"{r['gflop_per_step']:.1f}", f"{r['ops']:,}",
             f"{r['compute_ms']:.2f}", f"{r['launch_ms']:.2f}", f"{r['flops'] / 1e15:.1f}", f"{r['minutes']:.2f}"]
            for r in plan["stages"]]
    total = ["all", *[""] * 6, f"{sum(r['flops'] for r in plan['stages']) / 1e15:.1f}", f"{plan['minutes']:.2f}"]
    header = ["stage", "steps", "batch", "GFLOP/step", "ops/step", "compute ms", "launch ms", "PFLOP", "minutes"]
    return "\n".join([
        f"predicted training time of the {plan['profile']} profile's course models: counted FLOPs at an ASSUMED "
        f"{plan['utilization']:.0%} of {plan['peak_tflops']:g} TFLOP/s, and at least {plan['op_us']:g} µs per "
        f"launched op (a prediction, not a measurement)",
        *_table([header, *rows, total]),
        f"FLOPs counted at batch {plan['count_batch']} on the CPU and scaled by the batch; the autoencoder's "
        f"row shows its step before disc_start (after it the GAN terms add to it)"])
