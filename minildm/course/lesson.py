"""The course's helpers: one setup call per notebook, identities and findings checked in code, exercises checked against the
package, and models handed from notebook to notebook.

    course = setup("05_training_the_ldm")    # prints profile, device, torch, threads, folders, LPIPS, run time
    ae = course.autoencoder()                 # the student's own (notebook 01), else the shipped one, else trains
    course.identity("rows sum to 1", err, "<", 1e-6)       # must hold if the code is right: a failure raises
    course.finding("EMA beats raw", d, "<", 0, noise=2 * se)  # an outcome, with its noise; strict: ✗ raises
    check_answer("Exercise 5.1", mine, course_value)          # says what is off, never the answer
    with shows_error(ValueError): ...        # a refusal demonstrated: its message printed, Run All goes on
    course.save_figure(fig, "loss_curves")   # kept with the results of this profile

Where models live: $MINILDM_COURSE_DIR if set; else, in the `ci` profile, a fresh temporary folder (tests
leave nothing behind); else outputs/course/<profile>/ under the repository. A notebook first looks there
(what the student trained in an earlier notebook), then among the shipped checkpoints (pretrained.py,
data/pretrained/<profile>/, checksum-verified), and only then trains, after saying so.

Identities and findings: Course.identity and Course.finding (docs/instructor-guide.md, "Checks, identities,
findings and grading"); strict mode ($MINILDM_STRICT=1, `minildm course --strict`) makes a ✗ finding an error.
"""

from __future__ import annotations

import math
import operator
import os
import platform
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..autoencoder import load_autoencoder
from ..data.datasets import ShapesDataset, make_dataset
from ..ldm import LatentDiffusion
from ..perceptual import lpips_weights_missing
from ..train.profiles import Profile, explain_profile, get_profile
from ..train.stages import AE_CHECKPOINT, LDM_CHECKPOINT, train_autoencoder, train_ldm
from ..utils import get_device, load_checkpoint, seed_everything
from . import pretrained
from .results import load_json, write_json
from .viz import save_figure

__all__ = ["setup", "Course", "check_answer", "shows_error", "ClaimFailed", "NOTEBOOKS", "REPO_ROOT", "COURSE_DIR_ENV", "STRICT_ENV",
           "DATA_ENV", "ANY_DATA", "COLAB_CELL", "RESULTS_DIR", "measured_minutes"]

COURSE_DIR_ENV, STRICT_ENV, DATA_ENV = "MINILDM_COURSE_DIR", "MINILDM_STRICT", "MINILDM_DATA"
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
# the notebooks that run on $MINILDM_DATA (what needs Shapes in them says so and is skipped); the rest need Shapes
ANY_DATA = ("01_perceptual_compression", "05_training_the_ldm", "08_other_conditions")
NOTEBOOKS = ("00_setup_and_shapes", "01_perceptual_compression", "02_latent_space", "03_forward_diffusion",
             "04_unet_and_cross_attention", "05_training_the_ldm", "06_ddim_sampling", "07_guidance_and_attention",
             "08_other_conditions", "09_experiments", "10_beyond_the_paper")
RESULTS_DIR = REPO_ROOT / "docs" / "course"        # what `minildm course` recorded: times, identities, findings, figures
# The first cell of every notebook, identical everywhere (tests/test_notebooks.py checks it): on Colab, when
# minildm is not installed, it clones the tagged release (which brings data/ with the evaluator and the shipped
# checkpoints), installs what Colab lacks without touching Colab's own torch, and makes minildm importable
# without a restart. Anywhere else it does nothing.
COLAB_CELL = """\
# On Google Colab this cell installs minildm (no runtime restart needed); anywhere else it does nothing.
import importlib.util, os, subprocess, sys
if "google.colab" in sys.modules and importlib.util.find_spec("minildm") is None:
    REPO = os.environ.get("MINILDM_REPO", "https://github.com/minildm/minildm")
    TAG = os.environ.get("MINILDM_TAG", "v0.3.0")
    if not os.path.isdir("/content/minildm"):
        subprocess.run(["git", "clone", "--depth", "1", "--branch", TAG, REPO, "/content/minildm"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", "/content/minildm"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "lpips", "einops", "safetensors"], check=True)
    sys.path.insert(0, "/content/minildm")
    os.chdir("/content/minildm/notebooks")"""
