"""Shipped checkpoints for labs: small inference files for the `cpu` profile, so any notebook can start first.

data/pretrained/<profile>/ holds one safetensors file per model (no pickle: nothing executes on load), its
config in the JSON header: autoencoder.safetensors, and ldm-<name>.safetensors with the EMA weights of a second
stage, which names its autoencoder by SHA-256 (ldm-text-flow: the text model trained by flow matching instead of
diffusion); ae-compare-<objective>.safetensors are notebook 01's three autoencoders (16-bit, with their training
curves in the header). A file's weights may be stored in 16 bits (its manifest entry says "storage": "float16");
they load into float32 models. data/pretrained/manifest.json says how each was made (command,
seed, commit, torch, machine, minutes, metrics) and its SHA-256, which loading verifies. `export` writes them
from training checkpoints (`minildm export-pretrained`); `load_autoencoder` / `load_ldm` read them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load, save

from ..autoencoder import AEConfig, build_autoencoder
from ..conditioning import WordTokenizer
from ..data.datasets import ShapesDataset
from ..eval.accuracy import (
    evaluate_class_model,
    evaluate_inpainting,
    evaluate_layout_model,
    evaluate_seg_model,
    evaluate_sr_model,
    first_evaluation_samples,
    prompt_accuracy,
    sample_prompts,
)
from ..eval.metrics import reconstruction_psnr
from ..ldm import LatentDiffusion, LDMConfig
from ..utils import (CheckpointError, config_from_dict, count_parameters, get_device, load_checkpoint, to_plain,
                     unsafe_tensors)
from .results import load_json, write_json

__all__ = ["DIR", "SHIPPED_PROFILE", "COMPARISON", "available", "shipped", "load_autoencoder", "load_ldm", "export",
           "export_comparison", "load_comparison", "export_f_study", "load_f_study", "file_sha256", "manifest",
           "spot_check", "halve"]

DIR = Path(__file__).resolve().parent.parent.parent / "data" / "pretrained"
AE_FILE = "autoencoder.safetensors"
SHIPPED_PROFILE = "cpu"             # the profile whose models the repository ships (`minildm sample --pretrained`)
# the shipped second stages by name (ldm-<name>.safetensors); class-token: the paper's class route; text-flow: the
# text model trained by flow matching (LDMConfig(process="flow"), sampled with Euler), same data, steps and seed;
# seg: semantic synthesis from class maps; inpaint: the masked image's latent and the mask concatenated to z_t
_CONDS = ("text", "class", "class-token", "layout", "sr", "text-flow", "seg", "inpaint", "none")
# Notebook 01's experiment: three autoencoders identical but for their objective, trained for the same steps
COMPARISON = {"l2": "L2", "l1-lpips": "L1 + LPIPS", "l1-lpips-gan": "L1 + LPIPS + GAN"}
# Notebook 09's f-study at equal steps: its rows and 8-bit samples of each f's final model (no weights: a pixel-space
# LDM per f would not fit the lab kit, and `minildm experiments f-study` remakes them)
F_STUDY_FILE = "f-study.safetensors"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (the shipped files are a few MB each)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def manifest(root: Path = DIR) -> dict[str, Any]:
    """The manifest of the shipped files: {"files": {"cpu/autoencoder.safetensors": {...}, ...}}."""
    return load_json(root / "manifest.json") or {"files": {}}


def available(profile: str, root: Path = DIR) -> bool:
    return (root / profile / AE_FILE).is_file()


def shipped(profile: str = SHIPPED_PROFILE, root: Path = DIR) -> list[str]:
    """The names of the shipped second stages of `profile` that the manifest lists, e.g.
    ["text", "class", "layout", "sr", "text-flow"]: the names `load_ldm(profile, cond)` and `minildm sample
    --pretrained` take."""
    files = manifest(Path(root))["files"]
    return [c for c in _CONDS if f"{profile}/ldm-{c}.safetensors" in files and (Path(root) / profile /
                                                                                 f"ldm-{c}.safetensors").is_file()]


def _read(profile: str, name: str, root: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """(its header's minildm metadata, its tensors) of a shipped file, after checking its SHA-256 against the
    manifest; None when it is not shipped."""
    path = root / profile / name
    if not path.is_file():
        return None
    entry = manifest(root)["files"].get(f"{profile}/{name}")
    if entry is None:
        raise CheckpointError(f"{path} is not listed in {root / 'manifest.json'}; restore both from the "
                              "repository (git checkout data/pretrained) or delete the stray file")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CheckpointError(f"shipped checkpoint {path} is damaged: its SHA-256 differs from the manifest's. "
                              "Restore it from the repository (git checkout data/pretrained) or download it again.")
    n = int.from_bytes(data[:8], "little")            # a safetensors file: header length, JSON header, tensors
    return json.loads(json.loads(data[8:8 + n])["__metadata__"]["minildm"]), load(data)


def _autoencoder(meta: dict[str, Any], weights: dict[str, torch.Tensor], device: str | torch.device | None):
    model = build_autoencoder(config_from_dict(AEConfig, meta["config"]))
    model.load_state_dict(weights)                  # 16-bit files too: copied into the float32 parameters
    return model.to(get_device(device)).eval()


def load_autoencoder(profile: str, device: str | torch.device | None = None, root: Path = DIR):
    """The shipped autoencoder of `profile` in eval mode, or None when none is shipped."""
    shipped = _read(profile, AE_FILE, Path(root))
    return None if shipped is None else _autoencoder(*shipped, device)


def load_ldm(profile: str, cond: str, device: str | torch.device | None = None,
             root: Path = DIR) -> LatentDiffusion | None:
    """The shipped `cond` model of `profile` (a name of `shipped`: "text", "text-flow", …; with the shipped
    autoencoder), in eval mode, or None. Weights stored in 16 bits are cast into the model's float32 parameters."""
    root, name = Path(root), f"ldm-{cond}.safetensors"
    shipped = _read(profile, name, root)
    if shipped is None:
        return None
    meta, weights = shipped
    ae = load_autoencoder(profile, "cpu", root)                     # checked against the manifest's SHA-256
    if ae is None or manifest(root)["files"][f"{profile}/{AE_FILE}"]["sha256"] != meta["autoencoder_sha256"]:
        raise CheckpointError(f"{root / profile / name} was trained on another autoencoder than the shipped "
                              f"{AE_FILE}; restore data/pretrained from the repository")
    c = meta["conditioning"]
    tok = None if c["tokenizer"] is None else WordTokenizer.from_dict(c["tokenizer"])
    ldm = LatentDiffusion(ae, config_from_dict(LDMConfig, meta["config"]), tokenizer=tok,
                          num_classes=c["num_classes"], max_objects=c["max_objects"], resolution=meta["resolution"],
                          scale_factor=meta["scale_factor"])
    ldm.denoiser_modules().load_state_dict(weights)      # copies into the float32 parameters, 16-bit files too
    return ldm.to(get_device(device)).eval()


def load_comparison(profile: str, device: str | torch.device | None = None, root: Path = DIR
                    ) -> dict[str, dict[str, Any]] | None:
    """Notebook 01's shipped experiment: {"L2" | "L1 + LPIPS" | "L1 + LPIPS + GAN": {"model", "step", "minutes",
    "history", "loss"}}, the three autoencoders in eval mode with the curves of their training run; None when
    `profile` ships none."""
    out = {}
    for key, name in COMPARISON.items():
        shipped_file = _read(profile, f"ae-compare-{key}.safetensors", Path(root))
        if shipped_file is None:
            return None
        meta, weights = shipped_file
        out[name] = {"model": _autoencoder(meta, weights, device), "step": meta["step"], "minutes": meta["minutes"],
                     "history": meta["history"], "loss": meta["loss"]}
    return out


def load_f_study(profile: str, root: Path = DIR) -> dict[str, Any] | None:
    """Notebook 09's shipped f-study: {"rows" (every segment of every f, as `f_study` returns them), "key" (its
    settings), "captions", "real" (the test scenes of the captions), "samples" ({f: images}, images in [-1, 1]),
    "seed", "made" (its manifest entry: command, minutes, machine, commit)}; None when `profile` ships none."""
    shipped_file = _read(profile, F_STUDY_FILE, Path(root))
    if shipped_file is None:
        return None
    meta, tensors = shipped_file
    images = {k: v.float() / 127.5 - 1 for k, v in tensors.items()}      # 8-bit on disk
    return {"rows": meta["rows"], "key": meta["key"], "captions": meta["captions"], "real": images["real"],
            "samples": {int(k[1:]): v for k, v in images.items() if k != "real"}, "seed": meta["seed"],
            "made": manifest(Path(root))["files"][f"{profile}/{F_STUDY_FILE}"]}


def _save(tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: Path) -> str:
    """Write one shipped file (EMA weights, `meta` in its header); returns its SHA-256."""
    bad = unsafe_tensors({"weights": tensors}, ("weights",))
    if bad:
        raise ValueError(f"refusing to ship diverged weights: {'; '.join(bad[:3])}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # the bytes written by Python, not safetensors' save_file (which makes the file 0600): readable by everyone
    tmp.write_bytes(save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                         metadata={"minildm": json.dumps(to_plain(meta))}))
    tmp.replace(path)
    return file_sha256(path)


def _float16(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The floating-point tensors of a state dict in float16, the others as they are."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def _ema_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A training checkpoint's EMA weights (its raw weights where it kept no EMA)."""
    return ckpt["ema"]["shadow"] if ckpt.get("ema") else ckpt["state_dict"]


def _made_here(profile: str) -> dict[str, str]:
    """What every manifest entry records about where it was made: commit, torch, machine, profile."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=DIR.parent.parent, capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"commit": commit, "torch": torch.__version__, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "profile": profile}


def _add_to_manifest(root: Path, profile: str, entries: dict[str, dict[str, Any]],
                     spot_checks: bool = False) -> dict[str, Any]:
    """Put `entries` ({file name: entry}) into the manifest with their files' sizes; spot_checks: then measure the
    written files as a user would load them (`spot_check`, which verifies them against this manifest) and keep
    the numbers in their entries."""
    full = manifest(root)
    for name, entry in entries.items():
        full["files"][f"{profile}/{name}"] = {**entry, "bytes": (root / profile / name).stat().st_size}
    write_json(full, root / "manifest.json", sort_keys=True)
    if spot_checks:
        checks = spot_check(profile, root)
        for name in entries:
            full["files"][f"{profile}/{name}"]["spot_check"] = checks.get(name.removesuffix(".safetensors"), {})
        write_json(full, root / "manifest.json", sort_keys=True)
    return full


def export(ae_checkpoint: str | os.PathLike | None, ldm_checkpoints: dict[str, str | os.PathLike], profile: str,
           provenance: dict[str, Any], root: str | os.PathLike = DIR, half: Sequence[str] = ()) -> dict[str, Any]:
    """Write the shipped files of `profile` from training checkpoints (EMA weights only, no optimizer state, no
    history), add them to the manifest and store `spot_check`'s quick numbers, which a test re-measures.

    ae_checkpoint None: the second stages were trained on the autoencoder `profile` already ships; it is kept as
    it is and the new files name it. ldm_checkpoints: {cond: path}; provenance: per file name ("autoencoder",
    "ldm-text", …) the command, seed, minutes and metrics measured on it (commit, torch and machine are added
    here). half: the files to store in 16 bits, by their key in `ldm_checkpoints` ("text-flow") or "autoencoder"
    (`load_ldm` casts them back into float32 parameters; measure their metrics on the written files).
    """
    root, half = Path(root), set(half)
    unknown = half - set(ldm_checkpoints) - ({"autoencoder"} if ae_checkpoint is not None else set())
    if unknown:
        raise ValueError(f"half={sorted(unknown)} names no file of this export; expected keys of the LDM "
                         f"checkpoints ({', '.join(ldm_checkpoints) or 'none given'})"
                         + (" or 'autoencoder'" if ae_checkpoint is not None else ""))
    common, entries = _made_here(profile), {}

    def ship(name: str, state: dict[str, torch.Tensor], meta: dict[str, Any], in_half: bool) -> str:
        sha = _save(_float16(state) if in_half else state, meta, root / profile / f"{name}.safetensors")
        entries[f"{name}.safetensors"] = {"sha256": sha, **common, **({"storage": "float16"} if in_half else {}),
                                          **provenance.get(name, {})}
        return sha

    if ae_checkpoint is None:
        shipped_ae = load_autoencoder(profile, "cpu", root)
        if shipped_ae is None:
            raise ValueError(f"no shipped autoencoder for the {profile} profile in {root}: pass --autoencoder")
        ae_state, ae_sha = shipped_ae.state_dict(), manifest(root)["files"][f"{profile}/{AE_FILE}"]["sha256"]
    else:
        ae_ckpt = load_checkpoint(ae_checkpoint, kind="autoencoder")
        ae_state = _ema_state(ae_ckpt)
        ae_sha = ship("autoencoder", ae_state, {"kind": "autoencoder", "config": ae_ckpt["config"]},
                      "autoencoder" in half)
    for cond, path in ldm_checkpoints.items():
        ckpt = load_checkpoint(path, kind="ldm")
        if ckpt["autoencoder"]["state_dict"].keys() != ae_state.keys() or not all(
                torch.equal(ckpt["autoencoder"]["state_dict"][k], v) for k, v in ae_state.items()):
            raise ValueError(f"{path} was trained on another autoencoder than "
                             f"{ae_checkpoint or f'the shipped {profile} one'}")
        meta = {"kind": "ldm", "config": ckpt["config"], "conditioning": ckpt["conditioning"],
                "resolution": ckpt["resolution"], "scale_factor": ckpt["scale_factor"], "autoencoder_sha256": ae_sha}
        ship(f"ldm-{cond}", _ema_state(ckpt), meta, cond in half)
    return _add_to_manifest(root, profile, entries, spot_checks=True)


def export_comparison(checkpoints: dict[str, str | os.PathLike], profile: str, provenance: dict[str, Any],
                      root: str | os.PathLike = DIR) -> dict[str, Any]:
    """Write notebook 01's three autoencoders from their training checkpoints ({key of COMPARISON: autoencoder.pt}):
    the weights in 16 bits (`provenance[key]["metrics"]` should hold PSNRs re-measured on the written files), their
    loss settings and their training curves (every 5th step) in the header; provenance: per key, the command, seed
    and metrics."""
    root, common, entries = Path(root), _made_here(profile), {}
    for key, path in checkpoints.items():
        if key not in COMPARISON:
            raise ValueError(f"unknown comparison autoencoder {key!r}; expected one of {', '.join(COMPARISON)}")
        ckpt = load_checkpoint(path, kind="autoencoder")
        keys = ("l1", "lpips", "g", "d_loss", "d_weight")
        history = [{"step": int(r["step"]), **{k: round(float(r[k]), 5) for k in keys if k in r}}
                   for r in ckpt["history"] if int(r["step"]) % 5 == 0]
        minutes = round(float(ckpt.get("elapsed", 0.0)) / 60, 2)
        meta = {"kind": "autoencoder", "config": ckpt["config"], "loss": ckpt["loss_config"], "step": ckpt["step"],
                "minutes": minutes, "history": history}
        name = f"ae-compare-{key}.safetensors"
        entries[name] = {"sha256": _save(_float16(_ema_state(ckpt)), meta, root / profile / name),
                         "steps": ckpt["step"], "minutes": minutes, "storage": "float16", **common,
                         **provenance.get(key, {})}
    return _add_to_manifest(root, profile, entries)


@torch.no_grad()
def export_f_study(study_dir: str | os.PathLike, profile: str, provenance: dict[str, Any], root: str | os.PathLike = DIR,
                   n: int = 8, seed: int = 0) -> dict[str, Any]:
    """Write notebook 09's f-study record from a finished `minildm experiments f-study` folder (its f*/f_study.json
    and f*/ldm.pt): every row, and per f n samples of the final model for the captions of test scenes [0, n) from
    one seed, with the evaluation's DDIM steps and guidance (the first images its evaluation judged,
    eval.accuracy.first_evaluation_samples), beside those scenes; images in 8 bits. provenance: the command, seed,
    minutes and metrics."""
    study_dir, root = Path(study_dir), Path(root)
    folders = sorted(study_dir.glob("f*/f_study.json"), key=lambda p: int(p.parent.name[1:]))
    if not folders:
        raise FileNotFoundError(f"no f-study in {study_dir} (expected f1/f_study.json, f4/f_study.json, …); run "
                                "`minildm experiments f-study --equal steps --out DIR` first")
    studies = [load_json(p) for p in folders]
    key = studies[0]["key"]
    _, steps, guidance = key["eval"]
    tensors, rows, captions = {}, [], None
    for folder, study in zip(folders, studies):
        if study["key"] != key:
            raise ValueError(f"{folder} was run with other settings than {folders[0]}; export one study at a time")
        ldm = LatentDiffusion.from_checkpoint(folder.parent / "ldm.pt", "cpu")
        shown = first_evaluation_samples(ldm, n, steps, guidance, seed)
        captions, tensors["real"] = shown["captions"], _to_bytes(shown["real"])
        tensors[f"f{study['rows'][0]['f']}"] = _to_bytes(shown["samples"])
        rows += [{**{k: v for k, v in r.items() if k != "checkpoint"}, "unet_parameters": count_parameters(ldm.unet)}
                 for r in study["rows"]]
    meta = {"kind": "f-study", "key": key, "rows": rows, "captions": captions, "seed": seed}
    sha = _save(tensors, meta, root / profile / F_STUDY_FILE)
    return _add_to_manifest(root, profile, {F_STUDY_FILE: {"sha256": sha, "steps": key["ldm"], **_made_here(profile),
                                                           "storage": "uint8 samples, no weights", **provenance}})


def _to_bytes(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] as 8-bit integers (load_f_study maps them back)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def halve(profile: str, names: Sequence[str], root: str | os.PathLike = DIR,
          provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rewrite shipped second stages of `profile` (by file name: "ldm-sr") with their weights in float16, for a
    smaller kit when the training checkpoint is gone: the same header, the manifest entry kept (command, commit,
    minutes, machine, metrics) with its new SHA-256 and bytes, "storage": "float16", "halved": the commit and
    command that converted it, and new spot checks. provenance: per name, keys to set in the entry (re-measured
    metrics: measure them on the written file). The autoencoder is not converted here: the second stages name
    its SHA-256."""
    root, provenance = Path(root), provenance or {}
    files, made, entries = manifest(root)["files"], _made_here(profile), {}
    for name in names:
        if not name.startswith("ldm-"):
            raise ValueError(f"halve converts shipped second stages (ldm-<name>), not {name!r}: the second stages "
                             f"name the autoencoder by its SHA-256")
        key = f"{profile}/{name}.safetensors"
        got = _read(profile, f"{name}.safetensors", root)
        if got is None:
            raise FileNotFoundError(f"no shipped {key} in {root} to convert")
        if files[key].get("storage") == "float16":
            raise ValueError(f"{key} is already stored in float16")
        meta, tensors = got
        entries[f"{name}.safetensors"] = {
            **files[key], "sha256": _save(_float16(tensors), meta, root / key), "storage": "float16",
            "halved": {"from": "float32", "commit": made["commit"], "torch": made["torch"],
                       "command": f"minildm export-pretrained --profile {profile} --halve {name.removeprefix('ldm-')}"},
            **provenance.get(name, {})}
    return _add_to_manifest(root, profile, entries, spot_checks=True)


