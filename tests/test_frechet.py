"""Frechet distance: the closed form, its properties on real features, and the optional torchmetrics FID."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.linalg
import torch

from scdpo.cost.backbone import image_backbone
from scdpo.eval.frechet import ENV_INCEPTION, frechet_distance, frechet_score, torchmetrics_fid
from scdpo.world.render import render_scenes
from scdpo.world.suites import suite_scenes
from test_perf import load_script


def reference_fd(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's general matrix square root (real part kept)."""
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(ca @ cb).real
    return float(mu @ mu + np.trace(ca + cb - 2 * root))


def test_matches_textbook_formula_and_is_symmetric():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6))
    b = rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) * 0.7 + 0.3
    fd = frechet_distance(a, b)
    assert fd == pytest.approx(reference_fd(a, b), rel=1e-6)
    assert fd == pytest.approx(frechet_distance(b, a), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_singular_covariances_stay_real_and_finite():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(10, 40)), rng.normal(size=(12, 40)) + 1.0  # N < D: rank-deficient
    fd = frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    assert np.isfinite(fd) and fd > 40 * 0.9  # the mean shift alone contributes 40
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("n_a, n_b, d", [(200, 150, 6), (10, 12, 40), (60, 30, 40), (30, 90, 40), (300, 280, 128)])
def test_nuclear_norm_form_matches_the_eigendecompositions(n_a, n_b, d):
    # more samples than dimensions (QR'd), fewer (singular covariances), one of each, and about the
    # eval's proportions (a few hundred images, D of the order of N)
    rng = np.random.default_rng(n_a + d)
    a = rng.normal(size=(n_a, d)) ** 2
    b = rng.normal(size=(n_b, d)) @ rng.normal(size=(d, d)) * 0.3 + 0.5
    # the eval's algebra before 2026-12-06, the throughput benchmark's yardstick
    eigh_fd = load_script("emojiworld_throughput").eigh_frechet
    assert frechet_distance(a, b) == pytest.approx(eigh_fd(a, b), rel=1e-7)
    assert frechet_distance(a, b, device="cpu") == frechet_distance(a, b)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


@pytest.fixture(scope="module")
def effnet():
    return image_backbone("efficientnet-lite0")


def test_fd_on_features_grows_with_a_colour_shift(effnet):
    images = render_scenes(suite_scenes("eval-clean", 16, 0), 64)
    others = render_scenes(suite_scenes("eval-clean", 16, 1), 64)
    tint = torch.tensor([1.0, 0.6, 0.6]).view(1, 3, 1, 1)
    feats = effnet.features(torch.cat([images, others, others * (0.5 + 0.5 * tint), others * tint]))
    f_img, f_oth, f_half, f_full = feats.split(16)
    base = frechet_distance(f_img, f_oth)  # two samples of one distribution
    assert base < frechet_distance(f_img, f_half) < frechet_distance(f_img, f_full)
    assert frechet_distance(f_half, f_img) == pytest.approx(frechet_distance(f_img, f_half), rel=1e-6)


def test_frechet_score_reads_a_folder(effnet, tmp_path):
    from scdpo.world.dataset import png_bytes

    images = render_scenes(suite_scenes("eval-clean", 4, 0), 64)
    for i, im in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(im))
    r = frechet_score(tmp_path, images, effnet)
    assert r["n_a"] == r["n_b"] == 4 and r["backbone"] == "efficientnet-lite0"
    assert r["fd"] < 0.1  # the same images, up to PNG rounding (different sets score ~100)
    assert frechet_score(images, images, effnet)["fd"] == pytest.approx(0.0, abs=1e-6)


def test_torchmetrics_fid_is_optional():
    x = torch.rand(4, 3, 32, 32)
    try:
        import torchmetrics  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="torchmetrics"):
            torchmetrics_fid(x, x)
        return
    with pytest.raises(FileNotFoundError, match="Inception weights"):
        torchmetrics_fid(x, x, weights_path="/nonexistent/pt_inception.pth")


def test_torchmetrics_fid_runs_when_available():
    pytest.importorskip("torchmetrics")
    weights = os.environ.get(ENV_INCEPTION)
    if not weights or not os.path.isfile(weights):
        pytest.skip(f"no local Inception weights (set ${ENV_INCEPTION})")
    x = render_scenes(suite_scenes("eval-clean", 8, 0), 64)
    r = torchmetrics_fid(x, x)
    assert r["fid"] == pytest.approx(0.0, abs=1e-2) and r["n_a"] == 8


def test_the_speed_benchmarks_exact_reference_agrees_to_float64():
    # benchmarks/frechet_speed.py's 40-digit reference, on a small pair of sets with fewer samples than D
    bench = load_script("frechet_speed")
    a, b = bench.features(6, 8, 0, 0.3), bench.features(5, 8, 1, 0.35)
    assert frechet_distance(a, b) == pytest.approx(bench.exact_fd(a, b), rel=1e-12)
