"""Looking inside a trained text-conditional LDM: how does the condition get in? (LDM Sec. 3.3)

    word_attention_maps   where in the image each word of the prompt is attended to, averaged over the
                          cross-attention layers, heads and sampling steps (softmax(QKᵀ/√d) with Q from the
                          U-Net's pixels and K from the text encoder's tokens)
    object_mask           the pixels of a Shapes image that have a given color (where a named object is)
    attention_mass        the share of a word's attention that falls inside a mask
    word_influence        how far swapping one word of the prompt moves the denoiser's prediction x̂_0
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from .data import ShapesDataset
from .ldm import LatentDiffusion
from .nn import record_attention
from .shapes import COLOR_NAMES, COLORS, SHAPES, SIZE_NAMES, render_scenes

__all__ = ["word_attention_maps", "object_mask", "attention_mass", "word_influence", "word_pair_latents",
           "INFLUENCE_PAIRS"]

# word_influence pairs that evaluate-ldm reports: one per attribute, circle/square being the closest shapes
INFLUENCE_PAIRS = (("circle", "square"), ("red", "blue"), ("small", "large"))


@torch.no_grad()
def word_attention_maps(ldm: LatentDiffusion, prompt: str, steps: int = 50, guidance_scale: float = 3.0,
                        seed: int = 0, step_range: tuple[float, float] = (0.0, 1.0)) -> dict[str, Any]:
    """Sample one image for `prompt` and record every cross-attention map on the way.

    For each token, the attention its key receives from every latent pixel (averaged over heads, over the
    cross-attention layers, each upsampled to the image size, and over the sampling steps in `step_range`,
    fractions of the run: (0, 0.5) is the noisier first half) -> {"image": (3, H, W), "words": [w1, …],
    "maps": (n_words, H, W), "bos": (H, W), "eos": (H, W)}. Each pixel's attention over all tokens sums to 1,
    so the maps of the words, bos and eos add up to 1 at every pixel.
    """
    if ldm.cond_mode != "text":
        raise ValueError(f"word_attention_maps needs a text-conditional model, this one is {ldm.cond_mode!r}")
    if not 0.0 <= step_range[0] < step_range[1] <= 1.0:
        raise ValueError(f"step_range must be (start, end) with 0 <= start < end <= 1, got {step_range}")
    raw = ldm.prompt_condition(prompts=[prompt])
    words = ldm.tokenizer.words(prompt)
    res = ldm.resolution
    with record_attention(ldm.unet, keep="all") as recorded:
        image = ldm.sample(raw, steps=steps, guidance_scale=guidance_scale,
                           generator=torch.Generator().manual_seed(seed))[0]
    first, last = int(step_range[0] * steps), max(int(step_range[0] * steps) + 1, round(step_range[1] * steps))
    total, count = torch.zeros(len(words) + 2, res, res), 0
    for name, calls in recorded.of_kind("cross").items():
        h, w = recorded.spatial[name]
        for probs in calls[first:last]:                     # one call per sampling step
            p = probs[0].mean(0)                            # row 0: the conditional sample; mean over heads
            p = p[:, : len(words) + 2].T.reshape(-1, 1, h, w)        # (tokens, 1, h, w): bos, w1…wn, eos
            total += F.interpolate(p.cpu(), size=(res, res), mode="bilinear", align_corners=False)[:, 0]
            count += 1
    maps = total / max(count, 1)
    return {"image": image.cpu(), "words": words, "maps": maps[1:-1], "bos": maps[0], "eos": maps[-1]}


def object_mask(image: torch.Tensor, color: str, tolerance: float = 0.3) -> torch.Tensor:
    """(H, W) bool: the pixels of a Shapes image (3, H, W) in [-1, 1] within `tolerance` (RGB distance, colors
    in [0, 1]) of the named object color. The backgrounds are muted greys, the object colors saturated."""
    if color not in COLORS:
        raise ValueError(f"unknown color {color!r}; the Shapes colors are {', '.join(COLOR_NAMES)}")
    rgb = torch.tensor(COLORS[color], dtype=torch.float32).view(3, 1, 1)
    return ((image.float().cpu() + 1) / 2 - rgb).norm(dim=0) < tolerance


def attention_mass(attention: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """(share of the attention map that falls inside the mask, share of the image the mask covers): a word
    that looks at its object has a mass well above the object's area."""
    a = attention.float().clamp_min(0)
    return float((a * mask).sum() / a.sum().clamp_min(1e-12)), float(mask.float().mean())


