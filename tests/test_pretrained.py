"""Shipped inference checkpoints: exported from training checkpoints, verified by SHA-256, loaded exactly."""

import json
import os

import pytest
import torch

from minildm.autoencoder import load_autoencoder
from minildm.course import pretrained
from minildm.ldm import LatentDiffusion
from minildm.tools.cli import main
from minildm.train.profiles import get_profile
from minildm.train.stages import train_autoencoder, train_ldm
from minildm.utils import CheckpointError

CI = get_profile("ci")
FLOW = CI.replace(ldm={"process": "flow"})


def _header_dtypes(path) -> set[str]:
    """The dtypes of a safetensors file's tensors, from its JSON header."""
    data = path.read_bytes()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


def _through_float16(ldm: LatentDiffusion) -> LatentDiffusion:
    """`ldm` with its denoiser's floating-point weights rounded to float16 and back (in place)."""
    with torch.no_grad():
        for t in ldm.denoiser_modules().state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half())
    return ldm


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    train_autoencoder(CI, d, device="cpu", random_lpips=True, lpips_download=False, progress=False, steps=4)
    for cond in ("text", "class"):
        train_ldm(CI, d / "autoencoder.pt", d / cond, cond=cond, device="cpu", steps=4, progress=False)
    train_ldm(FLOW, d / "autoencoder.pt", d / "text-flow", cond="text", device="cpu", steps=4, progress=False)
    return d


@pytest.fixture
def shipped(runs, tmp_path):
    root = tmp_path / "pretrained"
    provenance = {"ldm-text": {"command": "minildm train-ldm ...", "seed": 0, "metrics": {"one_object": 0.5}}}
    pretrained.export(runs / "autoencoder.pt", {"text": runs / "text" / "ldm.pt", "class": runs / "class" / "ldm.pt"},
                      "ci", provenance, root=root)
    return root


@pytest.mark.slow
def test_shipped_models_are_the_trained_ones_with_their_ema_weights(runs, shipped):
    ae = pretrained.load_autoencoder("ci", "cpu", root=shipped)
    ref = load_autoencoder(runs / "autoencoder.pt", "cpu")
    assert all(torch.equal(a, b) for a, b in zip(ae.state_dict().values(), ref.state_dict().values()))
    for cond in ("text", "class"):
        mine = pretrained.load_ldm("ci", cond, "cpu", root=shipped)
        ref = LatentDiffusion.from_checkpoint(runs / cond / "ldm.pt", "cpu")
        assert mine.cond_mode == cond and mine.resolution == ref.resolution
        assert float(mine.scale_factor) == float(ref.scale_factor)
        raw = (ref.prompt_condition(prompts=["a red circle in the center"]) if cond == "text"
               else ref.prompt_condition(labels=[5]))
        g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        assert torch.equal(mine.sample(raw, steps=3, generator=g()), ref.sample(raw, steps=3, generator=g()))


@pytest.mark.slow
def test_the_manifest_says_how_each_file_was_made(shipped):
    m = json.loads((shipped / "manifest.json").read_text())["files"]
    assert set(m) == {"ci/autoencoder.safetensors", "ci/ldm-text.safetensors", "ci/ldm-class.safetensors"}
    text = m["ci/ldm-text.safetensors"]
    assert text["command"].startswith("minildm train-ldm") and text["metrics"] == {"one_object": 0.5}
    assert set(text["spot_check"]) == {"one_object_accuracy"} and set(m["ci/ldm-class.safetensors"]["spot_check"]) == {"accuracy"}
    mask = os.umask(0)
    os.umask(mask)
    for name, entry in m.items():
        assert len(entry["sha256"]) == 64 and entry["torch"] == torch.__version__ and entry["bytes"] > 0
        assert (shipped / name).stat().st_mode & 0o777 == 0o666 & ~mask     # readable by all, as the umask allows
    assert not pretrained.available("cpu", root=shipped) and pretrained.load_ldm("ci", "layout", root=shipped) is None


