"""Looking inside a trained LDM: how does the condition get in? (LDM Sec. 3.3)

Cross-attention softmax(QKᵀ/√d), Q from the U-Net's pixels and K from the text encoder's tokens: where each word
of a prompt looks (word_attention_maps), how much of it falls on its object (attention_mass_study), how far one
word moves the denoiser's prediction x̂_0 (word_influence). Inside any network (notebook 04): each block's output
shape, where the parameters sit, what a backward pass reaches; what the U-Net's first convolution sees; a
fingerprint of a first stage's weights (models that share it share one autoencoder).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.datasets import ShapesDataset
from ..data.shapes import COLOR_NAMES, COLORS, SHAPES, SIZE_NAMES, parse_caption, render_scenes
from ..ldm import LatentDiffusion
from ..nn import AttentionMaps, Upsample, record_attention
from ..unet import Downsample, ResBlock, SpatialTransformer, TransformerBlock, UNet
from .judge import ATTRIBUTES

__all__ = ["word_attention_maps", "record_word_attention", "token_maps", "cross_attention_layers", "object_mask",
           "attention_mass", "attention_mass_study", "summarize_attention_mass", "word_influence",
           "word_pair_latents", "first_conv_input", "autoencoder_fingerprint", "require_mode", "layer_shapes",
           "parameters_by_block", "parameters_with_gradient", "parameters_by_kind", "INFLUENCE_PAIRS", "STEP_RANGES",
           "PARAMETER_KINDS"]

# word_influence pairs that evaluate-ldm reports: one per attribute, circle/square being the closest shapes
INFLUENCE_PAIRS = (("circle", "square"), ("red", "blue"), ("small", "large"))

# The sampling run cut in halves: at high noise the layout is decided, at low noise the details
STEP_RANGES = {"all steps": (0.0, 1.0), "noisy half": (0.0, 0.5), "clean half": (0.5, 1.0)}

# What each parameter of the U-Net does, in the order notebook 04 tabulates them (see `parameters_by_kind`).
PARAMETER_KINDS = ("time embedding (MLP)", "class embedding", "input / output convolutions",
                   "ResBlocks (convolutions + time projection)", "down- / upsampling",
                   "self-attention", "cross-attention (text / layout)", "feed-forward (GEGLU)",
                   "transformer norms and 1×1 projections")


def require_mode(ldm: Any, mode: str, what: str) -> None:
    """Raise unless `ldm` is conditioned on `mode` ("text", "class", "layout", "sr" or "none")."""
    if getattr(ldm, "cond_mode", None) != mode:
        kind = "an unconditional (cond='none')" if mode == "none" else f"a {mode}-conditional"
        raise ValueError(f"{what} needs {kind} model, this one is {getattr(ldm, 'cond_mode', None)!r}")


@torch.no_grad()
def record_word_attention(ldm: LatentDiffusion, prompt: str, steps: int = 50, guidance_scale: float = 3.0,
                          seed: int = 0) -> dict[str, Any]:
    """Sample one image for `prompt` (DDIM, η = 0, seeded) and keep every cross-attention map on the way:
    {"image": (3, H, W), "words": [w1, …], "recorded": AttentionMaps of the cross-attention layers, each a list
    of one (B', heads, h·w, L) tensor per sampling step (row 0: the conditional sample; with guidance row 1 is
    the unconditional one), "steps": steps}."""
    require_mode(ldm, "text", "word attention")
    raw = ldm.prompt_condition(prompts=[prompt])
    with record_attention(ldm.unet, keep="all") as recorded:
        image = ldm.sample(raw, steps=steps, guidance_scale=guidance_scale,
                           generator=torch.Generator().manual_seed(seed))[0]
    cross = AttentionMaps()
    for name, calls in recorded.of_kind("cross").items():
        cross[name], cross.kind[name], cross.spatial[name] = calls, "cross", recorded.spatial[name]
    return {"image": image.cpu(), "words": ldm.tokenizer.words(prompt), "recorded": cross, "steps": steps}


def cross_attention_layers(recorded: AttentionMaps) -> dict[str, tuple[int, int]]:
    """{layer name: its query grid (h, w)} of the cross-attention layers in a recording, in call order."""
    return {name: recorded.spatial[name] for name in recorded.of_kind("cross")}


def token_maps(recorded: AttentionMaps, n_tokens: int, resolution: int, layers: Sequence[str] | None = None,
               step_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """(n_tokens, resolution, resolution): the attention each of the first n_tokens keys receives from every
    latent pixel, for row 0 of the batch, averaged over heads, then each layer's (h, w) map upsampled
    (bilinear) to the image size, then averaged over `layers` (default: every cross-attention layer) and the
    sampling steps in `step_range` (fractions of the run: (0, 0.5) is the noisier first half)."""
    _check_step_range(step_range)
    spatial = cross_attention_layers(recorded)
    layers = list(spatial) if layers is None else list(layers)
    unknown = [name for name in layers if name not in spatial]
    if unknown or not layers:
        raise ValueError(f"unknown cross-attention layer(s) {unknown}; the recording has {list(spatial)}")
    total, count = torch.zeros(n_tokens, resolution, resolution), 0
    for name in layers:
        calls, (h, w) = recorded[name], spatial[name]
        first = int(step_range[0] * len(calls))                      # one call per sampling step
        last = max(first + 1, round(step_range[1] * len(calls)))
        p = torch.stack([c[0] for c in calls[first:last]]).float().cpu().mean(1)   # (S, h·w, L): row 0, mean heads
        p = p[..., :n_tokens].transpose(1, 2).reshape(-1, 1, h, w)                 # (S·n_tokens, 1, h, w)
        up = F.interpolate(p, size=(resolution, resolution), mode="bilinear", align_corners=False)
        total += up.view(-1, n_tokens, resolution, resolution).sum(0)             # sum over the steps
        count += up.shape[0] // n_tokens
    return total / max(count, 1)


def _check_step_range(step_range: tuple[float, float]) -> None:
    if not 0.0 <= step_range[0] < step_range[1] <= 1.0:
        raise ValueError(f"step_range must be (start, end) with 0 <= start < end <= 1, got {step_range}")


@torch.no_grad()
def word_attention_maps(ldm: LatentDiffusion, prompt: str, steps: int = 50, guidance_scale: float = 3.0,
                        seed: int = 0, step_range: tuple[float, float] = (0.0, 1.0),
                        layers: Sequence[str] | None = None) -> dict[str, Any]:
    """`record_word_attention` then `token_maps` (over `layers`, default all, and the steps in `step_range`) ->
    {"image": (3, H, W), "words": [w1, …], "maps": (n_words, H, W), "bos": (H, W), "eos": (H, W)}. Each pixel's
    attention over all tokens sums to 1, so the maps of the words, bos and eos add up to 1 at every pixel."""
    _check_step_range(step_range)                                         # before sampling, not after
    r = record_word_attention(ldm, prompt, steps, guidance_scale, seed)
    maps = token_maps(r["recorded"], len(r["words"]) + 2, ldm.resolution, layers, step_range)   # bos, w1…wn, eos
    return {"image": r["image"], "words": r["words"], "maps": maps[1:-1], "bos": maps[0], "eos": maps[-1]}


def object_mask(image: torch.Tensor, color: str) -> torch.Tensor:
    """(H, W) bool: the pixels of a Shapes image (3, H, W) in [-1, 1] within 0.3 (RGB distance, colors in
    [0, 1]) of the named object color. The backgrounds are muted greys, the object colors saturated."""
    if color not in COLORS:
        raise ValueError(f"unknown color {color!r}; the Shapes colors are {', '.join(COLOR_NAMES)}")
    rgb = torch.tensor(COLORS[color], dtype=torch.float32).view(3, 1, 1)
    return ((image.float().cpu() + 1) / 2 - rgb).norm(dim=0) < 0.3


def attention_mass(attention: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """(share of the attention map that falls inside the mask, share of the image the mask covers): a word
    that looks at its object has a mass well above the object's area."""
    a = attention.float().clamp_min(0)
    return float((a * mask).sum() / a.sum().clamp_min(1e-12)), float(mask.float().mean())


