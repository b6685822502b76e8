"""Generative metrics against closed forms, and the Shapes evaluator / prompt accuracy against ground truth.

Checklist:
  - FID is the Fréchet distance of fitted Gaussians: closed forms (diagonal, 1-D), an independent matrix
    square root, sampled Gaussians, identical sets (0) and shifted sets (‖shift‖²)
  - KID is the unbiased MMD² with k(x, y) = (xᵀy/d + 1)³: a direct float64 double loop, ≈ 0 for one distribution
  - precision / recall (k-NN manifolds): subsets, far clusters, dropped modes; chunking changes nothing
  - Inception Score: uniform predictions -> 1, confident predictions over K classes -> K
  - the committed evaluator reads fresh test scenes with ≥ 99 % per-attribute accuracy
  - prompt / class / layout accuracy: real images with their own conditions pass, shuffled ones fail;
    the bookkeeping is exact with an oracle evaluator
"""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minildm.data.datasets import ShapesDataset
from minildm.data.shapes import NUM_CLASSES, render_scenes
from minildm.eval import judge as EV
from minildm.eval import metrics as M
from minildm.eval import accuracy as SE

# --------------------------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------------------------


def test_frechet_distance_closed_form_diagonal_gaussians():
    """For diagonal Σ the matrices commute: d² = ‖μ1 − μ2‖² + Σ_i (√a_i − √b_i)²."""
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    a = torch.rand(6, generator=g, dtype=torch.float64) + 0.1
    b = torch.rand(6, generator=g, dtype=torch.float64) * 3 + 0.1
    expected = float((mu1 - mu2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    assert M.frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-9)
    # 1-D: (μ1 − μ2)² + (σ1 − σ2)²
    assert M.frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]),
                              torch.tensor([[9.0]])) == pytest.approx(9.0 + 1.0, rel=1e-12)


def test_frechet_distance_matches_an_independent_matrix_square_root():
    """Non-commuting Σ1, Σ2: compare with Tr((Σ1Σ2)^½) from scipy's general sqrtm."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(1)
    d = 8
    a, b = torch.randn(d, d, generator=g, dtype=torch.float64), torch.randn(d, d, generator=g, dtype=torch.float64)
    s1, s2 = a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64), b @ b.T / d + 0.2 * torch.eye(d, dtype=torch.float64)
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    covmean = scipy_linalg.sqrtm(s1.numpy() @ s2.numpy())
    expected = float(((mu1 - mu2) ** 2).sum()) + float(np.trace(s1.numpy() + s2.numpy() - 2 * covmean.real))
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    # singular (rank-deficient) covariances stay finite and non-negative
    low = a[:, :2] @ a[:, :2].T
    assert 0.0 <= M.frechet_distance(mu1, low, mu1, low) < 1e-6


def test_fid_of_sampled_gaussians_approaches_the_analytic_value():
    """n = 200k samples of two 3-D Gaussians: the sample FID is the analytic one up to O(1/√n) noise
    (the mean term alone has std ≈ 2·‖Δμ‖·√(2/n)·σ ≈ 0.01 here; tolerance 0.05)."""
    torch.manual_seed(0)
    mu1, mu2 = torch.tensor([0.0, 1.0, -1.0]), torch.tensor([0.5, 0.0, -1.0])
    l1 = torch.tensor([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.2, -0.3, 0.8]])
    l2 = torch.tensor([[0.7, 0.0, 0.0], [-0.2, 1.2, 0.0], [0.0, 0.4, 1.1]])
    p1 = torch.distributions.MultivariateNormal(mu1, scale_tril=l1)
    p2 = torch.distributions.MultivariateNormal(mu2, scale_tril=l2)
    analytic = M.frechet_distance(mu1, l1 @ l1.T, mu2, l2 @ l2.T)
    sampled = M.fid_from_features(p1.sample((200_000,)), p2.sample((200_000,)))
    assert analytic > 0.5
    assert sampled == pytest.approx(analytic, abs=0.05)


def test_fid_identical_sets_zero_and_shifted_sets_squared_shift():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(500, 16, generator=g) @ torch.randn(16, 16, generator=g)
    assert M.fid_from_features(x, x) == pytest.approx(0.0, abs=1e-6)
    shift = torch.randn(16, generator=g)
    assert M.fid_from_features(x, x + shift) == pytest.approx(float(shift.double().pow(2).sum()), rel=1e-6)


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        M.fid_from_features(torch.randn(10), torch.randn(10, 2))
    with pytest.raises(ValueError, match="feature dimensions differ"):
        M.fid_from_features(torch.randn(10, 3), torch.randn(10, 2))


# --------------------------------------------------------------------------------------------------------
# KID
# --------------------------------------------------------------------------------------------------------


def _mmd2_by_hand(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD² with k(a, b) = (aᵀb/d + 1)³, written as explicit double loops in float64."""
    x, y = x.double().tolist(), y.double().tolist()
    d = len(x[0])

    def k(a, b):
        return (sum(u * v for u, v in zip(a, b)) / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_direct_float64_computation():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(20, 5, generator=g), torch.randn(20, 5, generator=g) * 1.3 + 0.4
    expected = _mmd2_by_hand(x, y)
    assert M.mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-10)
    kid, std = M.kid_from_features(x, y, subset_size=20, num_subsets=1)   # one subset = the whole set
    assert kid == pytest.approx(expected, rel=1e-10) and std == 0.0


