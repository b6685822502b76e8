"""The docs quote numbers from records; these tests hold them to the records. Course times come from
docs/course/cpu.json (written by `minildm course --profile cpu --strict`), the shipped models' metrics from
data/pretrained/manifest.json, the version from pyproject.toml. Plain text parsing: no torch, well under a second."""

import json
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
# pages written from the records, held to the house style (no commit hashes or issue numbers)
STYLED = [README, *(p for p in DOCS if p.name != "instructor-guide.md"), ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md"]
COURSE = json.loads((ROOT / "docs" / "course" / "cpu.json").read_text())
MANIFEST = json.loads((ROOT / "data" / "pretrained" / "manifest.json").read_text())
MINUTES = {name[:2]: nb["minutes"] for name, nb in COURSE["notebooks"].items()}
TOTAL = COURSE["total_minutes"]
N_IDENTITIES = sum(len(nb.get("identities", {})) for nb in COURSE["notebooks"].values())
N_FINDINGS = sum(len(nb.get("findings", {})) for nb in COURSE["notebooks"].values())


def rounds_to(quoted: str, value: float) -> bool:
    """Does `quoted` ("28.7", "13.0", "0.17", "93.3") equal `value` rounded half-up to as many decimals?"""
    places = Decimal(quoted).as_tuple().exponent
    return Decimal(quoted) == Decimal(repr(value)).quantize(Decimal(1).scaleb(places), rounding=ROUND_HALF_UP)


def tables(text: str):
    """Markdown tables as (header cells, [row cells]), cells stripped."""
    out, block = [], []
    for line in text.splitlines() + [""]:
        if line.lstrip().startswith("|"):
            block.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))])
        else:
            if len(block) > 2 and set("".join(block[1])) <= set("-: "):
                out.append((block[0], block[2:]))
            block = []
    return out