_OPS: dict[str, Callable[[Any, Any], bool]] = {"<": operator.lt, "<=": operator.le, ">": operator.gt,
                                               ">=": operator.ge, "==": operator.eq}


class ClaimFailed(AssertionError):
    """An identity failed (any mode), or a finding did not hold in strict mode."""


def _unanswered(got: Any) -> bool:
    """An answer the student has not written: None, or the student edition's placeholder `...` (also inside a
    tuple or list of answers)."""
    if isinstance(got, (tuple, list)):
        return any(_unanswered(g) for g in got)
    return got is None or got is Ellipsis


def _how_far(got: float, expected: float) -> str:
    """Which way and roughly how far a number is off, without the number it should be."""
    if expected != 0 and math.isclose(got, -expected, rel_tol=1e-6):
        return "the sign is flipped"
    if expected == 0:
        return f"it should be 0 (yours is {abs(got):.3g} away)"
    if got == 0:
        return "yours is 0, and the answer is not"
    rel = abs(got - expected) / abs(expected)
    way = "too large" if got > expected else "too small"
    if expected * got < 0:
        return f"{way}, and of the wrong sign"
    return f"{way} by {'less than 1 %' if rel < 0.01 else f'about {100 * rel:.0f} %' if rel < 1 else f'a factor of about {got / expected:.2g}'}"


def _what_differs(got: Any, expected: Any, atol: float, rtol: float) -> str | None:
    """What is wrong with `got` (shape, sign, size, which element or key), never the expected value; None when
    it matches."""
    if torch.is_tensor(expected) or (isinstance(expected, (list, tuple)) and expected
                                     and all(isinstance(e, (int, float)) for e in expected)):
        exp = torch.as_tensor(expected).double()
        try:
            got_t = torch.as_tensor(got.detach() if torch.is_tensor(got) else got).double()
        except (TypeError, ValueError, RuntimeError):
            return f"your result is a {type(got).__name__}; a tensor of shape {tuple(exp.shape)} is expected"
        if got_t.shape != exp.shape:
            return f"your result has shape {tuple(got_t.shape)}, the answer's is {tuple(exp.shape)}"
        if torch.allclose(got_t, exp, atol=atol, rtol=rtol, equal_nan=True):
            return None
        if torch.isnan(got_t).any() and not torch.isnan(exp).any():
            return f"your result has {int(torch.isnan(got_t).sum())} NaN value(s)"
        diff = (got_t - exp).abs()
        worst = tuple(int(i) for i in np.unravel_index(int(diff.argmax()), tuple(diff.shape)))    # torch's needs 2.2
        text = (f"{int((diff > atol + rtol * exp.abs()).sum())} of {diff.numel()} values are off, the worst by "
                f"{float(diff.max()):.3g} at index {worst} (allowed {atol:g} + {rtol:g}·|answer|)")
        if torch.allclose(got_t, -exp, atol=atol, rtol=rtol):
            return text + ": the sign is flipped"
        ratio = got_t[exp.abs() > 1e-12] / exp[exp.abs() > 1e-12]
        k, spread = (float(ratio.mean()), float(ratio.std())) if ratio.numel() > 1 else (1.0, 0.0)
        if abs(k - 1) > max(1e-3, 10 * spread) and spread < 1e-3 * abs(k):
            return text + f": every value is off by the same factor, about {k:.3g}"
        return text
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        try:
            value = float(got)
        except (TypeError, ValueError):
            return f"your answer is a {type(got).__name__}; a number is expected"
        if math.isclose(value, float(expected), rel_tol=rtol, abs_tol=atol):
            return None
        return f"you got {value:.6g}: {_how_far(value, float(expected))}"
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"your answer is a {type(got).__name__}; a dict is expected"
        missing, extra = [k for k in expected if k not in got], [k for k in got if k not in expected]
        if missing or extra:
            return f"keys missing: {missing}, keys that should not be there: {extra}"
        wrong = [k for k in expected if _what_differs(got[k], expected[k], atol, rtol) is not None]
        return f"the value(s) of {wrong} differ" if wrong else None
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return f"your answer is a {type(got).__name__}; a {type(expected).__name__} is expected"
        if len(got) != len(expected):
            return f"your answer has {len(got)} items, the answer has {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            why = _what_differs(g, e, atol, rtol)
            if why is not None:
                return f"item {i} differs: {why}"
        return None
    return None if got == expected else f"{got!r} is not it"


