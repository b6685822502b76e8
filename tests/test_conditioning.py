"""Conditioning encoders τθ (LDM Sec. 3.3) and their null conditions / dropout for classifier-free guidance."""

import pytest
import torch
import torch.nn.functional as F

from minildm.conditioning import ClassEmbedder, ClassToken, LayoutEncoder, LowResConcat, TextEncoder, WordTokenizer

try:
    from minildm.data.shapes import ShapesTokenizer
except ImportError:  # pragma: no cover - data.py is written in parallel
    ShapesTokenizer = None


def text_encoder(**kw) -> TextEncoder:
    torch.manual_seed(0)
    args = dict(vocab_size=12, context_length=8, width=16, layers=2, heads=2)
    args.update(kw)
    return TextEncoder(**args)


# ----------------------------------------------------------------------------------------- class labels


def test_class_embedder_null_class():
    enc = ClassEmbedder(num_classes=6)
    y = enc(torch.tensor([0, 5, -1, 6]))["y"]
    assert y.tolist() == [0, 5, 6, 6]                 # -1 ("no single class") and 6 both mean the null class
    assert enc.null_condition(y[:3]).tolist() == [6, 6, 6]


def test_class_token_is_one_learned_token_per_label_with_a_null_row():
    torch.manual_seed(0)
    enc = ClassToken(num_classes=6, width=8)
    ctx = enc(torch.tensor([0, 5, -1, 6, 0]))["context"]
    assert ctx.shape == (5, 1, 8)                                   # one token: the paper's class route
    table = enc.table.weight
    assert table.shape == (7, 8)                                    # 6 classes + the null class
    assert torch.equal(ctx[:, 0], table[torch.tensor([0, 5, 6, 6, 0])])   # −1 and 6 both read the null row
    assert not torch.equal(ctx[0], ctx[1])
    assert torch.equal(enc.null_condition(torch.zeros(2)), torch.tensor([6, 6]))


def test_drop_rate_and_determinism():
    enc = ClassEmbedder(num_classes=6)
    labels = torch.zeros(4000, dtype=torch.long)
    assert torch.equal(enc.drop(labels, 0.0), labels)
    assert torch.all(enc.drop(labels, 1.0) == 6)
    dropped = enc.drop(labels, 0.1, torch.Generator().manual_seed(0))
    rate = (dropped == 6).float().mean().item()
    assert abs(rate - 0.1) < 4 * (0.1 * 0.9 / 4000) ** 0.5        # Bernoulli(0.1): within 4 standard errors
    assert torch.equal(dropped, enc.drop(labels, 0.1, torch.Generator().manual_seed(0)))


# ----------------------------------------------------------------------------------------- text


def test_text_encoder_shapes_and_mask():
    enc = text_encoder()
    tokens = torch.tensor([[1, 5, 6, 2, 0, 0, 0, 0], [1, 7, 8, 9, 10, 11, 2, 0]])
    out = enc(tokens)
    assert out["context"].shape == (2, 8, 16)
    assert torch.equal(out["context_mask"], tokens != 0)
    assert torch.isfinite(out["context"]).all()


def test_padding_does_not_change_real_positions():
    enc = text_encoder()
    tokens = torch.tensor([[1, 5, 6, 2, 0, 0, 0, 0], [1, 7, 8, 9, 10, 2, 0, 0]])
    full = enc(tokens)["context"]
    # the same captions without any padding (each alone, cut at its eos): identical outputs where tokens are real
    for b, n in enumerate([4, 6]):
        alone = enc(tokens[b : b + 1, :n])["context"][0]
        torch.testing.assert_close(full[b, :n], alone, atol=1e-5, rtol=1e-5)
    # and the amount of padding after a caption does not matter either
    shorter = enc(tokens[:, :6])["context"]
    torch.testing.assert_close(full[0, :4], shorter[0, :4], atol=1e-5, rtol=1e-5)


def test_text_encoder_depends_on_all_real_tokens_and_position():
    enc = text_encoder()
    a = enc(torch.tensor([[1, 5, 6, 2]]))["context"]
    b = enc(torch.tensor([[1, 6, 5, 2]]))["context"]    # same words, swapped order
    assert not torch.allclose(a[0, 0], b[0, 0])         # bidirectional: bos sees the words and their positions


def test_text_encoder_keeps_each_word_at_its_position_at_initialization():
    """One changed word must reach the U-Net from the first step: at initialization the output at that word's
    position changes by about as much as two unrelated unit vectors differ, and the other positions much less.

    (With GPT-style 0.02-std embeddings under default-scale blocks, the blocks' outputs drown the words: over
    20 seeds a one-word change moved its own position by 0.24-0.52 and other positions by up to 0.55, and after
    training the cpu-profile encoder barely told "circle" from "square"; see TextEncoder.)"""
    for seed in range(5):
        torch.manual_seed(seed)
        enc = TextEncoder(vocab_size=30, context_length=12, width=64, layers=2, heads=4)   # the cpu profile's sizes
        a = torch.tensor([[1, 3, 13, 19, 10, 12, 24, 26, 2]])
        b = a.clone()
        b[0, 4] = 11                                           # one word changed (as "circle" -> "square")
        ca, cb = enc(a)["context"][0], enc(b)["context"][0]
        rel = ((ca - cb).norm(dim=-1) / ca.norm(dim=-1)).tolist()
        assert rel[4] > 0.6, rel
        assert max(rel[:4] + rel[5:]) < rel[4] / 5, rel
        # word order is visible too: the same two words swapped change both positions clearly
        c = a.clone()
        c[0, 3], c[0, 4] = a[0, 4], a[0, 3]
        cc = enc(c)["context"][0]
        moved = ((ca - cc).norm(dim=-1) / ca.norm(dim=-1))[3:5]
        assert (moved > 0.5).all(), moved.tolist()


