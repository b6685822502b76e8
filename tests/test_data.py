"""The built-in Shapes dataset: determinism, annotations that agree with the pixels, tokenizer, errors."""

import hashlib
import math
import subprocess
import sys

import pytest
import torch

from minildm.data.datasets import ShapesDataset, collate
from minildm.data.shapes import (
    COLOR_NAMES,
    COLORS,
    GRID,
    JITTER,
    NUM_CLASSES,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapesTokenizer,
    class_name,
    low_res,
    parse_caption,
)


@pytest.fixture(scope="module")
def ds():
    return ShapesDataset("train", size=1000)


@pytest.fixture(scope="module")
def batch(ds):
    return ds.batch(range(200))


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def test_image_range_dtype_and_shape(batch):
    img = batch["image"]
    assert img.dtype == torch.float32 and img.shape == (200, 3, 32, 32)
    assert img.min() >= -1 and img.max() <= 1
    assert img.std() > 0.2  # not a blank canvas


def test_sample_is_pure_function_of_seed_split_index(ds, batch):
    again = ShapesDataset("train", size=1000).batch([5, 3, 150])
    assert torch.equal(again["image"], batch["image"][[5, 3, 150]])
    single = ds[7]  # single-item path agrees with the batched path
    assert torch.equal(single["image"], batch["image"][7]) and single["caption"] == batch["caption"][7]
    assert not torch.equal(ShapesDataset("val", size=10).batch([0])["image"], batch["image"][:1])
    assert not torch.equal(ShapesDataset("train", size=10, seed=1).batch([0])["image"], batch["image"][:1])


@pytest.mark.slow
def test_deterministic_across_processes(batch):
    code = ("import hashlib,torch; from minildm.data.datasets import ShapesDataset;"
            "x=ShapesDataset('train', size=1000).batch(range(200))['image'];"
            "print(hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == _digest(batch["image"])


def test_captions_parse_back_to_the_attributes(ds):
    for i in range(300):
        s = ds[i] if i < 40 else None
        scene = ds.scene(i)
        parsed = parse_caption(scene.caption)
        assert len(parsed["objects"]) == len(scene.objects)
        for p, o in zip(parsed["objects"], scene.objects):
            assert (p["shape"], p["color"], p["size"]) == (o.shape, o.color, o.size)
            if p["position"] is not None:
                assert p["position"] == o.position
        if len(scene.objects) == 2:  # the relation must be true of the actual centres
            a, b = scene.objects
            rel = parsed["relation"]
            assert {"to the left of": a.cx < b.cx, "to the right of": a.cx > b.cx,
                    "above": a.cy < b.cy, "below": a.cy > b.cy}[rel]
        if s is not None:
            assert s["caption"] == scene.caption


def test_positions_lie_in_their_grid_cells(ds):
    for i in range(200):
        for o in ds.scene(i).objects:
            assert abs(o.cx - GRID[o.col]) <= JITTER + 1e-9 and abs(o.cy - GRID[o.row]) <= JITTER + 1e-9
            assert o.position == POSITIONS[3 * o.row + o.col]


def test_labels_and_layout(batch, ds):
    labels, n = batch["label"], batch["num_objects"]
    assert ((labels >= 0) & (labels < NUM_CLASSES))[n == 1].all()
    assert (labels[n > 1] == -1).all()
    assert (n == 1).any() and (n == 2).any()
    for i in torch.nonzero(n == 1).flatten()[:20].tolist():
        o = ds.scene(i).objects[0]
        assert class_name(int(labels[i])) == f"{o.color} {o.shape}"
    lay = batch["layout"]
    assert lay.shape == (200, 2, 5)
    assert ((lay[..., 0] >= 0).sum(-1) == n).all()
    real = lay[lay[..., 0] >= 0]
    assert (real[:, 1:] >= 0).all() and (real[:, 1:] <= 1).all()
    assert (real[:, 3] > real[:, 1]).all() and (real[:, 4] > real[:, 2]).all()


def _analytic_area(shape: str, size: float) -> float:
    """Area of the shape in units of the image side², from elementary geometry (independent of the SDF)."""
    from minildm.data.shapes import _GEOMETRY

    n, inner, _, scale = _GEOMETRY[shape]
    R = scale * size
    if n == 0:
        return math.pi * R * R
    # 2n triangles (centre, outer vertex, inner vertex), each with sides R and inner·R and angle π/n
    return 2 * n * 0.5 * R * (inner * R) * math.sin(math.pi / n)


def test_segmentation_agrees_with_attributes(ds):
    res = 64  # finer pixels make the area comparison tight
    hi = ShapesDataset("train", size=1000, resolution=res)
    b = hi.batch(range(120))
    checked = 0
    for i in range(120):
        scene = hi.scene(i)
        seg = b["segmentation"][i]
        assert set(seg.unique().tolist()) <= set(range(len(scene.objects) + 1))
        for k, o in enumerate(scene.objects):
            mask = seg == k + 1
            ys, xs = torch.nonzero(mask, as_tuple=True)
            x0, y0, x1, y1 = (v * res for v in o.bbox)
            # every labelled pixel centre lies inside the object's bounding box (half a pixel of slack)
            assert ((xs + 0.5) >= x0 - 0.5).all() and ((xs + 0.5) <= x1 + 0.5).all()
            assert ((ys + 0.5) >= y0 - 0.5).all() and ((ys + 0.5) <= y1 + 0.5).all()
            if len(scene.objects) == 1:  # unoccluded: pixel area matches the analytic area within 6 %
                area = mask.sum().item() / res ** 2
                expected = _analytic_area(o.shape, SIZES[o.size])
                assert abs(area - expected) / expected < 0.06, (o, area, expected)
                checked += 1
    assert checked > 20


def test_object_pixels_have_the_named_color(ds, batch):
    palette = torch.tensor([COLORS[c] for c in COLOR_NAMES]) * 2 - 1  # in [-1, 1]
    for i in range(100):
        scene = ds.scene(i)
        seg = batch["segmentation"][i]
        for k, o in enumerate(scene.objects):
            mask = seg == k + 1
            # interior pixels: the mask eroded by one pixel (full coverage, no antialiasing blend)
            m = mask[None, None].float()
            interior = (-torch.nn.functional.max_pool2d(-m, 3, 1, 1))[0, 0] > 0.5
            if interior.sum() < 4:
                continue
            pix = batch["image"][i][:, interior].T  # (N, 3)
            assert torch.allclose(pix, palette[COLOR_NAMES.index(o.color)].expand_as(pix), atol=1e-5)
            nearest = torch.cdist(pix.mean(0, keepdim=True), palette).argmin().item()
            assert COLOR_NAMES[nearest] == o.color


def test_all_attribute_values_occur(ds):
    seen = {"shape": set(), "color": set(), "size": set(), "position": set()}
    for i in range(400):
        for o in ds.scene(i).objects:
            for key in seen:
                seen[key].add(getattr(o, key))
    assert seen["shape"] == set(SHAPES) and seen["color"] == set(COLOR_NAMES)
    assert seen["size"] == set(SIZES) and seen["position"] == set(POSITIONS)


def test_tokenizer_round_trip_and_padding(batch):
    tok = ShapesTokenizer(max_objects=2)
    for cap, ids in zip(batch["caption"], batch["tokens"]):
        assert tok.decode(ids) == cap
        assert torch.equal(tok.encode(cap), ids)
        assert ids[0] == tok.bos_id and (ids == tok.eos_id).sum() == 1
        after = ids[(ids == tok.eos_id).nonzero()[0, 0] + 1:]
        assert (after == tok.pad_id).all()
    assert tok.encode("").tolist()[:3] == [tok.bos_id, tok.eos_id, tok.pad_id]
    assert tok.decode(tok.encode("A Large RED circle, in the top left.")) == "a large red circle in the top left"


def test_tokenizer_unknown_words_are_named(batch):
    tok = ShapesTokenizer()
    with pytest.raises(ValueError) as e:
        tok.encode("a huge red dragon in the top left")
    msg = str(e.value)
    assert "dragon" in msg and "huge" in msg and "circle" in msg  # names the words and lists the vocabulary
    with pytest.raises(ValueError):
        tok.encode("a <pad> red circle")


def test_random_batches_resume_exactly(ds):
    it = ds.random_batches(8, seed=3)
    first = [next(it)["index"] for _ in range(4)]
    resumed = next(ds.random_batches(8, seed=3, start=2))["index"]
    assert torch.equal(resumed, first[2])
    assert not torch.equal(first[0], first[1])


def test_dataloader_collate(ds):
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)
    b = next(iter(loader))
    assert b["image"].shape == (4, 3, 32, 32) and b["tokens"].shape[0] == 4 and len(b["caption"]) == 4
    assert torch.equal(b["image"], ds.batch(range(4))["image"])


