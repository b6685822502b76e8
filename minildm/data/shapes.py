"""The Shapes world: objects, scenes, their rendering, and the caption grammar (the course's built-in data).

A scene is 1..N objects (circle, square, triangle, star; six colors; two sizes; positions on a 3×3 grid with
jitter) on a softly textured background. Everything a conditioning mode of the paper needs comes from it:

    caption       "a large red circle in the top left", "a small blue square to the left of a large yellow star"
    tokens        the caption through `ShapesTokenizer` (text-to-image, cross-attention)
    label         shape × color class of a one-object scene (class-conditional)
    layout        one row per object: [class_id, x0, y0, x1, y1] in [0, 1] (layout-to-image)
    segmentation  which object covers each pixel (0: background, k + 1: object k; inpainting masks)
    semantic      the class of the object covering each pixel, BACKGROUND_ID elsewhere (`semantic_map`;
                  semantic synthesis), drawn in colour by `render_semantic`
    a low-res copy for super-resolution comes from `low_res(image, factor)`.

`sample_scene(seed)` draws a scene from a private RNG (the same seed, the same scene); `render_scenes` draws
scenes with signed distance functions, batched in torch, on any device; `parse_caption` reads a caption back
into attributes and `scene_from_caption` draws a scene that a caption describes. The dataset that serves
these scenes to training is `data.ShapesDataset`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..conditioning import WordTokenizer, check_class_map

__all__ = [
    "SHAPES", "COLORS", "COLOR_NAMES", "SIZES", "SIZE_NAMES", "ROWS", "COLS", "GRID", "JITTER", "POSITIONS",
    "RELATIONS", "NUM_CLASSES", "BACKGROUND_ID", "NUM_SEMANTIC_IDS", "class_id", "class_name", "ShapeObject", "Scene", "sample_scene",
    "scene_from_caption", "relation_holds", "render_scenes", "low_res", "ShapesTokenizer", "parse_caption",
    "parse_layout", "semantic_map", "check_semantic_map", "render_semantic",
]

# --- The world: shapes, colors, sizes, positions ------------------------------------------------------------

SHAPES = ("circle", "square", "triangle", "star")
COLORS = {  # RGB in [0, 1]; chosen to be far apart from each other and from the muted backgrounds
    "red": (0.86, 0.13, 0.13),
    "green": (0.15, 0.68, 0.22),
    "blue": (0.15, 0.32, 0.92),
    "yellow": (0.96, 0.86, 0.12),
    "purple": (0.62, 0.22, 0.82),
    "orange": (0.98, 0.52, 0.08),
}
COLOR_NAMES = tuple(COLORS)
SIZES = {"small": 0.16, "large": 0.23}  # nominal radius as a fraction of the image side
SIZE_NAMES = tuple(SIZES)
ROWS = ("top", "middle", "bottom")
COLS = ("left", "middle", "right")
GRID = (0.28, 0.50, 0.72)  # cell centers as a fraction of the image side
JITTER = 0.02  # uniform jitter of the center, fraction of the side (keeps the cell unambiguous)
POSITIONS = tuple("center" if (r, c) == ("middle", "middle") else f"{r} {c}" for r in ROWS for c in COLS)
RELATIONS = ("to the left of", "to the right of", "above", "below")
NUM_CLASSES = len(SHAPES) * len(COLORS)  # class of a one-object scene: shape × color
BACKGROUND_ID = NUM_CLASSES              # a semantic map's id for pixels no object covers
NUM_SEMANTIC_IDS = NUM_CLASSES + 1       # ids of a semantic map: the 24 classes, then background

# Each shape is a regular star polygon: n outer vertices at radius R, n inner vertices at radius
# inner·R, the first outer vertex at angle phi0 (image coordinates, y down, so -π/2 points up).
# A convex regular polygon is the special case inner = cos(π/n). The circle is handled apart.
#            n   inner ratio          phi0          R / nominal size
_GEOMETRY = {
    "circle": (0, 1.0, 0.0, 1.00),
    "square": (4, math.cos(math.pi / 4), -math.pi / 4, 1.25),
    "triangle": (3, math.cos(math.pi / 3), -math.pi / 2, 1.25),
    "star": (5, 0.45, -math.pi / 2, 1.20),
}


def class_id(shape: str, color: str) -> int:
    """Class of a one-object scene: shape_index × 6 + color_index."""
    return SHAPES.index(shape) * len(COLORS) + COLOR_NAMES.index(color)


def class_name(cid: int) -> str:
    """Inverse of `class_id`: 7 -> 'green square'."""
    if not 0 <= cid < NUM_CLASSES:
        raise ValueError(f"class id must be in [0, {NUM_CLASSES}), got {cid}")
    return f"{COLOR_NAMES[cid % len(COLORS)]} {SHAPES[cid // len(COLORS)]}"


def _unit_bbox(shape: str) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) of a shape of nominal size 1 centred on its polygon centre."""
    n, _, phi0, scale = _GEOMETRY[shape]
    if n == 0:
        return (-scale, -scale, scale, scale)
    xs = [scale * math.cos(phi0 + 2 * math.pi * k / n) for k in range(n)]
    ys = [scale * math.sin(phi0 + 2 * math.pi * k / n) for k in range(n)]
    return (min(xs), min(ys), max(xs), max(ys))


