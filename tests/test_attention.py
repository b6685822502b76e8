"""Attention softmax(QKᵀ/√d)·V (LDM Sec. 3.3), the timestep embedding, and attention-map recording."""

import math

import pytest
import torch

from minildm.nn import (
    CrossAttention,
    attention_explicit,
    attention_sdpa,
    record_attention,
    timestep_embedding,
)


def reference_attention64(q, k, v, mask=None):
    """Independent float64 attention: loop over batch and head, keep only the real keys (no -inf tricks)."""
    B, H, Nq, d = q.shape
    out = torch.zeros(B, H, Nq, v.shape[-1], dtype=torch.float64)
    probs = torch.zeros(B, H, Nq, k.shape[2], dtype=torch.float64)
    for b in range(B):
        keep = torch.arange(k.shape[2]) if mask is None else mask[b].nonzero().flatten()
        for h in range(H):
            Q, K, V = q[b, h].double(), k[b, h, keep].double(), v[b, h, keep].double()
            s = Q @ K.T / math.sqrt(d)
            p = torch.exp(s - s.max(dim=1, keepdim=True).values)
            p = p / p.sum(dim=1, keepdim=True)
            out[b, h] = p @ V
            probs[b, h][:, keep] = p
    return out, probs


def random_qkv(B=2, H=3, Nq=5, Nk=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, Nq, d, generator=g), torch.randn(B, H, Nk, d, generator=g),
            torch.randn(B, H, Nk, d, generator=g))


def test_timestep_embedding_matches_formula():
    t = torch.tensor([0, 1, 17, 999])
    dim = 10
    emb = timestep_embedding(t, dim)
    half = dim // 2
    for b, tb in enumerate(t.tolist()):
        for i in range(half):
            omega = math.exp(-math.log(10_000) * i / half)          # ω_i = exp(−ln(10⁴)·i/half)
            assert emb[b, i].item() == pytest.approx(math.cos(tb * omega), abs=1e-4)
            assert emb[b, half + i].item() == pytest.approx(math.sin(tb * omega), abs=1e-4)
    odd = timestep_embedding(t, 7)
    assert odd.shape == (4, 7) and torch.all(odd[:, -1] == 0)
    assert torch.equal(timestep_embedding(5, 8), timestep_embedding(torch.tensor([5]), 8))


@pytest.mark.parametrize("masked", [False, True])
def test_explicit_equals_sdpa_and_float64(masked):
    q, k, v = random_qkv()
    mask = torch.tensor([[True, True, False, True, False, False, True], [True] + [False] * 6]) if masked else None
    out, probs = attention_explicit(q, k, v, mask)
    ref_out, ref_probs = reference_attention64(q, k, v, mask)
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs.double(), ref_probs, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(attention_sdpa(q, k, v, mask), out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))   # rows sum to 1 over keys
    if masked:
        assert torch.all(probs.masked_select(~mask[:, None, None, :].expand_as(probs)) == 0)


def test_cross_attention_module_matches_float64_formula():
    torch.manual_seed(0)
    attn = CrossAttention(query_dim=12, context_dim=6, heads=3, dim_head=4)
    assert attn.to_q.bias is None and attn.to_k.bias is None and attn.to_v.bias is None
    x, ctx = torch.randn(2, 5, 12), torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    out = attn(x, ctx, mask)
    # Q = W_Q x, K = W_K ctx, V = W_V ctx, split into 3 heads of d = 4, each softmax(QKᵀ/√4)·V, concat, W_O
    Q = (x.double() @ attn.to_q.weight.double().T).view(2, 5, 3, 4).transpose(1, 2)
    K = (ctx.double() @ attn.to_k.weight.double().T).view(2, 4, 3, 4).transpose(1, 2)
    V = (ctx.double() @ attn.to_v.weight.double().T).view(2, 4, 3, 4).transpose(1, 2)
    heads, _ = reference_attention64(Q, K, V, mask)
    ref = heads.transpose(1, 2).reshape(2, 5, 12) @ attn.to_out.weight.double().T + attn.to_out.bias.double()
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_cross_attention_ignores_padded_keys():
    torch.manual_seed(1)
    attn = CrossAttention(8, context_dim=6, heads=2)
    x, ctx = torch.randn(2, 9, 8), torch.randn(2, 5, 6)
    mask = torch.tensor([[True, True, False, False, False], [True, True, True, True, False]])
    ctx2 = torch.where(mask[..., None], ctx, 100 * torch.randn(2, 5, 6))   # change only padded keys
    torch.testing.assert_close(attn(x, ctx, mask), attn(x, ctx2, mask))
    assert not torch.allclose(attn(x, ctx), attn(x, ctx2))                   # without the mask they matter


def test_self_attention_when_context_is_none():
    torch.manual_seed(2)
    attn = CrossAttention(8, heads=2)
    x = torch.randn(1, 4, 8)
    torch.testing.assert_close(attn(x), attn(x, x))


def test_recording_gives_probabilities_without_changing_outputs():
    torch.manual_seed(3)
    model = torch.nn.ModuleDict({"a": CrossAttention(8, heads=2), "b": CrossAttention(8, context_dim=4, heads=2)})
    x, ctx = torch.randn(3, 6, 8), torch.randn(3, 5, 4)
    mask = torch.tensor([[True] * 5, [True, False, True, False, False], [True] + [False] * 4])

    def run():
        return model["b"](model["a"](x), ctx, mask)

    plain = run()
    with record_attention(model) as maps:
        recorded = run()
        assert all(m.recorder is not None for m in model.values())
    torch.testing.assert_close(recorded, plain, atol=1e-6, rtol=1e-5)
    assert set(maps) == {"a", "b"} and maps.kind == {"a": "self", "b": "cross"}
    assert maps["a"].shape == (3, 2, 6, 6) and maps["b"].shape == (3, 2, 6, 5)
    for p in maps.values():
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
        assert not p.requires_grad
    assert torch.all(maps["b"].masked_select(~mask[:, None, None, :].expand_as(maps["b"])) == 0)
    assert set(maps.of_kind("cross")) == {"b"}
    # After the block: back to the fast path, nothing more is stored.
    assert all(m.recorder is None for m in model.values())
    before = {k: v.clone() for k, v in maps.items()}
    run()
    assert set(maps) == {"a", "b"} and all(torch.equal(maps[k], before[k]) for k in maps)
    assert not any(torch.is_tensor(v) for m in model.values() for v in vars(m).values())


def test_record_all_calls_and_restore_on_error():
    attn = CrossAttention(8, heads=2)
    x = torch.randn(1, 4, 8)
    with record_attention(attn, keep="all") as maps:
        attn(x)
        attn(x)
    assert len(maps[""]) == 2
    with pytest.raises(RuntimeError):
        with record_attention(attn):
            raise RuntimeError("boom")
    assert attn.recorder is None
