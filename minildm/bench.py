"""`minildm bench`: every speed that matters, measured in one run, next to diffusers at a matched config.

    data          Shapes rendering (scene drawing + rasterizing + tokenizing)             images/s
    autoencoder   our full first-stage step: L1 + LPIPS + KL, Adam (Sec. 3.1)             steps/s
                  matched step vs diffusers' AutoencoderKL: L1 + KL on the same images    steps/s, ratio
    LDM           our full second-stage step: text encoder τθ + U-Net, L_simple, AdamW    steps/s
                  matched step vs diffusers' UNet2DConditionModel: the same loss          steps/s, ratio
    sampling      DDIM with classifier-free guidance, decoding included (Sec. 4)          images/s, ratio

Every measurement is a small function returning a dict of numbers, so a notebook can call it; `run_bench`
runs them all and `format_table` prints them. Models have random weights: this measures speed only.

How the peer is matched (`peer_unet`, `peer_autoencoder`): diffusers' blocks are the same design as the
reference LDM code, so the same config gives the same layers and the *same parameter count* for every
profile (checked in tests/test_bench.py). Where they still differ:
  * GroupNorm groups: minildm picks groups per width (`nn.num_groups`: 16 ch -> 4, 32 -> 8, 64 -> 16);
    diffusers takes one `norm_num_groups` for the whole network, here the count of the narrowest level.
    Same parameters, same FLOPs up to the normalization statistics.
  * Coordinate channels (`coord_channels`, a minildm addition): our U-Net builds the (x, y) grid in its
    forward; the peer gets 2 more input channels and the grid is concatenated before the call.
  * Our autoencoder's mid-block attention is written out (softmax(QKᵀ/√d)·V); diffusers' uses SDPA.
The matched steps use the same loss on both sides (U-Net: MSE to the profile's target on random latents
with a random context and the padding mask of real captions; autoencoder: L1 + KL, no LPIPS/GAN), so the
ratio compares the networks and their training step, not the objectives. Our *full* autoencoder step with
LPIPS is reported on its own row.

Timing: each callable runs `warmup` times, then as often as fits into `seconds` (at least once), with a
CUDA synchronize before and after; ours and theirs alternate in `rounds` rounds and the best round counts
(least disturbed by other processes on a shared machine). ratio = ours / theirs as throughputs: > 1 means
minildm is faster.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .profiles import Profile, get_profile
from .utils import autocast_dtype, count_parameters, fused_optimizer, get_device, seed_everything

DEFAULT_SECONDS = 20.0        # per measurement and side; `minildm bench` with the cpu profile then takes ~4 min
DEFAULT_ROUNDS = 2            # ours/theirs alternate this many times; the best round counts


# ----------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------


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


def _autocast(device: torch.device):
    dtype = autocast_dtype(device)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _result(what: str, unit: str, ours: float, theirs: float | None = None, params_ours: int | None = None,
            params_theirs: int | None = None, **extra: Any) -> dict[str, Any]:
    ratio = None if theirs is None or theirs <= 0 else ours / theirs
    return {"what": what, "unit": unit, "ours": ours, "diffusers": theirs, "ratio": ratio,
            "params_ours": params_ours, "params_diffusers": params_theirs, **extra}


# ----------------------------------------------------------------------------------------------------------
# The peer: diffusers, imported only here
# ----------------------------------------------------------------------------------------------------------


def diffusers_available() -> bool:
    """True when the optional peer `diffusers` is installed (`pip install 'minildm[peer]'`)."""
    return importlib.util.find_spec("diffusers") is not None


def _diffusers():
    """Import diffusers offline (it never needs the Hub here) with a clear message when it is missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")
    try:
        import diffusers
    except ImportError as e:
        raise ModuleNotFoundError(
            "the diffusers peer comparison needs the optional package `diffusers`; install it with "
            "`pip install 'minildm[peer]'` (or `pip install diffusers`), or run `minildm bench --no-peer`") from e
    return diffusers


def _groups_for(widths: tuple[int, ...]) -> int:
    """One GroupNorm group count for all widths: minildm's rule (`nn.num_groups`) at the narrowest level."""
    from .nn import num_groups

    g = num_groups(min(widths))
    if any(w % g for w in widths):
        g = math.gcd(*widths)
    return g