def check_answer(name: str, got: Any, expected: Any, atol: float = 1e-5, rtol: float = 1e-5,
                 constant: bool = False) -> None:
    """An exercise's check: `got` must equal the package's `expected` within tolerance (elementwise, key by key or
    ==). Prints ✓, or raises AssertionError saying what is wrong, never the expected value. An answer not written
    yet (None, or the student edition's `...`) is skipped, so that Run All goes on. `constant`: the answer is a
    constant of the graph (like the adaptive weight λ): a tensor that still carries its graph is wrong."""
    if _unanswered(got):
        print(f"– {name}: skipped, no answer yet (write it in the cell above and run both cells again)")
        return
    why = _what_differs(got, expected, atol, rtol)
    if why is None and constant and torch.is_tensor(got) and got.requires_grad:
        why = "the values are right, but gradients would flow through your result: it must be a constant (.detach())"
    if why is not None:
        raise AssertionError(f"{name}: not yet: {why}")
    print(f"✓ {name}: correct")


@contextmanager
def shows_error(*kinds: type[BaseException]) -> Iterator[None]:
    """A cell that demonstrates a refusal: print the error the block raises (type and message) and go on, so that
    Run All continues in every front end (VS Code and Colab ignore JupyterLab's `raises-exception` tag). A block
    that raises nothing (or not one of `kinds`, default any Exception) is a bug in the lesson: AssertionError."""
    kinds = kinds or (Exception,)
    try:
        yield
    except kinds as e:
        print(f"{type(e).__name__}: {e}")
    else:
        raise AssertionError(f"this cell should have raised {' or '.join(k.__name__ for k in kinds)}, and ran "
                             "without one")


