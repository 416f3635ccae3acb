"""Temperature scaling on synthetic logits whose true calibration is known by construction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rooivalk.export.temperature import (
    _bin_top1,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_diagram,
)


def _calibrated(samples: int = 20_000, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, K) and labels drawn from softmax(logits) itself: calibrated in expectation."""
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((samples, classes)) * 2.0).astype(np.float32)
    probs = apply_temperature(logits, 1.0).astype(np.float64)
    cumulative = probs.cumsum(axis=1)
    draws = rng.uniform(size=(samples, 1)) * cumulative[:, -1:]
    labels = (draws > cumulative).sum(axis=1).astype(np.int64)  # inverse-CDF sampling per row
    return logits, labels


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Reference NLL in numpy (log-sum-exp), independent of the module's torch code."""
    z = logits.astype(np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


@pytest.fixture(scope="module")
def calibrated() -> tuple[np.ndarray, np.ndarray]:
    return _calibrated()


def test_overconfident_model_gets_t_near_4_and_lower_ece(calibrated: tuple[np.ndarray, np.ndarray]) -> None:
    logits, labels = calibrated
    fit = fit_temperature(logits * 4.0, labels)
    assert fit.temperature == pytest.approx(4.0, rel=0.05)
    assert fit.ece_after < fit.ece_before / 3
    assert fit.ece_after < 0.02
    assert fit.nll_after < fit.nll_before
    assert (fit.samples, fit.bins) == (len(labels), 15)


def test_underconfident_model_gets_t_below_1(calibrated: tuple[np.ndarray, np.ndarray]) -> None:
    logits, labels = calibrated
    assert fit_temperature(logits * 0.5, labels).temperature == pytest.approx(0.5, rel=0.05)


def test_calibrated_model_keeps_t_near_1(calibrated: tuple[np.ndarray, np.ndarray]) -> None:
    logits, labels = calibrated
    fit = fit_temperature(logits, labels)
    assert fit.temperature == pytest.approx(1.0, abs=0.05)
    assert fit.ece_before < 0.02
    assert fit.nll_after <= fit.nll_before


def test_fitted_t_minimizes_nll(calibrated: tuple[np.ndarray, np.ndarray]) -> None:
    logits, labels = calibrated[0][:3000] * 2.5, calibrated[1][:3000]
    fit = fit_temperature(logits, labels)
    best = _nll(logits, labels, fit.temperature)
    assert fit.nll_after == pytest.approx(best, rel=1e-6)
    assert _nll(logits, labels, fit.temperature * 0.9) > best
    assert _nll(logits, labels, fit.temperature * 1.1) > best
    # A looser perturbation, still above: the minimum is not a flat plateau of a broken objective.
    assert _nll(logits, labels, fit.temperature * 0.99) > best
    assert _nll(logits, labels, fit.temperature * 1.01) > best


def test_fit_works_under_no_grad(calibrated: tuple[np.ndarray, np.ndarray]) -> None:
    logits, labels = calibrated[0][:2000] * 3.0, calibrated[1][:2000]
    with torch.inference_mode():
        fit = fit_temperature(logits, labels)
    assert fit.temperature > 2.0


def test_separable_data_stays_finite_at_the_bound() -> None:
    # Every prediction right: NLL falls all the way to T -> 0 (no interior minimum). With a small margin the
    # gradient stays large enough that LBFGS runs on until the bound on T (0.01) stops it, instead of overflowing.
    logits = np.tile(np.array([[0.1, 0.0, 0.0]], dtype=np.float32), (50, 1))
    fit = fit_temperature(logits, np.zeros(50, dtype=np.int64))
    assert fit.temperature == pytest.approx(0.01, rel=1e-6)
    assert np.isfinite([fit.nll_after, fit.ece_after]).all()
    assert fit.nll_after <= fit.nll_before


def test_ece_of_perfectly_calibrated_toy_is_zero() -> None:
    # 10 samples at confidence 0.8, 8 of them right; 4 at 0.5 (two classes tied, argmax = 0), 2 right.
    probs = np.array([[0.8, 0.2]] * 10 + [[0.5, 0.5]] * 4, dtype=np.float32)
    labels = np.array([0] * 8 + [1] * 2 + [0, 0, 1, 1])
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.0, abs=1e-6)


