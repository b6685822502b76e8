"""Judging generated Shapes images with the Shapes judge (judge.py): Shapes-FID with a fair floor
(shapes_generative_metrics), prompt / class / layout accuracy (does the image show every condition of its
caption, class or layout?), breakdowns by shape and size, the evaluation of each conditioning mode on the test
split (evaluate_*), and whether every shape survives the first stage at every size (autoencoder_shape_fidelity).

Like with like: a model asked for test scenes [0, n) is compared "unpaired" with the real scenes [n, 2n) (floor:
real [0, n) against them) or "paired" with the very scenes [0, n) (floor: their captions drawn again); never put
one protocol's FID next to the other's floor (docs/evaluation.md, "FID and its floors"). A reconstruction FID is
paired by nature: a perfect autoencoder scores exactly 0.

The first stage bounds the second: a small star the autoencoder turns into a blob is a small star no LDM on
that autoencoder will get right, hence the per-shape, per-size readings.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import defaultdict
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange

from ..autoencoder import reconstruct
from ..conditioning import LowResConcat, object_mask
from ..data.datasets import ShapesDataset
from ..data.shapes import (BACKGROUND_ID, COLOR_NAMES, COLORS, GRID, POSITIONS, SHAPES, SIZE_NAMES, Scene,
                           parse_caption, relation_holds, scene_from_caption)
from .judge import (ATTRIBUTES, ShapesEvaluator, detect_objects, predict_cells, render_images, run_evaluator,
                    split_logits)
from .metrics import binomial_interval, bootstrap_std, fid_from_features, metrics_from_features, psnr
from .probes import INFLUENCE_PAIRS, require_mode, word_influence

__all__ = ["shapes_features", "shapes_class_logits", "shapes_generative_metrics", "shapes_fid_floor", "real_images",
           "prompt_accuracy", "class_accuracy", "layout_accuracy", "by_shape_and_size", "count_by_sizes",
           "shape_size_lines", "sample_prompts", "first_evaluation_samples", "evaluate_text_model",
           "evaluate_guidance", "evaluate_text_ldm", "text_report", "evaluate_class_model", "evaluate_layout_model",
           "super_resolve", "evaluate_sr_model", "evaluate_unconditional", "palette_labels", "semantic_agreement",
           "evaluate_seg_model", "seg_report", "inpainting_tasks", "inpaint_images", "inpaint_scores",
           "evaluate_inpainting", "inpaint_report", "box_mask", "part_mask", "PALETTE_THRESHOLD", "fidelity_scenes",
           "autoencoder_shape_fidelity", "fidelity_lines", "PROTOCOLS", "GUIDANCE_SCALES"]

PROTOCOLS = ("unpaired", "paired")
GUIDANCE_SCALES = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5)     # s = 0: unconditional, 1: conditional, > 1: guided


# --- Shapes-FID ---------------------------------------------------------------------------------------------


def shapes_features(images: torch.Tensor, evaluator: ShapesEvaluator | None = None) -> torch.Tensor:
    """Shapes-FID features: the evaluator's penultimate layer, images (N, 3, H, W) in [-1, 1] -> (N, 256)."""
    return run_evaluator(images, evaluator, features=True)


def shapes_class_logits(images: torch.Tensor, evaluator: ShapesEvaluator | None = None) -> torch.Tensor:
    """(N, 24) log p(shape × color) of the most confidently detected object, for `inception_score` on Shapes."""
    c = predict_cells(images, evaluator)
    parts = split_logits(c["logits"])
    cell = c["p_occupied"].argmax(1)                              # (N,) most confident cell
    pick = torch.arange(len(cell))
    log_shape = F.log_softmax(parts["shape"][pick, cell], -1)     # (N, 4)
    log_color = F.log_softmax(parts["color"][pick, cell], -1)     # (N, 6)
    # class id = shape_index·6 + color_index (data.class_id)
    return rearrange(log_shape[:, :, None] + log_color[:, None, :], "n s c -> n (s c)")


def real_images(num_samples: int, split: str = "test", max_objects: int = 2, resolution: int = 32,
                start: int = 0) -> torch.Tensor:
    """Real images [start, start + num_samples) of a Shapes split (the scenes of ShapesDataset(split)), rendered
    500 at a time."""
    stop = start + num_samples
    ds = ShapesDataset(split, size=stop, max_objects=max_objects, resolution=resolution)
    return torch.cat([ds.batch(range(i, min(i + 500, stop)))["image"] for i in range(start, stop, 500)])


