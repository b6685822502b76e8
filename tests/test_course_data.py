"""The course on other data ($MINILDM_DATA): notebook 01 trains its autoencoders on a folder of pictures, the
notebooks that need Shapes say so before doing anything."""

import os
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from PIL import Image, ImageDraw

from minildm import course as C
from minildm.realdata import ImageFolderDataset

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
    with pytest.raises(ValueError, match="diffusion models are Shapes models.*train-ldm --data"):
        course.ldm("text")
    with pytest.raises(ValueError, match="05_training_the_ldm needs the Shapes data.*unset it"):
        C.setup("05_training_the_ldm", profile="ci")
    monkeypatch.setenv(C.DATA_ENV, "folder:/no/such/folder")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.setup("01_perceptual_compression", profile="ci")


def test_notebook_01_runs_on_a_folder_of_pictures(tmp_path):
    folder = picture_folder(tmp_path / "pics")
    nb = nbformat.read(NOTEBOOKS / "01_perceptual_compression.ipynb", as_version=4)
    env = {"MINILDM_PROFILE": "ci", C.DATA_ENV: f"folder:{folder}", C.COURSE_DIR_ENV: str(tmp_path / "course")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}},
                       allow_error_names=[]).execute()
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"data: folder:{folder}" in text
    figures = sorted(p.name for p in (tmp_path / "course").glob("data-folder*/figures/*.png"))
    assert "01_perceptual_compression_reconstructions.png" in figures and len(figures) >= 4