def _phrase_word_indices(words: list[str], objects: list[dict]) -> list[dict[str, int]]:
    """For each object of a parsed caption, the index of its color word and of its shape word in `words`
    (the k-th color word of the caption belongs to its k-th object phrase)."""
    colors = [i for i, w in enumerate(words) if w in COLOR_NAMES]
    shapes = [i for i, w in enumerate(words) if w in SHAPES]
    return [{"color": colors[k], "shape": shapes[k]} for k in range(len(objects))]


def _layer_groups(recorded: AttentionMaps) -> dict[str, list[str]]:
    """{"all layers": every cross-attention layer, "8×8 layers": those with an 8×8 query grid, …}."""
    groups: dict[str, list[str]] = {"all layers": list(cross_attention_layers(recorded))}
    for name, (h, w) in cross_attention_layers(recorded).items():
        groups.setdefault(f"{h}×{w} layers", []).append(name)
    return groups


@torch.no_grad()
def attention_mass_study(ldm: LatentDiffusion, prompts: Sequence[str], steps: int = 25, guidance_scale: float = 3.0,
                         seed: int = 0, progress: bool = False) -> list[dict[str, Any]]:
    """Does a word look at its object? For each prompt (one sample, seed + its index) and each object in it,
    the object's pixels in the sample (`object_mask` of its color) and the share of the attention of its
    color word and of its shape word that falls inside them (`attention_mass`), for every layer group (all
    cross-attention layers, and the layers of each latent resolution) and every part of the sampling run in
    STEP_RANGES. In two-object prompts, role "other color" is the OTHER object's
    color word measured in this object's mask (a word that binds to its own object scores low there).

    Returns one row per (prompt, object, role, layers, steps): {"prompt", "object", "word", "role", "layers",
    "steps", "mass", "area"}; objects the sample does not show in their color (empty mask) get area 0.
    Objects whose color another object of the prompt shares are skipped (their masks would merge).
    progress: a bar over the prompts.
    """
    require_mode(ldm, "text", "attention_mass_study")
    rows = []
    for i, prompt in enumerate(tqdm(prompts, desc="prompts", disable=not progress, mininterval=1.0)):
        objects = parse_caption(prompt)["objects"]
        r = record_word_attention(ldm, prompt, steps, guidance_scale, seed + i)
        words = r["words"]
        where = _phrase_word_indices(words, objects)
        colors = [o["color"] for o in objects]
        for layers_name, layers in _layer_groups(r["recorded"]).items():
            for steps_name, step_range in STEP_RANGES.items():
                maps = token_maps(r["recorded"], len(words) + 2, ldm.resolution, layers, step_range)[1:-1]
                for k, obj in enumerate(objects):
                    if colors.count(obj["color"]) > 1:
                        continue
                    mask = object_mask(r["image"], obj["color"])
                    roles = {"color": where[k]["color"], "shape": where[k]["shape"]}
                    if len(objects) == 2:
                        roles["other color"] = where[1 - k]["color"]
                    for role, j in roles.items():
                        mass, area = attention_mass(maps[j], mask)
                        rows.append({"prompt": prompt, "object": k, "word": words[j], "role": role,
                                     "layers": layers_name, "steps": steps_name, "mass": mass, "area": area})
    return rows