_UNIT_BBOX = {s: _unit_bbox(s) for s in SHAPES}

# --- Scene specification: the random part, drawn per sample in plain Python ---------------------------------


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene; coordinates are fractions of the image side (x right, y down)."""

    shape: str
    color: str
    size: str
    row: int
    col: int
    cx: float  # centre of the bounding box
    cy: float

    @property
    def position(self) -> str:
        return POSITIONS[3 * self.row + self.col]

    @property
    def class_id(self) -> int:
        return class_id(self.shape, self.color)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) as fractions of the image side."""
        s = SIZES[self.size]
        x0, y0, x1, y1 = _UNIT_BBOX[self.shape]
        return (self.cx + s * (x0 - x1) / 2, self.cy + s * (y0 - y1) / 2,
                self.cx + s * (x1 - x0) / 2, self.cy + s * (y1 - y0) / 2)

    def phrase(self) -> str:
        return f"a {self.size} {self.color} {self.shape}"

    def to_dict(self, resolution: int) -> dict:
        x0, y0, x1, y1 = self.bbox
        return {"shape": self.shape, "color": self.color, "size": self.size, "row": self.row, "col": self.col,
                "position": self.position, "center": (self.cx * resolution, self.cy * resolution),
                "bbox": (x0 * resolution, y0 * resolution, x1 * resolution, y1 * resolution),
                "class_id": self.class_id}


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    relation: str | None  # for two-object scenes: objects[0] <relation> objects[1]
    background: tuple[float, ...]  # see _render_background

    @property
    def caption(self) -> str:
        objs = self.objects
        if len(objs) == 2 and self.relation is not None:
            return f"{objs[0].phrase()} {self.relation} {objs[1].phrase()}"
        return " and ".join(f"{o.phrase()} in the {o.position}" for o in objs)

    @property
    def label(self) -> int:
        return self.objects[0].class_id if len(self.objects) == 1 else -1


def _relation(a: ShapeObject, b: ShapeObject, rng: random.Random) -> str:
    """A true spatial relation 'a <rel> b' from the grid cells (a random one when two hold)."""
    options = [r for r in RELATIONS if relation_holds(r, (a.row, a.col), (b.row, b.col))]
    return options[0] if len(options) == 1 else rng.choice(options)


def _placed(shape: str, color: str, size: str, cell: int, rng: random.Random) -> ShapeObject:
    """An object in grid cell `cell` (0..8, row by row), its centre jittered within the cell."""
    row, col = divmod(cell, 3)
    return ShapeObject(shape, color, size, row, col, cx=GRID[col] + rng.uniform(-JITTER, JITTER),
                       cy=GRID[row] + rng.uniform(-JITTER, JITTER))