@pytest.mark.slow
def test_a_damaged_shipped_file_is_refused(shipped):
    path = shipped / "ci" / "ldm-text.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="damaged.*git checkout data/pretrained"):
        pretrained.load_ldm("ci", "text", root=shipped)
    (shipped / "ci" / "autoencoder.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="damaged"):
        pretrained.load_autoencoder("ci", root=shipped)


@pytest.mark.slow
def test_export_command(runs, tmp_path, capsys):
    assert main(["export-pretrained", "--profile", "ci", "--autoencoder", str(runs / "autoencoder.pt"), "--ldm",
                 f"text={runs / 'text' / 'ldm.pt'}", "--root", str(tmp_path)]) == 0
    assert "ci/ldm-text.safetensors" in capsys.readouterr().out
    assert pretrained.load_ldm("ci", "text", root=tmp_path) is not None


def test_second_stages_are_added_to_the_shipped_autoencoder_and_the_comparison_is_16_bit(runs, tmp_path, capsys):
    assert main(["export-pretrained", "--profile", "ci", "--autoencoder", str(runs / "autoencoder.pt"), "--root",
                 str(tmp_path)]) == 0
    ae_sha = pretrained.manifest(tmp_path)["files"]["ci/autoencoder.safetensors"]["sha256"]
    # no --autoencoder: the class model joins the autoencoder already shipped, which stays as it was
    assert main(["export-pretrained", "--profile", "ci", "--ldm", f"class={runs / 'class' / 'ldm.pt'}", "--root",
                 str(tmp_path)]) == 0
    assert pretrained.manifest(tmp_path)["files"]["ci/autoencoder.safetensors"]["sha256"] == ae_sha
    assert pretrained.load_ldm("ci", "class", root=tmp_path) is not None
    assert main(["export-pretrained", "--profile", "ci", "--root", str(tmp_path)]) != 0
    assert "nothing to export" in capsys.readouterr().err
    ckpt = runs / "autoencoder.pt"
    assert main(["export-pretrained", "--profile", "ci", "--compare", *(f"{k}={ckpt}" for k in pretrained.COMPARISON),
                 "--root", str(tmp_path)]) == 0
    runs_ = pretrained.load_comparison("ci", "cpu", root=tmp_path)
    assert set(runs_) == set(pretrained.COMPARISON.values())
    run = runs_["L2"]
    assert run["step"] == 4 and [r["step"] for r in run["history"]] == [], "every 5th step of 4: none"
    full = load_autoencoder(ckpt, "cpu")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        a, b = full.decode(full.encode(x).mean), run["model"].decode(run["model"].encode(x).mean)
    assert (a - b).abs().max() < 2e-2                       # 16-bit weights: the same model up to rounding
    header = json.loads((tmp_path / "ci" / "ae-compare-l2.safetensors").read_bytes()[8:][:int.from_bytes(
        (tmp_path / "ci" / "ae-compare-l2.safetensors").read_bytes()[:8], "little")])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} <= {"F16", "I64"}
    assert pretrained.load_comparison("gpu", root=tmp_path) is None


def test_export_stores_16_bit_weights_that_load_as_their_float32_weights_cast_through_float16(runs, tmp_path):
    root = tmp_path / "kit"
    ldms = {"text": runs / "text" / "ldm.pt", "text-flow": runs / "text-flow" / "ldm.pt"}
    with pytest.raises(ValueError, match=r"half=\['class'\] names no file of this export"):
        pretrained.export(runs / "autoencoder.pt", ldms, "ci", {}, root=root, half=("class",))
    pretrained.export(runs / "autoencoder.pt", ldms, "ci", {}, root=root, half=("text-flow",))
    files = pretrained.manifest(root)["files"]
    assert files["ci/ldm-text-flow.safetensors"]["storage"] == "float16" and "storage" not in files["ci/ldm-text.safetensors"]
    assert set(files["ci/ldm-text-flow.safetensors"]["spot_check"]) == {"one_object_accuracy"}    # sampled with Euler
    assert _header_dtypes(root / "ci" / "ldm-text-flow.safetensors") <= {"F16", "I64"}
    assert _header_dtypes(root / "ci" / "ldm-text.safetensors") <= {"F32", "I64"}
    assert pretrained.shipped("ci", root=root) == ["text", "text-flow"]
    mine = pretrained.load_ldm("ci", "text-flow", "cpu", root=root)
    assert mine.is_flow and not mine.training and {p.dtype for p in mine.parameters()} == {torch.float32}
    ref = _through_float16(LatentDiffusion.from_checkpoint(runs / "text-flow" / "ldm.pt", "cpu"))
    raw = ref.prompt_condition(prompts=["a red circle in the center", "a small blue square to the left of a large yellow star"])
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(mine.sample(raw, steps=3, generator=g()), ref.sample(raw, steps=3, generator=g()))
    # the same U-Net and text encoder as the diffusion text model: half its bytes (the header aside)
    assert files["ci/ldm-text-flow.safetensors"]["bytes"] < 0.6 * files["ci/ldm-text.safetensors"]["bytes"]


