"""`minildm demo`: the whole paper on the built-in Shapes data, in minutes on a laptop CPU.

  0. a captioned preview of the training data                  -> shapes_preview.png
  1. train the autoencoder (perceptual compression)            -> autoencoder.pt
  2. train a text-conditional latent diffusion model on its latents -> ldm.pt
  3. sample a grid of prompts with DDIM + classifier-free guidance -> samples.png
  4. show the denoising trajectory, step by step                -> filmstrip.png

Existing checkpoints in the output folder are reused (training resumes if it was interrupted), so a
second run only samples.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .profiles import Profile, get_profile
from .utils import get_device

SINGLE_PROMPTS = (
    "a large red circle in the top left", "a large blue square in the center",
    "a large yellow triangle in the bottom right", "a large green star in the top right",
    "a small purple circle in the bottom left", "a small orange square in the top middle",
    "a large purple triangle in the middle left", "a large orange star in the bottom middle",
)
PAIR_PROMPTS = (
    "a large red circle to the left of a large blue square",
    "a small yellow star above a large green triangle",
)

# Time caps that keep `make demo` inside 15 minutes on a 2-core laptop CPU, install (~1.5 min) included: on
# the dev machine the cpu profile's autoencoder needs ~2.2 min and its LDM ~9 min; a slower machine stops
# training at the cap (with a checkpoint) and samples from what it has.
AE_MINUTES = 3.5
LDM_MINUTES = 9.5


def _lpips_available(net: str, download: bool = True) -> bool:
    """Are the pretrained LPIPS backbone weights on disk (or, with `download`, downloadable right now)?"""
    from .losses import LPIPSWeightsMissingError, load_backbone_state

    try:
        load_backbone_state(net, download=download)
        return True
    except LPIPSWeightsMissingError as e:
        print(f"NOTE: {str(e).splitlines()[0]}\n      The demo continues with a RANDOM LPIPS backbone: the "
              "autoencoder still trains (L1 + a random-feature perceptual loss; adversarial loss from disc_start "
              "on), but install the pretrained weights for the paper's perceptual loss.")
        return False


def run_demo(out_dir: str | Path = "outputs/demo", profile: str | Profile | None = None,
             device: str | None = None, ae_minutes: float | None = AE_MINUTES, ldm_minutes: float | None = LDM_MINUTES,
             seed: int = 0, download: bool = True) -> dict[str, Path]:
    """Train (or reuse) both stages and write samples.png and filmstrip.png; returns the paths.

    `download=False` never touches the network (the LPIPS backbone must then be on disk already)."""
    from .train_ae import CHECKPOINT_NAME as AE_NAME, train_autoencoder
    from .train_ldm import load_ldm, train_ldm
    from .viz import filmstrip, image_grid, save_figure

    profile = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    device = get_device(device)
    out = Path(out_dir)
    t0 = time.time()
    print(f"minildm demo: profile={profile.name} device={device} threads={torch.get_num_threads()} out={out}")

    from .data import ShapesDataset

    data = ShapesDataset("train", profile.data).batch(range(24))
    preview = save_figure(image_grid(data["image"], data["caption"], ncols=8,
                                     title="the training data: Shapes samples 0-23 with their captions"),
                          out / "shapes_preview.png")
    print(f"[0/4] training data preview: {preview}")

    print(f"[1/4] autoencoder: KL-f{2 ** (len(profile.ae.ch_mult) - 1)}, {profile.ae.steps} steps "
          f"(at most {ae_minutes} min)")
    random_lpips = None if _lpips_available(profile.ae.lpips_net, download) else True
    history = train_autoencoder(profile, out, device=device, max_minutes=ae_minutes, random_lpips=random_lpips,
                                lpips_download=download)
    psnr = [h["val_psnr"] for h in history if "val_psnr" in h]
    ae_step = history[-1]["step"] if history else 0
    print(f"      autoencoder: step {ae_step}/{profile.ae.steps}"
          + (f", validation PSNR {psnr[-1]:.1f} dB" if psnr else "")
          + ("" if ae_step >= profile.ae.steps else f" (stopped by the {ae_minutes}-min cap: a slower machine; "
             "reconstructions will be blurrier)"))

    print(f"[2/4] latent diffusion ({profile.ldm.cond}-conditional), {profile.ldm.steps} steps "
          f"(at most {ldm_minutes} min)")
    run = train_ldm(profile, out / AE_NAME, out, device=device, max_minutes=ldm_minutes, seed=seed)
    print(f"      latent diffusion: step {run['step']}/{profile.ldm.steps}"
          + ("" if run["step"] >= profile.ldm.steps else f" (stopped by the {ldm_minutes}-min cap: a slower "
             "machine; the further a run stops short of its steps, the less well it follows prompts)"))
    ldm = load_ldm(out / "ldm.pt", device)

    print("[3/4] sampling: DDIM, 50 steps, η = 0, guidance 3")
    n_seeds = 4
    prompts = [p for p in SINGLE_PROMPTS for _ in range(n_seeds)] + [p for p in PAIR_PROMPTS for _ in range(n_seeds)]
    g = torch.Generator().manual_seed(seed)
    images = ldm.sample(ldm.prompt_condition(prompts=prompts), resolution=profile.data.resolution,
                        steps=50, eta=0.0, guidance_scale=3.0, generator=g)
    samples = save_figure(image_grid(images, prompts, ncols=8, title="minildm samples (4 seeds per prompt)"),
                          out / "samples.png")

    print("[4/4] denoising filmstrip")
    frames: dict[int, torch.Tensor] = {}
    show = {0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 49}
    film_prompts = list(SINGLE_PROMPTS[:4])

    def keep(step: int, t: int, x_t: torch.Tensor, pred_x0: torch.Tensor) -> None:
        if step in show:
            frames[step] = (t, pred_x0.detach().clone())

    ldm.sample(ldm.prompt_condition(prompts=film_prompts), resolution=profile.data.resolution, steps=50,
               guidance_scale=3.0, generator=torch.Generator().manual_seed(seed), callback=keep)
    steps = sorted(frames)
    fig = filmstrip([ldm.decode(frames[s][1]) for s in steps], [f"t={frames[s][0]}" for s in steps], film_prompts,
                    title="predicted x̂0 = D(ẑ0 / scale) at DDIM steps (left: pure noise, right: final sample)")
    film = save_figure(fig, out / "filmstrip.png")
    print(f"demo finished in {(time.time() - t0) / 60:.1f} min")
    print(f"  data:      {preview.resolve()}")
    print(f"  samples:   {samples.resolve()}")
    print(f"  filmstrip: {film.resolve()}")
    return {"preview": preview, "samples": samples, "filmstrip": film}