def test_text_null_condition_is_the_empty_caption():
    enc = text_encoder()
    null = enc.null_condition(torch.zeros(3, 8, dtype=torch.int64))
    assert null.shape == (3, 8) and null[:, :2].tolist() == [[1, 2]] * 3 and torch.all(null[:, 2:] == 0)
    if ShapesTokenizer is not None:
        tok = ShapesTokenizer()
        enc = TextEncoder.from_tokenizer(tok, width=16, layers=1, heads=2)
        assert torch.equal(enc.null_condition(tok.encode_batch(["a red circle", "a star"])), tok.encode_batch(["", ""]))
        tokens = tok.encode_batch(["a red circle", "a small blue square in the top left"])
        assert enc(tokens)["context"].shape == (2, tok.context_length, 16)
        dropped = enc.drop(tokens, 1.0)
        assert torch.equal(dropped, tok.encode_batch(["", ""]))


def test_tokenizer_names_unknown_words_and_captions_too_long():
    tok = WordTokenizer(["a", "red", "circle"], context_length=5, examples=("a red circle",))
    assert tok.encode("A red circle.").tolist() == [1, 3, 4, 5, 2]
    with pytest.raises(ValueError, match=r"unknown word\(s\) \['dragon'\].*Example prompts: 'a red circle'"):
        tok.encode("a red dragon")
    with pytest.raises(ValueError, match="has 4 words; at most 3 fit"):
        tok.encode("a red red circle")


# ----------------------------------------------------------------------------------------- layout


def layout_batch():
    pad = [-1.0] * 5
    return torch.tensor([[[2, 0.1, 0.2, 0.5, 0.6], [0, 0.5, 0.5, 1.0, 1.0], pad],
                         [[1, 0.0, 0.0, 0.3, 0.3], pad, pad]])


def test_layout_encoder_tokens_and_mask():
    torch.manual_seed(0)
    enc = LayoutEncoder(num_classes=4, max_objects=3, width=16, box_bins=8)
    out = enc(layout_batch())
    assert out["context"].shape == (2, 4, 16)
    assert out["context_mask"].tolist() == [[True, True, True, False], [True, True, False, False]]
    # the null/start token is the same learned token in every row
    torch.testing.assert_close(out["context"][0, 0], out["context"][1, 0])


def test_layout_quantization_formula():
    enc = LayoutEncoder(num_classes=4, max_objects=3, width=8, box_bins=8)
    coords = torch.tensor([0.0, 0.124, 0.125, 0.5, 0.99, 1.0])
    assert enc.quantize(coords).tolist() == [0, 0, 1, 4, 7, 7]      # ⌊coord·8⌋, 1.0 into the last bin


def test_layout_padding_values_and_object_order_do_not_matter():
    torch.manual_seed(0)
    enc = LayoutEncoder(num_classes=4, max_objects=3, width=16)
    lay = layout_batch()
    out = enc(lay)
    lay2 = lay.clone()
    lay2[1, 1:, 1:] = torch.rand(2, 4)                               # padding rows: only the class says "padding"
    torch.testing.assert_close(enc(lay2)["context"], out["context"])
    swapped = lay[:, [1, 0, 2]]                                      # reorder the objects
    out_sw = enc(swapped)
    torch.testing.assert_close(out_sw["context"][0, [0, 2, 1]], out["context"][0, :3])


def test_layout_null_condition():
    enc = LayoutEncoder(num_classes=4, max_objects=3, width=16)
    null = enc.null_condition(layout_batch())
    assert null.shape == (2, 3, 5) and torch.all(null == -1)
    assert enc(null)["context_mask"].tolist() == [[True, False, False, False]] * 2   # only the null token
    dropped = enc.drop(layout_batch(), 1.0)
    assert torch.equal(dropped, null)


# ----------------------------------------------------------------------------------------- low-res concat


def test_low_res_concat_resizing():
    low = torch.randn(2, 3, 4, 4)
    nearest = LowResConcat(factor=2, mode="nearest")(low)["concat"]
    assert torch.equal(nearest, low.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    bil = LowResConcat(factor=2)(low)["concat"]
    assert bil.shape == (2, 3, 8, 8)
    # bilinear (align_corners=False) at ×2: an inner output pixel is ¾ nearest + ¼ next input pixel per axis
    expected = 0.75 * (0.75 * low[..., 1, 1] + 0.25 * low[..., 1, 2]) + 0.25 * (0.75 * low[..., 2, 1] + 0.25 * low[..., 2, 2])
    torch.testing.assert_close(bil[..., 3, 3], expected)
    assert LowResConcat()(low)["concat"] is low                      # factor 1: already on the latent grid
    assert LowResConcat()(low, size=(6, 6))["concat"].shape == (2, 3, 6, 6)


def test_low_res_degrade_and_null():
    img = torch.full((1, 3, 16, 16), 0.3)
    low = LowResConcat.degrade(img, 4)
    assert low.shape == (1, 3, 4, 4)
    torch.testing.assert_close(low, torch.full_like(low, 0.3))      # a constant image stays constant
    ramp = torch.linspace(-1, 1, 16).expand(1, 3, 16, 16)
    torch.testing.assert_close(LowResConcat.degrade(ramp, 4).mean(), ramp.mean(), atol=1e-3, rtol=0)
    assert torch.all(LowResConcat().null_condition(low) == 0)


def test_low_res_bilinear_matches_torch_interpolate():
    low = torch.randn(1, 3, 3, 5)
    out = LowResConcat(factor=1.0)(low, size=(7, 9))["concat"]
    torch.testing.assert_close(out, F.interpolate(low, size=(7, 9), mode="bilinear", align_corners=False))
