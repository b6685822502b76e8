"""`minildm bench`: every speed that matters, measured in one run, next to diffusers at a matched config.

    data          Shapes rendering (scene drawing + rasterizing + tokenizing)             images/s
    autoencoder   our full first-stage step: L1 + LPIPS + KL, Adam (Sec. 3.1)             steps/s
                  matched step vs diffusers' AutoencoderKL: L1 + KL on the same images    steps/s, ratio
    LDM           our full second-stage step: text encoder τθ + U-Net, L_simple, AdamW    steps/s
                  matched step vs diffusers' UNet2DConditionModel: the same loss          steps/s, ratio
    sampling      DDIM with classifier-free guidance, decoding included (Sec. 4)          images/s, ratio

Every measurement is a small function returning a dict of numbers, so a notebook can call it; `run_bench`
runs them all and `format_table` prints them. Models have random weights: this measures speed only.

How the peer is matched: see peer.py (same layers and parameter counts). The matched steps use the same loss on both sides (U-Net: MSE to the profile's target on random latents
with a random context and the padding mask of real captions; autoencoder: L1 + KL, no LPIPS/GAN), so the
ratio compares the networks and their training step, not the objectives. Our *full* autoencoder step with
LPIPS is reported on its own row.

Timing: each callable runs `warmup` times, then as often as fits into `seconds` (at least once), with a
CUDA synchronize before and after; ours and theirs alternate in `rounds` rounds and the best round counts
(least disturbed by other processes on a shared machine). ratio = ours / theirs as throughputs: > 1 means
minildm is faster.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..autoencoder import AutoencoderKL, build_autoencoder, load_autoencoder
from ..data.datasets import ShapesDataset
from ..diffusion import GaussianDiffusion
from ..eval.metrics import reconstruction_metrics
from ..ldm import LatentDiffusion
from ..losses import AutoencoderLoss
from ..perceptual import LPIPSWeightsMissingError, random_backbone_requested
from ..train.profiles import Profile, get_profile
from ..train.speed import autocast, maybe_compile, precision_dtype
from ..train.stages import AE_CHECKPOINT, train_autoencoder
from ..unet import UNet
from ..utils import count_parameters, fused_optimizer, get_device, seed_everything
from .flops import (
    PERF_HEADER,
    format_perf,
    max_rss_bytes,
    peak_tflops,
    perf_columns,
    perf_footer,
    with_flops,
    with_peak,
)
from .peer import diffusers_available, peer_autoencoder, peer_ddim_sample, peer_scheduler, peer_unet, peer_unet_fn

__all__ = ["run_bench", "format_table", "machine_info", "bench_data", "bench_autoencoder_step",
           "bench_autoencoder_matched", "bench_ldm_step", "bench_unet_matched", "bench_ddim", "bench_autoencoder", "DEFAULT_SECONDS"]

DEFAULT_SECONDS = 20.0        # per measurement and side; `minildm bench` with the cpu profile then takes ~4 min
DEFAULT_ROUNDS = 2            # ours/theirs alternate this many times; the best round counts


# --- Timing -------------------------------------------------------------------------------------------------


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _throughput(fn: Callable[[], Any], seconds: float, warmup: int = 1, device: torch.device | str | None = None,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Call `fn` `warmup` times untimed, then repeatedly for `seconds` (at least once): {"calls", "seconds", "per_s"}."""
    if seconds <= 0 or warmup < 0:
        raise ValueError(f"need seconds > 0 and warmup >= 0, got seconds={seconds}, warmup={warmup}")
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


def _compare(ours: Callable[[], Any], theirs: Callable[[], Any] | None, seconds: float, warmup: int,
             device: torch.device, rounds: int = DEFAULT_ROUNDS) -> tuple[float, float | None]:
    """Best-of-`rounds` calls/s for ours and (if given) theirs, alternating ours, theirs, ours, theirs …"""
    best_ours, best_theirs = 0.0, None if theirs is None else 0.0
    for r in range(rounds):
        w = warmup if r == 0 else 0
        best_ours = max(best_ours, _throughput(ours, seconds / rounds, w, device)["per_s"])
        if theirs is not None:
            best_theirs = max(best_theirs, _throughput(theirs, seconds / rounds, w, device)["per_s"])
    return best_ours, best_theirs


