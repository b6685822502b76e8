"""Per-shape, per-size readings (issue 15: small stars come out as blobs): the breakdown of evaluate-ldm and
the autoencoder's shape fidelity, checked against independent computations and stand-ins whose faults are known.

Checklist:
  - the fidelity test set is seeded, one object per scene, n per (shape, size)
  - an identity "autoencoder" (a function, or pixel space as a module) scores exactly what the evaluator reads
    on the originals, computed here independently with detect_objects
  - an "autoencoder" that swaps every shape for another scores about 0; a 4× down/up-sampling one loses small
    shapes more often than large ones
  - evaluate_text_ldm's breakdown and text_report: a stand-in that draws small stars as circles and merges two
    small objects into one shows exactly those cells failing, with n counted from the captions
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from minildm.autoencoder import PixelSpace
from minildm.data.shapes import SHAPES, SIZE_NAMES, parse_caption, render_scenes, scene_from_caption
from minildm.eval import judge as EV
from minildm.eval.accuracy import (
    _test_captions,
    autoencoder_shape_fidelity,
    by_shape_and_size,
    count_by_sizes,
    evaluate_text_ldm,
    fidelity_lines,
    fidelity_scenes,
    text_report,
)


@pytest.fixture(scope="module")
def evaluator():
    return EV.load_evaluator(device="cpu")


def test_fidelity_scenes_are_seeded_one_object_n_per_shape_and_size():
    a, b = fidelity_scenes(5, seed=3), fidelity_scenes(5, seed=3)
    assert a == b and a != fidelity_scenes(5, seed=4)
    assert len(a) == 5 * len(SHAPES) * len(SIZE_NAMES) and all(len(s.objects) == 1 for s in a)
    cells = [(s.objects[0].shape, s.objects[0].size) for s in a]
    assert all(cells.count((shape, size)) == 5 for shape in SHAPES for size in SIZE_NAMES)


def _evaluator_reading(scenes, evaluator):
    """Per (shape, size): share of scenes where detect_objects finds an object in the object's cell with its shape."""
    images = render_scenes(scenes, 32)[0]
    seen = EV.detect_objects(images, evaluator)
    groups = {}
    for s, objs in zip(scenes, seen):
        o = s.objects[0]
        ok = any(d["row"] == o.row and d["col"] == o.col and d["shape"] == o.shape for d in objs)
        groups.setdefault((o.shape, o.size), []).append(ok)
    return {k: sum(v) / len(v) for k, v in groups.items()}, {k: len(v) for k, v in groups.items()}


@pytest.mark.parametrize("identity", [lambda x: x.clone(), PixelSpace()], ids=["function", "pixel-space module"])
def test_identity_autoencoder_scores_the_evaluators_own_reading(identity, evaluator):
    r = autoencoder_shape_fidelity(identity, n=8, seed=5, evaluator=evaluator)
    expected, counts = _evaluator_reading(fidelity_scenes(8, seed=5), evaluator)
    for (shape, size), acc in expected.items():
        assert r["original"][shape][size]["shape"] == pytest.approx(acc, abs=1e-12)
        assert r["reconstruction"][shape][size]["shape"] == pytest.approx(acc, abs=1e-12)
        assert r["original"][shape][size]["n"] == counts[(shape, size)] == 8
    for size in SIZE_NAMES:
        mean = sum(expected[(shape, size)] for shape in SHAPES) / len(SHAPES)      # equal n per shape
        assert r["by_size"][size]["original"] == pytest.approx(mean) == r["by_size"][size]["reconstruction"]
    lines = fidelity_lines(r)
    assert len(lines) == 2 + len(SHAPES) and all(shape in "".join(lines) for shape in SHAPES)


def test_an_autoencoder_that_swaps_shapes_scores_about_zero(evaluator):
    """A "reconstruction" that draws the same scene with the next shape: the evaluator reads the new shape."""
    scenes = fidelity_scenes(6, seed=2)
    swapped = [dataclasses.replace(s, objects=(dataclasses.replace(
        s.objects[0], shape=SHAPES[(SHAPES.index(s.objects[0].shape) + 1) % 4]),)) for s in scenes]
    wrong = render_scenes(swapped, 32)[0]
    done = [0]

    def swap(x):
        out = wrong[done[0]:done[0] + len(x)]
        done[0] += len(x)
        return out

    r = autoencoder_shape_fidelity(swap, n=6, seed=2, evaluator=evaluator, batch_size=7)
    assert done[0] == len(scenes)
    for size in SIZE_NAMES:
        assert r["by_size"][size]["reconstruction"] <= 0.05 and r["by_size"][size]["original"] >= 0.95