@pytest.mark.slow
def test_halve_converts_a_shipped_file_to_16_bits_and_keeps_its_provenance(shipped, capsys):
    key = "ci/ldm-text.safetensors"
    before = pretrained.manifest(shipped)["files"][key]
    ref = _through_float16(pretrained.load_ldm("ci", "text", "cpu", root=shipped))
    assert main(["export-pretrained", "--profile", "ci", "--halve", "text", "--root", str(shipped)]) == 0
    assert "ci/ldm-text.safetensors" in capsys.readouterr().out
    after = pretrained.manifest(shipped)["files"][key]
    for kept in ("command", "metrics", "seed", "commit", "torch", "machine"):
        assert after[kept] == before[kept], kept
    assert after["storage"] == "float16" and after["halved"]["command"] == "minildm export-pretrained --profile ci --halve text"
    assert after["sha256"] != before["sha256"] and after["bytes"] < 0.6 * before["bytes"]
    assert set(after["spot_check"]) == {"one_object_accuracy"}
    assert _header_dtypes(shipped / key) <= {"F16", "I64"}
    mine = pretrained.load_ldm("ci", "text", "cpu", root=shipped)
    raw = ref.prompt_condition(prompts=["a red circle in the center"])
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(mine.sample(raw, steps=3, generator=g()), ref.sample(raw, steps=3, generator=g()))
    with pytest.raises(ValueError, match="already stored in float16"):
        pretrained.halve("ci", ["ldm-text"], root=shipped)
    with pytest.raises(ValueError, match="not 'autoencoder'"):
        pretrained.halve("ci", ["autoencoder"], root=shipped)
    with pytest.raises(FileNotFoundError, match="no shipped ci/ldm-layout"):
        pretrained.halve("ci", ["ldm-layout"], root=shipped)
    assert main(["export-pretrained", "--profile", "ci", "--half", "text", "--root", str(shipped)]) == 2
    assert "--halve NAME" in capsys.readouterr().err


