"""The student edition of the course: the same notebooks with the answers taken out (`make student`).

From the one source (notebooks/NN_*.ipynb) it writes notebooks/student/NN_*.ipynb where
  * in every exercise cell, the lines from `### BEGIN SOLUTION` to `### END SOLUTION` become a placeholder
    for each answer the check cell after it reads: `name = ...` for a value, the `def` line with `...` as its
    body for a function (the first line, `# Exercise N.k: <task>`, and any code before or after the markers
    stay). check_answer skips an answer left at `...` (or None), so Run All goes through the student edition
    in every front end: no later cell needs an exercise's answer (tests/test_student.py checks that);
  * markdown cells tagged "answer" are emptied to a prompt for the student's own answer;
  * every output and execution count is removed; everything else, checks included, is unchanged.
The student edition is committed (Colab links need a file) and tests/test_student.py checks it matches.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat

__all__ = ["student_notebook", "write_student_edition", "STUDENT_DIR", "ANSWER_PROMPT", "PLACEHOLDER"]

STUDENT_DIR = Path(__file__).resolve().parent.parent.parent / "notebooks" / "student"
ANSWER_PROMPT = "*Your answer:*"
_EXERCISE = re.compile(r"#\s*(Exercise \d+\.\d+):\s*(.+)")


PLACEHOLDER = "# ✎ your code here (until you write it, the check below says \"skipped\")"


def _strip_solution(source: str, check: str) -> str:
    """The exercise cell `source` with its solution replaced by placeholders for what the `check` cell reads."""
    lines = source.split("\n")
    m = _EXERCISE.match(lines[0])
    if m is None:
        raise ValueError(f"an exercise cell must start with '# Exercise N.k: <task>', got {lines[0]!r}")
    begin = next(i for i, line in enumerate(lines) if line.strip() == "### BEGIN SOLUTION")
    end = next(i for i, line in enumerate(lines) if line.strip() == "### END SOLUTION")
    if end < begin:
        raise ValueError(f"{m.group(1)}: END SOLUTION comes before BEGIN SOLUTION")
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    region = [line[len(indent):] for line in lines[begin + 1:end]]
    tree = ast.parse("\n".join(region))
    names = [n for n in ast.walk(ast.parse(check)) if isinstance(n, ast.Name)]
    wanted = ({n.id for n in names if isinstance(n.ctx, ast.Load)}     # what the check reads, less its own
              - {n.id for n in names if isinstance(n.ctx, ast.Store)})  # loop variables and the like
    before = {n.id for n in ast.walk(ast.parse("\n".join(lines[1:begin]))) if isinstance(n, ast.Name)
              and isinstance(n.ctx, ast.Store)} if begin > 1 and not indent else set()
    stub = [indent + PLACEHOLDER]
    for node in tree.body:                          # a function the check calls: its signature, then `...`
        if isinstance(node, ast.FunctionDef) and node.name in wanted:
            stub += [indent + line for line in region[node.lineno - 1:node.body[0].lineno - 1]]
            stub.append(indent + " " * (node.col_offset + 4) + "...")
            wanted.discard(node.name)
    stored = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
    for name in dict.fromkeys(stored):              # first-seen order, each once
        if name in wanted and name not in before:
            stub.append(f"{indent}{name} = ...")
    return "\n".join(lines[:begin] + stub + lines[end + 1:])


def student_notebook(path: str | Path) -> nbformat.NotebookNode:
    """The student edition of one notebook (see the module docstring)."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    checks = {id(c): code[i + 1].source if i + 1 < len(code) else "" for i, c in enumerate(code)}
    for cell in nb.cells:
        if cell.cell_type == "code":
            if "### BEGIN SOLUTION" in cell.source:
                cell.source = _strip_solution(cell.source, checks[id(cell)])
            cell.outputs, cell.execution_count = [], None
        elif "answer" in cell.get("metadata", {}).get("tags", []):
            cell.source = ANSWER_PROMPT
        cell.metadata.pop("execution", None)
    return nb


def write_student_edition(source_dir: str | Path = STUDENT_DIR.parent, out_dir: str | Path = STUDENT_DIR) -> list[Path]:
    """Write the student edition of every NN_*.ipynb in source_dir into out_dir; returns the paths written."""
    sources, out_dir = sorted(Path(source_dir).glob("[0-9][0-9]_*.ipynb")), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sources:
        nbformat.write(student_notebook(path), out_dir / path.name)
    return [out_dir / path.name for path in sources]
