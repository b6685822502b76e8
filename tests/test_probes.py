"""Looking inside a text model (eval/probes.py, notebooks 07, 08): word attention maps from recorded
probabilities, the attention-mass study, what the U-Net's first convolution sees, and first-stage fingerprints.
Untrained tiny (`ci`) models: the machinery and the arithmetic, not what a trained model does."""

import pytest
import torch
import torch.nn.functional as F

from minildm.autoencoder import build_autoencoder
from minildm.data.datasets import ShapesDataset
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
from minildm.train.profiles import get_profile
from minildm.unet import coordinate_grid

CI = get_profile("ci")
PROMPT = "a large red circle in the top left"


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


def test_first_conv_sees_latent_concat_and_coordinates(untrained_ldm):
    sr = untrained_ldm("sr")
    truth = ShapesDataset("test", CI.data).batch(range(2))["image"]
    low = sr.raw_condition({"image": truth})                                # (2, 3, 8, 8): ×4 smaller
    z, t = torch.randn(2, 4, 8, 8), torch.tensor([500, 500])
    seen = first_conv_input(sr, z, t, low)
    by_hand = torch.cat([z, F.interpolate(low, size=(8, 8), mode="bilinear", align_corners=False),
                         coordinate_grid(z)], dim=1)                         # 4 + 3 + 2 channels
    assert seen.shape == (2, 9, 8, 8) and torch.allclose(seen, by_hand)
    assert sr.unet.input_blocks[0][0].in_channels == 9
    text = untrained_ldm("text")
    seen = first_conv_input(text, z, t, text.prompt_condition(prompts=[PROMPT, PROMPT]))
    assert torch.allclose(seen, torch.cat([z, coordinate_grid(z)], dim=1))  # text enters elsewhere


def test_autoencoder_fingerprint_tells_first_stages_apart(untrained_ldm):
    a, b = untrained_ldm("class"), untrained_ldm("layout")       # both built after torch.manual_seed(0)
    assert autoencoder_fingerprint(a) == autoencoder_fingerprint(b) == autoencoder_fingerprint(a.autoencoder)
    torch.manual_seed(1)
    other = build_autoencoder(CI.ae)
    assert autoencoder_fingerprint(other) != autoencoder_fingerprint(a) and len(autoencoder_fingerprint(a)) == 12