def _profile(profile: str | Profile | None) -> Profile:
    """The profile, with text conditioning (what the demo trains and the peer U-Net's cross-attention matches)."""
    p = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    return p.replace(ldm={"cond": "text"})


def _autocast(device: torch.device, dtype: torch.dtype | None | str = "default"):
    return autocast(device, precision_dtype(device, "auto") if dtype == "default" else dtype)


def _result(what: str, unit: str, ours: float, theirs: float | None = None, params_ours: int | None = None,
            params_theirs: int | None = None, **extra: Any) -> dict[str, Any]:
    ratio = None if theirs is None or theirs <= 0 else ours / theirs
    return {"what": what, "unit": unit, "ours": ours, "diffusers": theirs, "ratio": ratio,
            "params_ours": params_ours, "params_diffusers": params_theirs, **extra}


# --- Measurements (each returns a dict of numbers) ----------------------------------------------------------


def bench_data(profile: str | Profile | None = None, seconds: float = DEFAULT_SECONDS,
               device: str | torch.device | None = None, batch_size: int = 256) -> dict[str, Any]:
    """Shapes training batches per second × batch size: images/s of `ShapesDataset.random_batches`."""
    p, device = _profile(profile), get_device(device)
    ds = ShapesDataset("train", p.data, size=1_000_000)
    it = ds.random_batches(batch_size, seed=0, device=device)
    r = _throughput(lambda: next(it), seconds, warmup=1, device=device)
    res = p.data.resolution
    return _result(f"Shapes data {res}x{res}, batch {batch_size}", "images/s", r["per_s"] * batch_size)


def bench_autoencoder_step(profile: str | Profile | None = None, seconds: float = DEFAULT_SECONDS,
                           device: str | torch.device | None = None, random_lpips: bool | None = None,
                           lpips_download: bool = True) -> dict[str, Any]:
    """Our full first-stage generator step as train_autoencoder runs it before `disc_start`: L1 + LPIPS + KL, Adam."""
    p, device = _profile(profile), get_device(device)
    cfg = p.ae
    seed_everything(cfg.seed)
    model = build_autoencoder(cfg).to(device).train()
    loss_fn = AutoencoderLoss(cfg, lpips_download=lpips_download, random_backbone=random_lpips).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.9), **fused_optimizer(device))
    x = ShapesDataset("train", p.data).batch(range(cfg.batch_size), device=device)["image"].to(device)

    def step():
        with _autocast(device):
            if cfg.kind == "kl":
                recon, posterior = model(x)
                reg = posterior.kl()
            else:
                recon, reg, _ = model(x)
        loss, _ = loss_fn.generator_loss(x, recon, reg, 0, model.last_layer)   # step 0: GAN not yet on
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    r = _throughput(step, seconds, warmup=2, device=device)
    perf = perf_columns(step, r["per_s"], device)
    terms = "L1" if loss_fn.perceptual is None else f"L1 + LPIPS-{cfg.lpips_net}"
    if loss_fn.perceptual is not None and loss_fn.perceptual.random_backbone:
        terms += " (random trunk)"
    return _result(f"autoencoder step, {terms} + KL, batch {cfg.batch_size}", "steps/s", r["per_s"],
                   params_ours=count_parameters(model), batch_size=cfg.batch_size, **perf)