def peer_unet(cfg, in_channels: int = 4) -> torch.nn.Module:
    """diffusers' UNet2DConditionModel matched to `UNet.from_config(cfg, in_channels, cross_attention=True)`.

    block_out_channels = model_channels·channel_mult, layers_per_block = num_res_blocks (the up path gets one
    more, as ours), cross-attention blocks at the levels in attention_resolutions (mid block always),
    num_heads heads (diffusers' legacy name for that is `attention_head_dim`), cross_attention_dim =
    context_dim, GroupNorm eps 1e-6, 2 extra input channels when cfg.coord_channels (see module docstring).
    """
    diffusers = _diffusers()
    widths = tuple(cfg.model_channels * m for m in cfg.channel_mult)
    attn = [2**i in cfg.attention_resolutions for i in range(len(widths))]
    return diffusers.UNet2DConditionModel(
        in_channels=in_channels + (2 if getattr(cfg, "coord_channels", False) else 0),
        out_channels=in_channels,
        block_out_channels=widths,
        layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        cross_attention_dim=cfg.context_dim,
        attention_head_dim=cfg.num_heads,          # diffusers' legacy name: this is the number of heads
        norm_num_groups=_groups_for(widths),
        norm_eps=1e-6,
        dropout=getattr(cfg, "dropout", 0.0),
    )


def peer_autoencoder(ae_cfg) -> torch.nn.Module:
    """diffusers' AutoencoderKL matched to our `AutoencoderKL(ae_cfg)`: block_out_channels = ch·ch_mult,
    layers_per_block = num_res_blocks (decoder: +1, as ours), latent_channels = z_channels, mid-block attention."""
    diffusers = _diffusers()
    if ae_cfg.kind != "kl" or ae_cfg.attn_resolutions:
        raise ValueError(f"the peer autoencoder matches a KL autoencoder without attention between levels; got "
                         f"kind={ae_cfg.kind!r}, attn_resolutions={ae_cfg.attn_resolutions}")
    widths = tuple(ae_cfg.ch * m for m in ae_cfg.ch_mult)
    return diffusers.AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(widths),
        up_block_types=("UpDecoderBlock2D",) * len(widths),
        block_out_channels=widths,
        layers_per_block=ae_cfg.num_res_blocks,
        latent_channels=ae_cfg.z_channels,
        norm_num_groups=_groups_for(widths),
    )


def peer_scheduler(cfg) -> Any:
    """diffusers' DDIMScheduler set up like our `ddim_sample`: same betas, trailing spacing, ᾱ_prev = 1 at the
    last step, no clipping of x̂_0, the same prediction type. Equal samples only when S divides T (see
    tests/test_bench.py: for other S diffusers steps to t − ⌊T/S⌋ instead of the list's next timestep)."""
    diffusers = _diffusers()
    if cfg.schedule not in ("scaled_linear", "linear"):
        raise ValueError(f"the peer scheduler supports the 'scaled_linear' and 'linear' schedules, got {cfg.schedule!r}")
    return diffusers.DDIMScheduler(
        num_train_timesteps=cfg.timesteps, beta_start=cfg.beta_start, beta_end=cfg.beta_end,
        beta_schedule=cfg.schedule, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing",
        prediction_type=cfg.prediction_type)


@torch.no_grad()
def peer_ddim_sample(model_fn: Callable, scheduler: Any, x_T: torch.Tensor, steps: int, cond: Any = None,
                     uncond: Any = None, guidance_scale: float = 1.0) -> torch.Tensor:
    """The DDIM loop through diffusers' scheduler (`set_timesteps`, `step`), guidance in one doubled batch.

    model_fn(x, t, cond) as in samplers.py; cond / uncond are tensors or dicts of tensors, like ours.
    """
    from .samplers import concat_cond

    scheduler.set_timesteps(steps, device=x_T.device)
    x = x_T
    B = x.shape[0]
    for t in scheduler.timesteps:
        tb = t.expand(B)
        if guidance_scale == 1.0:
            out = model_fn(x, tb, cond)
        else:                                                  # ε̂ = ε̂(∅) + s·(ε̂(y) − ε̂(∅))
            out_cond, out_uncond = model_fn(torch.cat([x, x]), torch.cat([tb, tb]),
                                            concat_cond(cond, uncond, B)).chunk(2)
            out = out_uncond + guidance_scale * (out_cond - out_uncond)
        x = scheduler.step(out, t, x).prev_sample
    return x


def _coords(B: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """(B, 2, h, w) grid of (x, y) in [−1, 1], what our U-Net appends when coord_channels is on."""
    ys = torch.linspace(-1, 1, h, device=device)
    xs = torch.linspace(-1, 1, w, device=device)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), 0).expand(B, -1, -1, -1)