def sample_scene(seed: int, min_objects: int = 1, max_objects: int = 2) -> Scene:
    """Draw one scene from a private RNG; the same seed always gives the same scene."""
    rng = random.Random(seed)
    n = rng.randint(min_objects, max_objects)
    for _ in range(1000):  # rejection sampling: objects may touch but not hide each other
        objs = [_placed(rng.choice(SHAPES), rng.choice(COLOR_NAMES), rng.choice(SIZE_NAMES), cell, rng)
                for cell in rng.sample(range(9), n)]
        if _apart(objs):
            break
    else:  # pragma: no cover - only reachable with absurd max_objects, which the dataset rejects
        raise RuntimeError(f"could not place {n} non-overlapping objects")
    relation = _relation(objs[0], objs[1], rng) if n == 2 else None
    return Scene(objects=tuple(objs), relation=relation, background=_draw_background(rng))


def _draw_background(rng: random.Random) -> tuple[float, ...]:
    """Base grey, a slight tint, a linear gradient and two low-frequency sinusoids (texture): 14 numbers."""
    grey = rng.uniform(0.18, 0.42)
    tint = [rng.uniform(-0.05, 0.05) for _ in range(3)]
    grad_angle, grad_amp = rng.uniform(0, 2 * math.pi), rng.uniform(0.04, 0.14)
    waves = []
    for _ in range(2):
        waves += [rng.uniform(1.0, 4.0), rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi),
                  rng.uniform(0.01, 0.035)]
    return (grey, *tint, grad_angle, grad_amp, *waves)


def _apart(objs: Sequence[ShapeObject]) -> bool:
    """Objects may touch but not hide each other: centres at least 0.85·(r_a + r_b) apart."""
    return all(math.hypot(a.cx - b.cx, a.cy - b.cy) >= 0.85 * (SIZES[a.size] + SIZES[b.size])
               for i, a in enumerate(objs) for b in objs[i + 1:])


# --- Rendering: signed distance functions, batched in torch -------------------------------------------------


def _star_sdf(px: torch.Tensor, py: torch.Tensor, R: torch.Tensor, inner: torch.Tensor, n: torch.Tensor,
              phi0: torch.Tensor) -> torch.Tensor:
    """Signed distance to a regular star polygon (negative inside), by folding into one half-sector.

    By symmetry every point can be rotated into the wedge between an outer vertex A = (R, 0) and the
    neighbouring inner vertex B = inner·R·(cos(π/n), sin(π/n)); there the boundary is the segment AB.
    """
    rho = torch.sqrt(px * px + py * py)
    sector = 2 * math.pi / n
    t = torch.remainder(torch.atan2(py, px) - phi0, sector)
    a = torch.minimum(t, sector - t)  # folded angle in [0, π/n]
    qx, qy = rho * torch.cos(a), rho * torch.sin(a)
    ex, ey = inner * R * torch.cos(sector / 2) - R, inner * R * torch.sin(sector / 2)  # e = B - A
    wx, wy = qx - R, qy  # w = q - A
    h = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0, 1)  # projection onto the segment
    d = torch.sqrt((wx - h * ex) ** 2 + (wy - h * ey) ** 2)
    inside = (ex * wy - ey * wx) > 0  # same side of AB as the centre
    return torch.where(inside, -d, d)


