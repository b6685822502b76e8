"""Results as tables: markdown for the README and the notebooks (results_table), JSON for the record
(load_json, write_json), and the experiments' results.json / results.md (write_results)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

__all__ = ["results_table", "load_json", "write_json", "experiment_markdown", "write_results", "f_study_summary",
           "f_study_verdict", "COLUMNS", "EXPERIMENTS", "Row"]

Row = dict[str, Any]
EXPERIMENTS = ("f-study", "sampler", "guidance", "rate-distortion", "ode-samplers")


def load_json(path: Path) -> Any:
    """The JSON at `path`, or None when there is no file."""
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(obj: Any, path: Path, sort_keys: bool = False) -> None:
    """Write JSON atomically (temporary file, then rename); sort_keys for files kept in git, so that a rewrite
    shows only what changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=sort_keys, default=str) + "\n")
    tmp.replace(path)


def _cell(value: Any, fmt: str | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if fmt and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(round(value))) if fmt == "d" else format(value, fmt)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def results_table(rows: Sequence[Row], columns: Sequence[str | tuple[str, str] | tuple[str, str, str]] | None = None
                  ) -> str:
    """Markdown table of rows; columns are keys or (key, header[, format spec]) tuples (default: every key of
    the first row). Missing values print as —; a column that no row has is an error (a typo)."""
    rows = list(rows)
    if columns is None:
        columns = list(rows[0]) if rows else []
    spec = [(c, c, None) if isinstance(c, str) else (c[0], c[1], c[2] if len(c) > 2 else None) for c in columns]
    known = set().union(*(r.keys() for r in rows)) if rows else set()
    unknown = [k for k, _, _ in spec if rows and k not in known]
    if unknown:
        raise ValueError(f"results_table: no row has the column(s) {unknown}; available: {sorted(known)}")
    lines = ["| " + " | ".join(h for _, h, _ in spec) + " |", "|" + "---|" * len(spec)]
    lines += ["| " + " | ".join(_cell(r.get(k), fmt) for k, _, fmt in spec) + " |" for r in rows]
    return "\n".join(lines)


def f_study_summary(rows: Sequence[Row]) -> list[Row]:
    """The last segment of each f: the f-study's comparison at equal budget."""
    last: dict[int, Row] = {}
    for r in rows:
        if r["f"] not in last or r["segment"] > last[r["f"]]["segment"]:
            last[r["f"]] = r
    return [last[f] for f in sorted(last)]


def _f4_vs_pixels(a: Row, p: Row) -> tuple[float, float, str]:
    """FID(f = 1) − FID(f = 4), its noise (2 bootstrap s.d. of the difference) and what it says."""
    gap, noise = p["fid"] - a["fid"], 2 * (a.get("fid_spread", 0.0) ** 2 + p.get("fid_spread", 0.0) ** 2) ** 0.5
    return gap, noise, ("is ahead of" if gap > noise else "is behind" if gap < -noise else "is within the noise of")


def f_study_verdict(rows: Sequence[Row]) -> str:
    """Which f reached the lowest Shapes-FID at the end of the budget, and how f = 4 compares with pixel space
    (with the FIDs' bootstrap spreads and the steps and minutes each took); at equal steps also at every
    evaluation before the last, since the paper's Fig. 6 is a claim about the whole course of training."""
    final = f_study_summary(rows)
    if not final:
        return "no f-study rows"
    best = min(final, key=lambda r: r["fid"])
    by_f = {r["f"]: r for r in final}
    budget = (f"{best['steps']:,} training steps each" if best.get("equal") == "steps" else
              f"{best['minutes']:.2f} min of LDM training each")
    text = (f"At the end of the equal budget ({budget}), the lowest Shapes-FID is f = {best['f']}'s: "
            f"{best['fid']:.1f} (unpaired real-vs-real floor {best['fid_floor']:.1f} at n = {best['samples']}).")
    if 1 in by_f and 4 in by_f:
        a, p = by_f[4], by_f[1]
        gap, noise, verdict = _f4_vs_pixels(a, p)
        text += (f" f = 4 {verdict} pixel space: FID {a['fid']:.1f} vs {p['fid']:.1f} (difference {gap:+.1f}, "
                 f"noise ± {noise:.1f}), after {a['steps']:,} vs {p['steps']:,} training steps that took "
                 f"{a['minutes']:.2f} vs {p['minutes']:.2f} min ({a['train_steps_per_s']:.2f} vs "
                 f"{p['train_steps_per_s']:.2f} steps/s).")
        pairs = [(r, q) for r in rows for q in rows if r["f"] == 4 and q["f"] == 1 and r["segment"] == q["segment"]
                 and r["steps"] == q["steps"] and r["segment"] < a["segment"]]
        earlier = []
        for r, q in sorted(pairs, key=lambda pq: pq[0]["segment"]):
            gap, noise, verdict = _f4_vs_pixels(r, q)
            earlier.append(f"{r['steps']:,} steps: f = 4 {verdict} pixel space ({gap:+.1f} ± {noise:.1f})")
        if best.get("equal") == "steps" and earlier:
            text += " Earlier, at equal steps: " + "; ".join(earlier) + "."
    return text


