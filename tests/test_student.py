"""The student edition (`make student`): generated from the one source, committed, free of solutions, with
exercises that are leaves; executed as a student's Run All does (no exercise answered, no tag honoured), it goes
from the first cell to the last without an error."""

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from minildm.course.student import ANSWER_PROMPT, PLACEHOLDER, STUDENT_DIR, student_notebook, write_student_edition

from wrong_answers import WRONG

SOURCE = STUDENT_DIR.parent
PATHS = sorted(SOURCE.glob("[0-9][0-9]_*.ipynb"))
EXERCISE = re.compile(r"# Exercise (\d+\.\d+):")


def _solution_lines(cell_source: str) -> list[str]:
    lines = cell_source.split("\n")
    b = next(i for i, ln in enumerate(lines) if ln.strip() == "### BEGIN SOLUTION")
    e = next(i for i, ln in enumerate(lines) if ln.strip() == "### END SOLUTION")
    # a function's `def` line stays in the student edition on purpose: it is the task's interface
    return [ln.strip() for ln in lines[b + 1:e] if len(ln.strip()) > 12 and not ln.strip().startswith(("#", "def "))]


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
            assert "SOLUTION" not in b.source and PLACEHOLDER in b.source
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


def test_placeholders_keep_what_the_check_reads_and_nothing_of_the_solution(tmp_path):
    cell = ("# Exercise 9.9: the rate and a helper\n### BEGIN SOLUTION\ndef my_rate(resolution, f,\n            c):\n"
            "    h = resolution // f\n    return h * h * c\nscale = 2\nrates = [my_rate(32, f, 4) for f in (1, 2)]\n"
            "### END SOLUTION")
    check = 'check_answer("Exercise 9.9", (rates, my_rate(32, 8, 4)), [x for x in (1, 2)])'
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell), nbformat.v4.new_code_cell(check)])
    nbformat.write(nb, tmp_path / "probe.ipynb")
    stub = student_notebook(tmp_path / "probe.ipynb").cells[0].source
    # the task line, the placeholder comment, the function's whole signature with `...`, the value the check
    # reads; not the helper `scale`, not the check's own loop variable `x`, not the function's body
    assert stub.split("\n") == ["# Exercise 9.9: the rate and a helper", PLACEHOLDER, "def my_rate(resolution, f,",
                                 "            c):", "    ...", "rates = ..."]
    namespace: dict = {}
    exec(stub, namespace)
    assert namespace["my_rate"](32, 8, 4) is None and namespace["rates"] is Ellipsis   # both mean "not answered"


def _exercises(path: Path) -> list[str]:
    """The numbers ("6.2", …) of a notebook's exercises, in order."""
    return [m.group(1) for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"
            for m in [EXERCISE.match(c.source)] if m and "### BEGIN SOLUTION" in c.source]


def test_every_exercise_has_a_plausible_wrong_answer_to_reject():
    numbers = [n for path in PATHS for n in _exercises(path)]
    assert len(numbers) == len(set(numbers)), f"exercise numbers repeat: {numbers}"
    assert sorted(WRONG) == sorted(numbers), (f"tests/wrong_answers.py: missing {sorted(set(numbers) - set(WRONG))}, "
                                               f"stale {sorted(set(WRONG) - set(numbers))}")


def _with_wrong_answers(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """After each exercise's check cell: the exercise's wrong answer, then its check again, which must raise
    check_answer's AssertionError (shows_error prints it; any other outcome fails the run)."""
    cells = []
    for i, cell in enumerate(nb.cells):
        cells.append(cell)
        previous = [c for c in nb.cells[:i] if c.cell_type == "code"]
        m = EXERCISE.match(previous[-1].source) if previous and cell.cell_type == "code" else None
        if m and 'check_answer("Exercise' in cell.source:
            check = "\n".join("    " + line for line in cell.source.split("\n"))
            cells += [nbformat.v4.new_code_cell(WRONG[m.group(1)]),
                      nbformat.v4.new_code_cell("from minildm.course.lesson import shows_error as _shows_error\n"
                                                f"with _shows_error(AssertionError):\n{check}")]
    nb.cells = cells
    return nb


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
@pytest.mark.slow
def test_the_student_edition_runs_top_to_bottom_and_rejects_wrong_answers(path, tmp_path, monkeypatch):
    """Run All, as a student who has answered nothing, with no allowance for errors (nothing honours a tag):
    every exercise's check says it is skipped, every demonstrated refusal prints its message, and the notebook
    reaches its last cell. After each check, the exercise's plausible wrong answer (wrong_answers.py) is run
    and the check must reject it, saying what differs, never with the expected value."""
    monkeypatch.setenv("MINILDM_PROFILE", "ci")
    monkeypatch.setenv("MINILDM_COURSE_DIR", str(tmp_path))
    nb = _with_wrong_answers(student_notebook(path))
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=False,
                   resources={"metadata": {"path": str(SOURCE)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    checks = sum(c.source.count('check_answer("Exercise') for c in nbformat.read(path, as_version=4).cells)
    assert text.count(": skipped, no answer yet") == checks and "✓ Exercise" not in text
    for number in _exercises(path):
        assert f"AssertionError: Exercise {number}: not yet: " in text, f"Exercise {number}: the wrong answer passed"


def test_write_student_edition_writes_every_notebook(tmp_path):
    written = write_student_edition(out_dir=tmp_path)
    assert [p.name for p in written] == [p.name for p in PATHS]
    assert all(Path(p).is_file() for p in written)