def _render_background(bg: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """(B, 14) background parameters -> (B, 3, H, W) RGB in [0, 1]."""
    p = [bg[:, i, None, None] for i in range(bg.shape[1])]
    grey, tint, angle, amp = p[0], torch.stack(p[1:4], 1), p[4], p[5]
    u = (X - 0.5) * torch.cos(angle) + (Y - 0.5) * torch.sin(angle)  # coordinate along the gradient
    lum = grey + amp * u
    for k in range(2):
        freq, orient, phase, a = p[6 + 4 * k: 10 + 4 * k]
        lum = lum + a * torch.sin(2 * math.pi * freq * (X * torch.cos(orient) + Y * torch.sin(orient)) + phase)
    return (lum[:, None] + tint).clamp(0, 1)


def _object_params(o: ShapeObject) -> list[float]:
    """[present, polygon centre x, y, R, inner ratio, n, phi0, is circle, r, g, b] of an object for rendering."""
    n, inner, phi0, scale = _GEOMETRY[o.shape]
    size = SIZES[o.size]
    x0, y0, x1, y1 = _UNIT_BBOX[o.shape]
    # polygon centre = bbox centre − size·(bbox midpoint of the unit shape)
    ccx, ccy = o.cx - size * (x0 + x1) / 2, o.cy - size * (y0 + y1) / 2
    return [1.0, ccx, ccy, scale * size, inner, max(n, 1), phi0, float(n == 0), *COLORS[o.color]]


def render_scenes(scenes: Sequence[Scene], resolution: int,
                  device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Render scenes -> (images (B, 3, H, W) in [-1, 1], segmentation (B, H, W) int64).

    Edges are antialiased: an object's coverage of a pixel is clamp(0.5 − sdf_in_pixels, 0, 1).
    Objects are composited in order; a pixel belongs to the last object covering at least half of it.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    B, K = len(scenes), max(len(s.objects) for s in scenes)
    coords = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution
    Y, X = torch.meshgrid(coords, coords, indexing="ij")  # pixel centres, (H, W)
    bg = torch.tensor([s.background for s in scenes], dtype=torch.float32, device=device)
    image = _render_background(bg, X, Y)
    seg = torch.zeros(B, resolution, resolution, dtype=torch.int64, device=device)
    # object parameters, (B, K) each; absent slots get zero coverage
    absent = [0.0, 0.5, 0.5, 0.1, 0.5, 1, 0.0, 1.0, 0.0, 0.0, 0.0]
    rows = [[_object_params(o) for o in s.objects] + [absent] * (K - len(s.objects)) for s in scenes]
    P = torch.tensor(rows, dtype=torch.float32, device=device)  # (B, K, 11)
    # Each object is rasterised in a W×W window around its centre (W covers the largest shape), which is
    # then scattered into the full image: ~3× fewer pixels than evaluating every SDF everywhere.
    W = min(resolution, math.ceil(2 * max(SIZES.values()) * max(
        max(abs(v) for v in _UNIT_BBOX[s]) for s in SHAPES) * resolution) + 3)
    offs = torch.arange(W, device=device)
    for k in range(K):
        q = [P[:, k, i, None, None] for i in range(8)]
        present, cx, cy, R, inner, n, phi0, is_circle = q
        # window origin in pixels, (B,), shifted to lie inside the image (the object still fits in it)
        ox = ((cx[:, 0, 0] * resolution).floor().long() - W // 2).clamp(0, resolution - W)
        oy = ((cy[:, 0, 0] * resolution).floor().long() - W // 2).clamp(0, resolution - W)
        xs, ys = ox[:, None] + offs, oy[:, None] + offs  # (B, W) pixel indices of the window
        Xw = ((xs.float() + 0.5) / resolution)[:, None, :]  # (B, 1, W) pixel centres
        Yw = ((ys.float() + 0.5) / resolution)[:, :, None]  # (B, W, 1)
        px, py = Xw - cx, Yw - cy  # (B, W, W)
        sdf = torch.where(is_circle > 0, torch.sqrt(px * px + py * py) - R,
                          _star_sdf(px, py, R, inner, n, phi0))
        alpha = (0.5 - sdf * resolution).clamp(0, 1) * present  # coverage, (B, W, W)
        idx = ys[:, :, None] * resolution + xs[:, None, :]  # (B, W, W) flat pixel index, all distinct
        flat_alpha = torch.zeros(B, resolution * resolution, device=device)
        flat_alpha.scatter_(1, idx.reshape(B, -1), alpha.reshape(B, -1))
        a = flat_alpha.view(B, 1, resolution, resolution)
        color = P[:, k, 8:11, None, None]
        image = image * (1 - a) + color * a  # "over" compositing
        seg = torch.where(a[:, 0] >= 0.5, torch.full_like(seg, k + 1), seg)
    return image * 2 - 1, seg


def low_res(image: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, 3, H, W) or (3, H, W) -> H/factor × W/factor by area averaging (the super-resolution task's input)."""
    if factor < 1 or image.shape[-1] % factor or image.shape[-2] % factor:
        raise ValueError(f"factor must be a positive divisor of the image size {tuple(image.shape[-2:])}, "
                         f"got {factor}")
    return F.avg_pool2d(image, factor)


# --- Semantic maps: the class of the object covering each pixel (semantic synthesis, LDM Sec. 4.3.2) -------


def semantic_map(segmentation: torch.Tensor, scenes: Sequence[Scene]) -> torch.Tensor:
    """(B, H, W) segmentation (0: background, k + 1: object k of the scene) -> (B, H, W) int64 class map: the
    class id of the covering object (shape_index·6 + color_index, `class_id`), BACKGROUND_ID (24) elsewhere."""
    if segmentation.dim() != 3 or len(segmentation) != len(scenes):
        raise ValueError(f"need a (B, H, W) segmentation and B scenes, got {tuple(segmentation.shape)} and "
                         f"{len(scenes)} scenes")
    K = max(len(s.objects) for s in scenes)
    # (B, 1 + K): index 0 = background, k + 1 = object k; built in Python, so that the tensor ops of a batch do
    # not depend on how many objects its scenes hold (tools/flops.py counts them per batch)
    lut = torch.tensor([[BACKGROUND_ID] + [o.class_id for o in s.objects] + [BACKGROUND_ID] * (K - len(s.objects))
                        for s in scenes], dtype=torch.int64, device=segmentation.device)
    return torch.gather(lut, 1, segmentation.flatten(1).long()).view_as(segmentation)


def check_semantic_map(maps: torch.Tensor, resolution: int | None = None) -> torch.Tensor:
    """A Shapes semantic map as a model takes it: (B, H, W) whole numbers in 0..NUM_SEMANTIC_IDS − 1 (class_id for
    objects, BACKGROUND_ID for background; H = W = `resolution` when given) -> int64; anything else is an error
    that says what was expected and how to get it (conditioning.check_class_map)."""
    return check_class_map(maps, NUM_SEMANTIC_IDS, resolution)


def render_semantic(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) class map -> (B, 3, H, W) in [-1, 1] for display: each object pixel in its class's color,
    background a flat mid grey (the shape is the outline of the colored region)."""
    maps = check_semantic_map(maps)
    palette = torch.tensor([COLORS[COLOR_NAMES[c % len(COLORS)]] for c in range(NUM_CLASSES)] + [(0.3, 0.3, 0.3)],
                           device=maps.device)                       # (NUM_SEMANTIC_IDS, 3) in [0, 1]
    return palette[maps].permute(0, 3, 1, 2) * 2 - 1


# --- The caption grammar: tokenizer, parser, and the scene a caption describes ------------------------------


class ShapesTokenizer(WordTokenizer):
    """The word-level tokenizer for Shapes captions: <pad> = 0, <bos> = 1, <eos> = 2, then the grammar's words
    in alphabetical order. The empty caption "" encodes to [bos, eos, pad, …], the text encoder's null prompt.

    context_length fits the longest caption of scenes with up to `max_objects` objects: 12 words for a
    two-object relation ("a small red circle to the left of a large red star"), 8·n + (n − 1) for n
    positioned objects joined by "and"; plus <bos> and <eos>.
    """

    def __init__(self, max_objects: int = 2):
        words = {"a", "in", "the", "and"}
        words |= set(SIZE_NAMES) | set(COLOR_NAMES) | set(SHAPES)
        words |= {w for p in POSITIONS for w in p.split()} | {w for r in RELATIONS for w in r.split()}
        longest = max(12 if max_objects >= 2 else 0, 8 * max_objects + max_objects - 1)
        super().__init__(sorted(words), longest + 2,
                         examples=("a large red circle in the top left",
                                   "a small blue square to the left of a large yellow star"))
        self.max_objects = max_objects


def parse_caption(caption: str) -> dict:
    """Read a caption of the grammar back into attributes (used by tests and by prompt accuracy).

    Returns {"objects": [{"size", "color", "shape", "position" (or None)}...], "relation": str | None}.
    """
    words = caption.lower().split()

    def phrase(i: int) -> tuple[dict, int]:
        if words[i:i + 1] != ["a"] or i + 4 > len(words):
            raise ValueError(f"expected 'a <size> <color> <shape>' at word {i} of {caption!r}")
        size, color, shape = words[i + 1:i + 4]
        if size not in SIZES or color not in COLORS or shape not in SHAPES:
            raise ValueError(f"cannot parse object phrase {' '.join(words[i:i + 4])!r} in {caption!r}")
        return {"size": size, "color": color, "shape": shape, "position": None}, i + 4

    objects, relation, i = [], None, 0
    first, i = phrase(0)
    objects.append(first)
    rest = " ".join(words[i:])
    for rel in RELATIONS:
        if rest.startswith(rel + " a "):
            second, j = phrase(i + len(rel.split()))
            if j != len(words):
                raise ValueError(f"trailing words in {caption!r}")
            return {"objects": [first, second], "relation": rel}
    while True:  # "<phrase> in the <position> [and <phrase> in the <position>]..."
        if words[i:i + 2] != ["in", "the"]:
            raise ValueError(f"expected 'in the <position>' after object {len(objects)} of {caption!r}")
        j = i + 2
        pos = next((p for p in sorted(POSITIONS, key=len, reverse=True)
                    if words[j:j + len(p.split())] == p.split()), None)
        if pos is None:
            raise ValueError(f"unknown position in {caption!r}")
        objects[-1]["position"] = pos
        i = j + len(pos.split())
        if i == len(words):
            return {"objects": objects, "relation": relation}
        if words[i] != "and":
            raise ValueError(f"expected 'and' at word {i} of {caption!r}")
        obj, i = phrase(i + 1)
        objects.append(obj)


def scene_from_caption(caption: str, seed: int = 0) -> Scene:
    """A scene that `caption` describes, drawn with fresh randomness (jitter, background, and for a relation
    the two cells): what a perfect text-to-image model could draw for it. `scene.caption == caption`."""
    p = parse_caption(caption)
    rng = random.Random(seed)
    spec, relation = p["objects"], p["relation"]
    cells = [None if o["position"] is None else POSITIONS.index(o["position"]) for o in spec]
    if None not in cells and len(set(cells)) < len(cells):
        raise ValueError(f"{caption!r} puts two objects in the same cell; each cell holds at most one object")
    for _ in range(1000):
        if relation is not None:
            cells = rng.sample(range(9), 2)
        objs = [_placed(o["shape"], o["color"], o["size"], c, rng) for o, c in zip(spec, cells)]
        holds = relation is None or relation_holds(relation, (objs[0].row, objs[0].col), (objs[1].row, objs[1].col))
        if holds and _apart(objs):
            return Scene(objects=tuple(objs), relation=relation, background=_draw_background(rng))
    raise ValueError(f"cannot place the objects of {caption!r} without them hiding each other "
                     "(large objects in neighbouring cells overlap); move one object further away")


def relation_holds(relation: str, a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Does "a <relation> b" (one of RELATIONS) hold for objects in grid cells a = (row, col) and b?"""
    (ar, ac), (br, bc) = a, b
    return {"to the left of": ac < bc, "to the right of": ac > bc, "above": ar < br, "below": ar > br}[relation]


def parse_layout(spec: str, max_objects: int = 2) -> torch.Tensor:
    """'red circle@0.1,0.1,0.45,0.45; blue star@0.55,0.5,0.95,0.9' -> (1, max_objects, 5) layout tensor,
    rows [class_id, x0, y0, x1, y1] (coordinates as fractions of the image side), padding rows all −1."""
    rows = []
    for part in [p.strip() for p in spec.split(";") if p.strip()]:
        try:
            name, box = part.split("@")
            color, shape = name.split()
            coords = [float(v) for v in box.split(",")]
        except ValueError:
            raise ValueError(f"cannot read layout object {part!r}; expected '<color> <shape>@x0,y0,x1,y1' with "
                             "coordinates in [0, 1], objects separated by ';'") from None
        if color not in COLOR_NAMES or shape not in SHAPES or len(coords) != 4:
            raise ValueError(f"layout object {part!r}: color must be one of {COLOR_NAMES}, shape one of {SHAPES}, "
                             "and the box four numbers x0,y0,x1,y1")
        if not all(0 <= c <= 1 for c in coords) or coords[0] >= coords[2] or coords[1] >= coords[3]:
            raise ValueError(f"layout box {coords} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        rows.append([class_id(shape, color), *coords])
    if not 1 <= len(rows) <= max_objects:
        raise ValueError(f"a layout needs 1 to {max_objects} objects, got {len(rows)}")
    rows += [[-1.0] * 5] * (max_objects - len(rows))
    return torch.tensor([rows], dtype=torch.float32)