def summarize_attention_mass(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group `attention_mass_study` rows by (role, layers, steps) over the objects the samples show (area > 0):
    n, mean mass, mean area, ratio = mean mass / mean area (1: the word looks everywhere alike; above 1: it
    looks at its object) and the share of objects with mass ≥ 2 × area."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row["area"] > 0:
            groups.setdefault((row["role"], row["layers"], row["steps"]), []).append(row)
    out = []
    for (role, layers, steps), g in groups.items():
        mass = sum(r["mass"] for r in g) / len(g)
        area = sum(r["area"] for r in g) / len(g)
        out.append({"role": role, "layers": layers, "steps": steps, "n": len(g), "mass": mass, "area": area,
                    "ratio": mass / area, "share_2x": sum(r["mass"] >= 2 * r["area"] for r in g) / len(g)})
    return out


@torch.no_grad()
def first_conv_input(ldm: LatentDiffusion, z_t: torch.Tensor, t: torch.Tensor | int,
                     raw: torch.Tensor | None = None) -> torch.Tensor:
    """What the U-Net's first convolution receives for latents z_t (B, c, h, w) at step t with raw condition
    `raw`: z_t, then any concatenated condition (the low-res image of an SR model, resized to h × w), then
    the two coordinate channels (coord_channels). Captured with a forward pre-hook during one U-Net call."""
    seen: list[torch.Tensor] = []
    conv = ldm.unet.input_blocks[0][0]
    handle = conv.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        ldm.model_fn(z_t, torch.as_tensor(t, device=z_t.device), ldm.encode_condition(raw, tuple(z_t.shape[-2:])))
    finally:
        handle.remove()
    return seen[0]


def autoencoder_fingerprint(model: torch.nn.Module) -> str:
    """The first 12 hex digits of the SHA-256 of a first stage's weights (every tensor of its state dict, in
    order, as float32 bytes). `model` is an autoencoder or a LatentDiffusion (its frozen autoencoder is used):
    two models with the same fingerprint decode with the very same autoencoder."""
    ae = model.autoencoder if isinstance(model, LatentDiffusion) else model
    h = hashlib.sha256()
    for name, tensor in ae.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


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
    found = [next((a for a, values in ATTRIBUTES.items() if w in values), None) for w in words]
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
    require_mode(ldm, "text", "word_influence")
    if getattr(ldm, "is_flow", False):
        raise ValueError("word_influence noises latents at a diffusion model's timesteps (t = 100 … 800 of T); this "
                         "is a flow model (LDMConfig.process='flow'), whose times lie in [0, 1]: it has no such probe")
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
        tt = torch.full((n,), int(t), device=z_a.device)
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


# --- Inside a network: what shape each block outputs, where the parameters sit, what a backward pass reaches --


@torch.no_grad()
def layer_shapes(model: torch.nn.Module, *args, depth: int = 1, **kwargs) -> list[tuple[str, tuple[int, ...]]]:
    """Run model(*args, **kwargs) once and return (name, output shape) of every submodule `depth` levels down
    (module paths with depth + 1 parts: depth=1 -> "input_blocks.0", depth=0 -> "input_blocks"), in call order."""
    shapes: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, module in model.named_modules():
        if name and name.count(".") == depth:
            def hook(mod, inp, out, name=name):
                if torch.is_tensor(out):
                    shapes.append((name, tuple(out.shape)))
            handles.append(module.register_forward_hook(hook))
    try:
        model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return shapes


def parameters_by_block(model: torch.nn.Module, depth: int = 1) -> list[tuple[str, int]]:
    """(name, number of parameters) per submodule `depth` levels down (module paths with depth + 1 parts, as in
    `layer_shapes`), in the order the model registers them; the counts add up to all of the model's parameters
    (a parameter held directly by a shallower module is listed under its own name)."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        block = ".".join(name.split(".")[:depth + 1])            # "input_blocks.1.0.conv1.weight" -> "input_blocks.1"
        counts[block] = counts.get(block, 0) + p.numel()
    return list(counts.items())


def parameters_with_gradient(model: torch.nn.Module) -> list[str]:
    """Names of the parameters whose .grad holds a non-zero entry (after a backward pass), in model order.

    With zero-initialized output layers (the U-Net), the first backward pass reaches only the last layer:
    everything before it is multiplied by its zero weights."""
    return [name for name, p in model.named_parameters() if p.grad is not None and bool(p.grad.ne(0).any())]


def _kind_of(path: list[tuple[str, torch.nn.Module]]) -> str:
    """The kind of a parameter from the chain of (attribute name, module) that holds it, innermost last."""
    for attr, module in reversed(path):
        if attr == "cross_attn":
            return "cross-attention (text / layout)"
        if attr == "self_attn":
            return "self-attention"
        if attr == "ff":
            return "feed-forward (GEGLU)"
        if isinstance(module, (TransformerBlock, SpatialTransformer)):
            return "transformer norms and 1×1 projections"
        if isinstance(module, ResBlock):
            return "ResBlocks (convolutions + time projection)"
        if isinstance(module, (Downsample, Upsample)):
            return "down- / upsampling"
    top = path[0][0] if path else ""
    return {"time_embed": "time embedding (MLP)", "label_emb": "class embedding"}.get(top, "input / output convolutions")


def parameters_by_kind(unet: UNet) -> dict[str, int]:
    """Number of parameters per kind of layer (keys: PARAMETER_KINDS, in that order, 0 where absent); they add
    up to all of the U-Net's parameters. Shows, e.g., what share cross-attention (the condition's entry) takes."""
    counts = dict.fromkeys(PARAMETER_KINDS, 0)
    modules = dict(unet.named_modules())
    for name, p in unet.named_parameters():
        parts = name.split(".")[:-1]                                       # the modules that hold it, outermost first
        path = [(parts[i], modules[".".join(parts[:i + 1])]) for i in range(len(parts))]
        counts[_kind_of(path)] += p.numel()
    return counts
