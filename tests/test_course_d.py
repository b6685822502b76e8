"""What the package gained for notebooks 07 (guidance and attention) and 08 (other conditions): attention maps
from recorded probabilities, the attention-mass study, the U-Net's first input, the guidance sweep, super-
resolution examples, and the class / layout / SR / unconditional evaluations with their images.

Untrained tiny (`ci`) models: these tests check the machinery and the arithmetic, not what a trained model does
(notebooks 07 and 08 measure that on the shipped models)."""

import pytest
import torch
import torch.nn.functional as F

from minildm.autoencoder import build_autoencoder
from minildm.data.datasets import ShapesDataset
from minildm.data.shapes import NUM_CLASSES, class_id, class_name, parse_layout
from minildm.eval.accuracy import (
    GUIDANCE_SCALES,
    evaluate_class_model,
    evaluate_guidance,
    evaluate_layout_model,
    evaluate_sr_model,
    evaluate_unconditional,
    super_resolve,
)
from minildm.eval.metrics import psnr
from minildm.eval.probes import (
    STEP_RANGES,
    attention_mass_study,
    autoencoder_fingerprint,
    cross_attention_layers,
    first_conv_input,
    record_word_attention,
    summarize_attention_mass,
    token_maps,
    word_attention_maps,
)
from minildm.ldm import LatentDiffusion
from minildm.nn import record_attention
from minildm.samplers import guided_model_output
from minildm.train.profiles import get_profile
from minildm.unet import coordinate_grid

CI = get_profile("ci")
PROMPT = "a large red circle in the top left"


def tiny(cond: str) -> LatentDiffusion:
    """An untrained ci-profile model for `cond`, with a measured scale factor, in eval mode."""
    torch.manual_seed(0)
    ds = ShapesDataset("train", CI.data)
    ldm = LatentDiffusion(build_autoencoder(CI.ae), CI.ldm.__class__(**{**CI.ldm.__dict__, "cond": cond}),
                          tokenizer=ds.tokenizer, num_classes=ds.num_classes, max_objects=ds.max_objects)
    ldm.set_scale_factor(ds.batch(range(8))["image"])
    return ldm.eval()


@pytest.fixture(scope="module")
def text_ldm():
    return tiny("text")


# ------------------------------------------------------------------------------ attention maps (07)


def test_token_maps_of_a_recording_are_the_word_attention_maps(text_ldm):
    r = record_word_attention(text_ldm, PROMPT, steps=4)
    layers = cross_attention_layers(r["recorded"])
    assert len(layers) >= 2 and all(len(calls) == 4 for calls in r["recorded"].values())   # one call per step
    maps = token_maps(r["recorded"], len(r["words"]) + 2, 32)
    direct = word_attention_maps(text_ldm, PROMPT, steps=4)
    assert torch.equal(maps[1:-1], direct["maps"]) and torch.equal(maps[0], direct["bos"])
    assert torch.allclose(maps.sum(0), torch.ones(32, 32), atol=1e-4)   # bos + words + eos = 1 at every pixel
    one = list(layers)[:1]
    half = word_attention_maps(text_ldm, PROMPT, steps=4, layers=one, step_range=(0.0, 0.5))["maps"]
    assert torch.equal(half, token_maps(r["recorded"], len(r["words"]) + 2, 32, one, (0.0, 0.5))[1:-1])
    with pytest.raises(ValueError, match="unknown cross-attention layer"):
        token_maps(r["recorded"], 10, 32, ["no.such.layer"])


