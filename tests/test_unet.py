"""The denoising U-Net ε_θ(z_t, t, τθ(y)) (LDM Sec. 3.3): shapes, zero init, conditioning wiring, errors."""

import pytest
import torch

from minildm.conditioning import ClassEmbedder, LayoutEncoder, LowResConcat, TextEncoder
from minildm.nn import record_attention
from minildm.train.profiles import get_profile
from minildm.unet import SpatialTransformer, UNet

B, C, H = 2, 4, 8          # batch, latent channels, latent size
WIDTH = 8                  # context width
NUM_CLASSES = 5


def tiny_unet(**kw) -> UNet:
    args = dict(in_channels=C, out_channels=C, model_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                attention_resolutions=(1, 2), num_heads=2)
    args.update(kw)
    return UNet(**args)


def unzero(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give zero-initialized weights small random values, so every path contributes to the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if torch.all(p == 0):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def text_tokens() -> torch.Tensor:
    # [bos, words..., eos, pad...] with pad 0, bos 1, eos 2; second caption shorter (more padding)
    return torch.tensor([[1, 5, 6, 7, 2, 0], [1, 8, 2, 0, 0, 0]])


def layout() -> torch.Tensor:
    pad = [-1.0] * 5
    return torch.tensor([[[0, 0.1, 0.1, 0.5, 0.5], [3, 0.5, 0.2, 0.9, 0.7]], [[4, 0.0, 0.0, 1.0, 1.0], pad]])


def build(mode: str):
    """(U-Net, conditioning kwargs) for each conditioning mode of the paper."""
    torch.manual_seed(0)
    if mode == "none":
        return tiny_unet(), {}
    if mode == "class":
        return tiny_unet(num_classes=NUM_CLASSES), ClassEmbedder(NUM_CLASSES)(torch.tensor([1, -1]))
    if mode == "text":
        enc = TextEncoder(vocab_size=10, context_length=6, width=WIDTH, layers=1, heads=2)
        return tiny_unet(context_dim=WIDTH), enc(text_tokens())
    if mode == "layout":
        enc = LayoutEncoder(NUM_CLASSES, max_objects=2, width=WIDTH)
        return tiny_unet(context_dim=WIDTH), enc(layout())
    if mode == "concat":
        return tiny_unet(concat_channels=3), LowResConcat(factor=2.0)(torch.randn(B, 3, H // 2, H // 2))
    if mode == "hybrid":   # concat + cross-attention + class, all at once
        enc = TextEncoder(vocab_size=10, context_length=6, width=WIDTH, layers=1, heads=2)
        cond = {**enc(text_tokens()), **LowResConcat()(torch.randn(B, 3, H, H)), "y": torch.tensor([0, 5])}
        return tiny_unet(context_dim=WIDTH, concat_channels=3, num_classes=NUM_CLASSES), cond
    raise AssertionError(mode)


MODES = ["none", "class", "text", "layout", "concat", "hybrid"]


@pytest.mark.parametrize("mode", MODES)
def test_shape_preserved_and_zero_at_init(mode):
    unet, cond = build(mode)
    x, t = torch.randn(B, C, H, H), torch.tensor([3, 999])
    out = unet(x, t, **cond)
    assert out.shape == x.shape
    assert torch.all(out == 0)                      # zero-initialized output conv: ε̂ ≡ 0 at initialization


@pytest.mark.parametrize("mode", ["class", "text", "layout", "concat"])
def test_condition_changes_output_once_trained(mode):
    unet, cond = build(mode)
    unzero(unet)
    x, t = torch.randn(B, C, H, H), torch.tensor([10, 10])
    other = {k: v.flip(0) for k, v in cond.items()}          # swap the two samples' conditions
    out, out_swapped = unet(x, t, **cond), unet(x, t, **other)
    assert (out - out_swapped).abs().amax(dim=(1, 2, 3)).min() > 1e-4


def test_every_parameter_gets_gradient():
    unet, cond = build("hybrid")
    unzero(unet)
    unet(torch.randn(B, C, H, H), torch.tensor([1, 500]), **cond).square().mean().backward()
    missing = [n for n, p in unet.named_parameters() if p.grad is None or torch.all(p.grad == 0)]
    assert missing == [], missing


def test_padded_context_tokens_do_not_change_output():
    unet, cond = build("text")
    unzero(unet)
    x, t = torch.randn(B, C, H, H), torch.tensor([7, 700])
    ctx, mask = cond["context"], cond["context_mask"]
    ctx2 = torch.where(mask[..., None], ctx, 50 * torch.randn_like(ctx))
    torch.testing.assert_close(unet(x, t, context=ctx, context_mask=mask), unet(x, t, context=ctx2, context_mask=mask))


def test_scalar_t_broadcasts():
    unet = unzero(tiny_unet())
    x = torch.randn(B, C, H, H)
    torch.testing.assert_close(unet(x, 42), unet(x, torch.tensor([42, 42])))


def count_transformers(unet):
    return sum(isinstance(m, SpatialTransformer) for m in unet.modules())


@pytest.mark.parametrize("res,expected", [((), 1), ((1,), 4), ((2,), 4), ((1, 2), 7)])
def test_attention_resolutions_are_downsampling_factors(res, expected):
    # per level in res: num_res_blocks (=1) down + num_res_blocks + 1 (=2) up transformers; middle always has one
    assert count_transformers(tiny_unet(attention_resolutions=res)) == expected


def test_attention_resolutions_given_as_pixel_sizes_is_an_error():
    with pytest.raises(ValueError, match="downsampling factors"):
        tiny_unet(attention_resolutions=(8, 4))


def test_recorded_maps_cover_self_and_cross_attention():
    unet, cond = build("text")
    x = torch.randn(B, C, H, H)
    with record_attention(unet) as maps:
        unet(x, torch.tensor([1, 2]), **cond)
    cross = maps.of_kind("cross")
    assert len(cross) == count_transformers(unet) == len(maps.of_kind("self"))
    for name, p in cross.items():
        h, w = maps.spatial[name]
        assert p.shape == (B, 2, h * w, 6)
        assert torch.all(p[1, :, :, 3:] == 0)            # padding of the short caption gets no attention
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
    assert {maps.spatial[n] for n in cross} == {(8, 8), (4, 4)}


@pytest.mark.slow
def test_overfits_one_batch():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)       # tiny tensors: threading overhead dominates on a shared machine
    try:
        _overfit()
    finally:
        torch.set_num_threads(threads)


def _overfit():
    torch.manual_seed(0)
    unet = tiny_unet(model_channels=16, attention_resolutions=(2,), context_dim=WIDTH)
    z, eps, t = torch.randn(4, C, H, H), torch.randn(4, C, H, H), torch.randint(0, 1000, (4,))
    ctx = torch.randn(4, 3, WIDTH)
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-3, weight_decay=0.0)
    losses = []
    for _ in range(100):
        loss = (unet(z, t, context=ctx) - eps).square().mean()     # L_simple on a fixed batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(eps.square().mean().item(), rel=1e-5)   # zero output at init
    assert losses[-1] < losses[0] / 50


def test_from_config_builds_the_ci_profile():
    cfg = get_profile("ci").ldm
    unet = UNet.from_config(cfg, in_channels=4, cross_attention=True)
    assert unet.context_dim == cfg.context_dim and unet.model_channels == cfg.model_channels
    out = unet(torch.randn(1, 4, 8, 8), 5, context=torch.randn(1, 3, cfg.context_dim))
    assert out.shape == (1, 4, 8, 8)


def test_coordinate_channels_give_the_unet_absolute_position():
    """With coord_channels the first conv sees z_t plus two channels: x and y of each latent pixel in [-1, 1]."""
    torch.manual_seed(0)
    net = UNet(4, 4, 16, (1, 2), 1, (2,), num_heads=2, coord_channels=True)
    conv_in = net.input_blocks[0][0]
    assert conv_in.in_channels == 6
    seen = {}
    conv_in.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0]))
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(net(x, torch.tensor([10, 20])), torch.zeros(2, 4, 8, 8))  # zero-initialized output
    inp = seen["x"]
    assert torch.equal(inp[:, :4], x)
    ramp = torch.linspace(-1, 1, 8)
    assert torch.allclose(inp[:, 4], ramp.view(1, 1, 8).expand(2, 8, 8))  # x grows to the right
    assert torch.allclose(inp[:, 5], ramp.view(1, 8, 1).expand(2, 8, 8))  # y grows downwards