@pytest.mark.parametrize("cond", ["seg", "inpaint"])
def test_the_shipped_seg_and_inpaint_models_load_in_float32_and_sample_deterministically(cond):
    from minildm.data.datasets import ShapesDataset
    from minildm.eval.accuracy import inpainting_tasks

    entry = pretrained.manifest()["files"][f"cpu/ldm-{cond}.safetensors"]
    assert entry["storage"] == "float16" and entry["metrics"]
    ldm = pretrained.load_ldm("cpu", cond, "cpu")
    assert ldm.cond_mode == cond and not ldm.training and {p.dtype for p in ldm.parameters()} == {torch.float32}
    if cond == "seg":
        raw = ldm.semantic_condition(ShapesDataset("test").batch(range(2))["semantic"])
        draw = lambda seed: ldm.sample(raw, steps=4, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    else:
        tasks = inpainting_tasks(2)
        draw = lambda seed: ldm.inpaint(tasks["images"], tasks["masks"]["box"], steps=4,  # noqa: E731
                                        generator=torch.Generator().manual_seed(seed))
    a, b, c = draw(0), draw(0), draw(1)
    assert a.shape == (2, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="not a prompt"):
        ldm.prompt_condition(prompts=["a red circle"])


def test_the_shipped_flow_text_model_loads_in_float32_and_samples_with_euler():
    entry = pretrained.manifest()["files"]["cpu/ldm-text-flow.safetensors"]
    assert entry["storage"] == "float16"
    ldm = pretrained.load_ldm("cpu", "text-flow", "cpu")
    assert ldm.is_flow and ldm.default_sampler == "euler" and ldm.cond_mode == "text" and not ldm.training
    assert {p.dtype for p in ldm.parameters()} == {torch.float32}
    raw = ldm.prompt_condition(prompts=["a large red circle in the top left", "a small blue square"])
    draw = lambda seed: ldm.sample(raw, steps=4, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    a, b, c = draw(0), draw(0), draw(1)
    assert a.shape == (2, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="flow model"):
        ldm.sample(raw, steps=2, sampler="ddim")


def test_the_shipped_models_are_listed_by_name(shipped):
    assert pretrained.shipped() == ["text", "class", "class-token", "layout", "sr", "text-flow", "seg",
                                    "inpaint"]   # the committed cpu files
    assert pretrained.shipped("ci", root=shipped) == ["text", "class"] and pretrained.shipped("gpu") == []


@pytest.mark.slow
def test_the_readme_python_lines_sample_the_shipped_text_model():
    ldm = pretrained.load_ldm("cpu", "text")
    images = ldm.sample(ldm.prompt_condition(prompts=["a large red circle in the top left"]), eta=1.0,
                        guidance_scale=2.5)
    assert images.shape == (1, 3, 32, 32) and images.min() >= -1 and images.max() <= 1


@pytest.mark.slow
def test_the_committed_cpu_checkpoints_verify_and_measure_what_their_manifest_says():
    files = pretrained.manifest()["files"]
    names = ["autoencoder"] + [f"ldm-{c}" for c in ("text", "class", "class-token", "layout", "sr", "text-flow", "seg",
                                                    "inpaint")]
    assert {f"cpu/{n}.safetensors" for n in names} <= set(files), "run the kit export (docs/instructor-guide.md)"
    total = 0
    for name, entry in files.items():
        path = pretrained.DIR / name
        assert pretrained.file_sha256(path) == entry["sha256"], f"{name} differs from its manifest"
        assert entry["seed"] == 0 and (entry["command"].startswith(("minildm train-", "minildm experiments")) or (
            entry["command"].startswith("python ") and entry.get("script"))), f"{name}: how was it made?"
        assert entry["metrics"]
        if entry.get("storage") == "float16":     # measured on the 16-bit file and on its float32 weights
            assert any("float32" in k for k in entry["metrics"]), f"{name}: no float32 measurement beside float16"
        total += path.stat().st_size
    assert total <= 30e6, f"the shipped checkpoints take {total / 1e6:.1f} MB (at most 30)"
    measured = pretrained.spot_check("cpu")
    assert set(measured) == set(names)
    for name, metrics in measured.items():
        recorded = files[f"cpu/{name}.safetensors"]["spot_check"]
        for key, value in metrics.items():         # thread counts change float rounding: one sample may flip
            tolerance = 0.05 if "psnr" in key else 1 / 16 + 1e-9
            assert value == pytest.approx(recorded[key], abs=tolerance), (name, key, value, recorded[key])


@pytest.mark.slow
def test_the_f_study_record_holds_its_rows_and_the_final_models_samples(tmp_path, capsys):
    from minildm.eval.accuracy import _test_captions, sample_prompts
    from minildm.tools.studies import f_study
    from minildm.train.profiles import ExperimentBudget
    from minildm.utils import count_parameters

    budget = ExperimentBudget(factors=(1, 4), ae_steps=2, ldm_steps=2, segments=1, eval_samples=4, eval_steps=2,
                              eval_batch=4, throughput_batch=2, throughput_steps=1)
    rows = f_study(CI, tmp_path / "study", budget, equal="steps", download=False, verbose=False)
    assert main(["export-pretrained", "--profile", "ci", "--f-study", str(tmp_path / "study"), "--root",
                 str(tmp_path / "kit")]) == 0
    assert "ci/f-study.safetensors" in capsys.readouterr().out
    record = pretrained.load_f_study("ci", root=tmp_path / "kit")
    assert record["rows"] == [{k: v for k, v in r.items() if k != "checkpoint"} for r in json.loads(json.dumps(rows))]
    assert record["made"]["steps"] == 2 and record["made"]["storage"].startswith("uint8")
    assert record["key"]["equal"] == "steps" and record["key"]["ldm"] == 2 and set(record["samples"]) == {1, 4}
    # the samples are the first 8 images the final models' evaluation judged (its captions, seed and start), 8-bit
    captions = _test_captions(16, 32, 1, 2)
    assert record["captions"] == captions[:8]
    for f in (1, 4):
        ldm = LatentDiffusion.from_checkpoint(tmp_path / "study" / f"f{f}" / "ldm.pt", "cpu")
        judged = sample_prompts(ldm, captions, 2, 0.0, budget.guidance_scale, record["seed"], 16)[:8]
        assert record["samples"][f].shape == (8, 3, 32, 32)
        assert (record["samples"][f] - judged).abs().max() <= 1 / 127.5 + 1e-4
        assert {r["unet_parameters"] for r in record["rows"] if r["f"] == f} == {count_parameters(ldm.unet)}
    assert record["real"].shape == (8, 3, 32, 32) and record["real"].min() >= -1 and record["real"].max() <= 1
    assert pretrained.load_f_study("gpu", root=tmp_path / "kit") is None
    with pytest.raises(FileNotFoundError, match="no f-study"):
        pretrained.export_f_study(tmp_path / "nothing", "ci", {}, root=tmp_path / "kit")