def word_pair_latents(ldm: LatentDiffusion, words: tuple[str, str],
                      n: int = 64) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """n one-object test scenes drawn twice, differing only in one attribute: (z_a, z_b, captions_a, captions_b).

    `words` are two values of the same attribute ("circle", "square"; "red", "blue"; "small", "large"); the
    scenes are the first n one-object test scenes with that attribute set to each word. z_a, z_b are the
    scaled posterior means of the rendered images (everything else equal: position, size, color,
    background), captions_a/b their captions, which differ in that one word.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n (scene pairs) must be a positive int, got {n!r}")
    attributes = {"shape": SHAPES, "color": COLOR_NAMES, "size": SIZE_NAMES}
    found = [next((a for a, values in attributes.items() if w in values), None) for w in words]
    if len(words) != 2 or None in found or found[0] != found[1] or words[0] == words[1]:
        raise ValueError(f"expected two different words naming the same attribute, e.g. ('circle', 'square'), "
                         f"('red', 'blue') or ('small', 'large'); got {tuple(words)!r}. Shapes: {', '.join(SHAPES)}; "
                         f"colors: {', '.join(COLOR_NAMES)}; sizes: {', '.join(SIZE_NAMES)}")
    attr = found[0]
    res = ldm.resolution
    ds = ShapesDataset("test", size=max(n, 1000), resolution=res, min_objects=1, max_objects=1)
    scenes = [ds.scene(i) for i in range(n)]
    pair = [[dataclasses.replace(s, objects=(dataclasses.replace(s.objects[0], **{attr: w}),)) for s in scenes]
            for w in words]
    device = ldm.scale_factor.device
    with torch.no_grad():
        z = [ldm.latent_moments(render_scenes(sc, res, device=device)[0])[0] * ldm.scale_factor for sc in pair]
    return z[0], z[1], [s.caption for s in pair[0]], [s.caption for s in pair[1]]


@torch.no_grad()
def word_influence(ldm: LatentDiffusion, words: tuple[str, str] = ("circle", "square"), n: int = 64,
                   timesteps: tuple[int, ...] = (100, 300, 500, 800), seed: int = 0) -> list[dict[str, float]]:
    """How far one word of the prompt moves the denoiser's prediction x̂_0 (a probe of cross-attention).

    Take n scene pairs that differ only in that word (`word_pair_latents`: latents z_a, z_b). At step t, noise
    z_a and z_b with the same ε and predict x̂_0 once with each caption. Place every prediction on the line
    between the two images, p = ⟨x̂_0 − z_b, z_a − z_b⟩ / ‖z_a − z_b‖² (1: the words[0] image, 0: the words[1]
    image). The influence at t is p(caption says words[0]) − p(caption says words[1]), averaged over the
    scenes and both starting latents: 0 when the model ignores the word, 1 when the word alone decides.
    Returns one dict per t: {"t", "snr", "influence", "p_a", "p_b"} (p_a, p_b: the mean p per caption).
    """
    if ldm.cond_mode != "text":
        raise ValueError(f"word_influence needs a text-conditional model, this one is {ldm.cond_mode!r}")
    z_a, z_b, caps_a, caps_b = word_pair_latents(ldm, words, n)
    d = z_a - z_b
    d2 = d.flatten(1).pow(2).sum(1)                                                 # ‖z_a − z_b‖², (n,)
    conds = [ldm.encode_condition(ldm.prompt_condition(prompts=c)) for c in (caps_a, caps_b)]
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(z_a.shape, generator=g).to(z_a.device)
    was_training = ldm.unet.training
    ldm.unet.eval()
    rows = []
    for t in timesteps:
        tt = ldm.diffusion.check_timesteps(torch.full((n,), int(t)), n, z_a.device)
        p = []
        for cond in conds:
            per_start = []
            for z in (z_a, z_b):
                x_t = ldm.diffusion.add_noise(z, eps, tt)
                x0, _ = ldm.diffusion.predict_x0_and_eps(x_t, tt, ldm.model_fn(x_t, tt, cond).float())
                per_start.append((((x0 - z_b) * d).flatten(1).sum(1) / d2).mean())
            p.append(float(torch.stack(per_start).mean()))
        rows.append({"t": int(t), "snr": float(ldm.diffusion.snr(int(t))), "influence": p[0] - p[1],
                     "p_a": p[0], "p_b": p[1]})
    ldm.unet.train(was_training)
    return rows