def sentences(text: str, at: str = ".;:"):
    """Sentences, roughly: paragraphs (tables and code left out) split after the characters `at` (then a space and a
    capital, a digit or markup)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    paragraphs = re.split(r"\n\s*\n", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("|")))
    for p in paragraphs:
        yield from (s for s in re.split(rf"(?<=[{at}])\s+(?=[A-Z*(`0-9])", " ".join(p.split())) if s)


def number(cell: str) -> str | None:
    m = re.search(r"\d+(?:\.\d+)?", cell.replace(",", ""))
    return m.group(0) if m else None


# --- course times ---------------------------------------------------------------------------------------------

def course_time_rows():
    """(page, notebook, quoted minutes) for every table row that names a notebook (00–10) in its first cell and
    has a `cpu` minutes / compute (min) column."""
    for page in PAGES:
        for header, rows in tables(page.read_text()):
            cols = [i for i, h in enumerate(header) if re.search(r"(cpu`?|compute).*min|min.*cpu", h, re.I)]
            for row in rows:
                if cols and re.fullmatch(r"\d\d", row[0]) and len(row) > cols[0]:
                    yield page.name, row[0], number(row[cols[0]])


def test_the_course_tables_quote_the_recorded_minutes():
    rows = list(course_time_rows())
    readme = {nb for page, nb, _ in rows if page == "README.md"}
    assert readme == set(MINUTES), f"README's course table must have one row per notebook, has {sorted(readme)}"
    wrong = [(page, nb, q, MINUTES[nb]) for page, nb, q in rows if q is None or not rounds_to(q, MINUTES[nb])]
    assert not wrong, f"course minutes that disagree with docs/course/cpu.json (page, notebook, quoted, recorded): {wrong}"


def test_inline_notebook_times_quote_the_record():
    """'05 13.0 min', '00 0.2 min, 01 3.4, …' in prose (an inline list in one sentence)."""
    wrong = []
    for page in PAGES:
        for s in sentences(page.read_text()):
            if not re.search(r"\b0\d\s+\**\d+(?:\.\d+)?\**\s*min\b", s) or re.search(r"gpu|GPU", s):
                continue
            for nb, q in re.findall(r"(?<![\d.:–-])\b(0\d)\s+\**(\d+\.\d+)\**(?=\s*min\b|,|;|\s*\()", s):
                if not rounds_to(q, MINUTES[nb]):
                    wrong.append((page.name, nb, q, MINUTES[nb]))
    assert not wrong, f"inline notebook times that disagree with docs/course/cpu.json: {wrong}"


COURSE_TOTAL = re.compile(r"whole (?:course|sequence)|course (?:takes|took)|all (?:ten|eleven) notebooks|the course\W{1,3}s\b|"
                          r"^(?=.*\b(?:course|notebooks?)\b).*\bin all\b", re.I)


def test_the_whole_course_time_is_the_recorded_total():
    """A sentence about the whole course's time quotes docs/course/cpu.json's total (history of an earlier record
    and the gpu prediction say so and are exempt)."""
    wrong = []
    for page in PAGES:
        for s in sentences(page.read_text(), at="."):
            if not COURSE_TOTAL.search(s) or re.search(r"gpu|H100|earlier record|predict|per notebook|student|\b0\d\s*[–-]\s*0\d\b", s, re.I):
                continue
            for q in re.findall(r"\**(\d+(?:\.\d+)?)\**\s*min(?:utes)?\b", s):
                if not (rounds_to(q, TOTAL) or any(rounds_to(q, m) for m in MINUTES.values())) and float(q) > 15:
                    wrong.append((page.name, q, s[:120]))
    assert not wrong, f"course totals other than docs/course/cpu.json's {TOTAL} min: {wrong}"


def test_the_counts_of_identities_and_findings_are_the_recorded_ones():
    held = [f["ok"] for nb in COURSE["notebooks"].values() for f in nb.get("findings", {}).values()]
    for page in PAGES:
        for s in sentences(page.read_text()):
            for m in re.finditer(r"\b(\d+) (identities|findings)\b", s):
                recorded = N_IDENTITIES if m.group(2) == "identities" else N_FINDINGS
                assert int(m.group(1)) == recorded, f"{page.name}: '{s[:100]}': the record has {recorded} {m.group(2)}"
            if re.search(r"\bevery finding held|all \d+ findings held", s):
                assert all(held), f"{page.name}: '{s[:100]}', but the record has findings that did not hold"


# --- the shipped models ---------------------------------------------------------------------------------------

FILES = MANIFEST["files"]
TEXT = FILES["cpu/ldm-text.safetensors"]["metrics"]
# README's results-at-a-glance rows (first cell starts with the key) -> (numbers in the value cell, as scaled
# manifest values; the minutes in the first cell)
GLANCE = {
    "autoencoder": ([FILES["cpu/autoencoder.safetensors"]["metrics"]["val_psnr_db"]],
                    FILES["cpu/autoencoder.safetensors"]["minutes"]),
    "text LDM (": ([100 * TEXT["one_object_accuracy"], 100 * TEXT["two_object_accuracy"]],
                   FILES["cpu/ldm-text.safetensors"]["minutes"]),
    "text LDM, the demo's sampler": ([100 * TEXT["demo_sampler"]["one_object_accuracy"],
                                      100 * TEXT["demo_sampler"]["two_object_accuracy"]], None),
    "text LDM, η = 0": ([TEXT["shapes_fid_unpaired"], TEXT["fid_floor"]], None),
    "class LDM": ([100 * FILES["cpu/ldm-class.safetensors"]["metrics"]["accuracy"]],
                  FILES["cpu/ldm-class.safetensors"]["minutes"]),
    "layout LDM": ([100 * FILES["cpu/ldm-layout.safetensors"]["metrics"]["accuracy"]],
                   FILES["cpu/ldm-layout.safetensors"]["minutes"]),
    "super-resolution": ([FILES["cpu/ldm-sr.safetensors"]["metrics"]["psnr"],
                          FILES["cpu/ldm-sr.safetensors"]["metrics"]["psnr_bicubic"]],
                         FILES["cpu/ldm-sr.safetensors"]["minutes"]),
}


def glance_table():
    for header, rows in tables(README.read_text()):
        if header[0].startswith("shipped model"):
            return rows
    pytest.fail("README has no results-at-a-glance table (first header cell 'shipped model …')")


def test_results_at_a_glance_are_the_manifests_numbers():
    rows = glance_table()
    for key, (values, minutes) in GLANCE.items():
        row = next((r for r in rows if r[0].startswith(key)), None)
        assert row is not None, f"README's results table lacks the row {key!r}"
        quoted = re.findall(r"\d+(?:\.\d+)?", row[-1].replace("n = 200", ""))
        assert len(quoted) == len(values), f"{key!r}: expected {len(values)} numbers in {row[-1]!r}"
        for q, v in zip(quoted, values):
            assert rounds_to(q, round(v, 6)), f"{key!r}: README says {q}, the manifest {v}"
        if minutes is not None:
            m = re.search(r"\((\d+(?:\.\d+)?) min\)", row[0])
            assert m and rounds_to(m.group(1), minutes), f"{key!r}: training minutes {row[0]!r}, manifest {minutes}"


def test_the_hero_caption_states_the_manifests_training_minutes():
    text = README.read_text()
    ae = FILES["cpu/autoencoder.safetensors"]["minutes"]
    ldm = FILES["cpu/ldm-text.safetensors"]["minutes"]
    assert f"autoencoder {ae} min" in text and f"latent diffusion model {ldm} min" in text
    assert f"{ae + ldm:.1f} minutes in all" in text


# --- consistency of the prose -----------------------------------------------------------------------------------

WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}


def test_the_number_of_demo_clones_quoted_is_the_tables():
    results = (ROOT / "docs" / "results.md").read_text()
    clones = [r for h, rows in tables(results) if h[0] == "clone" for r in rows]
    assert clones, "docs/results.md lacks the fresh-clone table"
    for page in PAGES:
        for word in re.findall(r"\b(\w+) (?:measured |fresh[- ]clone |demo )?(?:demo )?clones\b", page.read_text()):
            n = WORDS.get(word.lower(), int(word) if word.isdigit() else None)
            assert n in (None, len(clones)), f"{page.name} speaks of {word} demo clones; the table has {len(clones)}"


def test_no_doc_says_the_demo_has_a_time_cap_now():
    past = re.compile(r"\d{4}-\d\d-\d\d|used to|until|earlier|then|no (?:time )?cap|no longer|opt-in|hard limit|before|had|"
                      r"was|were|--ldm-minutes|--ae-minutes|max_minutes", re.I)
    wrong = [(p.name, s[:120]) for p in PAGES for s in sentences(p.read_text())
             if re.search(r"\bdemo", s) and re.search(r"\bcaps?\b|under 15 minutes", s) and not past.search(s)]
    assert not wrong, f"sentences that speak of a demo time cap as if it existed: {wrong}"


def test_every_table_below_exists_and_bf16_speed_claims_have_a_row():
    for page in PAGES:
        text = page.read_text()
        for m in re.finditer(r"table below", text):
            assert re.search(r"^\|[-: |]+\|$", text[m.end():], re.M), f"{page.name}: 'table below' with no table after it"
        for s in sentences(text):
            if "bf16" in s and re.search(r"slower|faster", s) and "table" in s:
                assert any("bf16" in r[0] and re.search(r"\d\.\d", " ".join(r[1:])) for _, rows in tables(text)
                           for r in rows), \
                    f"{page.name}: {s[:100]!r} points at a table without a bf16 row"


def test_the_two_f_studies_say_why_their_numbers_differ():
    """results.md's f-study (equal time, paired FID) and notebook 09's (equal steps, unpaired) disagree in size;
    the page that quotes the first must say why."""
    for page in PAGES:
        text = page.read_text()
        if "paired floor 48.1" in text or "paired floor of the same n, 48.1" in text:
            paragraphs = re.split(r"\n\s*\n", text)
            assert any("notebook 09" in p.lower() and "equal training *steps*" in p and "unpaired" in p
                       and "*paired*" in p for p in paragraphs), \
                f"{page.name} quotes the paired f-study without saying why notebook 09's numbers differ"


# --- the front door -----------------------------------------------------------------------------------------------

def test_readme_is_short_and_has_at_most_four_figures():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert len(re.findall(r"!\[", text)) <= 4
    assert "make demo" in text and "make test" in text


@pytest.mark.parametrize("page", STYLED, ids=lambda p: p.name)
def test_no_commit_hashes_or_issue_numbers(page):
    text = re.sub(r"`[^`]*`", "", page.read_text())          # code (sha256 examples, commands) is exempt
    text = re.sub(r"\([^)]*\.(?:png|md|json|ipynb)[^)]*\)", "", text)     # link targets
    hashes = [h for h in re.findall(r"\b[0-9a-f]{7,40}\b", text) if re.search(r"[a-f]", h) and re.search(r"\d", h)]
    assert not hashes, f"{page.name}: commit hashes {hashes}: say the date instead"
    assert not re.search(r"\bissues? #?\d+", text, re.I), f"{page.name}: issue numbers; say what changed instead"
    if page == README:
        assert not re.search(r"this round|slower day|faster day", text), "lab-log wording in the README"


def test_license_citation_and_changelog_carry_the_version():
    assert (ROOT / "LICENSE").is_file() and "MIT" in (ROOT / "LICENSE").read_text()
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    cff = (ROOT / "CITATION.cff").read_text()
    assert re.search(rf"^version: \"?{re.escape(version)}\"?$", cff, re.M), "CITATION.cff's version is not pyproject's"
    top = re.search(r"^## \[?(\d+\.\d+\.\d+)", (ROOT / "CHANGELOG.md").read_text(), re.M).group(1)
    assert top == version, f"CHANGELOG's top entry is {top}, pyproject says {version}"
    init = re.search(r'^__version__ = "([^"]+)"', (ROOT / "minildm" / "__init__.py").read_text(), re.M).group(1)
    assert init == version
    assert 'readme = "README.md"' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize("page", [*PAGES, ROOT / "CONTRIBUTING.md"], ids=lambda p: p.name)
def test_relative_links_and_images_exist(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists():
            missing.append(target)
    assert not missing, f"{page.name} links to missing files: {missing}"


ANSWERS = "## Answers to the “Check your understanding” questions"


def _questions(notebook: Path) -> list[int]:
    """The numbers of the questions under a notebook's "## Check your understanding" heading."""
    for cell in json.loads(notebook.read_text())["cells"]:
        text = "".join(cell["source"])
        if "## Check your understanding" in text:
            part = text.split("## Check your understanding", 1)[1].split("\n## ", 1)[0]
            return [int(n) for n in re.findall(r"^(\d+)\. ", part, re.M)]
    return []


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_the_guide_answers_every_question_of_every_notebook(notebook):
    """Each notebook's questions, numbered 1 … n, have answers 1 … n under the notebook's heading in the
    instructor's guide, each with its question in bold and some words after it."""
    asked = _questions(notebook)
    assert asked and asked == list(range(1, len(asked) + 1)), f"{notebook.name}: questions {asked}"
    guide = (ROOT / "docs" / "instructor-guide.md").read_text()
    assert ANSWERS in guide, "the instructor's guide has no answers section"
    answers = guide.split(ANSWERS, 1)[1].split("\n## ", 1)[0]
    section = re.search(rf"^### {notebook.name[:2]} · .*?(?=^### |\Z)", answers, re.M | re.S)
    assert section, f"no answers for {notebook.name[:2]} in the guide"
    given = re.findall(r"^(\d+)\. \*\*(.+?)\*\* (\S.{40,})", section.group(0), re.M)
    assert [int(n) for n, _, _ in given] == asked, f"{notebook.name[:2]}: answers {[n for n, _, _ in given]}, questions {asked}"


