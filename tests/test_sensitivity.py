"""The (a, b) grid and the k curve of vrf_core.sensitivity equal `TopMSplit.vrf_accuracy` and the full N x C
mixture (vrf_core.evaluate) on every cell: random splits, every rule, calibrated or not, and adversarial
ones (exact ties, flat rows, the true class outside the top-m lists, and distances placed so that a cell's
weight lands on the crossing of the two leading classes' lines)."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_topm import T_FT, T_ZS, random_split

from vrf_core.evaluate import SplitData, VRFParams, vrf_preds
from vrf_core.sensitivity import Sensitivity, win_intervals
from vrf_core.topm import TopMSplit

A_GRID = np.linspace(0.0, 3.0, 20)
B_GRID = np.geomspace(0.001, 2.0, 10)
PARAMS = [VRFParams(1.5, 0.6, 1), VRFParams(0.8, 0.1, 3, "linear"), VRFParams(1.0, 0.3, 8, "binary"),
          VRFParams(1.2, 0.2, 2, "sigmoid", "l2", calibrate=False), VRFParams(1.5, 0.6, 4, "linear", calibrate=False)]


def straightforward_grid(live: TopMSplit, params: VRFParams, a_values, b_values) -> np.ndarray:
    return np.array([[live.vrf_accuracy(replace(params, a=float(a), b=float(b))) for a in a_values]
                     for b in b_values])


def full_mixture_grid(split: SplitData, params: VRFParams, a_values, b_values, temps) -> np.ndarray:
    return np.array([[float((vrf_preds(split, replace(params, a=float(a), b=float(b)), temps) == split.labels).mean())
                      for a in a_values] for b in b_values])


def assert_grid_exact(split: SplitData, live: TopMSplit, params: VRFParams, a_values=A_GRID, b_values=B_GRID,
                      full: bool = True) -> Sensitivity:
    sens = Sensitivity(live)
    got = sens.grid_accuracy(params, a_values, b_values)
    assert got.shape == (len(b_values), len(a_values))
    np.testing.assert_array_equal(got, straightforward_grid(live, params, a_values, b_values))
    if full:
        np.testing.assert_array_equal(got, full_mixture_grid(split, params, a_values, b_values, live.temperatures))
    ks = range(1, split.knn_sqdist.shape[1] + 1)
    want_k = [live.vrf_accuracy(replace(params, k=k)) for k in ks]
    np.testing.assert_array_equal(sens.k_accuracy(params, ks), want_k)
    return sens


@pytest.mark.parametrize("c,m", [(50, 5), (6, 3), (2, 5), (30, 1), (300, 2)])
def test_grid_and_k_curve_equal_the_straightforward_way(c, m):
    split = random_split(np.random.default_rng(c * 7 + m), n=400, c=c)
    live = TopMSplit.from_split_data(split, T_ZS, T_FT, m=m)
    for params in PARAMS:
        assert_grid_exact(split, live, params)


def test_unsorted_grids_and_single_values():
    split = random_split(np.random.default_rng(11), n=300, c=20)
    live = TopMSplit.from_split_data(split, T_ZS, T_FT)
    assert_grid_exact(split, live, VRFParams(1.0, 0.3, 2), a_values=[2.0, 0.5, 1.1, 0.5], b_values=[0.7, 0.01])
    assert_grid_exact(split, live, VRFParams(1.0, 0.3, 2, "linear"), a_values=[1.3], b_values=[0.2])
    with pytest.raises(ValueError, match="b must be positive"):
        Sensitivity(live).grid_accuracy(VRFParams(), [1.0], [0.0])


def test_ties_flat_rows_and_labels_outside_the_tables():
    """Integer logits (many exact ties), flat rows (the full row decides), both models equal, and with m = 1 the
    true class often outside both top-m lists."""
    rng = np.random.default_rng(4)
    n, c = 400, 40
    zs = rng.integers(-2, 3, size=(n, c)).astype(np.float32)
    ft = rng.integers(-2, 3, size=(n, c)).astype(np.float32)
    zs[:40], ft[:40] = 0.0, 0.0
    ft[40:80] = zs[40:80]
    zs[80:120, 30:] = zs[80:120, :1]
    knn = np.sort(rng.uniform(0, 3, size=(n, 4)), axis=1).astype(np.float32)
    split = SplitData("ties", "ood", rng.integers(0, c, n), zs, ft, knn)
    for m in (1, 3):
        live = TopMSplit.from_split_data(split, 1.0, 1.0, m=m)
        table = live.tables()[(1.0, 1.0)]
        assert (table.cand != split.labels).all(axis=0).any()  # some labels are outside the tables
        for params in (VRFParams(1.2, 0.3, 2), VRFParams(1.2, 0.3, 2, "linear"), VRFParams(1.2, 0.3, 3, "binary")):
            sens = assert_grid_exact(split, live, params)
            assert sens.exact_rows > 0  # the exact path was taken


def crossing_split(rng, rule: str, n: int = 600, c: int = 12) -> tuple[SplitData, float, float]:
    """Labels = the fine-tuned model's class, rival = the zero-shot one; each sample's distance puts its weight at
    one grid cell exactly on the crossing of the two lines (up to float32 rounding of the distance)."""
    split = random_split(rng, n=n, c=c, k=2, scale=1.0)
    p_zs, p_ft = split.probs("zs", T_ZS).astype(np.float64), split.probs("ft", T_FT).astype(np.float64)
    y, r = p_ft.argmax(1), p_zs.argmax(1)
    rows = np.arange(n)
    num = p_zs[rows, r] - p_zs[rows, y]
    den = (p_ft[rows, y] - p_zs[rows, y]) - (p_ft[rows, r] - p_zs[rows, r])
    cross = np.clip(np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.5), 0.02, 0.98)
    a = A_GRID[rng.integers(0, len(A_GRID), n)]
    b = B_GRID[rng.integers(3, len(B_GRID), n)]
    offset = np.log(cross / (1 - cross)) if rule == "sigmoid" else 2 * cross - 1
    d = np.maximum(a - b * offset, 0.0)
    knn = np.stack([d, d + 0.1], axis=1).astype(np.float32)
    return SplitData("cross", "ood", y, split.logits_zs, split.logits_ft, knn), a, b


@pytest.mark.parametrize("rule", ["sigmoid", "linear"])
def test_weights_on_the_crossing_of_the_two_lines(rule):
    split, _, _ = crossing_split(np.random.default_rng(8), rule)
    live = TopMSplit.from_split_data(split, T_ZS, T_FT)
    sens = assert_grid_exact(split, live, VRFParams(1.0, 0.3, 1, rule))
    assert sens.exact_rows > 20  # many cells land in the uncertain band


def test_intervals_bracket_the_outcome():
    """Inside the sure interval the sample is right, outside the may interval wrong, at every w tried."""
    split = random_split(np.random.default_rng(9), n=300, c=15)
    live = TopMSplit.from_split_data(split, T_ZS, T_FT, m=2)
    iv = win_intervals(live.tables()[(T_ZS, T_FT)], split.labels)
    for w in np.linspace(0, 1, 41):
        right = live.mixture_preds(w, True) == split.labels
        assert right[iv.always].all()
        assert not np.delete(right, iv.active)[~np.delete(iv.always, iv.active)].any()
        sure = (w > iv.sure_lo) & (w < iv.sure_hi)
        outside = (w <= iv.may_lo) | (w >= iv.may_hi)
        assert right[iv.active][sure].all() and not right[iv.active][outside].any()
    assert 0 < len(iv.active) < len(split)


def test_one_class_splits_have_no_tables():
    split = SplitData("one", "ood", np.zeros(30, np.int64), np.zeros((30, 1), np.float32),
                      np.ones((30, 1), np.float32), np.sort(np.random.default_rng(1).uniform(0, 2, (30, 3)), axis=1))
    live = TopMSplit.from_split_data(split, 1.0, 1.0)
    assert_grid_exact(split, live, VRFParams(1.0, 0.2, 1), a_values=[0.5, 1.0], b_values=[0.1])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), c=st.integers(2, 25), m=st.integers(1, 6), levels=st.integers(2, 6),
       rule=st.sampled_from(["sigmoid", "linear", "binary"]), cal=st.booleans())
def test_property_equal_to_vrf_accuracy(seed, c, m, levels, rule, cal):
    rng = np.random.default_rng(seed)
    n = 64
    zs = rng.integers(0, levels, size=(n, c)).astype(np.float32)
    ft = rng.integers(0, levels, size=(n, c)).astype(np.float32)
    knn = np.sort(rng.choice([0.0, 0.5, 1.0, rng.uniform(0, 2)], size=(n, 3)), axis=1).astype(np.float32)
    split = SplitData("p", "ood", rng.integers(0, c, n), zs, ft, knn)
    live = TopMSplit.from_split_data(split, 1.3, 0.8, m=m)
    a_values, b_values = rng.uniform(0, 2, 5), rng.uniform(0.01, 1, 3)
    params = VRFParams(1.0, 0.5, 2, rule, calibrate=cal)
    sens = Sensitivity(live)
    np.testing.assert_array_equal(sens.grid_accuracy(params, a_values, b_values),
                                  straightforward_grid(live, params, a_values, b_values))
    np.testing.assert_array_equal(sens.k_accuracy(params, [1, 2, 3]),
                                  [live.vrf_accuracy(replace(params, k=k)) for k in (1, 2, 3)])


def test_ablation_distances():
    """VRF's ablations (distances to the whole ID training set, or in zero-shot features) go through the same arrays
    `TopMSplit.vrf_weights` reads."""
    rng = np.random.default_rng(12)
    split = random_split(rng, n=300, c=20, k=4)
    split.knn_sqdist_train = np.sort(rng.uniform(0, 2, size=(300, 4)), axis=1).astype(np.float32)
    split.knn_sqdist_zs = np.sort(rng.uniform(0, 4, size=(300, 4)), axis=1).astype(np.float32)
    live = TopMSplit.from_split_data(split, T_ZS, T_FT)
    for neighbours, features in (("train", "ft"), ("zsf", "zs")):
        assert_grid_exact(split, live, VRFParams(1.0, 0.3, 2, neighbours=neighbours, features=features))
