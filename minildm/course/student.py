"""The student edition of the course: the same notebooks with the answers taken out (`make student`).

From the one source (notebooks/NN_*.ipynb) it writes notebooks/student/NN_*.ipynb where
  * in every exercise cell, the lines from `### BEGIN SOLUTION` to `### END SOLUTION` become
        raise NotImplementedError("Exercise N.k: <the task from the cell's first line>")
    (the first line, `# Exercise N.k: <task>`, and any code before or after the markers stay);
  * markdown cells tagged "answer" are emptied to a prompt for the student's own answer;
  * every output and execution count is removed; everything else, checks included, is unchanged.
The student edition is committed (Colab links need a file) and tests/test_student.py checks it matches.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

__all__ = ["student_notebook", "write_student_edition", "STUDENT_DIR", "ANSWER_PROMPT"]

STUDENT_DIR = Path(__file__).resolve().parent.parent.parent / "notebooks" / "student"
ANSWER_PROMPT = "*Your answer:*"
_EXERCISE = re.compile(r"#\s*(Exercise \d+\.\d+):\s*(.+)")


def _strip_solution(source: str) -> str:
    lines = source.split("\n")
    m = _EXERCISE.match(lines[0])
    if m is None:
        raise ValueError(f"an exercise cell must start with '# Exercise N.k: <task>', got {lines[0]!r}")
    begin = next(i for i, line in enumerate(lines) if line.strip() == "### BEGIN SOLUTION")
    end = next(i for i, line in enumerate(lines) if line.strip() == "### END SOLUTION")
    if end < begin:
        raise ValueError(f"{m.group(1)}: END SOLUTION comes before BEGIN SOLUTION")
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    task = m.group(2).strip().replace('"', "'")
    stub = f'{indent}raise NotImplementedError("{m.group(1)}: {task}")'
    return "\n".join(lines[:begin] + [stub] + lines[end + 1:])


def student_notebook(path: str | Path) -> nbformat.NotebookNode:
    """The student edition of one notebook (see the module docstring)."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            if "### BEGIN SOLUTION" in cell.source:
                cell.source = _strip_solution(cell.source)
            cell.outputs, cell.execution_count = [], None
        elif "answer" in cell.get("metadata", {}).get("tags", []):
            cell.source = ANSWER_PROMPT
        cell.metadata.pop("execution", None)
    return nb


def write_student_edition(source_dir: str | Path | None = None, out_dir: str | Path | None = None) -> list[Path]:
    """Write the student edition of every NN_*.ipynb in source_dir (default notebooks/) into out_dir
    (default notebooks/student/); returns the paths written."""
    source_dir = Path(source_dir) if source_dir is not None else STUDENT_DIR.parent
    out_dir = Path(out_dir) if out_dir is not None else STUDENT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source_dir.glob("[0-9][0-9]_*.ipynb")):
        target = out_dir / path.name
        nbformat.write(student_notebook(path), target)
        written.append(target)
    return written