@dataclass
class Course:
    """What every notebook of the course shares: profile, device, seed, the folder of course models."""

    notebook: str
    profile: Profile
    device: torch.device
    seed: int
    folder: Path
    strict: bool = False
    data: str = "shapes"              # $MINILDM_DATA: shapes, mnist, fashion-mnist or folder:PATH

    def dataset(self, split: str = "train"):
        """The course's data for a split, at the profile's resolution (Shapes unless $MINILDM_DATA says otherwise;
        MNIST files are looked for in data/downloads/)."""
        if self.data == "shapes":
            return ShapesDataset(split, self.profile.data)
        return make_dataset(self.data, split, self.profile.data, root=REPO_ROOT / "data" / "downloads")

    def second_stage(self) -> str:
        """The conditioning of the course's main diffusion model on this data: "text" on Shapes; on other data
        "class" when it has labels (MNIST, folders with class subfolders), else "none" (unconditional)."""
        if self.data == "shapes":
            return "text"
        return "class" if self.dataset("train").num_classes else "none"

    def shapes_only(self, what: str) -> bool:
        """True on Shapes; on other data print that `what` needs Shapes and is skipped, and return False."""
        if self.data != "shapes":
            print(f"skipped on {self.data}: {what} needs the Shapes data (captions, layouts, the Shapes evaluator)")
        return self.data == "shapes"

    def conditions(self, wanted: tuple[str, ...]) -> tuple[str, ...]:
        """The conditioning modes of `wanted` this data can train, saying which are left out and why."""
        labelled = self.data == "shapes" or bool(self.dataset("train").num_classes)
        why = {"text": "captions are a Shapes feature", "layout": "layouts, boxes of Shapes objects, are a Shapes "
               "feature", "class": f"{self.data} has no labels: put the images in one subfolder per class"}
        out = []
        for cond in wanted:
            if self.data == "shapes" or cond in ("none", "sr") or (cond == "class" and labelled):
                out.append(cond)
            else:
                print(f"skipped on {self.data}: no {cond} model ({why[cond]})")
        return tuple(out)

    def images(self, n: int, split: str = "test", seed: int = 0) -> torch.Tensor:
        """n images (n, 3, H, W) of the course's data, a seeded random choice (folders are sorted by class)."""
        data = self.dataset(split)
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
        return data.batch(pick.tolist())["image"].cpu()

    @torch.no_grad()
    def sample(self, ldm: LatentDiffusion, n: int, steps: int | None = None, **sample_kwargs: Any
               ) -> tuple[Any, list[str]]:
        """(ldm.sample(...), captions) for n samples of a class-conditional (classes in turn) or unconditional
        model from the course's seed: what notebooks show on data without captions. sample_kwargs go to
        LatentDiffusion.sample."""
        if ldm.cond_mode == "none":
            raw, names = None, [f"sample {i + 1}" for i in range(n)]
        elif ldm.cond_mode == "class":
            labels = [i % ldm.num_classes for i in range(n)]
            classes = getattr(self.dataset("train"), "classes", None) if self.data != "shapes" else None
            raw = ldm.prompt_condition(labels=labels)
            names = [classes[c] if classes and len(classes) == ldm.num_classes else f"class {c}" for c in labels]
        else:
            raise ValueError(f"Course.sample draws class-conditional or unconditional models, got a {ldm.cond_mode} "
                             f"model; use ldm.sample with its condition")
        return ldm.sample(raw, num_samples=n if raw is None else None, steps=steps,
                          generator=torch.Generator().manual_seed(self.seed), **sample_kwargs), names

    # ---------------------------------------------------------------- identities, findings and results
    def identity(self, name: str, value: float, op: str, expected: float) -> None:
        """What must hold if the code is right (an identity of the math, a property by construction): prints it
        with its value; raises ClaimFailed when it fails, in every profile, since then the code is wrong."""
        value = float(value)
        ok = bool(_OPS[op](value, float(expected)))
        print(f"{'holds' if ok else 'FAILS'}: {name} ({value:.4g} {op} {float(expected):.4g})")
        self._write("identities", name, {"notebook": self.notebook, "identity": name, "value": value, "op": op,
                                         "expected": float(expected), "ok": ok, "profile": self.profile.name})
        if not ok:
            raise ClaimFailed(f"identity failed in {self.notebook}: {name} ({value:.4g}, expected {op} "
                              f"{float(expected):.4g}); the code (or your change to it) is wrong")

    def finding(self, name: str, measured: float, op: str, bar: float, noise: float | tuple[float, float],
                noise_what: str = "95 % interval", bar_from: str = "") -> None:
        """An outcome that could go either way, with its noise: the half-width of a ~95 % interval around `measured`
        (about two standard errors), or the interval (low, high) itself (e.g. metrics.binomial_interval). It holds
        when the whole interval lies on the bar's side. `bar` is set before seeing the model (`bar_from` says
        where from: "chance", "the paper's ordering", …). Prints and records it; raises ClaimFailed in strict mode
        when it does not hold."""
        measured, bar = float(measured), float(bar)
        low, high = (measured - float(noise), measured + float(noise)) if not isinstance(noise, (tuple, list)) \
            else (float(noise[0]), float(noise[1]))
        if op not in ("<", "<=", ">", ">="):
            raise ValueError(f"a finding compares with a bar: op must be <, <=, > or >=, got {op!r}")
        ok = bool(_OPS[op](low if op[0] == ">" else high, bar))
        half = max(measured - low, high - measured)
        margin = measured - bar if op[0] == ">" else bar - measured
        times = f"{margin / half:.1f}× its noise" if half > 0 else "no noise"
        print(f"{'✓' if ok else '✗'} finding: {name}: {measured:.4g} ({noise_what} {low:.4g} … {high:.4g}); bar "
              f"{op} {bar:.4g}{f' ({bar_from})' if bar_from else ''}: margin {margin:.3g} = {times}"
              + ("" if ok or self.strict else f"  (not shown in the {self.profile.name} profile)"))
        self._write("findings", name, {"notebook": self.notebook, "finding": name, "measured": measured, "low": low,
                                       "high": high, "noise_what": noise_what, "op": op, "bar": bar,
                                       "bar_from": bar_from, "margin": margin, "ok": ok, "profile": self.profile.name})
        if not ok and self.strict:
            raise ClaimFailed(f"finding not shown in {self.notebook}: {name} ({measured:.4g}, interval {low:.4g} … "
                              f"{high:.4g}; bar {op} {bar:.4g})")

    def record(self, key: str, value: Any) -> None:
        """Keep a measured number (or a small dict of them) in this profile's results file."""
        self._write("values", key, value)

    def _write(self, section: str, key: str, value: Any) -> None:
        path = self.folder / "results.json"
        results = load_json(path) or {}
        results.setdefault(self.notebook, {}).setdefault(section, {})[key] = value
        write_json(results, path)

    def save_figure(self, fig, name: str) -> Path:
        """Save a figure as <folder>/figures/<notebook>_<name>.png (and keep it open for the notebook)."""
        return save_figure(fig, self.folder / "figures" / f"{self.notebook}_{name}.png", close=False)

    # ---------------------------------------------------------------- models handed on
    def own(self, what: str) -> Path:
        """Where this profile's course keeps the student's own model: "autoencoder" or "ldm-<cond>"."""
        return self.folder / AE_CHECKPOINT if what == "autoencoder" else self.folder / what / LDM_CHECKPOINT

    def _handed_on(self, what: str, label: str, load: Callable[[Path, torch.device], Any],
                   shipped: Callable[[], Any], steps: int, train: Callable[[], Any], verbose: bool, prefer: str,
                   call: str):
        """The student's own `what` (`own(what)`, from an earlier notebook) opened with `load`, else the shipped
        one (Shapes only), else trained now by `train`, after saying so; `label` names it in what is printed.
        An own model trained for fewer than the profile's `steps` (an interrupted run) is used with a warning that
        says how to take the shipped one instead (`call` with prefer="shipped", which skips the own one)."""
        if prefer not in ("own", "shipped"):
            raise ValueError(f"prefer must be 'own' (the model you trained, else the shipped one) or 'shipped', "
                             f"got {prefer!r}")
        say = print if verbose else (lambda *a: None)
        path = self.own(what)
        if prefer == "shipped" or not path.is_file():
            model = shipped() if self.data == "shapes" else None
            if model is not None:
                say(f"{label}: the shipped one for the {self.profile.name} profile ({pretrained.DIR})"
                    + (", as asked" if path.is_file() else ""))
                return model
            if path.is_file():
                say(f"{label}: no shipped one for the {self.profile.name} profile on {self.data}: your own after all")
        if path.is_file():
            done = int(load_checkpoint(path)["step"])
            say(f"{label}: your own, {path} ({done:,} training steps)")
            if done < steps:
                say(f"  ⚠ only {done:,} of the {self.profile.name} profile's {steps:,} steps (an interrupted run?): "
                    f"its samples can be far worse than the text expects. The shipped one: {call}prefer=\"shipped\")")
            return load(path, self.device)
        say(f"no {label} yet: training the {self.profile.name} profile's ({steps} steps) into {path.parent}")
        train()
        return load(path, self.device)

    def autoencoder(self, verbose: bool = True, prefer: str = "own"):
        """The course's autoencoder: the student's own (notebook 01), else the shipped one, else trained now
        (after saying so). prefer="shipped" takes the shipped one even where an own one exists."""
        def train() -> None:
            missing = lpips_weights_missing(self.profile.ae_loss.lpips_net, download=self.profile.name != "ci")
            other = self.data != "shapes"                  # the shipped autoencoder knows Shapes only
            train_autoencoder(self.profile, self.folder, device=self.device,
                              random_lpips=None if missing is None else True, lpips_download=self.profile.name != "ci",
                              progress=verbose, dataset=self.dataset("train") if other else None,
                              val_dataset=self.dataset("val") if other else None)

        return self._handed_on("autoencoder", "autoencoder", load_autoencoder,
                               lambda: pretrained.load_autoencoder(self.profile.name, self.device),
                               self.profile.ae_train.steps, train, verbose, prefer, "course.autoencoder(")

    def ldm(self, cond: str = "text", verbose: bool = True, prefer: str = "own") -> LatentDiffusion:
        """The course's latent diffusion model for `cond`: the student's own (notebooks 05, 08), else the shipped
        one (Shapes only), else trained now on the course's autoencoder and data (after saying so). "class-token"
        is a class model on the paper's route (the label as one cross-attention token), "class" minildm's;
        "text-flow" the text model trained by flow matching (LDMConfig.process="flow"). prefer="shipped" takes the
        shipped one even where an own one exists (e.g. a partly trained one)."""
        base, profile = cond, self.profile
        if cond == "class-token":
            base, profile = "class", self.profile.replace(ldm={"class_route": "crossattn"})
        elif cond == "text-flow":
            base, profile = "text", self.profile.replace(ldm={"process": "flow"})
        if self.data != "shapes" and base not in self.conditions((base,)):
            raise ValueError(f"there is no {cond} model on {self.data}: text and layout models need Shapes, class "
                             f"models labels; use course.second_stage() ({self.second_stage()!r}), or `minildm "
                             f"train-ldm --data {self.data}`")

        def train() -> None:
            if not self.own("autoencoder").is_file():
                self.autoencoder(verbose=verbose)
            train_ldm(profile, self.own("autoencoder"), self.own(f"ldm-{cond}").parent, cond=base,
                      device=self.device, seed=self.seed, progress=verbose,
                      dataset=None if self.data == "shapes" else self.dataset("train"))

        return self._handed_on(f"ldm-{cond}", f"{cond} model", LatentDiffusion.from_checkpoint,
                               lambda: pretrained.load_ldm(self.profile.name, cond, self.device),
                               self.profile.ldm_train.steps, train, verbose, prefer, f"course.ldm({cond!r}, ")

    def trained_steps(self, what: str) -> int | None:
        """How many steps the student's own `what` ("autoencoder", "ldm-text", …) was trained for, or None."""
        path = self.own(what)
        return int(load_checkpoint(path)["step"]) if path.is_file() else None


