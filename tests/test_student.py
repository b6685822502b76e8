"""The student edition (`make student`): generated from the one source, committed, free of solutions, with
exercises that are leaves; executed, it fails only where a student has work to do."""

import ast
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from minildm.course.student import ANSWER_PROMPT, STUDENT_DIR, student_notebook, write_student_edition

SOURCE = STUDENT_DIR.parent
PATHS = sorted(SOURCE.glob("[0-9][0-9]_*.ipynb"))


def _solution_lines(cell_source: str) -> list[str]:
    lines = cell_source.split("\n")
    b = next(i for i, ln in enumerate(lines) if ln.strip() == "### BEGIN SOLUTION")
    e = next(i for i, ln in enumerate(lines) if ln.strip() == "### END SOLUTION")
    return [ln.strip() for ln in lines[b + 1:e] if len(ln.strip()) > 12 and not ln.strip().startswith("#")]


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_the_committed_student_edition_is_what_make_student_writes(path):
    committed = STUDENT_DIR / path.name
    assert committed.is_file(), f"{committed} is missing: run `make student` and commit notebooks/student/"
    fresh = student_notebook(path)
    assert json.loads(nbformat.writes(fresh)) == json.loads(committed.read_text()), \
        f"{committed} is out of date: run `make student`"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_no_solution_survives_and_nothing_else_changes(path):
    source = nbformat.read(path, as_version=4)
    student = student_notebook(path)
    nbformat.validate(student)
    assert len(source.cells) == len(student.cells)
    n_exercises = 0
    for a, b in zip(source.cells, student.cells):
        assert a.cell_type == b.cell_type
        if b.cell_type == "code":
            assert not b.outputs and b.execution_count is None
        if "### BEGIN SOLUTION" in a.source:
            n_exercises += 1
            assert "SOLUTION" not in b.source and "raise NotImplementedError(\"Exercise" in b.source
            assert b.source.split("\n")[0] == a.source.split("\n")[0]          # the task line stays
            for line in _solution_lines(a.source):
                assert line not in b.source, f"solution line survived: {line!r}"
        elif "answer" in a.get("metadata", {}).get("tags", []):
            assert b.source == ANSWER_PROMPT
        else:
            assert a.source == b.source                                       # checks and text unchanged
    assert n_exercises >= 2


def _names(tree: ast.AST, ctx) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ctx)}


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_exercises_are_leaves(path):
    """A name the solution assigns is read afterwards only by its own check cell, unless a later cell assigns
    it first: the student edition, which never runs the solution, then behaves like the full one."""
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    parse = lambda src: ast.parse("\n".join(ln for ln in src.split("\n") if not ln.lstrip().startswith(("%", "!"))))  # noqa: E731
    for i, c in enumerate(cells):
        if "### BEGIN SOLUTION" not in c.source:
            continue
        lines = c.source.split("\n")
        b = next(k for k, ln in enumerate(lines) if ln.strip() == "### BEGIN SOLUTION")
        e = next(k for k, ln in enumerate(lines) if ln.strip() == "### END SOLUTION")
        region = "\n".join(ln[len(lines[b]) - len(lines[b].lstrip()):] for ln in lines[b + 1:e])
        assigned = _names(ast.parse(region), ast.Store)
        pending = set(assigned)
        for later in cells[i + 2:]:                        # cells[i + 1] is the check
            tree = parse(later.source)
            stored = _names(tree, ast.Store)                  # a cell that binds a name (a loop variable, …)
            used = (_names(tree, ast.Load) - stored) & pending  # reads its own binding, not the exercise's
            assert not used, f"{path.name}: a later cell reads {sorted(used)}, assigned only in an exercise"
            pending -= stored


@pytest.mark.parametrize("name", ["00_setup_and_shapes", "04_unet_and_cross_attention"])
@pytest.mark.slow
def test_the_student_edition_runs_and_fails_only_where_a_student_has_work(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MINILDM_PROFILE", "ci")
    monkeypatch.setenv("MINILDM_COURSE_DIR", str(tmp_path))
    nb = student_notebook(SOURCE / f"{name}.ipynb")
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(SOURCE)}}).execute()
    errors = []
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code":
            continue
        err = next((o for o in c.outputs if o.output_type == "error"), None)
        if err is None:
            continue
        previous = next((p for p in reversed(nb.cells[:i]) if p.cell_type == "code"), None)
        expected = ("raises-exception" in c.metadata.get("tags", [])
                    or "NotImplementedError(\"Exercise" in c.source
                    or (previous is not None and "NotImplementedError(\"Exercise" in previous.source
                        and "check_answer(" in c.source))
        errors.append((i, err.ename, expected))
    unexpected = [(i, ename) for i, ename, ok in errors if not ok]
    assert not unexpected, f"cells failed that a student did not have to touch: {unexpected}"
    assert sum("NotImplementedError" == ename for _, ename, _ in errors) >= 2


def test_write_student_edition_writes_every_notebook(tmp_path):
    written = write_student_edition(out_dir=tmp_path)
    assert [p.name for p in written] == [p.name for p in PATHS]
    assert all(Path(p).is_file() for p in written)
