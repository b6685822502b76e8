"""The house rules of the package, read from its source (ast): one way for data to flow, a public API that
notebooks import from, and files a student can read in one sitting."""

import ast
import json
from pathlib import Path

import pytest

import minildm

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minildm"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))  # __main__ = the command
# the paper's core: models, losses, the diffusion process and samplers
CORE = {"nn", "autoencoder", "losses", "diffusion", "unet", "conditioning", "samplers", "ldm"}
# what the core must not know: presets, datasets, training, commands, evaluation, studies, pictures
NOT_FOR_CORE = {"profiles", "data", "shapes", "realdata", "train", "cli", "commands", "demo", "metrics", "evaluator",
                "shapes_eval", "results", "experiments", "bench", "peer", "viz"}
COMMANDS = {"cli"}
MAX_FILE_LINES = 490
MAX_FUNCTION_LINES = 80
PAPER_ALGORITHMS = {("unet", "__init__")}       # the U-Net's construction, level by level, reads best in one piece


def imports_of(module: str) -> dict[str, list[int]]:
    """minildm modules that `module` imports (at any depth of its code), with the line numbers."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: dict[str, list[int]] = {}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1:
                names = [base] if base else [a.name for a in node.names]
            elif base.startswith("minildm."):
                names = [base.split(".")[1]]
            elif base == "minildm":
                names = [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("minildm.")]
        for n in names:
            if n in MODULES:
                found.setdefault(n, []).append(node.lineno)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_no_import_circle():
    state: dict[str, str] = {}

    def visit(m, path):
        state[m] = "open"
        for n in GRAPH[m]:
            if state.get(n) == "open":
                raise AssertionError("import circle: " + " -> ".join(path + [m, n]))
            if n not in state:
                visit(n, path + [m])
        state[m] = "done"

    for m in MODULES:
        if m not in state:
            visit(m, [])


def test_the_core_knows_no_presets_data_training_commands_or_evaluation():
    bad = {m: sorted(set(GRAPH[m]) & NOT_FOR_CORE) for m in CORE}
    assert not any(bad.values()), bad


def test_no_module_imports_a_command_module():
    bad = {m: sorted(set(GRAPH[m]) & COMMANDS) for m in MODULES}
    assert not any(bad.values()), bad


def test_imports_are_at_the_top_so_the_graph_is_visible():
    """A minildm import inside a function hides the real dependency graph (and circles)."""
    hidden = []
    for m in MODULES:
        tree = ast.parse((PACKAGE / f"{m}.py").read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and node.level > 0:
                        hidden.append(f"{m}.{fn.name}: from .{node.module} import ...")
    assert not hidden, hidden


def test_public_api_names_exist_and_modules_declare_theirs():
    for name in minildm.__all__:
        assert hasattr(minildm, name), name
    for m in MODULES:
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


def test_files_and_functions_stay_readable():
    long_files = {m: n for m in MODULES if (n := len((PACKAGE / f"{m}.py").read_text().splitlines())) > MAX_FILE_LINES}
    assert not long_files, long_files
    long_functions = []
    for m in MODULES:
        for node in ast.walk(ast.parse((PACKAGE / f"{m}.py").read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (m, node.name) not in PAPER_ALGORITHMS:
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long_functions.append(f"{m}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long_functions, long_functions
