"""The U-Net's parameter tables (probes.parameters_by_block, parameters_by_kind, notebook 04) and which
parameters a zero-initialized U-Net lets the gradient reach."""

import torch

from minildm.conditioning import TextEncoder
from minildm.data.shapes import ShapesTokenizer
from minildm.eval.probes import parameters_by_block, parameters_by_kind, parameters_with_gradient
from minildm.unet import UNet


def small_text_unet() -> tuple[UNet, TextEncoder]:
    torch.manual_seed(0)
    unet = UNet(4, 4, model_channels=8, channel_mult=(1, 2), attention_resolutions=(1, 2), num_heads=2,
                context_dim=8, num_classes=3, concat_channels=2)
    return unet, TextEncoder.from_tokenizer(ShapesTokenizer(), 8, 1, 2)


def test_parameters_by_block_adds_up_and_follows_module_order():
    unet, _ = small_text_unet()
    blocks = parameters_by_block(unet, depth=0)
    assert [name for name, _ in blocks] == [n for n, _ in unet.named_children()]
    assert sum(n for _, n in blocks) == sum(p.numel() for p in unet.parameters())
    deeper = parameters_by_block(unet, depth=1)
    assert sum(n for _, n in deeper) == sum(p.numel() for p in unet.parameters())
    assert ("middle_block.1", sum(p.numel() for p in unet.middle_block[1].parameters())) in deeper


def test_parameters_by_kind_sorts_every_parameter_once():
    unet, _ = small_text_unet()
    kinds = parameters_by_kind(unet)
    assert sum(kinds.values()) == sum(p.numel() for p in unet.parameters())
    cross = sum(p.numel() for n, p in unet.named_parameters() if ".cross_attn." in n)
    assert kinds["cross-attention (text / layout)"] == cross > 0
    assert kinds["class embedding"] == unet.label_emb.weight.numel()
    no_cond = UNet(4, 4, model_channels=8, channel_mult=(1, 2), num_heads=2)
    assert parameters_by_kind(no_cond)["cross-attention (text / layout)"] == 0


def test_zero_init_lets_the_gradient_reach_one_layer_more_each_step():
    """At init only the output conv gets a gradient (everything before it is multiplied by its zero weights);
    after a step or two every parameter does."""
    unet, enc = small_text_unet()
    tokens = ShapesTokenizer().encode_batch(["a large red circle in the top left", "a small blue star in the center"])
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    with torch.no_grad():
        cond = {**enc(tokens), "y": torch.tensor([0, 3]), "concat": torch.randn(2, 2, 8, 8)}
    opt = torch.optim.SGD(unet.parameters(), lr=0.1)
    reached = []
    for _ in range(3):
        opt.zero_grad()
        out = unet(x, t, **cond)
        out.sub(torch.ones_like(out)).pow(2).mean().backward()
        reached.append(parameters_with_gradient(unet))
        opt.step()
    assert reached[0] == ["out.2.weight", "out.2.bias"]
    assert len(reached[0]) < len(reached[1]) < len(reached[2]) == len(list(unet.parameters()))
    unet.zero_grad(set_to_none=True)
    assert parameters_with_gradient(unet) == []