def test_kid_near_zero_for_one_distribution_and_positive_for_two():
    """Unbiased: same distribution -> |KID| within noise (a few stds of the subset mean); shifted -> large."""
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(600, 8, generator=g), torch.randn(600, 8, generator=g)
    kid_same, std_same = M.kid_from_features(a, b, subset_size=300, num_subsets=10)
    kid_diff, _ = M.kid_from_features(a, b + 0.5, subset_size=300, num_subsets=10)
    assert abs(kid_same) < 0.01 and abs(kid_same) < 3 * std_same + 1e-3
    assert kid_diff > 20 * abs(kid_same) and kid_diff > 0.05


# --------------------------------------------------------------------------------------------------------
# precision / recall
# --------------------------------------------------------------------------------------------------------


def _pr_by_hand(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """The definitions of Kynkäänniemi et al. 2019 with full numpy distance matrices."""
    def radii(x):
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, k]                          # column 0 is the point itself

    def inside(q, s, r):
        d = np.sqrt(((q[:, None] - s[None]) ** 2).sum(-1))
        return (d <= r[None]).any(1)

    return inside(fake, real, radii(real)).mean(), inside(real, fake, radii(fake)).mean()


def test_precision_recall_on_constructed_point_clouds():
    g = torch.Generator().manual_seed(5)
    real = torch.randn(300, 4, generator=g)
    # generated = a subset of the real samples -> every one lies in the real manifold
    assert M.precision_recall(real, real[:150])["precision"] == 1.0
    # disjoint, far-apart clusters -> neither covers the other
    pr = M.precision_recall(real, torch.randn(300, 4, generator=g) + 100.0)
    assert pr == {"precision": 0.0, "recall": 0.0}
    # four well-separated modes; the generator covers only two of them -> recall ≈ 0.5, precision ≈ 1
    centres = torch.tensor([[20.0, 0], [-20, 0], [0, 20], [0, -20]])
    real_modes = (centres[:, None] + 0.5 * torch.randn(4, 250, 2, generator=g)).reshape(-1, 2)
    fake_modes = (centres[:2, None] + 0.5 * torch.randn(2, 500, 2, generator=g)).reshape(-1, 2)
    pr = M.precision_recall(real_modes, fake_modes)
    assert pr["recall"] == pytest.approx(0.5, abs=0.03)
    assert pr["precision"] > 0.97


def test_precision_recall_chunking_matches_full_computation():
    g = torch.Generator().manual_seed(6)
    real, fake = torch.randn(120, 3, generator=g), torch.randn(90, 3, generator=g) * 1.5 + 0.3
    p, r = _pr_by_hand(real.double().numpy(), fake.double().numpy())
    tiny_chunks = M.precision_recall(real, fake, max_bytes=8 * 120 * 7)   # 7 rows per chunk
    one_chunk = M.precision_recall(real, fake)
    assert tiny_chunks == one_chunk == {"precision": pytest.approx(p), "recall": pytest.approx(r)}


# --------------------------------------------------------------------------------------------------------
# Inception Score
# --------------------------------------------------------------------------------------------------------


