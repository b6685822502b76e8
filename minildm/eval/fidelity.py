"""Does every shape survive at every size? Per-shape, per-size readings of generated images and of the first
stage's reconstructions, by the Shapes evaluator (issue 15: small stars come out as blobs or pentagons).

    accuracy_by              one-object prompt accuracy grouped by attributes of the prompt ("small star")
    by_shape_and_size        prompt objects grouped by the (shape, size) their prompt asks for: how often the
                             evaluator sees that shape in the matched object ("shape"), how often the whole
                             prompt holds ("accuracy"), and how many there were ("n")
    count_by_sizes           two-object prompts: how often exactly two separate objects are seen, by the pair
                             of sizes asked for (small objects next to each other merge into one blob)
    fidelity_scenes          a fixed, seeded test set of one-object scenes, n per (shape, size)
    autoencoder_shape_fidelity   the evaluator reads the shape of each scene's object in the autoencoder's
                             reconstruction and in the original (the evaluator's own ceiling), per (shape, size)

The first stage bounds the second: a latent diffusion model can only draw what its decoder can draw, so a small
star the autoencoder turns into a blob is a small star no LDM on that autoencoder will get right.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any, Callable, Sequence

import torch

from ..autoencoder import reconstruct
from ..data.shapes import (
    COLOR_NAMES,
    POSITIONS,
    SHAPES,
    SIZE_NAMES,
    Scene,
    parse_caption,
    render_scenes,
    scene_from_caption,
)
from .judge import ShapesEvaluator, predict_cells

__all__ = ["accuracy_by", "by_shape_and_size", "count_by_sizes", "fidelity_scenes", "autoencoder_shape_fidelity",
           "shape_size_lines", "fidelity_lines"]


def _table(groups: dict[tuple[str, str], dict[str, list[bool]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{(shape, size): {measure: [bool, …]}} -> {shape: {size: {measure: mean or None, "n": count}}}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for shape in SHAPES:
        for size in SIZE_NAMES:
            g = groups.get((shape, size), {})
            n = max((len(v) for v in g.values()), default=0)
            cell = {k: (sum(v) / len(v) if v else None) for k, v in g.items()}
            out.setdefault(shape, {})[size] = {**cell, "n": n}
    return out


def by_shape_and_size(captions: Sequence[str], objects: Sequence[Sequence[dict[str, bool]]],
                      correct: torch.Tensor | Sequence[bool]) -> dict[str, dict[str, dict[str, Any]]]:
    """Every object of every prompt, grouped by the shape and size its prompt asks for.

    objects: per prompt, per prompt object, which of its conditions hold (prompt_accuracy's "objects");
    correct: (N,) does the whole prompt hold. -> {shape: {size: {"shape": share of those objects whose matched
    object has the asked shape, "accuracy": share whose prompt holds, "n": number of objects}}}."""
    if not len(captions) == len(objects) == len(correct):
        raise ValueError(f"got {len(captions)} captions, {len(objects)} object checks and {len(correct)} verdicts; "
                         "pass one of each per prompt")
    groups: dict[tuple[str, str], dict[str, list[bool]]] = defaultdict(lambda: {"shape": [], "accuracy": []})
    for caption, checks, ok in zip(captions, objects, torch.as_tensor(correct).tolist()):
        asked = parse_caption(caption)["objects"]
        if len(asked) != len(checks):
            raise ValueError(f"{caption!r} names {len(asked)} objects, but {len(checks)} checks were given")
        for spec, c in zip(asked, checks):
            g = groups[(spec["shape"], spec["size"])]
            g["shape"].append(bool(c["shape"]))
            g["accuracy"].append(bool(ok))
    return _table(groups)


def accuracy_by(captions: Sequence[str], correct: torch.Tensor, attributes: Sequence[str] = ("size", "shape")
                ) -> dict[str, float]:
    """Accuracy of one-object prompts grouped by the prompt's attributes, e.g. {"small star": 0.9, …}."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for caption, ok in zip(captions, correct.tolist()):
        obj = parse_caption(caption)["objects"][0]
        groups[" ".join(obj[a] for a in attributes)].append(bool(ok))
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


def count_by_sizes(captions: Sequence[str], count_ok: torch.Tensor | Sequence[bool]) -> dict[str, dict[str, Any]]:
    """Share of prompts whose image holds exactly as many objects as the prompt names, by the sizes asked for
    ("large+large", "large+small", "small+small" for two-object prompts) and "all"; each {"count", "n"}."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for caption, ok in zip(captions, torch.as_tensor(count_ok).tolist()):
        sizes = sorted(o["size"] for o in parse_caption(caption)["objects"])
        groups["+".join(sizes)].append(bool(ok))
        groups["all"].append(bool(ok))
    return {k: {"count": sum(v) / len(v), "n": len(v)} for k, v in sorted(groups.items())}


def fidelity_scenes(n: int = 25, seed: int = 0) -> list[Scene]:
    """n one-object scenes per (shape, size), shape after shape, size after size (SHAPES × SIZE_NAMES order);
    color, grid cell, jitter and background drawn from `seed` (the same seed, the same scenes)."""
    if n < 1:
        raise ValueError(f"n must be at least 1 scene per shape and size, got {n}")
    rng = random.Random(seed)
    scenes = []
    for shape in SHAPES:
        for size in SIZE_NAMES:
            for _ in range(n):
                caption = f"a {size} {rng.choice(COLOR_NAMES)} {shape} in the {rng.choice(POSITIONS)}"
                scenes.append(scene_from_caption(caption, seed=rng.getrandbits(48)))
    return scenes


def _shape_seen(images: torch.Tensor, scenes: Sequence[Scene], evaluator: ShapesEvaluator | None) -> list[bool]:
    """Per one-object scene: the evaluator sees an object in the object's grid cell and reads its shape right."""
    c = predict_cells(images, evaluator)
    out = []
    for b, s in enumerate(scenes):
        o = s.objects[0]
        cell = 3 * o.row + o.col
        out.append(bool(c["occupied"][b, cell]) and SHAPES[int(c["shape"][b, cell])] == o.shape)
    return out


@torch.no_grad()
def _reconstructions(autoencoder: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                     batch_size: int) -> torch.Tensor:
    """D(E(x)) for a first-stage model (autoencoder.reconstruct, on the model's device), or any function of the
    image batch (B, 3, H, W) in [-1, 1]; clamped to [-1, 1]."""
    if isinstance(autoencoder, torch.nn.Module):
        device = next(iter(autoencoder.parameters()), torch.empty(0)).device
        was = autoencoder.training
        autoencoder.eval()
        parts = [reconstruct(autoencoder, images[i:i + batch_size].to(device)).float().cpu()
                 for i in range(0, len(images), batch_size)]
        autoencoder.train(was)
    else:
        parts = [autoencoder(images[i:i + batch_size]).float().cpu() for i in range(0, len(images), batch_size)]
    out = torch.cat(parts)
    if out.shape != images.shape:
        raise ValueError(f"the autoencoder returned {tuple(out.shape)} for images {tuple(images.shape)}")
    return out.clamp(-1, 1)


def autoencoder_shape_fidelity(autoencoder: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor], n: int = 25,
                               seed: int = 0, resolution: int = 32, evaluator: ShapesEvaluator | None = None,
                               batch_size: int = 100) -> dict[str, Any]:
    """Reconstruct the `fidelity_scenes(n, seed)` (n one-object scenes per shape and size) with `autoencoder`
    (a first-stage model or any function images -> images) and let the Shapes evaluator read the shape of the
    object in its cell, in the reconstruction and in the original (what the evaluator itself can read).

    -> {"reconstruction", "original": {shape: {size: {"shape": accuracy, "n"}}},
        "by_size": {size: {"reconstruction", "original", "n"}}, "n", "seed", "resolution"}."""
    scenes = fidelity_scenes(n, seed)
    images = torch.cat([render_scenes(scenes[i:i + 500], resolution)[0] for i in range(0, len(scenes), 500)])
    seen = {"original": _shape_seen(images, scenes, evaluator),
            "reconstruction": _shape_seen(_reconstructions(autoencoder, images, batch_size), scenes, evaluator)}
    out: dict[str, Any] = {"n": n, "seed": seed, "resolution": resolution, "by_size": {}}
    for which, ok in seen.items():
        groups: dict[tuple[str, str], dict[str, list[bool]]] = defaultdict(lambda: {"shape": []})
        for s, right in zip(scenes, ok):
            groups[(s.objects[0].shape, s.objects[0].size)]["shape"].append(right)
        out[which] = _table(groups)
        for size in SIZE_NAMES:
            mine = [right for s, right in zip(scenes, ok) if s.objects[0].size == size]
            out["by_size"].setdefault(size, {"n": len(mine)})[which] = sum(mine) / len(mine)
    return out


