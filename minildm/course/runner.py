"""Run the course's notebooks in order in one profile, time each, and collect its identities, findings and figures
(`minildm course --profile cpu --strict`), each in a fresh kernel with $MINILDM_PROFILE, $MINILDM_COURSE_DIR (later
notebooks find the models earlier ones trained) and $MINILDM_STRICT. The record, docs/course/<profile>.json with
the figures beside it, is the README's course table and the run time `setup()` prints."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import nbformat
import torch
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from ..autoencoder import build_autoencoder
from ..perceptual import lpips_weights_missing
from ..train.profiles import explain_profile, get_profile
from ..train.stages import train_autoencoder, train_ldm
from ..utils import CheckpointError, get_device
from . import pretrained
from .lesson import COURSE_DIR_ENV, NOTEBOOKS, REPO_ROOT, RESULTS_DIR, STRICT_ENV
from .results import load_json, write_json

__all__ = ["run_course", "speed_probe", "self_check"]


def run_course(profile: str, course_dir: str | os.PathLike, notebooks: list[str] | None = None, strict: bool = False,
               results_dir: str | os.PathLike | None = RESULTS_DIR, probe_seconds: float = 10.0,
               log=print) -> dict[str, Any]:
    """Execute the notebooks (default: all ten) in order; returns and (when results_dir) writes the record:
    {"profile", "strict", "notebooks": {name: {"minutes", "ok", "error", "identities", "findings", "figures"}},
    "total_minutes"}."""
    names = list(NOTEBOOKS) if not notebooks else [n for n in NOTEBOOKS if any(n.startswith(p) for p in notebooks)]
    if not names:
        raise ValueError(f"no course notebook matches {notebooks}; the notebooks are {', '.join(NOTEBOOKS)}")
    course_dir = Path(course_dir)
    course_dir.mkdir(parents=True, exist_ok=True)
    env = {"MINILDM_PROFILE": profile, COURSE_DIR_ENV: str(course_dir), STRICT_ENV: "1" if strict else "0"}
    record: dict[str, Any] = {"profile": profile, "strict": strict, "notebooks": {},
                              "speed": speed_probe(profile, probe_seconds),
                              "machine": f"{os.cpu_count()} CPUs, {get_device()}, torch {torch.__version__}"}
    ran = []
    with mock.patch.dict(os.environ, env):           # the kernels inherit it; put back as it was afterwards
        for name in names:
            path = REPO_ROOT / "notebooks" / f"{name}.ipynb"
            nb = nbformat.read(path, as_version=4)
            log(f"[{name}] running in the {profile} profile ...")
            t0, error = time.perf_counter(), None
            try:
                NotebookClient(nb, timeout=3600, kernel_name="python3",
                               resources={"metadata": {"path": str(path.parent)}}).execute()
            except CellExecutionError as e:
                error = str(e).strip().splitlines()[-1][:500]
            minutes = (time.perf_counter() - t0) / 60
            saved = (load_json(course_dir / "results.json") or {}).get(name, {})
            identities, findings = saved.get("identities", {}), saved.get("findings", {})
            record["notebooks"][name] = {"minutes": round(minutes, 2), "ok": error is None, "error": error,
                                         "identities": identities, "findings": findings,
                                         "figures": sorted(p.name for p in (course_dir / "figures").glob(f"{name}_*.png"))}
            failed = [c for c, v in {**identities, **findings}.items() if not v["ok"]]
            log(f"[{name}] {minutes:.1f} min, {len(identities)} identities, "
                f"{sum(v['ok'] for v in findings.values())}/{len(findings)} findings hold"
                + (f"; failed: {', '.join(failed)}" if failed else "") + (f"; ERROR: {error}" if error else ""))
            ran.append(name)
            if error and strict:
                break
    out = None if results_dir is None else Path(results_dir)
    earlier = {} if out is None else load_json(out / f"{profile}.json") or {}
    if notebooks and earlier.get("profile") == profile:    # a partial run (--notebooks) updates its notebooks only
        merged = {**earlier.get("notebooks", {}), **record["notebooks"]}
        record["notebooks"] = {n: merged[n] for n in NOTEBOOKS if n in merged}
        record["strict"] = strict and earlier.get("strict", False)
        record["speed"] = earlier.get("speed", record["speed"])   # the full run's machine speed stays the reference
    record["total_minutes"] = round(sum(n["minutes"] for n in record["notebooks"].values()), 2)
    if out is not None:
        (out / profile).mkdir(parents=True, exist_ok=True)
        for name in ran:                   # the figures of the notebooks run now (earlier ones are already there)
            for fig in record["notebooks"][name]["figures"]:
                shutil.copy2(course_dir / "figures" / fig, out / profile / fig)
        write_json(record, out / f"{profile}.json", sort_keys=True)
    return record


def speed_probe(profile: str, seconds: float = 10.0) -> dict[str, float]:
    """Training steps per second of this machine for the profile's autoencoder and LDM (random weights, a few
    seconds each): what `minildm check` compares with the machine that recorded the course's run times."""
    p = get_profile(profile)
    device = get_device()

    class Enough(Exception):
        pass

    def rate(train, *args, **kwargs) -> float:        # steps/s after the first (warm-up) step
        ends = []

        def tick(step, record, run):
            ends.append(time.perf_counter())
            if ends[-1] - ends[0] >= seconds / 2:
                raise Enough

        with tempfile.TemporaryDirectory() as d, contextlib.suppress(Enough):
            train(*args, d, device=device, steps=10**9, progress=False, callback=tick, **kwargs)
        return (len(ends) - 1) / (ends[-1] - ends[0])

    return {"autoencoder_steps_per_s": rate(train_autoencoder, p, random_lpips=True, lpips_download=False),
            "ldm_steps_per_s": rate(train_ldm, p.replace(ldm_train={"cache_size": 256}), build_autoencoder(p.ae))}


