import numpy as np
import pytest

from vrf_core.analysis import (
    accuracy_ratio_by_bin,
    binned_accuracy,
    convert_scale,
    density,
    distance_bin_edges,
    sweep,
    top_k,
)
from vrf_core.derive import _curves
from vrf_core.evaluate import SplitData, VRFParams, mixture_preds
from vrf_core.topm import TopMSplit
from vrf_core.weights import kth_distance, weight


def make_split(n=400, c=7, k=5, seed=0) -> SplitData:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits_zs = rng.normal(size=(n, c)) * 2 + 1.5 * np.eye(c)[labels]
    logits_ft = rng.normal(size=(n, c)) * 2 + 3.0 * np.eye(c)[labels]
    sq = np.sort(rng.uniform(0.5, 2.5, size=(n, k)), axis=1).astype(np.float32)
    return SplitData("s", "ood", labels, logits_zs.astype(np.float32), logits_ft.astype(np.float32), sq)


def test_baseline_curves_and_sweep():
    s = make_split()
    topm = TopMSplit.from_split_data(s, 1.3, 0.8)
    wse = np.stack([s.logits_zs.argmax(1), s.logits_ft.argmax(1)])
    curves = _curves(topm, [0.0, 0.5, 1.0], wse)
    np.testing.assert_allclose(curves["WSE"], [(s.logits_zs.argmax(1) == s.labels).mean(),
                                               (s.logits_ft.argmax(1) == s.labels).mean()])
    for i, alpha in enumerate([0.0, 0.5, 1.0]):
        assert curves["OSE"][i] == (mixture_preds(s, alpha, 1.0, 1.0) == s.labels).mean()
        assert curves["OSE (calibrated)"][i] == (mixture_preds(s, alpha, 1.3, 0.8) == s.labels).mean()
    assert set(_curves(topm, [0.5], None)) == {"OSE", "OSE (calibrated)"}  # no WSE predictions
    ps = sweep(VRFParams(a=1.4, b=0.2, k=3), "k", [1.0, 2.0])
    assert [p.k for p in ps] == [1, 2] and all(isinstance(p.k, int) and p.a == 1.4 for p in ps)


def test_binned_accuracy_and_ratio():
    d = np.array([0.1, 0.2, 0.6, 0.7, 0.9])
    edges = np.array([0.0, 0.5, 1.0])
    count, acc = binned_accuracy(d, np.array([1, 0, 1, 1, 0]), edges)
    np.testing.assert_array_equal(count, [2, 3])
    np.testing.assert_allclose(acc, [0.5, 2 / 3])
    r = accuracy_ratio_by_bin(d, np.array([1, 1, 1, 1, 0]), np.array([1, 0, 1, 0, 0]), edges, min_count=2)
    np.testing.assert_allclose(r["ratio"], [2.0, 2.0])
    r = accuracy_ratio_by_bin(d, np.ones(5), np.zeros(5), edges, min_count=2)
    assert np.isnan(r["ratio"]).all()


def test_bin_edges_cover_all_points():
    rng = np.random.default_rng(1)
    ds = [rng.normal(1, 0.2, 300), rng.normal(1.5, 0.3, 200)]
    e = distance_bin_edges(ds, 10)
    assert len(e) == 11 and e[0] <= min(x.min() for x in ds) and e[-1] >= max(x.max() for x in ds)
    counts, _ = binned_accuracy(np.concatenate(ds), np.ones(500), e)
    assert counts.sum() == 500


def test_top_k_sorted():
    idx, p = top_k(np.array([0.1, 0.5, 0.05, 0.3, 0.05]), 3)
    np.testing.assert_array_equal(idx, [1, 3, 0])
    np.testing.assert_allclose(p, [0.5, 0.3, 0.1])


@pytest.mark.parametrize("a,b", [(1.5, 0.6), (0.8, 0.05)])
def test_convert_scale_keeps_centre_and_slope(a, b):
    a2, b2 = convert_scale(a, b, "squared", "l2")
    assert a2 ** 2 == pytest.approx(a)
    sq = np.sort(np.random.default_rng(0).uniform(0, 4, (50, 1)), axis=0)
    w_sq = weight(kth_distance(sq, 1, "squared"), a, b)
    w_l2 = weight(kth_distance(sq, 1, "l2"), a2, b2)
    near = np.abs(sq[:, 0] - a) < 0.05
    np.testing.assert_allclose(w_sq[near], w_l2[near], atol=0.02)
    assert convert_scale(*convert_scale(a, b, "squared", "l2"), "l2", "squared") == pytest.approx((a, b))
    with pytest.raises(ValueError):
        convert_scale(a, b, "squared", "cosine")


def test_density_integrates_to_one_and_peaks_at_the_mode():
    values = np.random.default_rng(2).normal(1.3, 0.05, 5000)
    grid = np.linspace(1.0, 1.6, 301)
    f = density(values, grid)
    assert np.trapezoid(f, grid) == pytest.approx(1.0, abs=0.01)
    assert abs(grid[f.argmax()] - 1.3) < 0.02
