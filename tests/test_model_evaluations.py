"""The evaluations of each conditioning mode (eval/accuracy.py, notebooks 07, 08): the guidance sweep, the
class / layout / super-resolution / unconditional evaluations with their images, and class ids and layouts.
Untrained tiny (`ci`) models: the machinery and the arithmetic, not what a trained model does."""

import pytest
import torch

from minildm.data.shapes import NUM_CLASSES, class_id, class_name, parse_layout
from minildm.eval.accuracy import (
    evaluate_class_model,
    evaluate_guidance,
    evaluate_layout_model,
    evaluate_sr_model,
    evaluate_unconditional,
    super_resolve,
)
from minildm.eval.metrics import psnr
from minildm.train.profiles import get_profile

CI = get_profile("ci")


def test_evaluate_guidance_has_one_row_per_scale_and_one_floor(text_ldm):
    rows = evaluate_guidance(text_ldm, scales=(0.0, 1.0, 3.0), num_samples=8, steps=2, batch_size=8)
    assert [r["guidance_scale"] for r in rows] == [0.0, 1.0, 3.0]
    assert len({r["fid_floor"] for r in rows}) == 1 and all("two_object_accuracy" in r for r in rows)
    with pytest.raises(ValueError, match="guidance scales"):
        evaluate_guidance(text_ldm, scales=(-1.0,), num_samples=8)


def test_class_id_arithmetic_and_layouts_by_hand():
    assert class_id("star", "blue") == 3 * 6 + 2 and class_name(20) == "blue star" and NUM_CLASSES == 24
    by_hand = torch.tensor([[[class_id("circle", "red"), 0.1, 0.1, 0.45, 0.45], [-1, -1, -1, -1, -1]]])
    assert torch.equal(parse_layout("red circle@0.1,0.1,0.45,0.45"), by_hand.float())
    with pytest.raises(ValueError, match="cannot read layout object"):
        parse_layout("red circle 0.1,0.1,0.45,0.45")


def test_class_layout_sr_and_unconditional_evaluations_return_their_images(untrained_ldm):
    cls = untrained_ldm("class")
    r = evaluate_class_model(cls, per_class=1, steps=2, return_images=True)
    assert r["images"].shape == (NUM_CLASSES, 3, 32, 32) and r["labels"].tolist() == list(range(NUM_CLASSES))
    assert 0.0 <= r["accuracy"] <= 1.0 and "images" not in evaluate_class_model(cls, per_class=1, steps=1)
    with pytest.raises(ValueError, match="class labels must be in 0..23"):
        cls.prompt_condition(labels=[24])
    lay = untrained_ldm("layout")
    r = evaluate_layout_model(lay, n=4, steps=2, return_images=True)
    assert r["images"].shape == (4, 3, 32, 32) and r["layouts"].shape == (4, 2, 5) and r["correct"].shape == (4,)
    sr = untrained_ldm("sr")
    r = evaluate_sr_model(sr, n=6, steps=2, batch_size=4, return_images=True)
    ims = r["images"]
    assert ims["low"].shape == (6, 3, 8, 8) and ims["sr"].shape == ims["truth"].shape == (6, 3, 32, 32)
    assert r["psnr"] == pytest.approx(float(psnr(ims["truth"], ims["sr"]).mean()), rel=1e-5)
    one = super_resolve(sr, ims["truth"][:4], steps=2, seed=0)              # batch 0 of evaluate_sr_model
    assert torch.equal(one["sr"], ims["sr"][:4]) and torch.equal(one["bicubic"], ims["bicubic"][:4])
    unc = untrained_ldm("none")
    r = evaluate_unconditional(unc, num_samples=8, steps=2, return_images=True)
    assert r["images"].shape == (8, 3, 32, 32) and 0.0 <= r["scene_like"] <= 1.0 and "fid_floor" in r
    with pytest.raises(ValueError, match="unconditional"):
        evaluate_unconditional(cls, num_samples=8)
    with pytest.raises(ValueError, match="sr-conditional"):
        super_resolve(cls, ims["truth"])