def measured_minutes(profile: str) -> dict[str, float]:
    """{notebook: minutes} from the last recorded run of the course in `profile` (empty if there is none)."""
    data = load_json(RESULTS_DIR / f"{profile}.json") or {}
    return {name: nb["minutes"] for name, nb in data.get("notebooks", {}).items() if nb.get("ok")}


def course_folder(profile: Profile) -> Path:
    """$MINILDM_COURSE_DIR, else a fresh temporary folder for `ci`, else outputs/course/<profile>."""
    if os.environ.get(COURSE_DIR_ENV):
        return Path(os.environ[COURSE_DIR_ENV])
    if profile.name == "ci":
        return Path(tempfile.mkdtemp(prefix="minildm-course-ci-"))
    return REPO_ROOT / "outputs" / "course" / profile.name


def setup(notebook: str, seed: int = 0, profile: str | Profile | None = None,
          device: str | torch.device | None = None) -> Course:
    """The second cell of every notebook: pick profile and device, seed everything, print what a student (or a
    teaching assistant debugging a lab machine) needs to know, and return the Course."""
    chosen, profile, device = profile, get_profile(profile), get_device(device)
    if profile.name == "ci":
        torch.set_num_threads(1)              # tiny models run fastest on one thread (and CI machines are shared)
    seed_everything(seed)
    data = os.environ.get(DATA_ENV, "").strip() or "shapes"
    folder = course_folder(profile)
    if data != "shapes":
        if notebook not in ANY_DATA:
            raise ValueError(f"{notebook} needs the Shapes data (captions, layouts, the Shapes evaluator), but "
                             f"${DATA_ENV} is {data!r}: unset it for this notebook. Other data run in "
                             f"{', '.join(ANY_DATA)} and in the commands (minildm train-ae / train-ldm --data)")
        make_dataset(data, "train", profile.data, root=REPO_ROOT / "data" / "downloads")   # fails early, clearly
        folder = folder / ("data-" + "".join(c if c.isalnum() else "-" for c in data).strip("-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = load_json(folder / "results.json") or {}
    if results.pop(notebook, None) is not None:       # a rerun records afresh: nothing of an older version stays
        write_json(results, folder / "results.json")
    strict = os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    missing = lpips_weights_missing(profile.ae_loss.lpips_net, download=False)
    minutes = measured_minutes(profile.name).get(notebook)
    print(f"minildm course, notebook {notebook}")
    print(f"  {explain_profile(chosen)}")
    print(f"  device {device} (set $MINILDM_DEVICE), seed {seed}")
    print(f"  torch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}")
    print(f"  course models: {folder}" + ("  (a temporary folder: the ci profile leaves nothing behind)"
                                          if profile.name == "ci" and not os.environ.get(COURSE_DIR_ENV) else ""))
    print(f"  data: {data}" + ("" if data == "shapes" else f" (${DATA_ENV}; the shipped checkpoints are Shapes "
                                                            "models and are not used)"))
    print(f"  shipped checkpoints: {pretrained.DIR / profile.name}"
          + ("" if pretrained.available(profile.name) else " (none for this profile)"))
    print("  LPIPS: pretrained backbone" if missing is None else
          "  LPIPS: RANDOM backbone (the pretrained file is missing; see the README's offline notes)")
    print("  expected run time: " + (f"about {minutes:g} min (measured by `minildm course`, docs/course/)" if minutes else
                                      "not measured yet for this profile")
          + ("; strict mode: a finding that does not hold stops the notebook" if strict else ""))
    if profile.name == "ci":
        print("  NOTE: the ci profile trains tiny models for seconds; its numbers and pictures show the machinery,"
              " not results")
    return Course(notebook, profile, device, seed, folder, strict, data=data)