def _protocol_sets(n: int, split: str, max_objects: int, resolution: int, protocol: str, floor: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(reference, floor set) for samples of scenes [0, n) of a split: "unpaired" (real [n, 2n), real [0, n)),
    "paired" (real [0, n), the captions of [0, n) drawn again with fresh randomness: scene_from_caption; None
    when not `floor`)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS} (see eval/accuracy.py's docstring), got {protocol!r}")
    if protocol == "unpaired":
        real = real_images(2 * n, split, max_objects, resolution)
        return real[n:], real[:n]
    if not floor:
        return real_images(n, split, max_objects, resolution), None
    ds = ShapesDataset(split, size=max(n, 1), max_objects=max_objects, resolution=resolution)
    redrawn = [scene_from_caption(ds.scene(i).caption, seed=1_000_003 + i) for i in range(n)]
    return real_images(n, split, max_objects, resolution), render_images(redrawn, resolution)


def shapes_generative_metrics(fake_images: torch.Tensor, split: str = "test", max_objects: int = 2,
                              protocol: str = "unpaired", evaluator: ShapesEvaluator | None = None,
                              with_floor: bool = True) -> dict[str, Any]:
    """Shapes-FID, KID, precision, recall of `fake_images`, generated for scenes [0, n) of a split (their
    captions, classes or layouts), "fid_spread" (the standard deviation of the FID over 50 bootstrap
    resamples of the generated images: its sampling noise at this n), and (with_floor) the same metrics for the
    floor of the same protocol:

      unpaired  fake vs real [n, 2n);  floor: real [0, n) vs real [n, 2n)
      paired    fake vs real [0, n);   floor: the captions of [0, n) drawn again vs real [0, n)

    The keys ending in "_floor" hold the floor; "protocol" says which one was used.
    """
    n = len(fake_images)
    reference, other = _protocol_sets(n, split, max_objects, fake_images.shape[-1], protocol, with_floor)
    fr, ff = shapes_features(reference, evaluator), shapes_features(fake_images, evaluator)
    spread = bootstrap_std(lambda idx: fid_from_features(fr, ff[idx]), n, 50)
    out = {**metrics_from_features(fr, ff), "protocol": protocol, "fid_spread": spread}
    if with_floor:
        floor = metrics_from_features(fr, shapes_features(other, evaluator))
        out.update({f"{key}_floor": floor[key] for key in ("fid", "kid", "precision", "recall")})
    return out


def shapes_fid_floor(num_samples: int, split: str = "test", max_objects: int = 2, resolution: int = 32,
                     evaluator: ShapesEvaluator | None = None, protocol: str = "unpaired") -> float:
    """The real-vs-real Shapes-FID at a sample count: what a perfect model scores under `protocol` (see
    shapes_generative_metrics), from finite-sample noise alone."""
    if num_samples < 2:
        raise ValueError(f"the FID floor needs num_samples ≥ 2 per set, got {num_samples}")
    reference, other = _protocol_sets(num_samples, split, max_objects, resolution, protocol)
    if protocol == "paired":                   # here the scenes drawn again are the reference
        reference, other = other, reference
    return fid_from_features(shapes_features(reference, evaluator), shapes_features(other, evaluator))


# --- prompt, class and layout accuracy ----------------------------------------------------------------------


def _match(prompt: dict, seen: list[dict]) -> tuple[list[dict], bool | None]:
    """Assign detected objects to the prompt's objects (one each, or none) so that as many conditions as
    possible hold; -> (per prompt object: which of shape/color/size/position hold, relation holds or None)."""
    objs, rel = prompt["objects"], prompt["relation"]

    def checks(p: dict, o: dict | None) -> dict:
        c = {a: o is not None and o[a] == p[a] for a in ATTRIBUTES}
        if p["position"] is not None:
            c["position"] = o is not None and o["position"] == p["position"]
        return c

    best_score, result = -1, None
    for assign in itertools.product([None, *range(len(seen))], repeat=len(objs)):
        used = [j for j in assign if j is not None]
        if len(used) != len(set(used)):                          # one detected object per prompt object
            continue
        per = [checks(p, seen[j] if j is not None else None) for p, j in zip(objs, assign)]
        holds = None
        if rel is not None:
            a, b = assign
            cell = lambda j: (seen[j]["row"], seen[j]["col"])  # noqa: E731
            holds = a is not None and b is not None and relation_holds(rel, cell(a), cell(b))
        score = sum(sum(c.values()) for c in per) + bool(holds)
        if score > best_score:
            best_score, result = score, (per, holds)
    return result


def prompt_accuracy(images: torch.Tensor, captions: Sequence[str], evaluator: ShapesEvaluator | None = None,
                    exact_count: bool = True) -> dict[str, Any]:
    """Fraction of images in which EVERY condition of their prompt holds (shape, color, size of each object,
    its position or the relation between the two); with `exact_count` the image must also hold exactly as many
    objects as the prompt names. Broken down by prompt type ("one_object", "two_objects_relation",
    "objects_with_positions") and by attribute; "correct" and "count_ok" are (N,) bool, "objects" per prompt
    per prompt object which of its conditions hold.
    """
    if isinstance(captions, str) or len(images) != len(captions):
        raise ValueError(f"pass one caption per image (a list of strings): got {len(images)} images and "
                         f"{'a single string' if isinstance(captions, str) else f'{len(captions)} captions'}")
    prompts = [parse_caption(c) for c in captions]
    seen = detect_objects(images, evaluator)
    correct, types, objects = [], [], []
    tallies: dict[str, list[bool]] = {a: [] for a in ("shape", "color", "size", "position", "relation", "count")}
    for p, s in zip(prompts, seen):
        per, holds = _match(p, s)
        objects.append(per)
        for c in per:
            for a, ok in c.items():
                tallies[a].append(ok)
        if holds is not None:
            tallies["relation"].append(holds)
        count_ok = len(s) == len(p["objects"])
        tallies["count"].append(count_ok)
        correct.append(all(all(c.values()) for c in per) and holds is not False and (count_ok or not exact_count))
        types.append("one_object" if len(p["objects"]) == 1 else
                     "two_objects_relation" if p["relation"] is not None else "objects_with_positions")
    correct_t = torch.tensor(correct, dtype=torch.bool)
    by_type = {}
    for name in ("one_object", "two_objects_relation", "objects_with_positions"):
        sel = torch.tensor([t == name for t in types], dtype=torch.bool)
        if sel.any():
            by_type[name] = {"accuracy": float(correct_t[sel].float().mean()), "n": int(sel.sum())}
    return {"accuracy": float(correct_t.float().mean()), "n": len(correct), "by_type": by_type,
            "by_attribute": {a: sum(v) / len(v) for a, v in tallies.items() if v}, "correct": correct_t,
            "count_ok": torch.tensor(tallies["count"], dtype=torch.bool), "objects": objects}


def class_accuracy(images: torch.Tensor, labels: torch.Tensor | Sequence[int],
                   evaluator: ShapesEvaluator | None = None, exact_count: bool = True) -> dict[str, Any]:
    """Class-conditional samples: fraction whose (most confident) object has the label's shape and color
    (class = shape_index·6 + color_index, data.class_id); with `exact_count`, exactly one object must be seen."""
    labels = torch.as_tensor(labels, dtype=torch.int64).flatten()
    classes = len(SHAPES) * len(COLOR_NAMES)
    if len(labels) != len(images) or (labels < 0).any() or (labels >= classes).any():
        raise ValueError(f"labels must be one class in [0, {classes}) per image (one-object scenes); got "
                         f"{len(labels)} labels for {len(images)} images: {labels[:8].tolist()}")
    c = predict_cells(images, evaluator)
    cell = c["p_occupied"].argmax(1)
    pick = torch.arange(len(cell))
    shape_ok = c["shape"][pick, cell] == labels // len(COLOR_NAMES)
    color_ok = c["color"][pick, cell] == labels % len(COLOR_NAMES)
    count_ok = c["occupied"].sum(1) == 1
    correct = shape_ok & color_ok & (count_ok | (not exact_count))
    return {"accuracy": float(correct.float().mean()), "shape": float(shape_ok.float().mean()),
            "color": float(color_ok.float().mean()), "count": float(count_ok.float().mean()),
            "n": len(labels), "correct": correct}


def layout_accuracy(images: torch.Tensor, layout: torch.Tensor, evaluator: ShapesEvaluator | None = None,
                    exact_count: bool = True) -> dict[str, Any]:
    """Layout-conditional samples: each layout object [class_id, x0, y0, x1, y1] (rows with class −1 are
    padding) must be seen in the grid cell of its box centre with its class (shape and color).
    "accuracy": images with every object right (and, with `exact_count`, no extra objects);
    "object_accuracy", "position", "class": per layout object."""
    if not torch.is_tensor(layout) or layout.dim() != 3 or layout.shape[-1] != 5 or len(layout) != len(images):
        raise ValueError(f"layout must be (N, max_objects, 5) rows [class_id, x0, y0, x1, y1] for N = {len(images)} "
                         f"images, got {tuple(layout.shape) if torch.is_tensor(layout) else type(layout).__name__}")
    layout = layout.float().cpu()
    c = predict_cells(images, evaluator)
    valid = layout[..., 0] >= 0                                    # (N, K)
    cls = layout[..., 0].clamp_min(0).long()
    grid = torch.tensor(GRID)
    cx, cy = (layout[..., 1] + layout[..., 3]) / 2, (layout[..., 2] + layout[..., 4]) / 2
    col = (cx[..., None] - grid).abs().argmin(-1)                  # nearest cell centre, (N, K)
    row = (cy[..., None] - grid).abs().argmin(-1)
    cell = 3 * row + col
    take = lambda t: torch.gather(t, 1, cell)                      # noqa: E731  (N, 9) -> (N, K) at each cell
    pos_ok = take(c["occupied"])
    cls_ok = (take(c["shape"]) == cls // len(COLOR_NAMES)) & (take(c["color"]) == cls % len(COLOR_NAMES))
    obj_ok = pos_ok & cls_ok
    count_ok = c["occupied"].sum(1) == valid.sum(1)
    correct = (obj_ok | ~valid).all(1) & (count_ok | (not exact_count))
    v = valid.float().sum()
    return {"accuracy": float(correct.float().mean()), "object_accuracy": float((obj_ok & valid).sum() / v),
            "position": float((pos_ok & valid).sum() / v), "class": float((cls_ok & pos_ok & valid).sum() / v),
            "count": float(count_ok.float().mean()), "n": len(images), "correct": correct,
            "object_correct": obj_ok & valid, "objects": valid}


def _read_in_cell(images: torch.Tensor, objects: Sequence[Any], evaluator: ShapesEvaluator | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the evaluator reads in the grid cell of one object per image: (N,) bool each, an object there, an
    object of that object's shape there, one of its color there."""
    c = predict_cells(images, evaluator)
    pick, cell = torch.arange(len(objects)), torch.tensor([3 * o.row + o.col for o in objects])
    occupied = c["occupied"][pick, cell]
    shape = occupied & (c["shape"][pick, cell] == torch.tensor([SHAPES.index(o.shape) for o in objects]))
    color = occupied & (c["color"][pick, cell] == torch.tensor([COLOR_NAMES.index(o.color) for o in objects]))
    return occupied, shape, color


# --- by shape and size (issue 15: small stars come out as blobs) -------------------------------------------


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
    """Every object of every prompt, grouped by the shape and size its prompt asks for; `objects` and `correct`
    are prompt_accuracy's. -> {shape: {size: {"shape": share of those objects whose matched object has the
    asked shape, "accuracy": share whose whole prompt holds, "n": number of objects}}}."""
    groups: dict[tuple[str, str], dict[str, list[bool]]] = defaultdict(lambda: {"shape": [], "accuracy": []})
    for caption, checks, ok in zip(captions, objects, torch.as_tensor(correct).tolist()):
        for spec, c in zip(parse_caption(caption)["objects"], checks):
            g = groups[(spec["shape"], spec["size"])]
            g["shape"].append(bool(c["shape"]))
            g["accuracy"].append(bool(ok))
    return _table(groups)


def count_by_sizes(captions: Sequence[str], count_ok: torch.Tensor | Sequence[bool]) -> dict[str, dict[str, Any]]:
    """Share of prompts whose image holds exactly as many objects as the prompt names, by the sizes asked for
    ("large+large", "large+small", "small+small" for two-object prompts: small neighbours merge into one blob)
    and "all"; each {"count", "n"}."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for caption, ok in zip(captions, torch.as_tensor(count_ok).tolist()):
        sizes = sorted(o["size"] for o in parse_caption(caption)["objects"])
        groups["+".join(sizes)].append(bool(ok))
        groups["all"].append(bool(ok))
    return {k: {"count": sum(v) / len(v), "n": len(v)} for k, v in sorted(groups.items())}


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


# --- a text-conditional model on the test split -------------------------------------------------------------


def _seeded_batches(n: int, batch_size: int, seed: int) -> Iterator[tuple[int, int, int]]:
    """(start, stop, seed·7919 + start) for each batch of range(n): every batch seeds its own generator, so a
    sample does not depend on how many others are drawn with it."""
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size), seed * 7919 + start


@torch.no_grad()
def _sample_batches(ldm: Any, n: int, raw_for: Any, seed: int, batch_size: int, **sample_kwargs: Any) -> torch.Tensor:
    """n samples in `_seeded_batches`; raw_for(start, stop) is a batch's raw condition (None: unconditional)."""
    images = []
    for start, stop, batch_seed in _seeded_batches(n, batch_size, seed):
        raw = raw_for(start, stop)
        count = {"num_samples": stop - start} if raw is None else {}
        images.append(ldm.sample(raw, generator=torch.Generator().manual_seed(batch_seed), **count,
                                 **sample_kwargs).cpu())
    return torch.cat(images)


def sample_prompts(ldm: Any, captions: list[str], steps: int = 50, eta: float = 0.0, guidance_scale: float = 3.0,
                   seed: int = 0, batch_size: int = 100, sampler: str = "ddim") -> torch.Tensor:
    """One image per caption, in batches seeded as `_sample_batches` says (seed·7919 + first index): the same
    starting noise for every `sampler` (LatentDiffusion.sample's)."""
    other = {} if sampler == "ddim" else {"sampler": sampler}        # stand-in models know only DDIM's arguments
    return _sample_batches(ldm, len(captions), lambda a, b: ldm.prompt_condition(prompts=list(captions[a:b])),
                           seed, batch_size, steps=steps, eta=eta, guidance_scale=guidance_scale, **other)


@torch.no_grad()
def first_evaluation_samples(ldm: Any, n: int = 8, steps: int = 50, guidance_scale: float = 3.0, seed: int = 0
                             ) -> dict[str, Any]:
    """The first n images `evaluate_text_model(ldm, steps=steps, guidance_scale=guidance_scale, seed=seed)` judges
    (the same captions and starting noise when n is at most its batch size), to look at: {"captions", "real" (the
    test scenes the captions describe), "samples"}."""
    ds = _test_split(n, ldm.resolution, 2)
    captions = _test_captions(n, ldm.resolution, 1, 2)
    return {"captions": captions, "real": ds.batch(range(n))["image"],
            "samples": sample_prompts(ldm, captions, steps, 0.0, guidance_scale, seed, n).cpu()}


def _fid_row(images: torch.Tensor, with_floor: bool = True) -> dict[str, float]:
    """Shapes-FID, KID, precision, recall (and their unpaired floors) of samples for test scenes [0, n), 1-2
    objects."""
    m = shapes_generative_metrics(images, split="test", max_objects=2, with_floor=with_floor)
    return {k: float(v) for k, v in m.items() if k.startswith(("fid", "kid", "precision", "recall"))}


def _scored(acc: dict[str, Any], return_images: bool, **images: torch.Tensor) -> dict[str, Any]:
    """An accuracy result without its per-sample "correct" (and per-object tensors), or (return_images) with
    "correct" and the `images`."""
    return {k: v for k, v in acc.items() if k not in ("correct", "object_correct", "objects")} | (
        {**images, "correct": acc["correct"]} if return_images else {})


def _test_split(n: int, resolution: int, max_objects: int, min_objects: int = 1) -> ShapesDataset:
    """The test split, scenes [0, n) of it evaluated."""
    return ShapesDataset("test", size=max(n, 1000), resolution=resolution, min_objects=min_objects,
                         max_objects=max_objects)


def _test_captions(n: int, resolution: int, min_objects: int, max_objects: int) -> list[str]:
    ds = _test_split(n, resolution, max_objects, min_objects)
    return [ds.scene(i).caption for i in range(n)]


@torch.no_grad()
def evaluate_text_model(ldm: Any, num_samples: int = 200, steps: int = 50, eta: float = 0.0,
                        guidance_scale: float = 3.0, seed: int = 0, batch_size: int = 100,
                        with_floor: bool = True, sampler: str = "ddim") -> dict[str, Any]:
    """Sample the captions of test scenes [0, n) (1-2 objects) with DDIM(steps, η) (or another `sampler` of
    LatentDiffusion.sample) and guidance s; -> Shapes-FID, KID, precision, recall with the unpaired floor,
    prompt accuracy (all, one-object, two-object prompts) and sampling images/s, all from one set of samples."""
    require_mode(ldm, "text", "evaluate_text_model")
    n = int(num_samples)
    captions = _test_captions(n, ldm.resolution, 1, 2)
    t0 = time.perf_counter()
    images = sample_prompts(ldm, captions, steps, eta, guidance_scale, seed, batch_size, sampler)
    seconds = time.perf_counter() - t0
    acc = prompt_accuracy(images, captions)
    counts = torch.tensor([len(parse_caption(c)["objects"]) for c in captions])
    correct = acc["correct"].float()

    def mean_or_none(mask: torch.Tensor) -> float | None:
        return float(correct[mask].mean()) if mask.any() else None

    row = _fid_row(images, with_floor)
    row.update(protocol="unpaired", accuracy=float(acc["accuracy"]), one_object_accuracy=mean_or_none(counts == 1),
               two_object_accuracy=mean_or_none(counts == 2), samples=n, sample_images_per_s=n / seconds)
    return row


@torch.no_grad()
def evaluate_guidance(ldm: Any, scales: Sequence[float] = GUIDANCE_SCALES, num_samples: int = 200, steps: int = 50,
                      seed: int = 0, batch_size: int = 100) -> list[dict[str, Any]]:
    """`evaluate_text_model` at every classifier-free guidance scale s, ε̂ = ε̂(∅) + s·(ε̂(y) − ε̂(∅)), on the same
    captions and seeds (so only s differs): one row per s with "guidance_scale" and evaluate_text_model's keys.
    The floor does not depend on s: it is measured once and repeated in every row."""
    if not scales or any(not float(s) >= 0 for s in scales):
        raise ValueError(f"guidance scales must be a non-empty list of numbers ≥ 0, got {scales!r}")
    rows: list[dict[str, Any]] = []
    floor: dict[str, float] = {}
    for i, s in enumerate(scales):
        row = evaluate_text_model(ldm, num_samples, steps, 0.0, float(s), seed, batch_size, with_floor=i == 0)
        floor = floor or {k: v for k, v in row.items() if k.endswith("_floor")}
        rows.append({"guidance_scale": float(s), **row, **floor})
    return rows


@torch.no_grad()
def evaluate_text_ldm(ldm: Any, n: int = 200, guidance_scale: float = 3.0, steps: int = 50, seed: int = 0,
                      batch_size: int = 100, fid: bool = True, eta: float = 0.0,
                      word_pairs: Sequence[tuple[str, str]] = INFLUENCE_PAIRS, sampler: str | None = None
                      ) -> dict[str, Any]:
    """What `minildm evaluate-ldm` prints: prompt accuracy on n one-object and n two-object test captions,
    per prompt type also `by_shape_and_size` and `count_by_sizes`, Shapes-FID of n mixed test captions with its
    unpaired floor (`evaluate_text_model`), and `word_influence` per word pair. `sampler` (LatentDiffusion.sample's;
    None: the model's default, "euler" for a flow model, else "ddim") draws every image, from the same starting
    noise whichever it is. A flow model gets no word influence (that probe noises at a diffusion model's
    timesteps): "word_influence" is then empty."""
    require_mode(ldm, "text", "evaluate_text_ldm")
    flow = bool(getattr(ldm, "is_flow", False))
    sampler = sampler or getattr(ldm, "default_sampler", "ddim")
    out: dict[str, Any] = {"sampler": sampler}
    for label, objects in (("one_object", 1), ("two_objects", 2)):
        captions = _test_captions(n, ldm.resolution, objects, objects)
        images = sample_prompts(ldm, captions, steps, eta, guidance_scale, seed, batch_size, sampler)
        acc = prompt_accuracy(images, captions)
        out[label] = {"accuracy": float(acc["accuracy"]),
                      "by_attribute": {k: float(v) for k, v in acc["by_attribute"].items()},
                      "by_shape_and_size": by_shape_and_size(captions, acc["objects"], acc["correct"]),
                      "count_by_sizes": count_by_sizes(captions, acc["count_ok"])}
    if fid:
        out["fid"] = evaluate_text_model(ldm, n, steps, eta, guidance_scale, seed, batch_size, sampler=sampler)
    out["word_influence"] = {} if flow else {f"{a}/{b}": word_influence(ldm, (a, b)) for a, b in word_pairs}
    return out


def text_report(r: dict[str, Any], n: int) -> list[str]:
    """The lines `minildm evaluate-ldm` prints for evaluate_text_ldm's result `r` (n prompts per type)."""
    lines = []
    for kind in ("one_object", "two_objects"):
        attrs = ", ".join(f"{k} {v:.1%}" for k, v in r[kind]["by_attribute"].items())
        lines.append(f"  {kind:12s} prompt accuracy {r[kind]['accuracy']:.1%}  ({attrs})")
    lines.append("  one-object prompts by the shape and size asked for: prompt accuracy / shape accuracy (n prompts)")
    lines += shape_size_lines(r["one_object"]["by_shape_and_size"])
    c = r["two_objects"]["count_by_sizes"]
    lines.append(f"  two-object prompts: count (two separate objects seen) {c['all']['count']:.1%} (goal ≥ 95 %); "
                 + ", ".join(f"{k} {v['count']:.0%} (n={v['n']})" for k, v in c.items() if k != "all"))
    lines.append("  two-object prompts, shape accuracy per object by the shape and size asked for (n objects):")
    lines += shape_size_lines(r["two_objects"]["by_shape_and_size"], ("shape",))
    if "fid" in r:
        m = r["fid"]
        lines.append(f"  Shapes-FID {m['fid']:.2f} against independent test images (unpaired; the real-vs-real floor "
                     f"of that protocol is {m['fid_floor']:.2f} at n={n}), precision {m['precision']:.3f}, "
                     f"recall {m['recall']:.3f}")
    if r.get("word_influence"):
        ts = [row["t"] for row in next(iter(r["word_influence"].values()))]
        lines.append("  word influence (0: the word is ignored, 1: it alone decides x̂_0) at t = "
                     + ", ".join(map(str, ts)) + ":")
        for pair, rows in r["word_influence"].items():
            lines.append(f"    {pair:14s} " + "  ".join(f"{row['influence']:5.2f}" for row in rows))
    return lines


# --- class-, layout-, super-resolution and unconditional models on the test split --------------------------


@torch.no_grad()
def evaluate_class_model(ldm: Any, per_class: int = 10, steps: int = 50, guidance_scale: float = 3.0,
                         seed: int = 0, batch_size: int = 120, return_images: bool = False) -> dict[str, Any]:
    """Sample `per_class` images of every class (DDIM, guidance s) and score them with `class_accuracy`.
    return_images adds the samples ("images", class after class), their "labels" and "correct"."""
    require_mode(ldm, "class", "evaluate_class_model")
    labels = torch.arange(ldm.num_classes).repeat_interleave(per_class)
    images = _sample_batches(ldm, len(labels), lambda a, b: ldm.prompt_condition(labels=labels[a:b].tolist()),
                             seed, batch_size, steps=steps, guidance_scale=guidance_scale)
    return _scored(class_accuracy(images, labels), return_images, images=images, labels=labels)


@torch.no_grad()
def evaluate_layout_model(ldm: Any, n: int = 200, steps: int = 50, guidance_scale: float = 3.0, seed: int = 0,
                          batch_size: int = 100, return_images: bool = False) -> dict[str, Any]:
    """Sample the layouts of test scenes [0, n) and score them with `layout_accuracy`.
    return_images adds the samples ("images"), their "layouts" (n, max_objects, 5) and "correct" (n,)."""
    require_mode(ldm, "layout", "evaluate_layout_model")
    layouts = _test_split(n, ldm.resolution, ldm.max_objects).batch(range(n))["layout"]
    images = _sample_batches(ldm, n, lambda a, b: ldm.prompt_condition(layouts=layouts[a:b]), seed, batch_size,
                             steps=steps, guidance_scale=guidance_scale)
    return _scored(layout_accuracy(images, layouts), return_images, images=images, layouts=layouts)


@torch.no_grad()
def super_resolve(ldm: Any, truth: torch.Tensor, steps: int = 50, seed: int = 0) -> dict[str, torch.Tensor]:
    """The super-resolution task on real images `truth` (B, 3, H, W): degrade them ×sr_factor (bicubic,
    antialiased: `LowResConcat.degrade`), then upsample the low-res input twice, with the LDM (DDIM, seeded,
    no guidance: the low-res image is concatenated to z_t) and with plain bicubic interpolation.
    -> {"low", "bicubic", "sr", "truth", "psnr" (B,), "psnr_bicubic" (B,)}, PSNR against the truth."""
    require_mode(ldm, "sr", "super_resolve")
    truth = truth.cpu()
    low = LowResConcat.degrade(truth, ldm.config.sr_factor)                       # (B, 3, H/k, W/k)
    out = ldm.sample(low.to(ldm.scale_factor.device), steps=steps, guidance_scale=1.0,
                     generator=torch.Generator().manual_seed(seed)).cpu()
    up = F.interpolate(low, size=truth.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)
    return {"low": low, "bicubic": up, "sr": out, "truth": truth, "psnr": psnr(truth, out),
            "psnr_bicubic": psnr(truth, up)}


@torch.no_grad()
def evaluate_sr_model(ldm: Any, n: int = 200, steps: int = 50, seed: int = 0, batch_size: int = 100,
                      return_images: bool = False) -> dict[str, Any]:
    """Super-resolve test images [0, n) (`super_resolve`, batch i seeded with seed·7919 + i): mean PSNR of the
    LDM's output and of bicubic upsampling of the same low-res input. return_images adds every tensor of
    `super_resolve` ("images")."""
    require_mode(ldm, "sr", "evaluate_sr_model")
    x = real_images(n, "test", ldm.max_objects or 2, ldm.resolution)
    parts = [super_resolve(ldm, x[a:b], steps, batch_seed) for a, b, batch_seed in _seeded_batches(n, batch_size, seed)]
    every = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    out: dict[str, Any] = {"psnr": float(every["psnr"].mean()), "psnr_bicubic": float(every["psnr_bicubic"].mean()),
                           "n": n}
    return out | ({"images": every} if return_images else {})


@torch.no_grad()
def evaluate_unconditional(ldm: Any, num_samples: int = 200, steps: int = 50, seed: int = 0, batch_size: int = 100,
                           return_images: bool = False) -> dict[str, Any]:
    """Unconditional samples (DDIM, batch i seeded with seed·7919 + i) against 1-2-object test scenes:
    Shapes-FID, KID, precision, recall with the unpaired floor, and "scene_like": the share of samples in
    which the evaluator sees 1 or 2 objects (real scenes: all of them)."""
    require_mode(ldm, "none", "evaluate_unconditional")
    n = int(num_samples)
    images = _sample_batches(ldm, n, lambda a, b: None, seed, batch_size, steps=steps)
    counts = torch.tensor([len(objs) for objs in detect_objects(images)])
    row = _fid_row(images)
    row.update(scene_like=float(((counts >= 1) & (counts <= 2)).float().mean()), samples=n)
    return row | ({"images": images} if return_images else {})


# --- intervals: Wilson for proportions, a bootstrap over scenes for means and paired differences --------------


def _rate(ok: torch.Tensor) -> dict[str, Any]:
    """A proportion with its 95 % Wilson interval: {"rate", "ci95", "n"}."""
    ok = ok.flatten().bool()
    k, n = int(ok.sum()), ok.numel()
    lo, hi = binomial_interval(k, n)
    return {"rate": k / n, "ci95": [round(lo, 4), round(hi, 4)], "n": n}


def _boot(num: torch.Tensor, den: torch.Tensor | None = None, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Σ num / Σ den over scenes (den None: the mean of num) with a 95 % percentile bootstrap interval that
    resamples scenes (objects of one scene stay together): {"mean", "ci95", "n"}."""
    num = num.double().flatten()
    den = torch.ones_like(num) if den is None else den.double().flatten()
    idx = torch.randint(len(num), (n_boot, len(num)), generator=torch.Generator().manual_seed(seed))
    stats = num[idx].sum(1) / den[idx].sum(1)
    lo, hi = torch.quantile(stats, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"mean": round(float(num.sum() / den.sum()), 4), "ci95": [round(lo, 4), round(hi, 4)], "n": len(num)}


# --- semantic synthesis: does the sample draw the map? ------------------------------------------------------

PALETTE_THRESHOLD = 0.25   # RGB distance in [0, 1] units: nearer to a palette color than this = that color


def palette_labels(images: torch.Tensor) -> torch.Tensor:
    """Per pixel, the nearest of the six object colors (0..5, COLOR_NAMES order) when it lies within
    PALETTE_THRESHOLD of it, else 6 (background: the muted greys are far from every object color).
    images (N, 3, H, W) in [-1, 1] -> (N, H, W) int64."""
    rgb = (images.float().clamp(-1, 1) + 1) / 2                                     # (N, 3, H, W) in [0, 1]
    palette = torch.tensor([COLORS[c] for c in COLOR_NAMES])                        # (6, 3)
    d = (rgb[:, None] - palette[None, :, :, None, None].to(rgb)).pow(2).sum(2).sqrt()   # (N, 6, H, W)
    dist, label = d.min(1)
    return torch.where(dist < PALETTE_THRESHOLD, label, torch.full_like(label, len(COLOR_NAMES)))


def semantic_agreement(images: torch.Tensor, maps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image, the share of pixels whose palette label (`palette_labels`) is the map's: the object's color
    where the map has an object, background where it has none ("pixel", (N,)), and the same over the map's object
    pixels only ("object_pixel", (N,): background is most of a scene, so "pixel" alone is generous)."""
    maps = maps.cpu().long()
    target = torch.where(maps == BACKGROUND_ID, torch.full_like(maps, len(COLOR_NAMES)), maps % len(COLOR_NAMES))
    agree = (palette_labels(images.cpu()) == target).float()                       # (N, H, W)
    objects = (maps != BACKGROUND_ID).float()
    return {"pixel": agree.flatten(1).mean(1),
            "object_pixel": (agree * objects).flatten(1).sum(1) / objects.flatten(1).sum(1).clamp(min=1)}


@torch.no_grad()
def evaluate_seg_model(ldm: Any, n: int = 200, steps: int = 50, seed: int = 0, batch_size: int = 100,
                       return_images: bool = False) -> dict[str, Any]:
    """Sample the semantic maps of test scenes [0, n) (DDIM, no guidance, batch i seeded with seed·7919 + i) and
    judge each against its map:

      objects       per object of the map: the evaluator sees an object in the cell of its box with its class
                    (shape and color) — layout_accuracy's per-object check; "scenes": every object right and no extra
      pixel         share of pixels whose nearest palette color (or background) is the map's (`semantic_agreement`);
                    "object_pixel": over the map's object pixels only

    each for the model, for real images (the ceiling: what the judges read in the scenes the maps come from) and for
    a baseline that ignores the map: the model's own sample for the NEXT scene's map, judged against this map (what
    any model that ignores the map scores, with this model's image quality). Proportions with Wilson intervals;
    means and the paired difference model − baseline (the same maps) with a bootstrap over scenes.
    return_images adds "images": {"maps", "samples", "real"}."""
    require_mode(ldm, "seg", "evaluate_seg_model")
    if n < 2:
        raise ValueError(f"evaluate_seg_model needs n ≥ 2 scenes (the baseline judges a sample against another "
                         f"scene's map), got {n}")
    b = _test_split(n, ldm.resolution, ldm.max_objects or 2).batch(range(n))
    maps, layouts = b["semantic"], b["layout"]
    samples = _sample_batches(ldm, n, lambda a, c: ldm.semantic_condition(maps[a:c]), seed, batch_size, steps=steps)
    judged = {"model": samples, "baseline": samples.roll(-1, 0), "real": b["image"]}
    per_scene = {}                                          # method -> measure -> (n,) or, for objects, (n, K)
    for k, x in judged.items():
        acc = layout_accuracy(x, layouts)
        per_scene[k] = {"objects": acc["object_correct"], "scenes": acc["correct"], **semantic_agreement(x, maps)}
    valid = layouts[..., 0] >= 0                            # (n, K) the map's objects
    out: dict[str, Any] = {"n": n, "steps": steps, "seed": seed}
    for key in ("objects", "scenes", "pixel", "object_pixel"):
        v = {k: m[key] for k, m in per_scene.items()}
        if key == "objects":                                # Wilson over objects; the difference per object
            out[key] = {k: _rate(x[valid]) for k, x in v.items()}
            out[key]["difference"] = _boot(v["model"].sum(1) - v["baseline"].sum(1), valid.sum(1), seed=seed)
        else:
            out[key] = {k: _rate(x) if key == "scenes" else _boot(x, seed=seed) for k, x in v.items()}
            out[key]["difference"] = _boot(v["model"].float() - v["baseline"].float(), seed=seed)
    return out | ({"images": {"maps": maps, "samples": samples, "real": b["image"]}} if return_images else {})


def _ci(d: dict[str, Any], pct: bool = True) -> str:
    v, (lo, hi) = d.get("rate", d.get("mean")), d["ci95"]
    return f"{v:.1%} [{lo:.1%}, {hi:.1%}]" if pct else f"{v:.2f} [{lo:.2f}, {hi:.2f}]"


def seg_report(r: dict[str, Any]) -> list[str]:
    """The lines of evaluate_seg_model's result: model | map-ignoring baseline | real images, and model − baseline."""
    lines = [f"semantic synthesis, {r['n']} test maps, DDIM-{r['steps']}, no guidance, seed {r['seed']}; "
             "model | baseline (a sample for another map) | real images; model − baseline paired (95 % intervals)"]
    names = {"objects": "objects right (class in its cell)", "scenes": "scenes all right", "pixel": "pixels agree",
             "object_pixel": "object pixels agree"}
    for key, name in names.items():
        cells = " | ".join(_ci(r[key][k]) for k in ("model", "baseline", "real"))
        lines.append(f"  {name:34s} {cells};  difference {_ci(r[key]['difference'])}")
    return lines


# --- inpainting: the trained model against blending with the text model ------------------------------------

MASK_SIDES = ("left", "right", "top", "bottom")


def box_mask(resolution: int, x0: int, y0: int, x1: int, y1: int, device: torch.device | str | None = None
             ) -> torch.Tensor:
    """(1, 1, R, R) mask of the pixels [y0, y1) × [x0, x1) (clipped to the image)."""
    r = torch.arange(resolution, device=device)
    rows = (r >= y0) & (r < y1)
    cols = (r >= x0) & (r < x1)
    return (rows[:, None] & cols[None, :]).float()[None, None]


def part_mask(bbox: Sequence[float], side: str, resolution: int, device: torch.device | str | None = None
              ) -> torch.Tensor:
    """(1, 1, R, R): the `side` half ("left", "right", "top", "bottom") of an object's box (x0, y0, x1, y1 in pixels),
    grown by one pixel on its three outer sides; the other half of the object stays visible, the context that
    says what the object is."""
    x0, y0, x1, y1 = bbox
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    x0, y0, x1, y1 = int(x0) - 1, int(y0) - 1, int(x1) + 2, int(y1) + 2       # whole pixels, one more around
    cut = {"left": (x0, y0, round(cx), y1), "right": (round(cx), y0, x1, y1), "top": (x0, y0, x1, round(cy)),
           "bottom": (x0, round(cy), x1, y1)}
    return box_mask(resolution, *cut[side], device=device)


def inpainting_tasks(n: int = 200, resolution: int = 32, max_objects: int = 2, seed: int = 0) -> dict[str, Any]:
    """Test scenes [0, n) with two holes each, both on one object k (drawn from `seed`):
    "box" a box over one half of k's box (`part_mask`, the half drawn from `seed`): part of the object
    stays visible; "object" the whole of k (`conditioning.object_mask`, one pixel wider). -> {"images", "segmentation",
    "captions", "scenes", "object" (n,), "side", "masks": {"box", "object"} each (n, 1, H, W)}."""
    ds = _test_split(n, resolution, max_objects)
    b = ds.batch(range(n))
    scenes = [ds.scene(i) for i in range(n)]
    rng = random.Random(seed)
    k = [rng.randrange(len(s.objects)) for s in scenes]
    sides = [rng.choice(MASK_SIDES) for _ in scenes]
    box = torch.cat([part_mask(s.objects[j].to_dict(resolution)["bbox"], side, resolution)
                     for s, j, side in zip(scenes, k, sides)])
    masks = {"box": box, "object": object_mask(b["segmentation"], k)}
    return {"images": b["image"], "segmentation": b["segmentation"], "captions": b["caption"], "scenes": scenes,
            "object": torch.tensor(k), "side": sides, "masks": masks}


@torch.no_grad()
def inpaint_images(ldm: Any, tasks: dict[str, Any], kind: str, steps: int = 50, seed: int = 0, batch_size: int = 100,
                   guidance_scale: float | None = None) -> torch.Tensor:
    """Fill the `kind` holes of `tasks` with `ldm.inpaint`: an inpainting model from the masked image, any other
    (text) model by blending under the scene's caption. Batch i seeded with seed·7919 + i: both methods start
    from the same noise. guidance_scale None: none for an inpainting model, the text model's default (3)."""
    device = ldm.scale_factor.device
    x, m = tasks["images"], tasks["masks"][kind]
    out = []
    for a, c, batch_seed in _seeded_batches(len(x), batch_size, seed):
        raw = None if ldm.cond_mode == "inpaint" else ldm.prompt_condition(prompts=list(tasks["captions"][a:c]))
        out.append(ldm.inpaint(x[a:c].to(device), m[a:c].to(device), raw, steps=steps, guidance_scale=guidance_scale,
                               generator=torch.Generator().manual_seed(batch_seed)).cpu())
    return torch.cat(out)


def _known_psnr(x: torch.Tensor, y: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """(N,) PSNR (dB, data range 2) over the pixels where known = 1."""
    se = ((x.float() - y.float()) ** 2 * known).flatten(1).sum(1)
    mse = se / (known.flatten(1).sum(1) * x.shape[1])
    return 10 * torch.log10(4.0 / mse.clamp(min=1e-10))


def inpaint_scores(filled: torch.Tensor, tasks: dict[str, Any], kind: str, reconstruction: torch.Tensor | None = None,
                   evaluator: ShapesEvaluator | None = None) -> dict[str, torch.Tensor]:
    """Per task: "psnr_known" (outside the hole, against the original) and "psnr_known_recon" (against the
    autoencoder's reconstruction, when given); what the evaluator reads in the cell of the masked object:
    "read" (an object of its shape and color), "shape" / "color" (an object of its shape / of its color), "empty"
    (no object), "same_class" (= "read"), "other_object" (an object of another class)."""
    known = 1 - tasks["masks"][kind]
    out = {"psnr_known": _known_psnr(filled, tasks["images"], known)}
    if reconstruction is not None:
        out["psnr_known_recon"] = _known_psnr(filled, reconstruction, known)
    objects = [s.objects[int(j)] for s, j in zip(tasks["scenes"], tasks["object"])]
    occupied, shape, color = _read_in_cell(filled, objects, evaluator)
    same = shape & color
    out.update(read=same, shape=shape, color=color, empty=~occupied, same_class=same, other_object=occupied & ~same)
    return out


@torch.no_grad()
def _reconstruct_mean(ldm: Any, images: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """D(E(x)) through the posterior mean (the latent both inpainting methods keep outside the hole)."""
    device = ldm.scale_factor.device
    return torch.cat([ldm.decode(ldm._condition_latent(images[a:a + batch_size].to(device))).cpu()
                      for a in range(0, len(images), batch_size)])


@torch.no_grad()
def evaluate_inpainting(ldm: Any, baseline: Any = None, n: int = 200, steps: int = 50, seed: int = 0,
                        batch_size: int = 100, kinds: Sequence[str] = ("box", "object"),
                        return_images: bool = False) -> dict[str, Any]:
    """Inpaint the `inpainting_tasks(n, seed=seed)` of the test split with `ldm` (an inpainting model, or a text
    model by blending) and, when given, with `baseline` (a text model: training-free blending under the scene's
    caption, guidance 3), the same scenes, holes and seeds. Per kind of hole:

      psnr_known / psnr_known_recon   outside the hole, against the original and the autoencoder's reconstruction
                                      (the decoded output is not pasted into the original)
      box (half an object hidden)     "read": the evaluator sees the object's shape and color in its cell after
                                      filling ("shape", "color": each alone); also for the original (ceiling) and
                                      the unfilled image (grey hole)
      object (the whole object)       what comes back in its cell: "empty" (background), "same_class" (the removed
                                      object again: the caption names it, the context does not), "other_object"

    Proportions with Wilson intervals, PSNR means and the paired differences model − baseline with a bootstrap over
    scenes. No LPIPS: offline, LPIPS has a random backbone here, which measures no perception."""
    tasks = inpainting_tasks(n, ldm.resolution, ldm.max_objects or 2, seed)
    recon = _reconstruct_mean(ldm, tasks["images"], batch_size)
    models = {"model": ldm} | ({"baseline": baseline} if baseline is not None else {})
    out: dict[str, Any] = {"n": n, "steps": steps, "seed": seed, "methods": {
        k: ("trained inpainting model" if m.cond_mode == "inpaint" else f"blending with the {m.cond_mode} model")
        for k, m in models.items()}}
    images: dict[str, Any] = {}
    for kind in kinds:
        scores, filled = {}, {}
        for name, m in models.items():
            filled[name] = inpaint_images(m, tasks, kind, steps, seed, batch_size)
            scores[name] = inpaint_scores(filled[name], tasks, kind, recon)
        scores["original"] = inpaint_scores(tasks["images"], tasks, kind)
        scores["unfilled"] = inpaint_scores(tasks["images"] * (1 - tasks["masks"][kind]), tasks, kind)
        scores["reconstruction"] = inpaint_scores(recon, tasks, kind)
        outcomes = ("read", "shape", "color") if kind == "box" else ("empty", "same_class", "other_object")
        row = {name: {o: _rate(sc[o]) for o in outcomes} for name, sc in scores.items()}
        for name in (*models, "reconstruction"):                # PSNR outside the hole of what was decoded
            row[name]["psnr_known"] = _boot(scores[name]["psnr_known"], seed=seed)
        for name in models:
            row[name]["psnr_known_recon"] = _boot(scores[name]["psnr_known_recon"], seed=seed)
        if "baseline" in scores:
            a, b = scores["model"], scores["baseline"]
            row["difference"] = {o: _boot(a[o].float() - b[o].float(), seed=seed) for o in (*outcomes, "psnr_known")}
        out[kind] = row
        images[kind] = {"masks": tasks["masks"][kind], **filled}
    return out | ({"images": {"original": tasks["images"], "reconstruction": recon, **images}}
                  if return_images else {})


def inpaint_report(r: dict[str, Any]) -> list[str]:
    """The lines of evaluate_inpainting's result."""
    names = [k for k in ("model", "baseline") if k in r["methods"]]
    lines = [f"inpainting, {r['n']} test scenes, DDIM-{r['steps']}, seed {r['seed']}: "
             + " | ".join(f"{k} = {r['methods'][k]}" for k in names) + " (95 % intervals)"]
    for kind in [k for k in ("box", "object") if k in r]:
        row = r[kind]
        title = "half an object hidden" if kind == "box" else "the whole object hidden"
        lines.append(f"  {kind} ({title}):")
        lines.append("    PSNR outside the hole vs original / vs reconstruction: " + "; ".join(
            f"{k} {_ci(row[k]['psnr_known'], False)} / {_ci(row[k]['psnr_known_recon'], False)} dB" for k in names)
            + f"; the reconstruction itself {_ci(row['reconstruction']['psnr_known'], False)} dB")
        for o in ([o for o in ("read", "shape", "color", "empty", "same_class", "other_object") if o in row["model"]]):
            refs = "; ".join(f"{k} {_ci(row[k][o])}" for k in ("original", "unfilled") if k in row)
            diff = f"; difference {_ci(row['difference'][o])}" if "difference" in row else ""
            lines.append(f"    {o:12s} " + "; ".join(f"{k} {_ci(row[k][o])}" for k in names) + f"  ({refs}){diff}")
    return lines


# --- the first stage: does every shape survive at every size? ----------------------------------------------


def fidelity_scenes(n: int = 25, seed: int = 0) -> list[Scene]:
    """n one-object scenes per (shape, size), shape after shape, size after size (SHAPES × SIZE_NAMES order);
    color, grid cell, jitter and background drawn from `seed` (the same seed, the same scenes)."""
    rng = random.Random(seed)
    scenes = []
    for shape in SHAPES:
        for size in SIZE_NAMES:
            for _ in range(n):
                caption = f"a {size} {rng.choice(COLOR_NAMES)} {shape} in the {rng.choice(POSITIONS)}"
                scenes.append(scene_from_caption(caption, seed=rng.getrandbits(48)))
    return scenes


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
    """Reconstruct the `fidelity_scenes(n, seed)` with `autoencoder` (a first-stage model or any function
    images -> images) and let the Shapes evaluator read the shape of the object in its cell, in the
    reconstruction and in the original (what the evaluator itself can read).

    -> {"reconstruction", "original": {shape: {size: {"shape": accuracy, "n"}}},
        "by_size": {size: {"reconstruction", "original", "n"}}, "n", "seed", "resolution"}."""
    scenes = fidelity_scenes(n, seed)
    images = render_images(scenes, resolution)
    recon, objects = _reconstructions(autoencoder, images, batch_size), [s.objects[0] for s in scenes]
    seen = {which: _read_in_cell(x, objects, evaluator)[1].tolist()     # the object's shape read in its cell
            for which, x in (("original", images), ("reconstruction", recon))}
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