def test_ece_known_values() -> None:
    # Confidence 0.9 but only half right: the gap is 0.4 in the one occupied bin.
    probs = np.array([[0.9, 0.1]] * 10, dtype=np.float32)
    labels = np.array([0, 1] * 5)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4, abs=1e-6)
    # torchmetrics' documented example (n_bins=3 -> 0.2).
    probs = np.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40], [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
    assert expected_calibration_error(probs, np.array([0, 1, 2, 0]), bins=3) == pytest.approx(0.2, abs=1e-6)


def test_diagram_bins_agree_with_ece(calibrated: tuple[np.ndarray, np.ndarray]) -> None:
    # The bars drawn must add up to the ECE printed in the legend.
    logits, labels = calibrated[0][:5000] * 3.0, calibrated[1][:5000]
    probs = apply_temperature(logits, 1.0)
    stats = _bin_top1(probs, labels, 15)
    from_bars = float((np.abs(stats.accuracy - stats.confidence) * stats.counts).sum() / stats.counts.sum())
    assert from_bars == pytest.approx(expected_calibration_error(probs, labels, 15), abs=1e-5)
    assert stats.counts.sum() == len(labels)


def test_diagram_bins_put_edge_confidences_where_torchmetrics_does() -> None:
    # Confidences exactly on bin edges (0.5 and 0.75 with 4 bins) belong to the bin above, as in torchmetrics:
    # 0.5 -> [0.5, 0.75), 0.75 shares [0.75, 1] with 0.9. ECE = 0.25 * 4/10 + |0.8 - 4/6| * 6/10 = 0.18;
    # edges assigned to the bin below would give bars summing to 0.22.
    probs = np.array([[0.75, 0.25, 0.0]] * 4 + [[0.5, 0.3, 0.2]] * 4 + [[0.9, 0.1, 0.0]] * 2, dtype=np.float32)
    labels = np.array([0, 0, 1, 1] + [0, 1, 1, 1] + [0, 0])
    stats = _bin_top1(probs, labels, 4)
    from_bars = float((np.abs(stats.accuracy - stats.confidence) * stats.counts).sum() / stats.counts.sum())
    assert expected_calibration_error(probs, labels, 4) == pytest.approx(0.18, abs=1e-6)
    assert from_bars == pytest.approx(0.18, abs=1e-6)
    np.testing.assert_array_equal(stats.counts, [0, 0, 4, 6])


def test_apply_temperature_keeps_argmax_and_sums_to_one(calibrated: tuple[np.ndarray, np.ndarray]) -> None:
    logits = calibrated[0][:500]
    hot, soft = apply_temperature(logits, 1.0), apply_temperature(logits, 3.0)
    assert hot.dtype == np.float32
    assert soft.shape == logits.shape
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(hot.argmax(axis=1), soft.argmax(axis=1))
    assert soft.max(axis=1).mean() < hot.max(axis=1).mean()  # T > 1 softens


def test_reliability_diagram_writes_a_png(calibrated: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    logits, labels = calibrated[0][:3000] * 4.0, calibrated[1][:3000]
    target = tmp_path / "plots" / "reliability.png"
    returned = reliability_diagram(logits, labels, 4.0, target, "optical: val split")
    assert returned == target
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(target) as image:
        image.verify()
    with Image.open(target) as image:
        assert image.format == "PNG"
        assert image.size[0] > 300
        assert image.size[1] > 300
    assert [p.name for p in target.parent.iterdir()] == ["reliability.png"]  # no temp file left behind


BAD_FIT_INPUTS = [
    pytest.param(np.zeros((0, 3), np.float32), np.zeros(0, np.int64), "empty input", id="empty"),
    pytest.param(np.zeros((4, 3), np.float32), np.zeros(5, np.int64), r"\(4, 3\).*\(5,\)", id="length-mismatch"),
    pytest.param(np.zeros((4, 3), np.float32), np.zeros((4, 1), np.int64), r"\(4, 3\).*\(4, 1\)", id="labels-2d"),
    pytest.param(np.zeros(4, np.float32), np.zeros(4, np.int64), "2-D", id="logits-1d"),
    pytest.param(np.zeros((4, 1), np.float32), np.zeros(4, np.int64), "two classes", id="one-class"),
    pytest.param(np.zeros((4, 3), np.float32), np.array([0, 1, 3, 0]), "out of range.*class 3", id="label-high"),
    pytest.param(np.zeros((4, 3), np.float32), np.array([0, -1, 2, 0]), "out of range.*class -1", id="label-neg"),
    pytest.param(np.zeros((4, 3), np.float32), np.array([0.0, 1.0, 2.0, 0.0]), "integers", id="float-labels"),
    pytest.param(np.array([[0, np.nan, 1]] * 2, np.float32), np.zeros(2, np.int64), "non-finite", id="nan"),
    pytest.param(np.array([[0, np.inf, 1]] * 2, np.float32), np.zeros(2, np.int64), "non-finite", id="inf"),
    pytest.param(np.zeros((4, 3), np.int64), np.zeros(4, np.int64), "floating point", id="int-logits"),
]


@pytest.mark.parametrize(("logits", "labels", "message"), BAD_FIT_INPUTS)
def test_fit_rejects_bad_input(logits: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_temperature(logits, labels)


def test_bad_bins_and_temperatures_are_rejected(tmp_path: Path) -> None:
    logits, labels = np.zeros((4, 3), np.float32), np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        fit_temperature(logits, labels, bins=0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be"):
            apply_temperature(logits, bad)
    with pytest.raises(ValueError, match="temperature must be"):
        reliability_diagram(logits, labels, 0.0, tmp_path / "x.png", "t")
    assert not (tmp_path / "x.png").exists()


def test_ece_rejects_logits_passed_as_probabilities() -> None:
    logits = np.array([[2.0, -1.0], [0.5, 0.1]], np.float32)
    with pytest.raises(ValueError, match=r"\[0, 1\].*apply_temperature"):
        expected_calibration_error(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="sum to 1"):
        expected_calibration_error(np.array([[0.2, 0.2], [0.5, 0.5]], np.float32), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(3,\)"):
        expected_calibration_error(np.array([[0.5, 0.5]] * 2, np.float32), np.array([0, 1, 0]))