def self_check(profile: str | None = None, seconds: float = 10.0, log=print) -> dict[str, Any]:
    """What a teaching assistant runs on a lab machine before the lab: device, profile, LPIPS weights, shipped
    checkpoints, widgets, and the expected run time of each notebook on THIS machine (the recorded run time
    scaled by the measured speed of this machine against the recording machine's)."""
    p = get_profile(profile)
    report: dict[str, Any] = {"profile": p.name, "device": str(get_device()), "torch": torch.__version__,
                              "threads": torch.get_num_threads()}
    report["profile_status"], report["profile_choice"] = p.status, explain_profile(profile)
    log(f"device {report['device']}, torch {report['torch']}, {report['threads']} threads")
    log(report["profile_choice"])
    missing = lpips_weights_missing(p.ae_loss.lpips_net, download=False)
    report["lpips"] = "pretrained" if missing is None else f"random backbone ({missing})"
    log(f"LPIPS: {report['lpips']}")
    try:
        ok = pretrained.load_autoencoder(p.name) is not None
        report["shipped"] = "verified" if ok else "none for this profile"
    except CheckpointError as e:
        report["shipped"] = f"DAMAGED: {e}"
    log(f"shipped checkpoints ({pretrained.DIR / p.name}): {report['shipped']}")
    try:
        import ipywidgets  # noqa: F401  (only the import is checked)
        report["widgets"] = f"ipywidgets {ipywidgets.__version__}"
    except ImportError as e:
        report["widgets"] = f"missing ({e})"
    log(f"widgets: {report['widgets']}")
    recorded = load_json(RESULTS_DIR / f"{p.name}.json") or {}
    speed = speed_probe(p.name, seconds)
    report["speed"] = speed
    log("speed here: " + ", ".join(f"{k} {v:.2f}" for k, v in speed.items()))
    ref = recorded.get("speed")
    if not ref:
        log(f"no recorded course run for the {p.name} profile: run `minildm course --profile {p.name}` once")
        return report
    factor = ref["ldm_steps_per_s"] / speed["ldm_steps_per_s"]
    report["expected_minutes"] = {n: round(r["minutes"] * factor, 1) for n, r in recorded["notebooks"].items()}
    log(f"expected run times here (recorded × {factor:.2f}, this machine against the recording one):")
    for name, minutes in report["expected_minutes"].items():
        log(f"  {name:30s} {minutes:6.1f} min")
    log(f"  {'total':30s} {sum(report['expected_minutes'].values()):6.1f} min")
    return report