def test_resolution_64_and_low_res():
    b = ShapesDataset("test", resolution=64, size=10).batch(range(3))
    assert b["image"].shape == (3, 3, 64, 64) and b["segmentation"].shape == (3, 64, 64)
    lr = low_res(b["image"], 4)
    assert lr.shape == (3, 3, 16, 16)
    assert torch.allclose(lr[0, :, 0, 0], b["image"][0, :, :4, :4].mean((1, 2)))
    with pytest.raises(ValueError):
        low_res(b["image"], 5)


@pytest.mark.parametrize("kwargs, words", [
    (dict(resolution=30), "multiple of 8"),
    (dict(resolution=0), "multiple of 8"),
    (dict(min_objects=0), "at least one object"),
    (dict(max_objects=0), "max_objects"),
    (dict(size=0), "size"),
])
def test_invalid_arguments_are_clear_errors(kwargs, words):
    with pytest.raises(ValueError, match=words):
        ShapesDataset("train", **kwargs)


def test_unknown_split_and_index_out_of_range():
    with pytest.raises(ValueError, match="split"):
        ShapesDataset("training")
    with pytest.raises(IndexError):
        ShapesDataset("val", size=5)[5]


def test_more_objects_per_scene():
    ds3 = ShapesDataset("train", size=100, max_objects=3, min_objects=3)
    for i in range(20):
        scene = ds3.scene(i)
        assert len(scene.objects) == 3
        parsed = parse_caption(scene.caption)
        assert [p["position"] for p in parsed["objects"]] == [o.position for o in scene.objects]
    assert ds3.tokenizer.encode(ds3.scene(0).caption).shape == (ds3.tokenizer.context_length,)
