"""The house rules of the package, read from its source (ast): the paper at the top, the lab in folders, data
flowing one way, and a public API that notebooks import from."""

import ast
import json
import sys
from pathlib import Path

import pytest

import minildm

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minildm"
# the paper's model, one part per file, plus the small device / file-format helper they share
PAPER = {"nn", "autoencoder", "perceptual", "losses", "diffusion", "unet", "conditioning", "samplers", "ldm", "utils"}
# the folders in the order data flows through them: each may import the top and the folders before it
FOLDERS = ("data", "eval", "train", "course", "tools")
# what the paper's files may import from outside the package
PAPER_THIRD_PARTY = {"torch", "einops", "lpips", "safetensors", "numpy", "tqdm"}


def module_name(path: Path) -> str:
    """minildm/eval/metrics.py -> "eval.metrics"; minildm/ldm.py -> "ldm"."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__") or "__init__"


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The minildm modules an import names, as keys of MODULES (a package counts as its __init__)."""
    if node.level == 0:
        if not (node.module or "").startswith("minildm"):
            return []
        base = node.module.split(".")[1:]
    else:
        here = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        if module == "__init__":
            here = []
        base = here[: len(here) - (node.level - 1)] + (node.module.split(".") if node.module else [])
    out = []
    for alias in node.names:
        full = ".".join(base + [alias.name])
        out.append(full if full in MODULES else ".".join(base) or "__init__")
    return out


def imports_of(module: str) -> dict[str, int]:
    """minildm modules that `module` imports, with a line number each."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom):
            for target in resolve(module, node):
                found.setdefault(target, node.lineno)
    return {m: line for m, line in found.items() if m != module}


GRAPH = {m: imports_of(m) for m in MODULES}


def place(module: str) -> str:
    """Where a module lives: "paper", one of FOLDERS, or "package" (minildm/__init__.py, __main__.py)."""
    head = module.split(".")[0]
    if head in FOLDERS:
        return head
    return "paper" if head in PAPER else "package"


def test_the_top_level_is_the_paper():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert set(top) == PAPER | {"__init__", "__main__"}, top
    assert len(top) <= 12
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(FOLDERS)


def test_the_papers_files_import_only_each_other_and_the_allowed_libraries():
    bad = {m: sorted(n for n in GRAPH[m] if place(n) != "paper") for m in MODULES if place(m) == "paper"}
    assert not any(bad.values()), bad
    stdlib = set(sys.stdlib_module_names)
    for m in MODULES:
        if place(m) != "paper":
            continue
        for node in ast.walk(ast.parse(MODULES[m].read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                root = name.split(".")[0]
                assert root in stdlib | PAPER_THIRD_PARTY | {"__future__"}, f"{m} imports {name}"


def test_folders_import_the_top_and_the_folders_before_them():
    allowed = {f: {"paper", *FOLDERS[: i + 1]} for i, f in enumerate(FOLDERS)}
    allowed["tools"].add("package")                          # the command line prints minildm.__version__
    bad = {m: sorted(n for n in GRAPH[m] if place(n) not in allowed[place(m)])
           for m in MODULES if place(m) in FOLDERS}
    assert not any(bad.values()), bad


def test_no_import_circle():
    state: dict[str, str] = {}

    def visit(m, path):
        state[m] = "open"
        for n in GRAPH[m]:
            if n.split(".")[0] != m.split(".")[0] and place(n) == place(m) == "package":
                continue
            if state.get(n) == "open":
                raise AssertionError("import circle: " + " -> ".join(path + [m, n]))
            if n not in state:
                visit(n, path + [m])
        state[m] = "done"

    for m in MODULES:
        if m not in state and m != "__init__":
            visit(m, [])


def test_imports_are_at_the_top_so_the_graph_is_visible():
    """A minildm import inside a function hides the real dependency graph (and circles)."""
    hidden = []
    for m, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("minildm")):
                        hidden.append(f"{m}.{fn.name}: from {'.' * node.level}{node.module} import ...")
    assert not hidden, hidden


def test_public_api_names_exist_and_modules_declare_theirs():
    for name in minildm.__all__:
        assert hasattr(minildm, name), name
    for m in MODULES:
        if m in ("__init__", "__main__") or m in FOLDERS:
            continue
        module = __import__(f"minildm.{m}", fromlist=["__all__"])
        assert hasattr(module, "__all__"), f"minildm.{m} has no __all__"
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing, (m, missing)
    for name in ("LatentDiffusion", "AutoencoderKL", "ShapesDataset", "ddim_step", "ddpm_step", "train_ldm",
                 "train_autoencoder", "load_autoencoder", "record_attention", "get_profile", "WordTokenizer"):
        assert name in minildm.__all__, name
    assert minildm.LatentDiffusion.from_checkpoint and minildm.ldm.LatentDiffusion is minildm.LatentDiffusion


def notebook_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every `from minildm[.module] import name` in the notebook's code cells."""
    out = []
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minildm"):
                out += [(node.module, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                out += [(a.name, "*") for a in node.names if a.name.startswith("minildm")]
    return out


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebooks_import_only_public_names(path):
    imports = notebook_imports(path)
    assert imports, f"{path.name} imports nothing from minildm"
    for module, name in imports:
        mod = __import__(module, fromlist=["__all__"])
        if name == "*":
            continue
        assert name in getattr(mod, "__all__", ()) or (module == "minildm" and name in minildm.__all__), \
            f"{path.name}: `from {module} import {name}` is not public (not in {module}.__all__)"