@torch.no_grad()
def spot_check(profile: str = "cpu", root: str | os.PathLike = DIR, steps: int = 20) -> dict[str, dict[str, float]]:
    """Quick re-measurements of the shipped models of `profile` on the CPU (under a minute), the numbers the
    manifest stores as "spot_check" beside the full evaluation; tests/test_pretrained.py re-measures and compares.
    autoencoder: PSNR over test images [0, 64); text: one-object prompt accuracy of test captions [0, 32);
    class and class-token: accuracy, one sample per class; layout: accuracy of test layouts [0, 16); sr: PSNR and bicubic PSNR of
    test images [0, 16); text-flow: as text, with Euler; seg: per-object accuracy and pixel agreement of test maps
    [0, 16) (evaluate_seg_model); inpaint: half-object holes of test scenes [0, 16), the evaluator reading the
    object after filling and PSNR outside the hole (evaluate_inpainting). DDIM (flow: Euler) with `steps` steps,
    guidance 3 (sr, seg, inpaint: none), seed 0."""
    root, out = Path(root), {}
    ae = load_autoencoder(profile, "cpu", root)
    if ae is None:
        return out
    test = ShapesDataset("test", size=1000, max_objects=1)
    out["autoencoder"] = {"psnr": round(reconstruction_psnr(ae, [test.batch(range(64))["image"]], "cpu"), 3)}
    for cond in ("text", "class", "class-token", "layout", "sr", "text-flow", "seg", "inpaint"):
        m = load_ldm(profile, cond, "cpu", root)
        if m is None:
            continue
        if cond in ("text", "text-flow"):
            captions = [test.scene(i).caption for i in range(32)]
            images = sample_prompts(m, captions, steps, 0.0, 3.0, 0, 32, m.default_sampler)
            out[f"ldm-{cond}"] = {"one_object_accuracy": float(prompt_accuracy(images, captions)["accuracy"])}
        elif cond in ("class", "class-token"):
            out[f"ldm-{cond}"] = {"accuracy": evaluate_class_model(m, per_class=1, steps=steps)["accuracy"]}
        elif cond == "layout":
            out["ldm-layout"] = {"accuracy": evaluate_layout_model(m, n=16, steps=steps)["accuracy"]}
        elif cond == "seg":
            r = evaluate_seg_model(m, n=16, steps=steps)
            out["ldm-seg"] = {"object_accuracy": r["objects"]["model"]["rate"], "pixel": r["pixel"]["model"]["mean"]}
        elif cond == "inpaint":
            r = evaluate_inpainting(m, n=16, steps=steps, kinds=("box",))["box"]["model"]
            out["ldm-inpaint"] = {"box_read": r["read"]["rate"], "psnr_known": r["psnr_known"]["mean"]}
        else:
            r = evaluate_sr_model(m, n=16, steps=steps)
            out["ldm-sr"] = {"psnr": round(r["psnr"], 3), "psnr_bicubic": round(r["psnr_bicubic"], 3)}
    return out
