"""The course on other data ($MINILDM_DATA): notebook 01 trains its autoencoders on a folder of pictures, 05 and
08 their diffusion models (class-conditional on labelled data, unconditional otherwise) with FID on offline
features, and the notebooks that need Shapes say so before doing anything."""

import json
import os
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from PIL import Image, ImageDraw

from minildm.course import lesson as C
from minildm.data.datasets import ImageFolderDataset
from minildm.ldm import LatentDiffusion

pytestmark = pytest.mark.slow      # trains, runs notebooks or several processes

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def picture_folder(root: Path, n: int = 24) -> Path:
    """Two classes of 40×40 pictures: red discs and blue bars on grey-green backgrounds of varying shade."""
    g = torch.Generator().manual_seed(0)
    for label, color in (("discs", (220, 40, 30)), ("bars", (30, 60, 220))):
        (root / label).mkdir(parents=True)
        for i in range(n // 2):
            shade = int(torch.randint(60, 160, (1,), generator=g))
            im = Image.new("RGB", (40, 40), (shade, shade + 20, shade))
            x, y = (int(v) for v in torch.randint(4, 22, (2,), generator=g))
            draw = ImageDraw.Draw(im)
            (draw.ellipse if label == "discs" else draw.rectangle)((x, y, x + 14, y + 8 + i % 6), fill=color)
            im.save(root / label / f"{i}.png")
    return root


def plain_folder(root: Path, n: int = 24) -> Path:
    """The same pictures without class subfolders: an unlabelled folder."""
    labelled = picture_folder(root.parent / (root.name + "-labelled"), n)
    root.mkdir(parents=True)
    for p in labelled.rglob("*.png"):
        p.rename(root / f"{p.parent.name}-{p.name}")
    return root


def test_the_course_takes_its_data_from_the_environment(tmp_path, monkeypatch, capsys):
    folder = picture_folder(tmp_path / "pics")
    monkeypatch.setenv(C.COURSE_DIR_ENV, str(tmp_path / "course"))
    monkeypatch.setenv(C.DATA_ENV, f"folder:{folder}")
    course = C.setup("01_perceptual_compression", profile="ci")
    assert f"data: folder:{folder}" in capsys.readouterr().out
    assert isinstance(course.dataset("val"), ImageFolderDataset) and course.dataset().num_classes == 2
    assert course.folder.parent == tmp_path / "course" and course.folder.name.startswith("data-folder")
    ae = course.autoencoder(verbose=False)                      # trained on the pictures: nothing shipped is used
    assert (course.folder / "autoencoder.pt").is_file() and ae is not None
    with pytest.raises(ValueError, match="no text model on folder:.*need Shapes.*train-ldm --data"):
        course.ldm("text")
    assert course.second_stage() == "class"
    capsys.readouterr()
    assert course.conditions(("class", "layout", "sr", "none")) == ("class", "sr", "none")
    assert not course.shapes_only("prompts")
    said = capsys.readouterr().out
    assert "skipped on folder:" in said and "no layout model (layouts, boxes of Shapes objects" in said and "prompts needs the Shapes data" in said
    with pytest.raises(ValueError, match="06_ddim_sampling needs the Shapes data.*unset it"):
        C.setup("06_ddim_sampling", profile="ci")
    monkeypatch.setenv(C.DATA_ENV, f"folder:{plain_folder(tmp_path / 'plain')}")
    plain = C.setup("05_training_the_ldm", profile="ci")
    assert plain.second_stage() == "none" and plain.conditions(("class", "sr")) == ("sr",)
    assert "has no labels" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no class model on folder:"):
        plain.ldm("class")
    monkeypatch.setenv(C.DATA_ENV, "folder:/no/such/folder")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.setup("01_perceptual_compression", profile="ci")


def run_notebook(name: str, data: str, course_dir: Path) -> str:
    """Execute notebook `name` in the ci profile on `data`; -> the text it printed."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    env = {"MINILDM_PROFILE": "ci", C.DATA_ENV: data, C.COURSE_DIR_ENV: str(course_dir), C.STRICT_ENV: "",
           "OMP_NUM_THREADS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}},
                       allow_error_names=[]).execute()
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_notebook_01_runs_on_a_folder_of_pictures(tmp_path):
    folder = picture_folder(tmp_path / "pics")
    text = run_notebook("01_perceptual_compression", f"folder:{folder}", tmp_path / "course")
    assert f"data: folder:{folder}" in text
    figures = sorted(p.name for p in (tmp_path / "course").glob("data-folder*/figures/*.png"))
    assert "01_perceptual_compression_reconstructions.png" in figures and len(figures) >= 4


def results_of(course_dir: Path, notebook: str) -> dict:
    (path,) = course_dir.glob("data-folder*/results.json")
    return json.loads(path.read_text())[notebook]


def check_fid(r: dict) -> None:
    """An FID next to its floor, both finite and ≥ 0, at n ≥ 2, with the features named."""
    assert r["fid"] >= 0 and r["fid_floor"] >= 0 and r["n"] >= 2
    assert r["features"] in ("inception-v3", "vgg16", "alexnet", "random") and r["features"] in r["features_label"]


def test_notebook_05_trains_an_unconditional_model_on_a_plain_folder(tmp_path):
    folder = plain_folder(tmp_path / "plain")
    course_dir = tmp_path / "course"
    text = run_notebook("05_training_the_ldm", f"folder:{folder}", course_dir)
    (ckpt,) = course_dir.glob("data-folder*/ldm-none/ldm.pt")                  # kept apart from the Shapes models
    assert LatentDiffusion.from_checkpoint(ckpt).cond_mode == "none"
    assert not list(course_dir.glob("data-folder*/ldm-text"))
    assert "skipped on folder:" in text and "judged by prompt accuracy needs the Shapes data" in text
    assert "FID features:" in text
    values = results_of(course_dir, "05_training_the_ldm")["values"]["ema_vs_raw"]
    for name in ("EMA weights", "raw weights"):
        check_fid(values[name])
        assert values[name]["n"] == 12                        # 16 samples, 24 pictures: two disjoint sets of 12
    figures = {p.name for p in course_dir.glob("data-folder*/figures/*.png")}
    assert {"05_training_the_ldm_samples.png", "05_training_the_ldm_denoising.png",
            "05_training_the_ldm_loss.png"} <= figures


def test_notebook_08_trains_class_unconditional_and_sr_models_on_labelled_pictures(tmp_path):
    folder = picture_folder(tmp_path / "pics")
    course_dir = tmp_path / "course"
    text = run_notebook("08_other_conditions", f"folder:{folder}", course_dir)
    (run,) = course_dir.glob("data-folder*")
    cls = LatentDiffusion.from_checkpoint(run / "ldm-class" / "ldm.pt")
    assert cls.cond_mode == "class" and cls.num_classes == 2              # the two subfolders
    assert LatentDiffusion.from_checkpoint(run / "ldm-sr" / "ldm.pt").cond_mode == "sr"
    assert LatentDiffusion.from_checkpoint(run / "08_ldm-none" / "ldm.pt").cond_mode == "none"
    assert not (run / "ldm-layout").exists()
    assert "skipped on folder:" in text and "no layout model (layouts" in text
    assert "layout-to-image (boxes of Shapes objects) needs the Shapes data" in text
    values = results_of(course_dir, "08_other_conditions")["values"]
    check_fid(values["class"])
    check_fid(values["unconditional"])
    assert values["sr"]["n"] == 8 and values["sr"]["psnr"] > 0
