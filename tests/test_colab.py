"""The first cell of every notebook (course.COLAB_CELL), run offline with Colab simulated: on Colab without
minildm it clones the tagged release, installs minildm without touching Colab's torch and makes it importable
without a restart; anywhere else, or when minildm is already there, it does nothing."""

import importlib.util
import os
import subprocess
import sys
import types

import pytest

from minildm.course.lesson import COLAB_CELL


@pytest.fixture
def recorded(monkeypatch):
    calls = {"run": [], "chdir": []}
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls["run"].append(list(cmd)))
    monkeypatch.setattr(os, "chdir", lambda path: calls["chdir"].append(path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    return calls


def run_cell():
    exec(compile(COLAB_CELL, "<colab cell>", "exec"), {})


def test_outside_colab_the_cell_does_nothing(recorded, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    before = list(sys.path)
    run_cell()
    assert recorded == {"run": [], "chdir": []} and sys.path == before


def test_on_colab_with_minildm_already_installed_it_does_nothing(recorded, monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    run_cell()                                          # minildm is importable here
    assert recorded == {"run": [], "chdir": []}


def test_on_colab_without_minildm_it_installs_the_release(recorded, monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "minildm" else real(name, *a))
    monkeypatch.setattr(os.path, "isdir", lambda p: False)
    monkeypatch.setenv("MINILDM_TAG", "v9.9.9")
    run_cell()
    clone, editable, deps = recorded["run"]
    assert clone[:2] == ["git", "clone"] and "v9.9.9" in clone and clone[-1] == "/content/minildm"
    assert editable[-3:] == ["--no-deps", "-e", "/content/minildm"]      # minildm itself, no torch reinstall
    assert "torch" not in " ".join(deps) and {"lpips", "einops", "safetensors"} <= set(deps)
    assert sys.path[0] == "/content/minildm" and recorded["chdir"] == ["/content/minildm/notebooks"]


def test_the_release_the_cell_installs_is_this_version():
    import minildm
    from minildm.course.lesson import COLAB_CELL

    assert f'"v{minildm.__version__}"' in COLAB_CELL, "bump MINILDM_TAG's default in course.COLAB_CELL with the version"
