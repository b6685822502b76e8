"""Semantic synthesis (cond "seg") and inpainting (cond "inpaint", and training-free blending with any diffusion model):
class maps from segmentations, masks, the concatenated inputs, errors at the boundary, the commands, the evaluations."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from minildm.conditioning import InpaintConcat, SemanticConcat
from minildm.course import pretrained
from minildm.data.datasets import ShapesDataset
from minildm.data.shapes import (BACKGROUND_ID, NUM_SEMANTIC_IDS, Scene, ShapeObject, check_semantic_map, class_id,
                                 render_scenes, render_semantic, semantic_map)
from minildm.eval.accuracy import (evaluate_inpainting, evaluate_seg_model, inpaint_report, inpainting_tasks,
                                   palette_labels, part_mask, seg_report, semantic_agreement)
from minildm.ldm import LatentDiffusion
from minildm.conditioning import check_mask, latent_mask, object_mask, training_masks
from minildm.tools.cli import main
from minildm.train.profiles import get_profile
from minildm.train.stages import train_autoencoder, train_ldm

CI = get_profile("ci")


def make(ae, batch, cond, scramble=False):
    ds = ShapesDataset("train", CI.data)
    ldm = LatentDiffusion(ae, dataclasses.replace(CI.ldm, cond=cond), tokenizer=ds.tokenizer,
                          num_classes=ds.num_classes, max_objects=ds.max_objects)
    ldm.set_scale_factor(batch["image"], torch.Generator().manual_seed(0))
    if scramble:               # the zero-initialized output layers would hide what the U-Net reads: random weights
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in ldm.unet.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return ldm.eval()


# --- the class map ---------------------------------------------------------------------------------------------


def test_the_class_map_of_a_hand_made_scene():
    red_circle = ShapeObject("circle", "red", "large", 0, 0, cx=0.28, cy=0.28)
    blue_star = ShapeObject("star", "blue", "large", 2, 2, cx=0.72, cy=0.72)
    scene = Scene(objects=(red_circle, blue_star), relation=None, background=(0.3, 0, 0, 0, 0, 0) + (1, 0, 0, 0) * 2)
    _, seg = render_scenes([scene], 32)
    maps = semantic_map(seg, [scene])
    assert maps.dtype == torch.int64 and maps.shape == (1, 32, 32)
    assert int(maps[0, 9, 9]) == class_id("circle", "red") == 0            # the circle's centre, top left
    assert int(maps[0, 23, 23]) == class_id("star", "blue") == 20          # the star's centre, bottom right
    assert int(maps[0, 0, 31]) == BACKGROUND_ID == 24                      # top right corner: nothing there
    assert torch.equal(maps == BACKGROUND_ID, seg == 0)                     # every object pixel gets its class
    assert set(maps.unique().tolist()) == {0, 20, 24}
    shown = render_semantic(maps)
    assert shown.shape == (1, 3, 32, 32) and shown[0, 0, 9, 9] > 0.5 and shown[0, 2, 23, 23] > 0.5   # red, blue


def test_batches_carry_the_semantic_map(batch):
    ds = ShapesDataset("train", CI.data)
    scenes = [ds.scene(i) for i in range(8)]
    assert torch.equal(batch["semantic"], semantic_map(batch["segmentation"], scenes))
    item = ds[3]
    assert torch.equal(item["semantic"], batch["semantic"][3])
    for i, s in enumerate(scenes):                                           # every object's class is in its map
        assert {o.class_id for o in s.objects} | {BACKGROUND_ID} == set(batch["semantic"][i].unique().tolist())


def test_bad_maps_are_refused_with_what_was_expected():
    good = torch.full((2, 32, 32), BACKGROUND_ID)
    assert check_semantic_map(good, 32).dtype == torch.int64
    with pytest.raises(ValueError, match=r"\(B, H, W\).*map\[None\]"):
        check_semantic_map(good[0, None, None])
    with pytest.raises(ValueError, match=r"class ids 0\.\.24.*got ids 24\.\.25"):
        check_semantic_map(good + (torch.arange(32) == 3).long())
    with pytest.raises(ValueError, match=r"32x32.*got \(2, 16, 16\)"):
        check_semantic_map(good[:, :16, :16], 32)
    with pytest.raises(ValueError, match=r"class ids 0\.\.24.*got ids 24\.5\.\.24\.5"):
        check_semantic_map(good.float() + 0.5)


def test_semantic_concat_gives_the_class_shares_of_each_latent_pixel(batch):
    enc = SemanticConcat(NUM_SEMANTIC_IDS)
    out = enc(batch["semantic"], size=(8, 8))["concat"]
    assert out.shape == (8, 25, 8, 8) and not list(enc.parameters())
    onehot = F.one_hot(batch["semantic"], 25).permute(0, 3, 1, 2).float()
    assert torch.allclose(out, F.avg_pool2d(onehot, 4))                     # the reference's bilinear halvings, twice
    assert torch.allclose(out.sum(1), torch.ones(8, 8, 8))
    assert enc(enc.null_condition(batch["semantic"]), size=(8, 8))["concat"].abs().sum() == 0


# --- masks -----------------------------------------------------------------------------------------------------


def test_bad_masks_are_refused_with_what_was_expected():
    images = torch.zeros(2, 3, 32, 32)
    m = torch.zeros(2, 1, 32, 32)
    m[:, :, 4:12, 4:12] = 1
    assert check_mask(m, images).shape == (2, 1, 32, 32)
    assert check_mask(m[:, 0].bool(), images).dtype == torch.float32       # (B, H, W) and bool are fine
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\) = \(2, 1, 32, 32\).*got shape \(2, 1, 16, 16\)"):
        check_mask(m[..., :16, :16], images)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\).*or \(B, H, W\).*got shape \(2, 3, 32, 32\)"):
        check_mask(m.expand(-1, 3, -1, -1), images)
    with pytest.raises(ValueError, match=r"must be 0 or 1.*\(mask > 0\.5\)"):
        check_mask(m * 0.5, images)
    with pytest.raises(ValueError, match=r"each row with a hole.*per row \[64\.0, 0\.0\]"):
        check_mask(torch.stack([m[0], torch.zeros_like(m[0])]), images)
    with pytest.raises(ValueError, match=r"all hole is sampling: call sample\(\).*\[1024\.0, 1024\.0\]"):
        check_mask(torch.ones_like(m), images)
    with pytest.raises(ValueError, match=r"got shape \(1, 2\)"):
        check_mask([[0, 1]], images)


def test_training_masks_are_boxes_and_objects_drawn_from_the_generator(batch):
    seg = batch["segmentation"]
    draw = lambda seed: training_masks(seg, torch.Generator().manual_seed(seed))  # noqa: E731
    a, b, c = draw(0), draw(0), draw(1)
    assert a.shape == (8, 1, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    check_mask(a, batch["image"])                                            # never empty, never everything
    many = training_masks(seg.repeat(8, 1, 1), torch.Generator().manual_seed(2))
    is_object = torch.tensor([any(torch.equal(many[i], object_mask(seg.repeat(8, 1, 1)[i:i + 1], [k])[0])
                                  for k in range(2)) for i in range(64)])
    assert 0.2 < is_object.float().mean() < 0.8                              # about half objects, half boxes
    obj = object_mask(seg, [0] * 8)
    assert bool((obj[:, 0] >= (seg == 1)).all())                            # the object and its one-pixel rim


def test_part_and_latent_masks():
    m = part_mask((8.0, 8.0, 16.0, 16.0), "left", 32)
    assert m[0, 0, 12, 9] == 1 and m[0, 0, 12, 14] == 0                     # the left half hidden, the right kept
    small = torch.zeros(1, 1, 32, 32)
    small[..., 5, 5] = 1
    assert latent_mask(small, (8, 8))[0, 0, 1, 1] == 1                       # any hole pixel: the latent pixel is hole
    assert latent_mask(small, (8, 8), "area")[0, 0, 1, 1] == 1 / 16


# --- the models --------------------------------------------------------------------------------------------------


def test_the_unet_reads_z_t_with_the_concatenated_condition(ae, batch):
    seg, inp = make(ae, batch, "seg"), make(ae, batch, "inpaint")
    # z_t (4) + class shares (25) or masked latent (4) + mask (1), + the two coordinate channels of the ci profile
    assert seg.unet.input_blocks[0][0].in_channels == 4 + 25 + 2
    assert inp.unet.input_blocks[0][0].in_channels == 4 + 4 + 1 + 2
    c = seg.encode_condition(seg.raw_condition(batch), (8, 8))["concat"]
    assert c.shape == (8, 25, 8, 8)
    mask = training_masks(batch["segmentation"], torch.Generator().manual_seed(0))
    raw = inp.inpaint_condition(batch["image"], mask)
    assert raw.shape == (8, 4, 32, 32) and torch.equal(raw[:, 3:], mask)
    assert torch.equal(raw[:, :3], batch["image"] * (1 - mask))              # the hole is mid-grey
    c = inp.encode_condition(raw, (8, 8))["concat"]
    assert c.shape == (8, 5, 8, 8)
    assert torch.allclose(c[:, :4], inp.latent_moments(batch["image"] * (1 - mask))[0] * inp.scale_factor)
    assert torch.allclose(c[:, 4:], F.avg_pool2d(mask, 4))
    assert not any(p.requires_grad for p in inp.autoencoder.parameters())
    assert set(inp.denoiser_modules()) == {"unet"} == set(seg.denoiser_modules())   # τθ has no weights to store


def test_the_trained_models_unet_sees_the_mask_and_the_map(ae, batch):
    inp = make(ae, batch, "inpaint", scramble=True)
    z = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.full((8,), 500)
    m1 = training_masks(batch["segmentation"], torch.Generator().manual_seed(0))
    m2 = m1.clone()
    m2[:, :, :8] = 1 - m2[:, :, :8]                                          # another hole, same image
    check_mask(m2, batch["image"])
    out = lambda m: inp.model_fn(z, t, inp.encode_condition(inp.inpaint_condition(batch["image"], m)))  # noqa: E731
    assert not torch.allclose(out(m1), out(m2))
    seg = make(ae, batch, "seg", scramble=True)
    other = batch["semantic"].roll(1, 0)
    out = lambda maps: seg.model_fn(z, t, seg.encode_condition(maps, (8, 8)))  # noqa: E731
    assert not torch.allclose(out(batch["semantic"]), out(other))


def test_both_train_without_dropout_and_sample_without_guidance(ae, batch, monkeypatch):
    for cond in ("seg", "inpaint"):
        ldm = make(ae, batch, cond)
        raw = ldm.raw_condition(batch, torch.Generator().manual_seed(0))
        monkeypatch.setattr(ldm.cond_encoder, "drop", lambda *a: pytest.fail("a concatenation model drops no condition"))
        loss = ldm.training_step(ldm.encode(batch["image"]), raw, torch.Generator().manual_seed(0), cond_drop_prob=1.0)
        loss.backward()
        assert torch.isfinite(loss) and any(p.grad is not None for p in ldm.unet.parameters())
        x = ldm.sample(raw[:2], steps=2, generator=torch.Generator().manual_seed(0))
        assert x.shape == (2, 3, 32, 32)
        with pytest.raises(ValueError, match="no unconditional prediction to guide against"):
            ldm.sample(raw[:2], steps=2, guidance_scale=3.0)


def test_errors_at_the_boundary(ae, batch):
    seg, inp, text = make(ae, batch, "seg"), make(ae, batch, "inpaint"), make(ae, batch, "text")
    with pytest.raises(ValueError, match=r"semantic map, not a prompt.*semantic_condition.*--scene N"):
        seg.prompt_condition(prompts=["a red circle"])
    with pytest.raises(ValueError, match=r"image with a hole, not a prompt.*inpaint\(images, mask\).*--mask"):
        inp.prompt_condition(prompts=["a red circle"])
    with pytest.raises(ValueError, match="builds a seg model's condition.*this is a text model"):
        text.semantic_condition(batch["semantic"])
    with pytest.raises(ValueError, match=r"class ids 0\.\.24"):
        seg.semantic_condition(batch["semantic"] + 1)
    with pytest.raises(ValueError, match="32x32"):
        seg.semantic_condition(batch["semantic"][:, :16, :16])
    with pytest.raises(ValueError, match=r"must be 32 pixels wide.*got 16"):
        seg.sample(batch["semantic"][:2, :16, :16], steps=2)
    m = training_masks(batch["segmentation"], torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="reads the image and the mask only"):
        inp.inpaint(batch["image"], m, batch["tokens"], steps=2)
    with pytest.raises(ValueError, match="must be 0 or 1"):
        inp.inpaint(batch["image"], m * 0.5, steps=2)
    with pytest.raises(ValueError, match=r"needs one condition per latent"):
        text.inpaint(batch["image"], m, None, steps=2)


def test_blending_keeps_the_known_latent_exactly(ae, batch):
    text = make(ae, batch, "text", scramble=True)
    m = training_masks(batch["segmentation"], torch.Generator().manual_seed(0))
    z = text.inpaint(batch["image"], m, batch["tokens"], steps=4, generator=torch.Generator().manual_seed(0),
                     decode=False)
    z0 = text._condition_latent(batch["image"])
    hole = latent_mask(m, (8, 8)).bool().expand_as(z)
    assert torch.equal(z[~hole], z0[~hole])                                  # bit for bit, outside the hole
    assert not torch.allclose(z[hole], z0[hole])                             # generated inside it
    again = text.inpaint(batch["image"], m, batch["tokens"], steps=4, generator=torch.Generator().manual_seed(0),
                         decode=False)
    assert torch.equal(z, again)                                             # seeded: the same fill


# --- commands and evaluations on tiny ci checkpoints ------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("seg-inpaint")
    train_autoencoder(CI, d, device="cpu", random_lpips=True, lpips_download=False, progress=False, steps=4)
    for cond in ("seg", "inpaint"):
        assert main(["train-ldm", "--profile", "ci", "--autoencoder", str(d / "autoencoder.pt"), "--cond", cond,
                     "--steps", "3", "--out", str(d / cond), "--device", "cpu"]) == 0
    train_ldm(CI, d / "autoencoder.pt", d / "text", cond="text", device="cpu", steps=3, progress=False)
    return d


def test_training_is_deterministic_and_draws_fresh_masks(runs, tmp_path):
    for cond in ("seg", "inpaint"):
        again = train_ldm(CI, runs / "autoencoder.pt", tmp_path / cond, cond=cond, device="cpu", steps=3,
                          progress=False)
        first = LatentDiffusion.from_checkpoint(runs / cond / "ldm.pt", "cpu")
        assert first.cond_mode == cond
        second = LatentDiffusion.from_checkpoint(again["path"], "cpu")
        assert all(torch.equal(a, b) for a, b in zip(first.unet.state_dict().values(),
                                                      second.unet.state_dict().values()))


def test_sample_command_writes_input_samples_and_original(runs, tmp_path, capsys):
    for cond, extra in (("seg", []), ("inpaint", ["--mask", "object"]), ("inpaint", [])):
        out = tmp_path / f"{cond}{len(extra)}.png"
        assert main(["sample", "--checkpoint", str(runs / cond / "ldm.pt"), "--scene", "3", "-n", "2", "--steps",
                     "2", "--out", str(out), *extra]) == 0
        assert out.is_file() and "guidance 1" in capsys.readouterr().out
    seg = str(runs / "seg" / "ldm.pt")
    assert main(["sample", "--checkpoint", seg, "--prompt", "a red circle", "--out", str(tmp_path / "x.png")]) == 2
    assert "takes no prompt; give --scene N" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", seg, "--mask", "box", "--out", str(tmp_path / "x.png")]) == 2
    assert "--mask chooses the hole of an inpainting model's input" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", seg, "--guidance", "3", "--out", str(tmp_path / "x.png")]) == 2
    assert "without guidance" in capsys.readouterr().err
    text = str(runs / "text" / "ldm.pt")
    assert main(["sample", "--checkpoint", text, "--mask", "box", "--out", str(tmp_path / "x.png")]) == 2


def test_training_sample_grids_draw_both(runs, tmp_path):
    from minildm.course.viz import save_sample_grid

    for cond in ("seg", "inpaint"):
        ldm = LatentDiffusion.from_checkpoint(runs / cond / "ldm.pt", "cpu")
        assert save_sample_grid(ldm, tmp_path / f"{cond}.png", n=2).is_file()


def test_evaluations_report_the_model_against_its_baseline(runs):
    seg = LatentDiffusion.from_checkpoint(runs / "seg" / "ldm.pt", "cpu")
    r = evaluate_seg_model(seg, n=4, steps=2)
    for key in ("objects", "scenes", "pixel", "object_pixel"):
        assert set(r[key]) == {"model", "baseline", "real", "difference"}
    assert r["objects"]["real"]["rate"] > 0.5 and r["pixel"]["real"]["mean"] > 0.8    # the judges read real scenes
    lo, hi = r["objects"]["model"]["ci95"]
    assert 0 <= lo <= r["objects"]["model"]["rate"] <= hi <= 1
    assert len(seg_report(r)) == 5
    with pytest.raises(ValueError, match="seg-conditional"):
        evaluate_seg_model(LatentDiffusion.from_checkpoint(runs / "text" / "ldm.pt", "cpu"), n=2)
    inp = LatentDiffusion.from_checkpoint(runs / "inpaint" / "ldm.pt", "cpu")
    text = LatentDiffusion.from_checkpoint(runs / "text" / "ldm.pt", "cpu")
    r = evaluate_inpainting(inp, text, n=4, steps=2, return_images=True)
    assert r["methods"] == {"model": "trained inpainting model", "baseline": "blending with the text model"}
    assert r["box"]["original"]["read"]["rate"] > 0.5 and r["box"]["model"]["psnr_known"]["mean"] > 5
    assert set(r["object"]["model"]) == {"empty", "same_class", "other_object", "psnr_known", "psnr_known_recon"}
    assert "difference" in r["box"] and r["images"]["box"]["model"].shape == (4, 3, 32, 32)
    assert len(inpaint_report(r)) == 1 + 2 * 2 + 3 + 3         # a title, per kind a heading, PSNR and its outcomes


def test_the_judges_read_real_scenes_and_their_maps():
    b = ShapesDataset("test").batch(range(64))
    a = semantic_agreement(b["image"], b["semantic"])
    assert a["pixel"].mean() > 0.95 and a["object_pixel"].mean() > 0.85    # the palette judge reads real pixels
    assert palette_labels(b["image"]).max() == 6
    tasks = inpainting_tasks(8)
    assert set(tasks["masks"]) == {"box", "object"} and tasks["masks"]["box"].shape == (8, 1, 32, 32)
    assert torch.equal(tasks["masks"]["box"], inpainting_tasks(8)["masks"]["box"])


def test_export_ships_both_in_16_bits(runs, tmp_path):
    root = tmp_path / "kit"
    ldms = {c: runs / c / "ldm.pt" for c in ("seg", "inpaint")}
    pretrained.export(runs / "autoencoder.pt", ldms, "ci", {}, root=root, half=("seg", "inpaint"))
    files = pretrained.manifest(root)["files"]
    assert pretrained.shipped("ci", root=root) == ["seg", "inpaint"]
    assert set(files["ci/ldm-seg.safetensors"]["spot_check"]) == {"object_accuracy", "pixel"}
    assert set(files["ci/ldm-inpaint.safetensors"]["spot_check"]) == {"box_read", "psnr_known"}
    for cond in ("seg", "inpaint"):
        assert files[f"ci/ldm-{cond}.safetensors"]["storage"] == "float16"
        m = pretrained.load_ldm("ci", cond, "cpu", root=root)
        assert m.cond_mode == cond and {p.dtype for p in m.parameters()} == {torch.float32}


def test_img2img_of_a_seg_model_takes_no_guidance(ae, batch):
    seg = make(ae, batch, "seg")
    out = seg.img2img(batch["image"][:2], batch["semantic"][:2], strength=0.5, steps=2,
                      generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="no unconditional prediction"):
        seg.img2img(batch["image"][:2], batch["semantic"][:2], steps=2, guidance_scale=2.0)