def test_inception_score_closed_forms():
    assert M.inception_score(torch.zeros(100, 10), splits=4)[0] == pytest.approx(1.0, abs=1e-12)  # uniform
    K = 6
    onehot = 100.0 * torch.nn.functional.one_hot(torch.arange(600) % K, K).float()   # confident, even spread
    mean, std = M.inception_score(onehot, splits=5)
    assert mean == pytest.approx(K, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    # all samples confidently the same class -> 1
    assert M.inception_score(100.0 * torch.nn.functional.one_hot(torch.zeros(50, dtype=torch.long), K).float(),
                             splits=1)[0] == pytest.approx(1.0, abs=1e-9)


# --------------------------------------------------------------------------------------------------------
# Degradations used to train the evaluator
# --------------------------------------------------------------------------------------------------------


def test_dct_is_orthonormal_and_fine_jpeg_quantization_is_the_identity():
    d = EV._dct_matrix()
    assert torch.allclose(d @ d.T, torch.eye(8), atol=1e-6)
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    assert torch.allclose(EV._jpeg_like(x, torch.full((2,), 1e-4)), x, atol=1e-4)
    coarse = EV._jpeg_like(x, torch.full((2,), 40.0))
    assert (coarse - x).abs().mean() > 0.05                      # and coarse quantization is lossy


def test_degrade_is_seeded_and_keeps_range():
    x = torch.rand(16, 3, 32, 32) * 2 - 1
    cfg = EV.EvaluatorConfig()
    a = EV.degrade(x, cfg, torch.Generator().manual_seed(0))
    b = EV.degrade(x, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, EV.degrade(x, cfg, torch.Generator().manual_seed(1)))


def test_horizontal_flip_mirrors_cells():
    """Training flips images and permutes cell targets: valid because every shape is mirror-symmetric.
    Check: the flipped rendering of a scene has the segmentation of the scene with mirrored objects."""
    ds = ShapesDataset("train", max_objects=2)
    scenes = [ds.scene(i) for i in range(16)]
    mirrored = [dataclasses.replace(s, objects=tuple(dataclasses.replace(o, col=2 - o.col, cx=1 - o.cx)
                                                     for o in s.objects)) for s in scenes]
    _, seg = render_scenes(scenes, 32)
    _, seg_m = render_scenes(mirrored, 32)
    assert (seg.flip(-1) != seg_m).float().mean() < 0.002      # equal up to round-off on a few edge pixels
    t, t_m = EV.scene_targets(scenes), EV.scene_targets(mirrored)
    assert all(torch.equal(t[k][:, EV._HFLIP_CELLS], t_m[k]) for k in t)


# --------------------------------------------------------------------------------------------------------
# The committed Shapes evaluator on fresh test scenes
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_scenes():
    """500 scenes of the test split (max_objects=2, never seen in training) with everything rendered once."""
    ds = ShapesDataset("test", max_objects=2, size=500)
    return ds.batch(range(500)) | {"scenes": [ds.scene(i) for i in range(500)]}


@pytest.fixture(scope="module")
def evaluator():
    return EV.load_evaluator(device="cpu")


def test_committed_evaluator_is_small_and_carries_its_config():
    assert EV.DEFAULT_EVALUATOR_PATH.stat().st_size <= 2 * 2**20
    ckpt = torch.load(EV.DEFAULT_EVALUATOR_PATH, weights_only=True)
    assert ckpt["kind"] == EV.EVALUATOR_KIND and "widths" in ckpt["config"]


def test_evaluator_reads_every_attribute(test_scenes, evaluator):
    acc = EV.attribute_accuracy(test_scenes["image"], test_scenes["scenes"], evaluator)
    for attribute in ("position", "shape", "color", "size", "occupancy", "count"):
        assert acc[attribute] >= 0.99, (attribute, acc)


def test_evaluator_input_checks(evaluator):
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        EV.predict_cells(torch.rand(2, 3, 32, 32) * 255, evaluator)
    with pytest.raises(ValueError, match="RGB"):
        SE.shapes_features(torch.rand(2, 1, 32, 32), evaluator)


def test_evaluator_handles_other_resolutions(evaluator):
    ds = ShapesDataset("test", max_objects=2, size=100, resolution=64)
    scenes = [ds.scene(i) for i in range(100)]
    acc = EV.attribute_accuracy(ds.batch(range(100))["image"], scenes, evaluator)
    assert min(acc["position"], acc["shape"], acc["color"], acc["size"]) >= 0.97, acc


def test_prompt_accuracy_own_vs_shuffled_captions(test_scenes, evaluator):
    images, captions = test_scenes["image"], test_scenes["caption"]
    own = SE.prompt_accuracy(images, captions, evaluator)
    assert own["accuracy"] >= 0.97 and own["n"] == 500
    assert set(own["by_type"]) == {"one_object", "two_objects_relation"}
    assert all(v["accuracy"] >= 0.95 for v in own["by_type"].values())
    assert all(v >= 0.97 for v in own["by_attribute"].values()), own["by_attribute"]
    shuffled = SE.prompt_accuracy(images, captions[1:] + captions[:1], evaluator)
    assert shuffled["accuracy"] < 0.1
    with pytest.raises(ValueError, match="one caption per image"):
        SE.prompt_accuracy(images[:3], captions[:2], evaluator)


def test_class_and_layout_accuracy_own_vs_shuffled(test_scenes, evaluator):
    single = test_scenes["label"] >= 0
    images, labels = test_scenes["image"][single], test_scenes["label"][single]
    assert SE.class_accuracy(images, labels, evaluator)["accuracy"] >= 0.97
    assert SE.class_accuracy(images, (labels + 1) % NUM_CLASSES, evaluator)["accuracy"] < 0.05
    layout = test_scenes["layout"]
    own = SE.layout_accuracy(test_scenes["image"], layout, evaluator)
    assert own["accuracy"] >= 0.97 and own["object_accuracy"] >= 0.98
    assert SE.layout_accuracy(test_scenes["image"], layout.roll(1, 0), evaluator)["accuracy"] < 0.1
    with pytest.raises(ValueError, match="labels must be one class"):
        SE.class_accuracy(images[:2], torch.tensor([-1, 3]), evaluator)


def test_shapes_metrics_see_blur_and_dropped_modes(test_scenes, evaluator):
    """In the evaluator's feature space, two disjoint halves of the real set are close (the floor), blurred
    images are far (KID), and a "generator" that only makes one-object scenes keeps precision but loses recall."""
    feats = SE.shapes_features(test_scenes["image"], evaluator)
    a, b = feats[:250], feats[250:]
    kid_floor, _ = M.kid_from_features(a, b, subset_size=250, num_subsets=1)
    blurred = EV._gaussian_blur(test_scenes["image"][250:], torch.full((250,), 1.5))
    kid_blur, _ = M.kid_from_features(a, SE.shapes_features(blurred, evaluator), subset_size=250, num_subsets=1)
    assert kid_blur > 0.2 and kid_blur > 20 * abs(kid_floor)
    single = test_scenes["label"] >= 0                             # one-object scenes, about half
    fake = feats[250:][single[250:]]                               # a generator that never draws two objects
    assert M.precision_recall(a, fake)["precision"] > 0.9         # what it draws looks real ...
    covered_single = M.precision_recall(a[single[:250]], fake)["recall"]
    covered_pairs = M.precision_recall(a[~single[:250]], fake)["recall"]
    assert covered_single > 0.9 and covered_pairs < 0.7           # ... but the two-object mode is missing


def test_fid_floor_is_fid_between_disjoint_real_sets(test_scenes, evaluator):
    """shapes_fid_floor(n) compares test images [0, n) with [n, 2n): the same scenes as the fixture's halves."""
    features = lambda x: SE.shapes_features(x, evaluator)  # noqa: E731
    expected = M.fid_from_features(features(test_scenes["image"][250:]), features(test_scenes["image"][:250]))
    assert SE.shapes_fid_floor(250, evaluator=evaluator) == pytest.approx(expected, rel=1e-6)
    assert expected > 0


def test_shapes_class_logits_give_a_high_inception_score(test_scenes, evaluator):
    single = test_scenes["label"] >= 0
    logp = SE.shapes_class_logits(test_scenes["image"][single], evaluator)
    assert torch.equal(logp.argmax(1), test_scenes["label"][single])
    assert M.inception_score(logp, splits=1)[0] > 15                # ≈ 24 for perfect, even 24-way predictions


# --------------------------------------------------------------------------------------------------------
# Prompt-matching bookkeeping with an oracle evaluator (exact, no network involved)
# --------------------------------------------------------------------------------------------------------


class OracleEvaluator(torch.nn.Module):
    """Returns logits that encode given scenes exactly (stands in for the CNN)."""

    def __init__(self, scenes):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        t = EV.scene_targets(scenes)
        logits = torch.full((len(scenes), EV.NUM_CELLS, EV.HEAD_WIDTH), -20.0)
        logits[..., 0] = torch.where(t["occupied"] > 0, 20.0, -20.0)
        i = 1
        for name, values in EV.ATTRIBUTES.items():
            hot = torch.nn.functional.one_hot(t[name].clamp_min(0), len(values)).float()
            logits[..., i:i + len(values)] = 40 * hot - 20
            i += len(values)
        self.logits = logits

    def prepare(self, x):
        return x

    def forward(self, x):
        return self.logits[:len(x)]


def test_prompt_matching_bookkeeping_with_an_oracle():
    ds = ShapesDataset("test", max_objects=3, size=60)
    scenes = [ds.scene(i) for i in range(60)]
    oracle = OracleEvaluator(scenes)
    images = torch.zeros(60, 3, 32, 32)
    captions = [s.caption for s in scenes]
    res = SE.prompt_accuracy(images, captions, oracle)
    assert res["accuracy"] == 1.0 and all(v == 1.0 for v in res["by_attribute"].values())
    assert set(res["by_type"]) == {"one_object", "two_objects_relation", "objects_with_positions"}
    # hand-checked cases on one two-object scene: change one condition at a time
    k = next(i for i, s in enumerate(scenes) if len(s.objects) == 2)
    a, b = scenes[k].objects
    rel = scenes[k].relation
    opposite = {"to the left of": "to the right of", "to the right of": "to the left of",
                "above": "below", "below": "above"}[rel]
    other_color = next(c for c in ("red", "green", "blue") if c != a.color)
    cases = {
        f"{a.phrase()} {rel} {b.phrase()}": (True, {}),
        f"{b.phrase()} {opposite} {a.phrase()}": (True, {}),
        f"{a.phrase()} {opposite} {b.phrase()}": (False, {"relation": 0.0}),
        f"a {a.size} {other_color} {a.shape} {rel} {b.phrase()}": (False, {"color": 0.5}),
    }
    for caption, (ok, attrs) in cases.items():
        one = SE.prompt_accuracy(images[k:k + 1], [caption], OracleEvaluator([scenes[k]]))
        assert one["accuracy"] == float(ok), caption
        for name, value in attrs.items():
            assert one["by_attribute"][name] == value, (caption, one["by_attribute"])
    # a correct one-object prompt on a two-object image fails only on the count (unless exact_count=False)
    single = f"{a.phrase()} in the {a.position}"
    strict = SE.prompt_accuracy(images[k:k + 1], [single], OracleEvaluator([scenes[k]]))
    loose = SE.prompt_accuracy(images[k:k + 1], [single], OracleEvaluator([scenes[k]]), exact_count=False)
    assert strict["accuracy"] == 0.0 and strict["by_attribute"]["count"] == 0.0 and loose["accuracy"] == 1.0


def test_layout_accuracy_bookkeeping_with_an_oracle():
    ds = ShapesDataset("test", max_objects=2, size=40)
    scenes = [ds.scene(i) for i in range(40)]
    b = ds.batch(range(40))
    oracle = OracleEvaluator(scenes)
    images = torch.zeros(40, 3, 32, 32)
    assert SE.layout_accuracy(images, b["layout"], oracle)["accuracy"] == 1.0
    wrong_class = b["layout"].clone()
    wrong_class[:, 0, 0] = (wrong_class[:, 0, 0] + 1) % NUM_CLASSES    # first object: next class
    res = SE.layout_accuracy(images, wrong_class, oracle)
    n_objects = int((b["layout"][..., 0] >= 0).sum())
    assert res["accuracy"] == 0.0 and res["position"] == 1.0
    assert res["object_accuracy"] == pytest.approx(1 - 40 / n_objects)
    labels = torch.tensor([s.label for s in scenes])
    single = labels >= 0
    assert SE.class_accuracy(images[single], labels[single], OracleEvaluator(
        [s for s, m in zip(scenes, single) if m]))["accuracy"] == 1.0


# --- is this a scene at all? (readable_scenes, notebook 02) ----------------------------------------------------


def test_real_scenes_are_readable_and_noise_is_not():
    x = SE.real_images(200)
    assert EV.readable_scenes(EV.predict_cells(x)).float().mean() > 0.97
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(200, 3, 32, 32, generator=g) * 2 - 1
    blobs = F.interpolate(torch.rand(200, 3, 8, 8, generator=g) * 2 - 1, size=32, mode="bilinear")
    assert EV.readable_scenes(EV.predict_cells(noise)).float().mean() < 0.05
    assert EV.readable_scenes(EV.predict_cells(blobs)).float().mean() < 0.1

def test_readable_scenes_follows_its_definition():
    """Hand-made readings: one confident object is readable; an unsure cell, a third object, or an unsure
    color is not."""
    logits = torch.full((4, 9, 13), -10.0)                 # all cells confidently empty, attributes uniform
    logits[:, 4, 0] = 10.0                                 # one object in the centre …
    logits[:, 4, 1], logits[:, 4, 5], logits[:, 4, 11] = 10.0, 10.0, 10.0   # … with a sure shape, color, size
    logits[1, 0, 0] = 0.0                                  # image 1: a cell at p = 0.5
    logits[2, [0, 1], 0] = 10.0                            # image 2: three objects (attributes uniform, too)
    logits[3, 4, 5] = -10.0                                # image 3: the color is a coin toss
    p = logits[..., 0].sigmoid()
    cells = {"p_occupied": p, "occupied": p > 0.5, "logits": logits}
    assert EV.readable_scenes(cells).tolist() == [True, False, False, False]
    assert EV.readable_scenes(cells, max_objects=4, confidence=0.6).tolist() == [True, False, False, False]