def _peer_unet_fn(unet: torch.nn.Module, coord_channels: bool) -> Callable:
    """model_fn(x, t, {"context", "context_mask"}) around the diffusers U-Net (mask: True = real token)."""

    def model_fn(x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        if coord_channels:
            x = torch.cat([x, _coords(x.shape[0], x.shape[2], x.shape[3], x.device).to(x.dtype)], dim=1)
        mask = cond.get("context_mask")
        return unet(x, t, encoder_hidden_states=cond["context"],
                    encoder_attention_mask=None if mask is None else mask.to(x.dtype), return_dict=False)[0]

    return model_fn


# ----------------------------------------------------------------------------------------------------------
# Measurements (each returns a dict of numbers)
# ----------------------------------------------------------------------------------------------------------


def bench_data(profile: str | Profile | None = None, seconds: float = DEFAULT_SECONDS,
               device: str | torch.device | None = None, batch_size: int = 256) -> dict[str, Any]:
    """Shapes training batches per second × batch size: images/s of `ShapesDataset.random_batches`."""
    from .data import ShapesDataset

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
    from .autoencoder import build_autoencoder
    from .data import ShapesDataset
    from .losses import AutoencoderLoss

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
    terms = "L1" if loss_fn.perceptual is None else f"L1 + LPIPS-{cfg.lpips_net}"
    if loss_fn.perceptual is not None and loss_fn.perceptual.random_backbone:
        terms += " (random trunk)"
    return _result(f"autoencoder step, {terms} + KL, batch {cfg.batch_size}", "steps/s", r["per_s"],
                   params_ours=count_parameters(model), batch_size=cfg.batch_size)


def bench_autoencoder_matched(profile: str | Profile | None = None, seconds: float = DEFAULT_SECONDS,
                              device: str | torch.device | None = None, peer: bool = True,
                              rounds: int = DEFAULT_ROUNDS) -> dict[str, Any]:
    """Ours vs diffusers' AutoencoderKL, one step each of L = Σ|x − D(z)|/B + w_kl·KL, z ~ q(z|x), Adam."""
    from .autoencoder import AutoencoderKL
    from .data import ShapesDataset

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
                   None if theirs is None else count_parameters(theirs), batch_size=B)


def _ldm_and_batch(p: Profile, device: torch.device):
    """A LatentDiffusion on a random (frozen) autoencoder, a scaled latent batch z0 and its caption tokens."""
    from .autoencoder import build_autoencoder
    from .data import ShapesDataset
    from .ldm import LatentDiffusion

    seed_everything(0)
    cfg = p.ldm
    ae = build_autoencoder(p.ae).to(device).eval()
    ldm = LatentDiffusion(ae, cfg, max_objects=p.data.max_objects).to(device)
    data = ShapesDataset("train", p.data).batch(range(cfg.batch_size), device=device)
    image = data["image"].to(device)
    ldm.set_scale_factor(image)
    return ldm, ldm.encode(image), data["tokens"].to(device)


def bench_ldm_step(profile: str | Profile | None = None, seconds: float = DEFAULT_SECONDS,
                   device: str | torch.device | None = None) -> dict[str, Any]:
    """Our full second-stage step as train_ldm runs it: τθ(captions) with 10 % dropout, U-Net, L_simple, AdamW."""
    from .train_ldm import denoiser_modules

    p, device = _profile(profile), get_device(device)
    cfg = p.ldm
    ldm, z0, tokens = _ldm_and_batch(p, device)
    mods = denoiser_modules(ldm).train()
    opt = torch.optim.AdamW(mods.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **fused_optimizer(device))
    g = torch.Generator().manual_seed(0)

    def step():
        with _autocast(device):
            loss = ldm.training_step(z0, tokens, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    r = _throughput(step, seconds, warmup=2, device=device)
    return _result(f"LDM step, text encoder + U-Net, batch {cfg.batch_size}", "steps/s", r["per_s"],
                   params_ours=count_parameters(mods), batch_size=cfg.batch_size)


def bench_unet_matched(profile: str | Profile | None = None, seconds: float = DEFAULT_SECONDS,
                       device: str | torch.device | None = None, peer: bool = True,
                       rounds: int = DEFAULT_ROUNDS) -> dict[str, Any]:
    """Ours vs diffusers' UNet2DConditionModel: one step of ‖target − net(z_t, t, c)‖² + AdamW each.

    Same inputs on both sides: random latents (B, c, h, w) of the profile's latent shape, random context
    (B, L, context_dim) with the padding mask of real Shapes captions, t uniform, the profile's target.
    """
    from .diffusion import GaussianDiffusion
    from .unet import UNet

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
        theirs_step = make_step(theirs, _peer_unet_fn(theirs, cfg.coord_channels))
    a, b = _compare(ours_step, theirs_step, seconds, warmup=2, device=device, rounds=rounds)
    return _result(f"U-Net step, MSE + AdamW (matched), batch {B}", "steps/s", a, b, count_parameters(ours),
                   None if theirs is None else count_parameters(theirs), batch_size=B)


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
        model_fn = _peer_unet_fn(unet, cfg.coord_channels)
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
                   None if b is None else b * B, count_parameters(ldm.unet), params_theirs, batch_size=B)