def bench_autoencoder_matched(profile: str | Profile | None = None, seconds: float = DEFAULT_SECONDS,
                              device: str | torch.device | None = None, peer: bool = True,
                              rounds: int = DEFAULT_ROUNDS) -> dict[str, Any]:
    """Ours vs diffusers' AutoencoderKL, one step each of L = Σ|x − D(z)|/B + w_kl·KL, z ~ q(z|x), Adam."""
    p, device = _profile(profile), get_device(device)
    cfg = dataclasses.replace(p.ae, kind="kl")
    seed_everything(cfg.seed)
    x = ShapesDataset("train", p.data).batch(range(cfg.batch_size), device=device)["image"].to(device)
    B = x.shape[0]

    def make_step(model: torch.nn.Module, forward: Callable[[torch.Tensor], tuple[torch.Tensor, Any]]):
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.9), **fused_optimizer(device))

        def step():
            with _autocast(device):
                recon, posterior = forward(x)
            loss = (x - recon.float()).abs().sum() / B + cfg.kl_weight * posterior.kl().float().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    ours = AutoencoderKL(cfg).to(device).train()
    ours_step = make_step(ours, ours)
    theirs_step, theirs = None, None
    if peer:
        theirs = peer_autoencoder(cfg).to(device).train()

        def theirs_forward(xx):
            posterior = theirs.encode(xx).latent_dist
            return theirs.decode(posterior.sample()).sample, posterior

        theirs_step = make_step(theirs, theirs_forward)
    a, b = _compare(ours_step, theirs_step, seconds, warmup=2, device=device, rounds=rounds)
    return _result(f"autoencoder step, L1 + KL (matched), batch {B}", "steps/s", a, b, count_parameters(ours),
                   None if theirs is None else count_parameters(theirs), batch_size=B,
                   **perf_columns(ours_step, a, device, theirs_step, b))


def _ldm_and_batch(p: Profile, device: torch.device):
    """A LatentDiffusion on a random (frozen) autoencoder, a scaled latent batch z0 and its caption tokens."""
    seed_everything(0)
    cfg = p.ldm
    ae = build_autoencoder(p.ae).to(device).eval()
    ds = ShapesDataset("train", p.data)
    ldm = LatentDiffusion(ae, cfg, tokenizer=ds.tokenizer, num_classes=ds.num_classes, max_objects=ds.max_objects,
                          resolution=p.data.resolution).to(device)
    data = ds.batch(range(cfg.batch_size), device=device)
    image = data["image"].to(device)
    ldm.set_scale_factor(image)
    return ldm, ldm.encode(image), data["tokens"].to(device)