def _pct(v: float | None) -> str:
    return "  —  " if v is None else f"{v:4.0%}"


def shape_size_lines(table: dict[str, dict[str, dict[str, Any]]], measures: Sequence[str] = ("accuracy", "shape"),
                     indent: str = "    ") -> list[str]:
    """One line per shape of a `by_shape_and_size` table: per size, the measures joined by " / ", and n."""
    lines = []
    for shape, sizes in table.items():
        cells = [f"{size} " + " / ".join(_pct(v.get(m)) for m in measures) + f" (n={v['n']})"
                 for size, v in sizes.items()]
        lines.append(f"{indent}{shape:9s} " + "   ".join(cells))
    return lines


def fidelity_lines(r: dict[str, Any]) -> list[str]:
    """The report of `autoencoder_shape_fidelity`'s result: per shape and size, reconstruction | original."""
    lines = [f"autoencoder shape fidelity: the Shapes evaluator reads the object's shape in the reconstruction | "
             f"in the original, {r['n']} one-object scenes per shape and size (seed {r['seed']}):"]
    for shape in r["original"]:
        cells = [f"{size} {_pct(r['reconstruction'][shape][size]['shape'])} | {_pct(v['shape'])} (n={v['n']})"
                 for size, v in r["original"][shape].items()]
        lines.append(f"  {shape:9s} " + "   ".join(cells))
    lines.append("  all shapes " + "   ".join(f"{size} {v['reconstruction']:.1%} | {v['original']:.1%} (n={v['n']})"
                                              for size, v in r["by_size"].items()))
    return lines