# ----------------------------------------------------------------------------------------------------------
# Everything, as a table
# ----------------------------------------------------------------------------------------------------------


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
              rounds: int = DEFAULT_ROUNDS, log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run every measurement; returns {"profile", "machine", "seconds", "rows": [dict per row], "wall_s"}.

    peer=True compares with diffusers when it is installed (a notice otherwise). The full autoencoder row
    needs LPIPS backbone weights or `random_lpips=True`; without either it is reported as skipped.
    """
    from .losses import LPIPSWeightsMissingError

    if not seconds > 0 or steps < 1 or rounds < 1 or (sample_batch is not None and sample_batch < 1):
        raise ValueError(f"need seconds > 0, steps >= 1, rounds >= 1 and sample_batch >= 1; got seconds={seconds}, "
                         f"steps={steps}, rounds={rounds}, sample_batch={sample_batch}")
    p, device = _profile(profile), get_device(device)
    say = log or (lambda s: None)
    if peer and not diffusers_available():
        say("diffusers is not installed: the peer columns stay empty (pip install 'minildm[peer]')")
        peer = False
    t0 = time.perf_counter()
    out = {"profile": p.name, "machine": machine_info(device), "seconds": seconds, "rounds": rounds, "peer": peer,
           "rows": []}

    def add(row: dict[str, Any]) -> None:
        out["rows"].append(row)
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
    add(bench_ldm_step(**kw))
    add(bench_unet_matched(**kw, peer=peer, rounds=rounds))
    add(bench_ddim(**kw, batch_size=sample_batch, steps=steps, peer=peer, rounds=rounds))
    out["wall_s"] = time.perf_counter() - t0
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
            f"{_params(r['params_ours']):>8} / {_params(r['params_diffusers'])}")


def format_table(result: dict[str, Any]) -> str:
    """The result of `run_bench` as a readable table (ratio = ours/theirs throughput; > 1: minildm faster)."""
    m = result["machine"]
    hw = m["gpu"] or m["cpu"]
    lines = [
        f"minildm bench, profile {result['profile']}: device {m['device']} ({hw}), torch {m['torch']}, "
        f"{m['torch_threads']} torch threads of {m['cpu_count']} CPUs, diffusers {m['diffusers'] or 'not installed'}",
    ]
    width = max([len(r["what"]) for r in result["rows"]] + [4])
    lines.append(f"{'what':<{width}} {'unit':>9} {'ours':>9} {'diffusers':>9} {'ratio':>7}  params ours / diffusers")
    lines += [_format_row(r, width) for r in result["rows"]]
    lines.append(f"ratio = ours / diffusers as throughputs (> 1: minildm is faster); best of {result['rounds']} "
                 f"alternating rounds, {result['seconds']:g} s per measurement; random weights; "
                 f"wall {result.get('wall_s', float('nan')):.0f} s")
    return "\n".join(lines)


def _cmd_bench(args: argparse.Namespace) -> int:
    result = run_bench(args.profile, args.device, seconds=args.seconds, peer=not args.no_peer,
                       sample_batch=args.sample_batch, steps=args.steps,
                       random_lpips=True if args.random_lpips else None, lpips_download=not args.offline)
    print(format_table(result))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {path}")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add `bench` to the `minildm` command."""
    b = subparsers.add_parser("bench", help="measure data, autoencoder and LDM training, and DDIM sampling speed "
                                            "(next to diffusers when it is installed)")
    b.add_argument("--profile", default=None, help="ci, cpu or gpu (default: $MINILDM_PROFILE or by hardware)")
    b.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    b.add_argument("--seconds", type=float, default=DEFAULT_SECONDS,
                   help=f"seconds per measurement and side (default {DEFAULT_SECONDS:g}: ~4 min in all on a 2-core CPU)")
    b.add_argument("--no-peer", action="store_true", help="skip the diffusers comparison")
    b.add_argument("--sample-batch", type=int, default=None, help="DDIM batch size (default: the profile's batch)")
    b.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    b.add_argument("--random-lpips", action="store_true",
                   help="use a random LPIPS backbone when the pretrained one is not available (speed is the same)")
    b.add_argument("--offline", action="store_true", help="never download LPIPS weights")
    b.add_argument("--json", default=None, metavar="PATH", help="also write the numbers to this JSON file")
    b.set_defaults(func=_cmd_bench)