def test_four_times_down_and_up_sampling_loses_small_shapes_more_than_large_ones(evaluator):
    """At 8×8 a small object (radius ≈ 5 px at 32 px) keeps less of its outline than a large one (≈ 7 px)."""
    def down_up(x):
        return F.interpolate(F.avg_pool2d(x, 4), scale_factor=4, mode="bilinear", align_corners=False)

    r = autoencoder_shape_fidelity(down_up, n=25, seed=0, evaluator=evaluator)["by_size"]
    assert r["small"]["original"] >= 0.95 and r["large"]["original"] >= 0.95
    assert r["small"]["reconstruction"] < r["small"]["original"] - 0.05
    assert r["small"]["reconstruction"] < r["large"]["reconstruction"] - 0.05


# --- evaluate-ldm's breakdown, with a stand-in whose faults are known -----------------------------------------


class SmallStarsAsCircles:
    """Duck-types what evaluate_text_ldm uses of a LatentDiffusion: draws each caption's scene, but every small
    star as a circle, and of two small objects only the first (they merged into one)."""

    cond_mode, resolution = "text", 32

    def prompt_condition(self, prompts):
        return list(prompts)

    def sample(self, captions, steps=None, eta=0.0, guidance_scale=None, generator=None):
        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        scenes = []
        for i, c in enumerate(captions):
            s = scene_from_caption(c, seed=seed + i)
            objs = [dataclasses.replace(o, shape="circle") if (o.size, o.shape) == ("small", "star") else o
                    for o in s.objects]
            if len(objs) == 2 and objs[0].size == objs[1].size == "small":
                objs = objs[:1]
            scenes.append(dataclasses.replace(s, objects=tuple(objs)))
        return render_scenes(scenes, 32)[0]


def test_evaluate_ldm_breaks_down_by_shape_and_size_and_counts_by_sizes():
    n = 80
    r = evaluate_text_ldm(SmallStarsAsCircles(), n=n, fid=False, word_pairs=())
    one, two = r["one_object"], r["two_objects"]
    # n per cell, counted from the captions' words ("a small red star in the top left")
    caps1, caps2 = _test_captions(n, 32, 1, 1), _test_captions(n, 32, 2, 2)
    for shape in SHAPES:
        for size in SIZE_NAMES:
            assert one["by_shape_and_size"][shape][size]["n"] == sum(c.split()[1:4:2] == [size, shape] for c in caps1)
            cell1, cell2 = one["by_shape_and_size"][shape][size], two["by_shape_and_size"][shape][size]
            if (size, shape) == ("small", "star"):
                assert cell1["shape"] <= 0.05 and cell1["accuracy"] <= 0.05 and cell2["shape"] <= 0.05
            else:
                assert cell1["shape"] >= 0.9 and cell1["accuracy"] >= 0.9
    assert sum(v["n"] for sizes in two["by_shape_and_size"].values() for v in sizes.values()) == 2 * n
    counts = two["count_by_sizes"]
    pairs = [sorted(o["size"] for o in parse_caption(c)["objects"]) for c in caps2]
    assert counts["small+small"]["n"] == sum(p == ["small", "small"] for p in pairs) > 0
    assert counts["small+small"]["count"] <= 0.05
    assert counts["large+large"]["count"] >= 0.9 and counts["large+small"]["count"] >= 0.9
    assert counts["all"]["n"] == n and counts["all"]["count"] == pytest.approx(two["by_attribute"]["count"])
    lines = "\n".join(text_report(r, n))
    assert "count (two separate objects seen)" in lines and "small star" not in lines   # a table, shape by shape
    assert sum(line.strip().startswith(SHAPES) for line in lines.splitlines()) == 2 * len(SHAPES)


def test_breakdown_bookkeeping_by_hand():
    captions = ["a small red star in the top left", "a small blue star in the center",
                "a large red circle to the left of a small green star"]
    objects = [[{"shape": False, "color": True}], [{"shape": True, "color": True}],
               [{"shape": True, "color": True}, {"shape": False, "color": True}]]
    t = by_shape_and_size(captions, objects, torch.tensor([False, True, False]))
    assert t["star"]["small"] == {"shape": pytest.approx(1 / 3), "accuracy": pytest.approx(1 / 3), "n": 3}
    assert t["circle"]["large"] == {"shape": 1.0, "accuracy": 0.0, "n": 1}
    assert t["square"]["small"] == {"n": 0}
    c = count_by_sizes(captions, [True, False, True])
    assert c == {"all": {"count": pytest.approx(2 / 3), "n": 3}, "large+small": {"count": 1.0, "n": 1},
                 "small": {"count": 0.5, "n": 2}}