# (key, header, format) of the columns each experiment shows by default, and groups of them that several show
_FID = [("fid", "Shapes-FID", ".1f"), ("fid_floor", "floor (unpaired)", ".1f")]
_PRECISION_RECALL = [("precision", "precision", ".3f"), ("recall", "recall", ".3f")]
_LATENT = [("f", "f", "d"), ("latent_size", "h = w", "d"), ("latent_channels", "c", "d"), ("rate", "rate", ".4f")]
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "f-study": [("f", "f", "d"), ("segment", "segment", "d"), ("minutes", "LDM minutes", ".2f"),
                ("steps", "steps", "d"), *_FID, *_PRECISION_RECALL,
                ("one_object_accuracy", "1-object acc.", ".1%"), ("two_object_accuracy", "2-object acc.", ".1%")],
    "f-study-summary": [*_LATENT, ("ae_steps", "AE steps", "d"), ("ae_psnr", "AE val PSNR", ".1f"),
                        ("steps", "LDM steps", "d"), ("train_steps_per_s", "train steps/s", ".2f"),
                        ("minutes", "LDM minutes", ".2f"), ("ddim_images_per_s", "DDIM img/s", ".2f"),
                        ("fid", "Shapes-FID", ".1f"), ("fid_spread", "± (bootstrap s.d.)", ".1f"),
                        ("fid_floor", "floor (unpaired)", ".1f"), ("one_object_accuracy", "1-object acc.", ".1%")],
    "sampler": [("steps", "DDIM steps", "d"), ("eta", "η", ".1f"), *_FID, *_PRECISION_RECALL,
                ("accuracy", "prompt acc.", ".1%"), ("sample_images_per_s", "img/s", ".1f")],
    "guidance": [("guidance_scale", "s", ".1f"), *_FID, *_PRECISION_RECALL, ("accuracy", "prompt acc.", ".1%"),
                 ("one_object_accuracy", "1-object", ".1%"), ("two_object_accuracy", "2-object", ".1%")],
    "rate-distortion": [*_LATENT, ("psnr", "PSNR (dB)", ".2f"), ("ssim", "SSIM", ".4f"), ("lpips", "LPIPS", ".4f"),
                        ("rfid", "rFID (paired: perfect = 0)", ".2f")],
    "ode-samplers": [("label", "sampler", None), ("steps", "steps", "d"), ("nfe", "NFE (model calls)", "d"),
                     ("accuracy", "prompt acc.", ".1%"), ("accuracy_low", "95 % low", ".1%"),
                     ("accuracy_high", "95 % high", ".1%"), ("fid", "Shapes-FID", ".1f"),
                     ("fid_spread", "± (bootstrap s.d.)", ".1f"), ("fid_floor", "floor (unpaired)", ".1f"),
                     ("sample_images_per_s", "img/s", ".1f")],
}


def experiment_markdown(name: str, rows: Sequence[Row]) -> str:
    """The results.md section of one experiment: its table(s), and for the f-study the verdict."""
    titles = {"f-study": "(a) Downsampling factor f at an equal training budget (steps or time)",
              "sampler": "(b) DDIM steps × η", "guidance": "(c) Classifier-free guidance scale",
              "rate-distortion": "(d) Autoencoder rate–distortion",
              "ode-samplers": "(e) Samplers against model evaluations (NFE): DDIM, DPM-Solver++(2M), Heun"}
    parts = [f"## {titles[name]}", "", results_table(rows, COLUMNS[name])]
    if name == "f-study" and rows:
        parts += ["", "At the end of the budget:", "", results_table(f_study_summary(rows), COLUMNS["f-study-summary"]),
                  "", f_study_verdict(rows)]
    return "\n".join(parts) + "\n"


def write_results(out_dir: str | Path, name: str, rows: Sequence[Row], meta: dict[str, Any]) -> tuple[Path, Path]:
    """Merge one experiment's rows into out_dir/results.json and rewrite out_dir/results.md from all of them."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of {', '.join(EXPERIMENTS)}")
    out_dir = Path(out_dir)
    path_json, path_md = out_dir / "results.json", out_dir / "results.md"
    results = load_json(path_json) or {"experiments": {}}
    results["experiments"][name] = {"rows": list(rows), **meta}
    write_json(results, path_json)
    md = ["# minildm experiments", ""]
    for exp in EXPERIMENTS:
        if exp in results["experiments"]:
            e = results["experiments"][exp]
            conditions = ", ".join(f"{k} {v}" for k, v in e.items() if k != "rows")
            md += [experiment_markdown(exp, e["rows"]), f"*{conditions}*", ""]
    path_md.write_text("\n".join(md))
    return path_json, path_md