def bench_ldm_step(profile: str | Profile | None = None, seconds: float = DEFAULT_SECONDS,
                   device: str | torch.device | None = None, precision: str | None = None,
                   compile: bool = False) -> dict[str, Any]:
    """Our full second-stage step as train_ldm runs it: τθ(captions) with 10 % dropout, U-Net, L_simple, AdamW.
    precision ("fp32", "bf16", "auto"; speed.precision_dtype) overrides the default autocast; compile=True
    compiles the U-Net first (speed.maybe_compile; None is returned where that is not supported)."""
    p, device = _profile(profile), get_device(device)
    cfg = p.ldm
    ldm, z0, tokens = _ldm_and_batch(p, device)
    dtype = "default" if precision is None else precision_dtype(device, precision)
    if compile and not maybe_compile(ldm.unet, True, "U-Net", device):
        return None
    mods = ldm.denoiser_modules().train()
    opt = torch.optim.AdamW(mods.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **fused_optimizer(device))
    g = torch.Generator().manual_seed(0)

    def step():
        with _autocast(device, dtype):
            loss = ldm.training_step(z0, tokens, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    r = _throughput(step, seconds, warmup=3 if compile else 2, device=device)
    how = ("compiled, " if compile else "") + (f"{precision} autocast, " if precision else "")
    return _result(f"LDM step, {how}text encoder + U-Net, batch {cfg.batch_size}", "steps/s", r["per_s"],
                   params_ours=count_parameters(mods), batch_size=cfg.batch_size,    # compiled: FLOPs as eager
                   **(perf_columns(step, r["per_s"], device) if not compile else {"calls_per_s": r["per_s"]}))


def bench_unet_matched(profile: str | Profile | None = None, seconds: float = DEFAULT_SECONDS,
                       device: str | torch.device | None = None, peer: bool = True,
                       rounds: int = DEFAULT_ROUNDS) -> dict[str, Any]:
    """Ours vs diffusers' UNet2DConditionModel: one step of ‖target − net(z_t, t, c)‖² + AdamW each.

    Same inputs on both sides: random latents (B, c, h, w) of the profile's latent shape, random context
    (B, L, context_dim) with the padding mask of real Shapes captions, t uniform, the profile's target.
    """
    p, device = _profile(profile), get_device(device)
    cfg = p.ldm
    ldm, z0, tokens = _ldm_and_batch(p, device)          # only for the latent shape and the captions' mask
    B, c, h, w = z0.shape
    gen = torch.Generator(device=device).manual_seed(0)
    x0 = torch.randn(z0.shape, generator=gen, device=device)
    cond = {"context": torch.randn(B, tokens.shape[1], cfg.context_dim, generator=gen, device=device),
            "context_mask": tokens != ldm.tokenizer.pad_id}
    diffusion = GaussianDiffusion.from_config(cfg)
    sqrt_ab = diffusion.sqrt_alpha_bar.to(device, torch.float32)                     # √ᾱ_t, (T,)
    sqrt_1m_ab = diffusion.sqrt_one_minus_alpha_bar.to(device, torch.float32)        # √(1−ᾱ_t), (T,)
    del ldm

    def make_step(model: torch.nn.Module, model_fn: Callable):
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **fused_optimizer(device))

        def step():
            t = torch.randint(0, cfg.timesteps, (B,), device=device)
            noise = torch.randn_like(x0)
            a, s = sqrt_ab[t].view(B, 1, 1, 1), sqrt_1m_ab[t].view(B, 1, 1, 1)
            x_t = a * x0 + s * noise                                   # x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε
            if cfg.prediction_type == "epsilon":
                target = noise
            elif cfg.prediction_type == "sample":
                target = x0
            else:
                target = a * noise - s * x0                            # v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0
            with _autocast(device):
                out = model_fn(x_t, t, cond)
            loss = F.mse_loss(out.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    ours = UNet.from_config(cfg, in_channels=c, cross_attention=True).to(device).train()
    ours_step = make_step(ours, lambda x, t, cd: ours(x, t, **cd))
    theirs_step, theirs = None, None
    if peer:
        theirs = peer_unet(cfg, in_channels=c).to(device).train()
        theirs_step = make_step(theirs, peer_unet_fn(theirs, cfg.coord_channels))
    a, b = _compare(ours_step, theirs_step, seconds, warmup=2, device=device, rounds=rounds)
    return _result(f"U-Net step, MSE + AdamW (matched), batch {B}", "steps/s", a, b, count_parameters(ours),
                   None if theirs is None else count_parameters(theirs), batch_size=B,
                   **perf_columns(ours_step, a, device, theirs_step, b))


def bench_ddim(profile: str | Profile | None = None, seconds: float = DEFAULT_SECONDS,
               device: str | torch.device | None = None, batch_size: int | None = None, steps: int = 50,
               guidance_scale: float | None = None, peer: bool = True, rounds: int = DEFAULT_ROUNDS) -> dict[str, Any]:
    """DDIM-`steps` with classifier-free guidance, images/s including decoding: `LatentDiffusion.sample`
    vs diffusers (its U-Net, DDIMScheduler loop and AutoencoderKL decoder) on the same captions' τθ(y)."""
    p, device = _profile(profile), get_device(device)
    cfg = p.ldm
    B = cfg.batch_size if batch_size is None else batch_size
    s = cfg.guidance_scale if guidance_scale is None else guidance_scale
    ldm, z0, tokens = _ldm_and_batch(p, device)
    ldm.eval()
    tokens = tokens[:B]
    if tokens.shape[0] < B:
        tokens = tokens.repeat(-(-B // tokens.shape[0]), 1)[:B]
    res = p.data.resolution

    def ours(n_steps: int = steps):
        return ldm.sample(tokens, resolution=res, steps=n_steps, guidance_scale=s)

    ours(2)  # a full warm-up run is long on a CPU: warm up with a 2-step run, then time whole runs
    theirs, params_theirs = None, None
    if peer:
        unet = peer_unet(cfg, in_channels=ldm.latent_channels).to(device).eval()
        vae = peer_autoencoder(p.ae).to(device).eval()
        scheduler = peer_scheduler(cfg)
        model_fn = peer_unet_fn(unet, cfg.coord_channels)
        with torch.no_grad():
            cond = ldm.encode_condition(tokens)
            uncond = ldm.encode_condition(ldm.null_condition(tokens))
        scale = float(ldm.scale_factor)
        hw = ldm.latent_size(res)
        params_theirs = count_parameters(unet)

        @torch.no_grad()
        def theirs(n_steps: int = steps):
            x_T = torch.randn(B, ldm.latent_channels, hw, hw, device=device)
            z = peer_ddim_sample(model_fn, scheduler, x_T, n_steps, cond, uncond, s)
            return vae.decode(z / scale).sample.clamp(-1, 1)

        theirs(2)
    a, b = _compare(ours, theirs, seconds, warmup=0, device=device, rounds=rounds)
    return _result(f"DDIM-{steps} sampling, guidance {s:g}, batch {B}, incl. decoding", "images/s", a * B,
                   None if b is None else b * B, count_parameters(ldm.unet), params_theirs, batch_size=B,
                   **perf_columns(ours, a, device, theirs, b))


# --- Everything, as a table ---------------------------------------------------------------------------------


def machine_info(device: torch.device) -> dict[str, Any]:
    """Device, CPU/GPU name, torch threads, torch and diffusers versions: the line a timing needs."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"device": str(device), "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "diffusers": None, "gpu": None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if diffusers_available():
        from importlib.metadata import PackageNotFoundError, version

        try:
            info["diffusers"] = version("diffusers")
        except PackageNotFoundError:
            info["diffusers"] = "unknown version"
    return info


def run_bench(profile: str | Profile | None = None, device: str | torch.device | None = None,
              seconds: float = DEFAULT_SECONDS, peer: bool = True, sample_batch: int | None = None,
              steps: int = 50, random_lpips: bool | None = None, lpips_download: bool = True,
              rounds: int = DEFAULT_ROUNDS, log: Callable[[str], None] | None = print, peak: float | None = None,
              compile: bool = False) -> dict[str, Any]:
    """Run every measurement; returns {"profile", "machine", "seconds", "peak_tflops", "rows": [dict per row], …}.

    peer=True compares with diffusers when it is installed (a notice otherwise). The full autoencoder row
    needs LPIPS backbone weights or `random_lpips=True`; without either it is reported as skipped. `peak`:
    the device's peak TFLOP/s for the share-of-peak column (default: flops.PEAKS by GPU name; none on CPU).
    compile=True adds a row with the compiled U-Net (minutes of compiling on a CPU).
    """
    if not seconds > 0 or steps < 1 or rounds < 1 or (sample_batch is not None and sample_batch < 1):
        raise ValueError(f"need seconds > 0, steps >= 1, rounds >= 1 and sample_batch >= 1; got seconds={seconds}, "
                         f"steps={steps}, rounds={rounds}, sample_batch={sample_batch}")
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
        out["rows"].append(with_peak(row, peak))
        say(f"  measured: {_format_row(row)}")

    kw = dict(profile=p, seconds=seconds, device=device)
    add(bench_data(**kw))
    try:
        add(bench_autoencoder_step(**kw, random_lpips=random_lpips, lpips_download=lpips_download))
    except LPIPSWeightsMissingError as e:
        say(f"autoencoder step with LPIPS skipped: {str(e).splitlines()[0]}")
        add(_result("autoencoder step, L1 + LPIPS + KL", "steps/s", None,
                    skipped="LPIPS backbone weights missing; rerun with --random-lpips"))
    add(bench_autoencoder_matched(**kw, peer=peer, rounds=rounds))
    add(ldm_row := bench_ldm_step(**kw))
    if device.type == "cpu":              # a bf16-capable GPU runs bf16 by default; on the CPU fp32 is the default
        add(bench_ldm_step(**kw, precision="bf16"))
    if compile:
        row = bench_ldm_step(**kw, compile=True)
        add(with_flops(row, ldm_row["flops"]) if row else _result("LDM step, compiled", "steps/s", None,
                                                                   skipped="torch.compile is not supported here"))
    add(bench_unet_matched(**kw, peer=peer, rounds=rounds))
    add(bench_ddim(**kw, batch_size=sample_batch, steps=steps, peer=peer, rounds=rounds))
    out["wall_s"], out["max_rss"] = time.perf_counter() - t0, max_rss_bytes()
    return out


def _num(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 1000 else f"{v:.{digits}g}"


def _params(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.3f}M"


def _format_row(r: dict[str, Any], width: int = 55) -> str:
    ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
    ours = "skipped" if r.get("skipped") else _num(r["ours"])
    return (f"{r['what']:<{width}} {r['unit']:>9} {ours:>9} {_num(r['diffusers']):>9} {ratio:>7}  "
            f"{_params(r['params_ours']):>8} / {_params(r['params_diffusers']):<8} {format_perf(r)}")


def format_table(result: dict[str, Any]) -> str:
    """The result of `run_bench` as a readable table (ratio = ours/theirs throughput; > 1: minildm faster)."""
    m = result["machine"]
    hw = m["gpu"] or m["cpu"]
    lines = [
        f"minildm bench, profile {result['profile']}: device {m['device']} ({hw}), torch {m['torch']}, "
        f"{m['torch_threads']} torch threads of {m['cpu_count']} CPUs, diffusers {m['diffusers'] or 'not installed'}",
    ]
    width = max([len(r["what"]) for r in result["rows"]] + [4])
    lines.append(f"{'what':<{width}} {'unit':>9} {'ours':>9} {'diffusers':>9} {'ratio':>7}  params ours / diffusers "
                 f"{PERF_HEADER}")
    lines += [_format_row(r, width) for r in result["rows"]]
    lines.append(f"ratio = ours / diffusers as throughputs (> 1: minildm is faster); best of {result['rounds']} "
                 f"alternating rounds, {result['seconds']:g} s per measurement; random weights; "
                 f"wall {result.get('wall_s', float('nan')):.0f} s")
    lines.append(perf_footer(result))
    return "\n".join(lines)


def bench_autoencoder(profile: str | Profile | None, kind: str = "kl", minutes: float = 10.0, out: str | None = None,
                      device: str | None = None, random_lpips: bool | None = None, progress: bool = True) -> list[str]:
    """`minildm bench-ae`: train an autoencoder for `minutes` on Shapes, then measure PSNR/SSIM/LPIPS on the test
    split; returns the report's lines (the settings first, the numbers last)."""
    profile = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    out = out or tempfile.mkdtemp(prefix=f"minildm-bench-ae-{kind}-")
    cfg = dataclasses.replace(profile.ae, kind=kind)
    lines = [f"bench-ae: profile={profile.name} kind={kind} f={cfg.downsample_factor} z={cfg.z_channels} "
             f"ch={cfg.ch} ch_mult={cfg.ch_mult} batch={cfg.batch_size} lpips={cfg.lpips_net} "
             f"w_p={cfg.perceptual_weight} disc_start={cfg.disc_start} res={profile.data.resolution} "
             f"minutes={minutes} threads={torch.get_num_threads()} out={out}"]
    random_note = random_lpips or random_backbone_requested()
    if random_note:
        lines.append("bench-ae: LPIPS runs with a RANDOM backbone (opted in): the perceptual loss is a random-feature "
                     "loss and the LPIPS number below is not the published metric")
    t0 = time.perf_counter()
    r = train_autoencoder(profile.replace(ae={"kind": kind, "steps": 10**9}), out, device=device, max_minutes=minutes,
                          resume=False, random_lpips=random_lpips, progress=progress)
    wall = time.perf_counter() - t0
    model = load_autoencoder(os.path.join(out, AE_CHECKPOINT), device=device)
    res = reconstruction_metrics(model, ShapesDataset("test", config=profile.data), lpips_net=cfg.lpips_net,
                                 random_lpips=random_lpips)
    note = " (RANDOM backbone: not a meaningful metric)" if random_note else ""
    return lines + [f"steps: {r['step']}  wall: {wall:.1f} s  steps/s: {r['step'] / wall:.2f}",
                    f"test split ({res['images']} images): PSNR {res['psnr']:.2f} dB  SSIM {res['ssim']:.4f}  "
                    f"LPIPS-{cfg.lpips_net} {res['lpips']:.4f}{note}"]