def test_word_maps_by_hand_from_record_attention(text_ldm):
    """Exercise 7.2's recipe: mean over heads, columns of the words, bilinear upsampling, mean over layers and
    steps, from nn.record_attention around one sampling run."""
    raw = text_ldm.prompt_condition(prompts=[PROMPT])
    with record_attention(text_ldm.unet, keep="all") as rec:
        text_ldm.sample(raw, steps=3, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    n = len(PROMPT.split())
    maps = []
    for name, calls in rec.of_kind("cross").items():
        h, w = rec.spatial[name]
        for p in calls:
            m = p[0].mean(0)[:, 1:n + 1].T.reshape(n, 1, h, w)
            maps.append(F.interpolate(m, size=(32, 32), mode="bilinear", align_corners=False)[:, 0])
    mine = torch.stack(maps).mean(0)
    assert torch.allclose(mine, word_attention_maps(text_ldm, PROMPT, steps=3)["maps"], atol=1e-6)


def test_attention_mass_study_rows_and_summary(text_ldm):
    prompts = [PROMPT, "a small blue square to the left of a large yellow star"]
    rows = attention_mass_study(text_ldm, prompts, steps=2)
    groups = {r["layers"] for r in rows}
    assert "all layers" in groups and {r["steps"] for r in rows} == set(STEP_RANGES)
    roles = {(r["prompt"], r["role"]) for r in rows}
    assert (PROMPT, "other color") not in roles and (prompts[1], "other color") in roles
    assert {r["word"] for r in rows if r["role"] == "color"} == {"red", "blue", "yellow"}
    assert all(0.0 <= r["mass"] <= 1.0 and 0.0 <= r["area"] <= 1.0 for r in rows)
    fake = [{"role": "color", "layers": "all", "steps": "all", "mass": m, "area": a}
            for m, a in [(0.4, 0.1), (0.1, 0.1), (0.5, 0.0)]]           # the last one: object not drawn
    (s,) = summarize_attention_mass(fake)
    assert s["n"] == 2 and s["mass"] == pytest.approx(0.25) and s["ratio"] == pytest.approx(2.5)
    assert s["share_2x"] == pytest.approx(0.5)


def test_same_colored_objects_are_skipped(text_ldm):
    rows = attention_mass_study(text_ldm, ["a small red square to the left of a large red star"], steps=2)
    assert rows == []


# ------------------------------------------------------------------------------ guidance (07)


def test_cfg_by_hand_is_guided_model_output():
    """Exercise 7.1: ε̂ = ε̂(∅) + s·(ε̂(y) − ε̂(∅)) from two separate calls equals the doubled-batch version."""
    ldm = tiny("text")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ldm.unet.parameters():                 # wake the zero-initialized outputs: the condition matters
            if not p.abs().sum():
                p.normal_(0, 0.1, generator=g)
        raw = ldm.prompt_condition(prompts=[PROMPT, "a small blue star in the center"])
        cond, uncond = ldm.encode_condition(raw), ldm.encode_condition(ldm.null_condition(raw))
        z, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([700, 700])
        e_c, e_u = ldm.model_fn(z, t, cond), ldm.model_fn(z, t, uncond)
        assert not torch.allclose(e_c, e_u, atol=1e-3)
        for s in (0.0, 1.0, 3.0):
            mine = e_u + s * (e_c - e_u)
            assert torch.allclose(mine, guided_model_output(ldm.model_fn, z, t, cond, uncond, s), atol=1e-5)


def test_evaluate_guidance_has_one_row_per_scale_and_one_floor(text_ldm):
    rows = evaluate_guidance(text_ldm, scales=(0.0, 1.0, 3.0), num_samples=8, steps=2, batch_size=8)
    assert [r["guidance_scale"] for r in rows] == [0.0, 1.0, 3.0]
    assert len({r["fid_floor"] for r in rows}) == 1 and all("two_object_accuracy" in r for r in rows)
    assert GUIDANCE_SCALES == (0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5)
    with pytest.raises(ValueError, match="guidance scales"):
        evaluate_guidance(text_ldm, scales=(-1.0,), num_samples=8)


# ------------------------------------------------------------------------------ other conditions (08)


def test_first_conv_sees_latent_concat_and_coordinates():
    sr = tiny("sr")
    truth = ShapesDataset("test", CI.data).batch(range(2))["image"]
    low = sr.raw_condition({"image": truth})                                # (2, 3, 8, 8): ×4 smaller
    z, t = torch.randn(2, 4, 8, 8), torch.tensor([500, 500])
    seen = first_conv_input(sr, z, t, low)
    by_hand = torch.cat([z, F.interpolate(low, size=(8, 8), mode="bilinear", align_corners=False),
                         coordinate_grid(z)], dim=1)                         # 4 + 3 + 2 channels
    assert seen.shape == (2, 9, 8, 8) and torch.allclose(seen, by_hand)
    assert sr.unet.input_blocks[0][0].in_channels == 9
    text = tiny("text")
    seen = first_conv_input(text, z, t, text.prompt_condition(prompts=[PROMPT, PROMPT]))
    assert torch.allclose(seen, torch.cat([z, coordinate_grid(z)], dim=1))  # text enters elsewhere


def test_class_id_arithmetic_and_layouts_by_hand():
    assert class_id("star", "blue") == 3 * 6 + 2 and class_name(20) == "blue star" and NUM_CLASSES == 24
    by_hand = torch.tensor([[[class_id("circle", "red"), 0.1, 0.1, 0.45, 0.45], [-1, -1, -1, -1, -1]]])
    assert torch.equal(parse_layout("red circle@0.1,0.1,0.45,0.45"), by_hand.float())
    with pytest.raises(ValueError, match="cannot read layout object"):
        parse_layout("red circle 0.1,0.1,0.45,0.45")


def test_class_layout_sr_and_unconditional_evaluations_return_their_images():
    cls = tiny("class")
    r = evaluate_class_model(cls, per_class=1, steps=2, return_images=True)
    assert r["images"].shape == (NUM_CLASSES, 3, 32, 32) and r["labels"].tolist() == list(range(NUM_CLASSES))
    assert 0.0 <= r["accuracy"] <= 1.0 and "images" not in evaluate_class_model(cls, per_class=1, steps=1)
    with pytest.raises(ValueError, match="class labels must be in 0..23"):
        cls.prompt_condition(labels=[24])
    lay = tiny("layout")
    r = evaluate_layout_model(lay, n=4, steps=2, return_images=True)
    assert r["images"].shape == (4, 3, 32, 32) and r["layouts"].shape == (4, 2, 5) and r["correct"].shape == (4,)
    sr = tiny("sr")
    r = evaluate_sr_model(sr, n=6, steps=2, batch_size=4, return_images=True)
    ims = r["images"]
    assert ims["low"].shape == (6, 3, 8, 8) and ims["sr"].shape == ims["truth"].shape == (6, 3, 32, 32)
    assert r["psnr"] == pytest.approx(float(psnr(ims["truth"], ims["sr"]).mean()), rel=1e-5)
    one = super_resolve(sr, ims["truth"][:4], steps=2, seed=0)              # batch 0 of evaluate_sr_model
    assert torch.equal(one["sr"], ims["sr"][:4]) and torch.equal(one["bicubic"], ims["bicubic"][:4])
    unc = tiny("none")
    r = evaluate_unconditional(unc, num_samples=8, steps=2, return_images=True)
    assert r["images"].shape == (8, 3, 32, 32) and 0.0 <= r["scene_like"] <= 1.0 and "fid_floor" in r
    with pytest.raises(ValueError, match="unconditional"):
        evaluate_unconditional(cls, num_samples=8)
    with pytest.raises(ValueError, match="sr-conditional"):
        super_resolve(cls, ims["truth"])


def test_autoencoder_fingerprint_tells_first_stages_apart():
    a, b = tiny("class"), tiny("layout")            # both built after torch.manual_seed(0): the same weights
    assert autoencoder_fingerprint(a) == autoencoder_fingerprint(b) == autoencoder_fingerprint(a.autoencoder)
    torch.manual_seed(1)
    other = build_autoencoder(CI.ae)
    assert autoencoder_fingerprint(other) != autoencoder_fingerprint(a) and len(autoencoder_fingerprint(a)) == 12