# --- a student's time per notebook ----------------------------------------------------------------------------

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXERCISE_HEADING = re.compile(r"^### Exercise (\d+\.\d+)(.*)$", re.M)


def _student_time(notebook: Path) -> tuple[int, int, int, int]:
    """(markdown words, reading minutes, core exercises, self-study minutes) by the guide's rule: reading at 150
    words a minute, 5 minutes per exercise not marked optional, compute from docs/course/cpu.json."""
    markdown = ["".join(c["source"]) for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "markdown"]
    words = sum(len(s.split()) for s in markdown)
    core = sum(1 for s in markdown for _, rest in EXERCISE_HEADING.findall(s) if "(optional)" not in rest)
    half_up = lambda x: int(Decimal(repr(x)).quantize(Decimal(1), rounding=ROUND_HALF_UP))   # noqa: E731
    return words, half_up(words / 150), core, half_up(words / 150 + 5 * core + MINUTES[notebook.name[:2]])


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_header_states_the_students_time_by_the_guides_rule(notebook):
    words, reading, core, total = _student_time(notebook)
    header = "".join(json.loads(notebook.read_text())["cells"][1]["source"])
    m = re.search(r"\*\*Your time:\*\* about (\d+) minutes on your own: reading ≈ (\d+) min \(([\d,]+) words at about "
                  r"150 a minute\), (\d+) exercises? ≈ (\d+) min, compute ≈ ([\d.]+) min \(cpu profile\)", header)
    assert m, f"{notebook.name}: the header's '## Run time' has no '**Your time:** about N minutes …' sentence"
    quoted = (int(m.group(1)), int(m.group(2)), int(m.group(3).replace(",", "")), int(m.group(4)), int(m.group(5)))
    assert quoted == (total, reading, words, core, 5 * core), \
        f"{notebook.name}: quoted (total, reading, words, exercises, their minutes) {quoted}, computed " \
        f"{(total, reading, words, core, 5 * core)}: run the time update after editing the notebook"
    assert rounds_to(m.group(6), MINUTES[notebook.name[:2]])
    assert words <= 1_650, f"{notebook.name}: {words} words of prose; one sitting is at most about 1,600"


