"""Hygiene of the course notebooks (their cells run under nbval; this checks how they are built):

  - the sequence 00 … 10 is complete and named as course.NOTEBOOKS says
  - every notebook is valid nbformat, starts with the identical Colab cell, then the header (learning goals,
    prerequisites, the paper's sections, run time), then the setup call with its own name; it ends with a
    summary, questions and what comes next
  - at least two exercises: a code cell that starts `# Exercise N.k: …` with balanced solution markers,
    followed by a code cell that checks it with check_answer("Exercise N.k", …); markers only in code cells
  - at least one identity or finding checked in code (course.identity / course.finding) and one bad-input cell
    (`with shows_error(Kind):`, which prints the refusal and goes on); no cell tagged raises-exception, which
    VS Code and Colab ignore, so that Run All stops there; no course.claim (the first edition's check)
  - markdown quotes the paper and the math, never this run's outcomes: no measured percentage, dB, FID or
    accuracy in a markdown cell unless the line cites the paper; no lab report (how the course was written)
  - committed without outputs, except `# NBVAL_CHECK_OUTPUT` cells, which keep theirs and their
    execution_count (nbval compares a cell only when it has one); no error outputs; small files
"""

import json
import re
from pathlib import Path

import nbformat
import pytest

from minildm.course.lesson import COLAB_CELL, NOTEBOOKS

ROOT = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(p for p in ROOT.glob("[0-9][0-9]_*.ipynb"))
HEADER_SECTIONS = ("What you will learn", "Prerequisites", "The paper", "Run time")
FOOTER_SECTIONS = ("Summary", "Check your understanding", "What comes next")
MAX_BYTES = 250_000


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_the_sequence_is_complete_and_in_order():
    assert [p.stem for p in PATHS] == list(NOTEBOOKS)


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_structure(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    cs = cells(path)
    number = path.stem[:2]
    assert cs[0]["cell_type"] == "code" and source(cs[0]) == COLAB_CELL, "cell 0 must be the Colab cell, verbatim"
    header = source(cs[1])
    assert cs[1]["cell_type"] == "markdown" and header.startswith(f"# {number} · ")
    for section in HEADER_SECTIONS:
        assert f"## {section}" in header, f"header lacks '## {section}'"
    assert cs[2]["cell_type"] == "code" and f'setup("{path.stem}"' in source(cs[2])
    footer = "\n".join(source(c) for c in cs[-4:] if c["cell_type"] == "markdown")
    for section in FOOTER_SECTIONS:
        assert f"## {section}" in footer, f"footer lacks '## {section}'"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_exercises_are_marked_and_each_is_checked(path):
    cs = cells(path)
    number = int(path.stem[:2])
    exercises = []
    for i, c in enumerate(cs):
        text = source(c)
        begins, ends = text.count("### BEGIN SOLUTION"), text.count("### END SOLUTION")
        if c["cell_type"] != "code":
            assert begins == ends == 0, f"cell {i}: solution markers outside a code cell"
            continue
        assert begins == ends and begins <= 1, f"cell {i}: unbalanced solution markers"
        if begins:
            m = re.match(r"# Exercise (\d+)\.(\d+): \S", text)
            assert m and int(m.group(1)) == number, f"cell {i}: must start with '# Exercise {number}.k: <task>'"
            assert text.index("### BEGIN SOLUTION") < text.index("### END SOLUTION")
            name = f"Exercise {m.group(1)}.{m.group(2)}"
            check = next((c2 for c2 in cs[i + 1:] if c2["cell_type"] == "code"), None)
            assert check is not None and f'check_answer("{name}"' in source(check), \
                f"{name} must be followed by a code cell that calls check_answer(\"{name}\", …)"
            exercises.append(name)
    assert len(exercises) >= 2 and len(set(exercises)) == len(exercises), exercises


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_identities_findings_and_bad_input_cells(path):
    cs = cells(path)
    code = [c for c in cs if c["cell_type"] == "code"]
    assert any("course.identity(" in source(c) or "course.finding(" in source(c) for c in code), "nothing checked in code"
    assert not any("course.claim(" in source(c) for c in code), "course.claim is gone: use course.identity or .finding"
    assert any(re.search(r"^\s*with shows_error\(\w+", source(c), re.M) for c in code), \
        "no bad-input cell: show a refusal with `with shows_error(ValueError): …` (the type it raises)"
    tagged = [i for i, c in enumerate(cs) if "raises-exception" in c.get("metadata", {}).get("tags", [])]
    assert not tagged, f"cells {tagged} rely on the raises-exception tag, which VS Code and Colab ignore: use shows_error"


# A number with a unit of outcome (%, dB), or FID / accuracy followed by a number: a measurement. Allowed only in
# a sentence that cites the paper (or another paper), or when it is one of the course's settings named in SETTINGS.
MEASURED = re.compile(r"\d(?:[\d.,]*\d)?\s*(?:%|dB\b)|\b(?:FID|accuracy)(?: of |=| = |≈| ≈ |: | )\d", re.I)
CITES = re.compile(r"\bpaper\b|\b(?:Sec|Tab|Fig|App|Eq)\.|\bTable\b|et al\.|\breference\b", re.I)
SETTINGS = re.compile(r"10\s*% (?:of|each|the)|probability 10\s*%|99\.9\s*%|\d+\s*% of (?:training|its steps|the steps)"
                      r"|(?:\d+\s*/\s*)+\d+\s*%")
LAB_REPORT = ("when this course was written", "could not check", "on the machine this course", "set below what",
              "strict pass", "we measured on", "in our run", "this course's run")


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_markdown_states_no_outcome_of_this_run(path):
    bad = []
    for i, c in enumerate(cells(path)):
        if c["cell_type"] != "markdown":
            continue
        text = " ".join(source(c).split())
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z*(])", text):
            if MEASURED.search(SETTINGS.sub("", sentence)) and not CITES.search(sentence):
                bad.append(f"cell {i}: {sentence[:140]}")
            bad += [f"cell {i}: lab report '{p}'" for p in LAB_REPORT if p in sentence.lower()]
    assert not bad, "markdown states a measured outcome (print it from code) or tells the course's history:\n" + \
        "\n".join(bad)


def test_the_markdown_check_catches_what_it_should():
    assert MEASURED.search("the model reaches 92.5 % of prompts") and MEASURED.search("PSNR 30.9 dB")
    assert MEASURED.search("an FID of 47") and not MEASURED.search("two sets of real images have FID > 0")
    assert MEASURED.search("FID = 51.0") and MEASURED.search("accuracy: 0.96")
    assert not MEASURED.search("f = 4, 8×8×4 latents, 50 DDIM steps")
    assert CITES.search("KL-f4 reaches 27.5 dB (the paper's Table 8)")
    assert not MEASURED.search(SETTINGS.sub("", "replaces 10 % of the captions by the empty caption"))


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_committed_without_stray_outputs(path):
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes"
    for i, c in enumerate(cells(path)):
        if c["cell_type"] != "code":
            continue
        checked = source(c).lstrip().startswith("# NBVAL_CHECK_OUTPUT")
        assert not any(o.get("output_type") == "error" for o in c.get("outputs", [])), f"cell {i}: error output"
        if checked:
            assert c["outputs"] and c["execution_count"] is not None, \
                f"cell {i}: a NBVAL_CHECK_OUTPUT cell needs its stored output and execution_count"
        else:
            assert not c["outputs"] and c["execution_count"] is None, f"cell {i}: stray output"
