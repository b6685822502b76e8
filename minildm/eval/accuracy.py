"""Judging generated Shapes images: Shapes-FID with a fair floor, prompt / class / layout accuracy, and probes.

    shapes_generative_metrics   Shapes-FID, KID, precision, recall of generated images, with the floor of the
                                same protocol (see below)
    prompt_accuracy             does the image show every condition of its caption? (shape, color, size,
                                position or relation, and the object count), read by the Shapes evaluator
    class_accuracy, layout_accuracy   the same for class- and layout-conditional samples
    evaluate_text_model         sample test-split captions with DDIM and measure all of the above at once
    evaluate_guidance           the same at several classifier-free guidance scales s (one floor for all)
    evaluate_class_model, evaluate_layout_model, evaluate_sr_model, evaluate_unconditional
                                the other conditioning modes of the paper on the same test split
    super_resolve               low-res input, bicubic, LDM output and ground truth with per-image PSNR
(Looking inside a model, word_influence and attention maps, is probes.py's job.)

Like with like (FID protocols). A model asked for the captions of test scenes [0, n) can be compared with
  * the independent real scenes [n, 2n): "unpaired" (the default). Its floor compares real [0, n) with the
    same [n, 2n): what a perfect model would score, up to noise. Neither side shares a scene with the other.
  * the very scenes [0, n) it was asked for: "paired". Its floor compares those scenes with the same
    captions drawn again with fresh randomness (`shapes.scene_from_caption`). Paired FIDs are lower: the two
    sets share their captions, so an unpaired floor next to a paired FID reads as "better than real data".
A reconstruction FID (rFID) is paired by nature: a perfect autoencoder scores exactly 0.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from tqdm.auto import tqdm

from ..conditioning import LowResConcat
from ..data.datasets import ShapesDataset
from ..data.shapes import COLOR_NAMES, GRID, SHAPES, parse_caption, relation_holds, render_scenes, scene_from_caption
from .fidelity import accuracy_by, by_shape_and_size, count_by_sizes, shape_size_lines
from .judge import ShapesEvaluator, _get_evaluator, detect_objects, predict_cells, split_logits
from .metrics import fid_from_features, metrics_from_features, psnr
from .probes import INFLUENCE_PAIRS, word_influence

__all__ = ["shapes_features", "shapes_class_logits", "shapes_generative_metrics", "shapes_fid_floor",
           "real_images", "prompt_accuracy", "class_accuracy", "layout_accuracy", "sample_prompts",
           "evaluate_text_model", "evaluate_text_ldm", "text_report", "evaluate_guidance", "accuracy_by",
           "evaluate_class_model",
           "evaluate_layout_model", "evaluate_sr_model", "super_resolve", "evaluate_unconditional", "PROTOCOLS",
           "GUIDANCE_SCALES"]

PROTOCOLS = ("unpaired", "paired")
GUIDANCE_SCALES = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5)     # s = 0: unconditional, 1: conditional, > 1: guided


@torch.no_grad()
def shapes_features(images: torch.Tensor, evaluator: ShapesEvaluator | None = None,
                    batch_size: int = 500) -> torch.Tensor:
    """Shapes-FID features: the evaluator's penultimate layer, images (N, 3, H, W) in [-1, 1] -> (N, 256)."""
    ev = _get_evaluator(evaluator)
    dev = next(ev.parameters()).device
    return torch.cat([ev.features(ev.prepare(images[i:i + batch_size].to(dev))).cpu()
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
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


def real_images(num_samples: int, split: str = "test", max_objects: int = 2, resolution: int = 32, start: int = 0,
                batch_size: int = 500, min_objects: int = 1) -> torch.Tensor:
    """Real images [start, start + num_samples) of a Shapes split (the scenes of ShapesDataset(split))."""
    ds = ShapesDataset(split, size=start + num_samples, max_objects=max_objects, min_objects=min_objects,
                       resolution=resolution)
    return torch.cat([ds.batch(range(i, min(i + batch_size, start + num_samples)))["image"]
                      for i in range(start, start + num_samples, batch_size)])


def _rerendered(num_samples: int, split: str, max_objects: int, resolution: int, seed: int = 1) -> torch.Tensor:
    """The captions of scenes [0, n) of a split drawn again with fresh randomness (scene_from_caption)."""
    ds = ShapesDataset(split, size=max(num_samples, 1), max_objects=max_objects, resolution=resolution)
    scenes = [scene_from_caption(ds.scene(i).caption, seed=seed * 1_000_003 + i) for i in range(num_samples)]
    return torch.cat([render_scenes(scenes[i:i + 500], resolution)[0] for i in range(0, num_samples, 500)])


def shapes_generative_metrics(fake_images: torch.Tensor, split: str = "test", max_objects: int = 2,
                              protocol: str = "unpaired", evaluator: ShapesEvaluator | None = None,
                              with_floor: bool = True, k: int = 3, kid_subset_size: int = 1000,
                              kid_subsets: int = 100, seed: int = 0) -> dict[str, Any]:
    """Shapes-FID, KID, precision, recall of `fake_images`, generated for scenes [0, n) of a split (their
    captions, classes or layouts), and (with_floor) the same metrics for the floor of the same protocol:

      unpaired  fake vs real [n, 2n);  floor: real [0, n) vs real [n, 2n)
      paired    fake vs real [0, n);   floor: the captions of [0, n) drawn again vs real [0, n)

    The keys ending in "_floor" hold the floor; "protocol" says which one was used.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS} (see shapes_eval's docstring), got {protocol!r}")
    n, res = len(fake_images), fake_images.shape[-1]
    real = real_images(2 * n if protocol == "unpaired" else n, split, max_objects, res)
    reference = real[n:] if protocol == "unpaired" else real[:n]
    fr = shapes_features(reference, evaluator)
    out = {**metrics_from_features(fr, shapes_features(fake_images, evaluator), k, kid_subset_size, kid_subsets,
                                   seed), "protocol": protocol}
    if with_floor:
        other = real[:n] if protocol == "unpaired" else _rerendered(n, split, max_objects, res)
        floor = metrics_from_features(fr, shapes_features(other, evaluator), k, kid_subset_size, kid_subsets, seed)
        out.update({f"{key}_floor": floor[key] for key in ("fid", "kid", "precision", "recall")})
    return out


def shapes_fid_floor(num_samples: int, split: str = "test", max_objects: int = 2, resolution: int = 32,
                     evaluator: ShapesEvaluator | None = None, protocol: str = "unpaired",
                     return_all: bool = False) -> float | dict[str, float]:
    """The real-vs-real Shapes-FID at a sample count: what a perfect model scores under `protocol` (see
    shapes_generative_metrics), from finite-sample noise alone. return_all adds KID, precision and recall."""
    if num_samples < 2:
        raise ValueError(f"the FID floor needs num_samples ≥ 2 per set, got {num_samples}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    real = real_images(2 * num_samples if protocol == "unpaired" else num_samples, split, max_objects, resolution)
    a = real[:num_samples]
    b = real[num_samples:] if protocol == "unpaired" else _rerendered(num_samples, split, max_objects, resolution)
    fa, fb = shapes_features(a, evaluator), shapes_features(b, evaluator)
    return metrics_from_features(fb, fa) if return_all else fid_from_features(fb, fa)


# --- prompt, class and layout accuracy ----------------------------------------------------------------------


def _match(prompt: dict, seen: list[dict]) -> tuple[list[dict], bool | None]:
    """Assign detected objects to the prompt's objects (one each, or none) so that as many conditions as
    possible hold; -> (per prompt object: which of shape/color/size/position hold, relation holds or None)."""
    objs, rel = prompt["objects"], prompt["relation"]

    def checks(p: dict, o: dict | None) -> dict:
        c = {a: o is not None and o[a] == p[a] for a in ("shape", "color", "size")}
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
    its position or the relation between the two), read by the Shapes evaluator; with `exact_count` the
    image must also hold exactly as many objects as the prompt names. Broken down by prompt type
    ("one_object", "two_objects_relation", "objects_with_positions") and by attribute; "correct" is (N,) bool,
    "count_ok" (N,) bool, "objects" per prompt per prompt object which of its conditions hold.
    """
    if isinstance(captions, str):
        raise TypeError("prompt_accuracy expects one caption per image (a list of strings), got a single string")
    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions; pass one caption per image")
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
    if len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels; pass one label per image")
    if (labels < 0).any() or (labels >= len(SHAPES) * len(COLOR_NAMES)).any():
        raise ValueError(f"labels must be classes in [0, {len(SHAPES) * len(COLOR_NAMES)}) (one-object scenes); "
                         f"got values in [{int(labels.min())}, {int(labels.max())}]")
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
            "count": float(count_ok.float().mean()), "n": len(images), "correct": correct}


# --- a text-conditional model on the test split -------------------------------------------------------------


@torch.no_grad()
def _sample_batches(ldm: Any, n: int, raw_for: Any, seed: int, batch_size: int, **sample_kwargs: Any) -> torch.Tensor:
    """n samples in batches, each batch with its own seeded generator (seed·7919 + its first index), so a sample
    does not depend on how many others are drawn with it; raw_for(start, stop) is a batch's raw condition
    (None: unconditional)."""
    images = []
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        raw = raw_for(start, stop)
        g = torch.Generator().manual_seed(seed * 7919 + start)
        count = {"num_samples": stop - start} if raw is None else {}
        images.append(ldm.sample(raw, generator=g, **count, **sample_kwargs).cpu())
    return torch.cat(images)


def sample_prompts(ldm: Any, captions: list[str], steps: int = 50, eta: float = 0.0, guidance_scale: float = 3.0,
                   seed: int = 0, batch_size: int = 100) -> torch.Tensor:
    """One image per caption, in batches seeded as `_sample_batches` says (seed·7919 + first index)."""
    return _sample_batches(ldm, len(captions), lambda a, b: ldm.prompt_condition(prompts=list(captions[a:b])),
                           seed, batch_size, steps=steps, eta=eta, guidance_scale=guidance_scale)


def _test_captions(n: int, resolution: int, min_objects: int, max_objects: int) -> list[str]:
    ds = ShapesDataset("test", size=max(n, 1000), resolution=resolution, min_objects=min_objects,
                       max_objects=max_objects)
    return [ds.scene(i).caption for i in range(n)]


def _require_text(ldm: Any, what: str) -> None:
    if getattr(ldm, "cond_mode", None) != "text":
        raise ValueError(f"{what} needs a text-conditional model trained on Shapes captions, this one is "
                         f"{getattr(ldm, 'cond_mode', None)!r}")


@torch.no_grad()
def evaluate_text_model(ldm: Any, num_samples: int = 200, steps: int = 50, eta: float = 0.0,
                        guidance_scale: float = 3.0, seed: int = 0, batch_size: int = 100,
                        with_floor: bool = True, protocol: str = "unpaired") -> dict[str, Any]:
    """Sample the captions of test scenes [0, n) (1-2 objects) with DDIM(steps, η) and guidance s; -> Shapes-FID,
    KID, precision, recall with the floor of `protocol`, prompt accuracy (all, one-object, two-object prompts)
    and sampling images/s, all from one set of samples."""
    _require_text(ldm, "evaluate_text_model")
    n = int(num_samples)
    captions = _test_captions(n, ldm.resolution, 1, 2)
    t0 = time.perf_counter()
    images = sample_prompts(ldm, captions, steps, eta, guidance_scale, seed, batch_size)
    seconds = time.perf_counter() - t0
    m = shapes_generative_metrics(images, split="test", max_objects=2, protocol=protocol, with_floor=with_floor)
    acc = prompt_accuracy(images, captions)
    counts = torch.tensor([len(parse_caption(c)["objects"]) for c in captions])
    correct = acc["correct"].float()

    def mean_or_none(mask: torch.Tensor) -> float | None:
        return float(correct[mask].mean()) if mask.any() else None

    row = {k: float(v) for k, v in m.items() if k.startswith(("fid", "kid", "precision", "recall"))}
    row.update(protocol=protocol, accuracy=float(acc["accuracy"]), one_object_accuracy=mean_or_none(counts == 1),
               two_object_accuracy=mean_or_none(counts == 2), samples=n, sample_images_per_s=n / seconds)
    return row


@torch.no_grad()
def evaluate_guidance(ldm: Any, scales: Sequence[float] = GUIDANCE_SCALES, num_samples: int = 200, steps: int = 50,
                      seed: int = 0, batch_size: int = 100, protocol: str = "unpaired",
                      progress: bool = False) -> list[dict[str, Any]]:
    """`evaluate_text_model` at every classifier-free guidance scale s, ε̂ = ε̂(∅) + s·(ε̂(y) − ε̂(∅)), on the same
    captions and seeds (so only s differs): one row per s with "guidance_scale", Shapes-FID, KID, precision,
    recall, prompt accuracy (all, one-object, two-object). The floor does not depend on s: it is measured
    once and repeated in every row. progress: a bar over the scales."""
    if not scales or any(not float(s) >= 0 for s in scales):
        raise ValueError(f"guidance scales must be a non-empty list of numbers ≥ 0, got {scales!r}")
    rows: list[dict[str, Any]] = []
    floor: dict[str, float] = {}
    for i, s in enumerate(tqdm(scales, desc="guidance scales", disable=not progress, mininterval=1.0)):
        row = evaluate_text_model(ldm, num_samples, steps, 0.0, float(s), seed, batch_size, with_floor=i == 0,
                                  protocol=protocol)
        floor = floor or {k: v for k, v in row.items() if k.endswith("_floor")}
        rows.append({"guidance_scale": float(s), **row, **floor})
    return rows


@torch.no_grad()
def evaluate_text_ldm(ldm: Any, n: int = 200, guidance_scale: float = 3.0, steps: int = 50, seed: int = 0,
                      batch_size: int = 100, fid: bool = True, eta: float = 0.0,
                      word_pairs: Sequence[tuple[str, str]] = INFLUENCE_PAIRS) -> dict[str, Any]:
    """What `minildm evaluate-ldm` prints: prompt accuracy on n one-object and n two-object test captions
    (judged by the Shapes evaluator), per prompt type also by the shape and size asked for ("by_shape_and_size":
    prompt and shape accuracy, n) and the count by the sizes asked for ("count_by_sizes"), Shapes-FID of n mixed
    test captions with its unpaired floor (`evaluate_text_model`), and `word_influence` per attribute."""
    _require_text(ldm, "evaluate_text_ldm")
    out: dict[str, Any] = {}
    for label, objects in (("one_object", 1), ("two_objects", 2)):
        captions = _test_captions(n, ldm.resolution, objects, objects)
        images = sample_prompts(ldm, captions, steps, eta, guidance_scale, seed, batch_size)
        acc = prompt_accuracy(images, captions)
        out[label] = {"accuracy": float(acc["accuracy"]),
                      "by_attribute": {k: float(v) for k, v in acc["by_attribute"].items()},
                      "by_shape_and_size": by_shape_and_size(captions, acc["objects"], acc["correct"]),
                      "count_by_sizes": count_by_sizes(captions, acc["count_ok"])}
        if objects == 1:
            out[label]["by_size_and_shape"] = accuracy_by(captions, acc["correct"])
    if fid:
        out["fid"] = evaluate_text_model(ldm, n, steps, eta, guidance_scale, seed, batch_size)
    out["word_influence"] = {f"{a}/{b}": word_influence(ldm, (a, b)) for a, b in word_pairs}
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


# --- class-, layout- and super-resolution models on the test split -----------------------------------------------


def _require(ldm: Any, mode: str) -> None:
    if getattr(ldm, "cond_mode", None) != mode:
        raise ValueError(f"this evaluation needs a {mode}-conditional model, got {getattr(ldm, 'cond_mode', None)!r}")


@torch.no_grad()
def evaluate_class_model(ldm: Any, per_class: int = 10, steps: int = 50, guidance_scale: float = 3.0,
                         seed: int = 0, batch_size: int = 120, return_images: bool = False) -> dict[str, Any]:
    """Sample `per_class` images of every class (DDIM, guidance s) and read them with the evaluator: the share
    whose object has the class's shape and color (and is the only object), by class-accuracy's rules.
    return_images adds the samples ("images", class after class) and their "labels"."""
    _require(ldm, "class")
    labels = torch.arange(ldm.num_classes).repeat_interleave(per_class)
    images = _sample_batches(ldm, len(labels), lambda a, b: ldm.prompt_condition(labels=labels[a:b].tolist()),
                             seed, batch_size, steps=steps, guidance_scale=guidance_scale)
    acc = class_accuracy(images, labels)
    return {k: v for k, v in acc.items() if k != "correct"} | (
        {"images": images, "labels": labels, "correct": acc["correct"]} if return_images else {})


@torch.no_grad()
def evaluate_layout_model(ldm: Any, n: int = 200, steps: int = 50, guidance_scale: float = 3.0, seed: int = 0,
                          batch_size: int = 100, return_images: bool = False) -> dict[str, Any]:
    """Sample the layouts of test scenes [0, n) and check each box's object (class and cell) with the evaluator.
    return_images adds the samples ("images"), their "layouts" (n, max_objects, 5) and "correct" (n,)."""
    _require(ldm, "layout")
    ds = ShapesDataset("test", size=max(n, 1000), resolution=ldm.resolution, max_objects=ldm.max_objects)
    layouts = ds.batch(range(n))["layout"]
    images = _sample_batches(ldm, n, lambda a, b: ldm.prompt_condition(layouts=layouts[a:b]), seed, batch_size,
                             steps=steps, guidance_scale=guidance_scale)
    acc = layout_accuracy(images, layouts)
    return {k: v for k, v in acc.items() if k != "correct"} | (
        {"images": images, "layouts": layouts, "correct": acc["correct"]} if return_images else {})


@torch.no_grad()
def super_resolve(ldm: Any, truth: torch.Tensor, steps: int = 50, seed: int = 0) -> dict[str, torch.Tensor]:
    """The super-resolution task on real images `truth` (B, 3, H, W): degrade them ×sr_factor (bicubic,
    antialiased: `LowResConcat.degrade`), then upsample the low-res input twice, with the LDM (DDIM, seeded,
    no guidance: the low-res image is concatenated to z_t) and with plain bicubic interpolation.
    -> {"low", "bicubic", "sr", "truth", "psnr" (B,), "psnr_bicubic" (B,)}, PSNR against the truth."""
    _require(ldm, "sr")
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
    """Super-resolve test images [0, n) from their ×sr_factor low-res copies (`super_resolve`, batch i seeded
    with seed·7919 + i) and compare with the ground truth: mean PSNR of the LDM's output and of bicubic
    upsampling of the same low-res input. return_images adds every tensor of `super_resolve` ("images")."""
    _require(ldm, "sr")
    x = real_images(n, "test", ldm.max_objects or 2, ldm.resolution)
    parts = [super_resolve(ldm, x[i:i + batch_size], steps, seed * 7919 + i) for i in range(0, n, batch_size)]
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
    if getattr(ldm, "cond_mode", None) != "none":
        raise ValueError(f"evaluate_unconditional needs an unconditional model (cond='none'), got "
                         f"{getattr(ldm, 'cond_mode', None)!r}")
    n = int(num_samples)
    images = _sample_batches(ldm, n, lambda a, b: None, seed, batch_size, steps=steps)
    m = shapes_generative_metrics(images, split="test", max_objects=2, protocol="unpaired")
    counts = torch.tensor([len(objs) for objs in detect_objects(images)])
    row = {k: float(v) for k, v in m.items() if k.startswith(("fid", "kid", "precision", "recall"))}
    row.update(scene_like=float(((counts >= 1) & (counts <= 2)).float().mean()), samples=n)
    return row | ({"images": images} if return_images else {})