def test_the_guides_time_table_is_the_notebooks():
    guide = (ROOT / "docs" / "instructor-guide.md").read_text()
    table = next(rows for header, rows in tables(guide) if "self-study" in header)
    for notebook in NOTEBOOKS:
        words, reading, core, total = _student_time(notebook)
        row = next(r for r in table if r[0] == notebook.name[:2])
        assert (int(row[2].replace(",", "")), int(row[3]), len(re.findall(r"\d+\.\d+", row[4])), number(row[7])) == \
            (words, reading, core, str(total)), f"the guide's row for {notebook.name[:2]}: {row}"


# --- samplers against model evaluations -------------------------------------------------------------------------

NFE_RECORD = ROOT / "docs" / "experiments" / "cpu" / "results.json"


def test_the_samplers_against_nfe_table_is_the_records():
    """results.md's table of samplers against model evaluations quotes docs/experiments/cpu/results.json (written by
    `minildm experiments ode-samplers --profile cpu --out docs/experiments/cpu`): one line per recorded row, in its
    order, with its steps, NFE, prompt accuracy and Wilson interval, FID and bootstrap s.d., the floor in the header."""
    record = json.loads(NFE_RECORD.read_text())["experiments"]["ode-samplers"]
    rows = record["rows"]
    found = [(h, r) for h, r in tables((ROOT / "docs" / "results.md").read_text()) if h[:3] == ["sampler", "steps", "NFE"]]
    assert len(found) == 1, "docs/results.md needs one table headed | sampler | steps | NFE | …"
    header, table = found[0]
    floor, n = re.search(r"floor (\d+\.\d+), n = (\d+)", " ".join(header)).groups()
    assert rounds_to(floor, rows[0]["fid_floor"]) and int(n) == rows[0]["samples"]
    assert len(table) == len(rows)
    for cells, r in zip(table, rows):
        assert (cells[0], int(cells[1]), int(cells[2])) == (r["label"], r["steps"], r["nfe"]), cells
        acc, low, high = re.findall(r"\d+\.\d+", cells[3])
        for q, v in ((acc, r["accuracy"]), (low, r["accuracy_low"]), (high, r["accuracy_high"])):
            assert rounds_to(q, 100 * v), f"{cells[:3]}: {q} is not {100 * v}"
        fid, spread = re.findall(r"\d+\.\d+", cells[4])
        assert rounds_to(fid, r["fid"]) and rounds_to(spread, r["fid_spread"]), cells
