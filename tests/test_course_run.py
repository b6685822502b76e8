"""`minildm course` (run the notebooks in order, time them, collect identities, findings and figures) and `minildm check`
(the expected run time of each notebook on this machine)."""

import json

import pytest

from minildm.course import runner as course_run
from minildm.course.lesson import NOTEBOOKS
from minildm.tools.cli import main

pytestmark = pytest.mark.slow      # trains, runs notebooks or several processes


def test_run_course_times_one_notebook_and_a_partial_run_keeps_the_others(tmp_path):
    results = tmp_path / "results"
    record = course_run.run_course("ci", tmp_path / "course", ["00"], results_dir=results, probe_seconds=0.2,
                                   log=lambda *a: None)
    entry = record["notebooks"]["00_setup_and_shapes"]
    assert list(record["notebooks"]) == ["00_setup_and_shapes"] and entry["ok"] and entry["error"] is None
    assert entry["identities"] and entry["findings"] == {} and entry["figures"] and 0 < entry["minutes"] < 5
    assert all((results / "ci" / f).is_file() for f in entry["figures"])          # figures copied beside the json
    assert set(record["speed"]) == {"autoencoder_steps_per_s", "ldm_steps_per_s"}
    saved = json.loads((results / "ci.json").read_text())
    saved["notebooks"]["01_perceptual_compression"] = {"minutes": 7.0, "ok": True, "error": None, "identities": {},
                                                       "findings": {}, "figures": ["01_perceptual_compression_a.png"]}
    (results / "ci.json").write_text(json.dumps(saved))
    again = course_run.run_course("ci", tmp_path / "course", ["00"], results_dir=results, probe_seconds=0.2,
                                  log=lambda *a: None)
    # course order; 01's figure, recorded by an earlier run in another course folder, is not copied again
    assert list(again["notebooks"]) == ["00_setup_and_shapes", "01_perceptual_compression"]
    assert again["total_minutes"] == pytest.approx(again["notebooks"]["00_setup_and_shapes"]["minutes"] + 7.0, abs=0.011)
    with pytest.raises(ValueError, match="no course notebook matches"):
        course_run.run_course("ci", tmp_path / "course", ["42"], results_dir=None)


def test_self_check_scales_the_recorded_times_by_this_machines_speed(tmp_path, monkeypatch, capsys):
    recorded = {"profile": "ci", "speed": {"autoencoder_steps_per_s": 10.0, "ldm_steps_per_s": 6.0},
                "notebooks": {NOTEBOOKS[0]: {"minutes": 1.0}, NOTEBOOKS[5]: {"minutes": 12.0}}}
    (tmp_path / "ci.json").write_text(json.dumps(recorded))
    monkeypatch.setattr(course_run, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(course_run, "speed_probe", lambda profile, seconds=10.0: {"autoencoder_steps_per_s": 5.0,
                                                                                   "ldm_steps_per_s": 2.0})
    report = course_run.self_check("ci", seconds=0.1, log=lambda *a: None)
    assert report["expected_minutes"] == {NOTEBOOKS[0]: 3.0, NOTEBOOKS[5]: 36.0}   # this machine is 3× slower
    assert report["profile"] == "ci" and report["lpips"] and report["shipped"] == "none for this profile"
    assert main(["check", "--profile", "ci", "--seconds", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "expected run times here (recorded × 3.00" in out and "36.0 min" in out
    (tmp_path / "ci.json").unlink()
    assert "expected_minutes" not in course_run.self_check("ci", seconds=0.1, log=lambda *a: None)
