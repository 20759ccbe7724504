"""Exact re-weighting from top-m tables (vrf_core.topm) gives the same predictions as the full N x C mixtures of
vrf_core.evaluate on every sample: random, adversarial (ties, flat rows, w = 0 and 1, binary
rule, few classes) and projected splits, plus a property test."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vrf_core import evaluate
from vrf_core.data import ClassProjection
from vrf_core.evaluate import Hyperparameters, SplitData, VRFParams, mixture_preds, vrf_preds
from vrf_core.projection import project_logits
from vrf_core.topm import TopMSplit, TopMTable, ose_curve, softmax_rows, vrf_curve

T_ZS, T_FT = 1.7, 0.6


def random_split(rng, n=400, c=50, k=8, scale=3.0, dtype=np.float32) -> SplitData:
    labels = rng.integers(0, c, n)
    zs = rng.normal(size=(n, c)) * scale
    zs[np.arange(n), labels] += 2.0
    ft = rng.normal(size=(n, c)) * scale
    ft[np.arange(n), labels] += 4.0
    knn = np.sort(rng.uniform(0, 3, size=(n, k)), axis=1).astype(np.float32)
    return SplitData("s", "ood", labels, zs.astype(dtype), ft.astype(dtype), knn)


def assert_same(split: SplitData, live: TopMSplit, params: VRFParams) -> None:
    expected = vrf_preds(split, params, (T_ZS, T_FT))
    np.testing.assert_array_equal(live.vrf_preds(params), expected)


PARAMS = [VRFParams(1.5, 0.6, 1), VRFParams(0.8, 0.1, 3, "linear"), VRFParams(1.0, 0.3, 8, "binary"),
          VRFParams(1.2, 0.2, 2, "sigmoid", "l2", calibrate=False), VRFParams(1.5, 0.6, 4, calibrate=False)]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_softmax_rows_equals_split_probs_bitwise(dtype):
    split = random_split(np.random.default_rng(0), n=700, c=300, dtype=dtype)
    for t in (1.0, 0.37, 2.9):
        full = split.probs("ft", t)
        np.testing.assert_array_equal(softmax_rows(split.logits_ft, t), full)
        rows = np.array([5, 3, 699, 0])
        np.testing.assert_array_equal(softmax_rows(split.logits_ft[rows], t), full[rows])


@pytest.mark.parametrize("c,m", [(50, 5), (1000, 5), (6, 3), (2, 5), (7, 1)])
def test_vrf_and_ose_equal_the_full_mixture(c, m):
    rng = np.random.default_rng(c + m)
    split = random_split(rng, n=600 if c < 1000 else 300, c=c)
    live = TopMSplit.from_split_data(split, T_ZS, T_FT, m=m)
    for params in PARAMS:
        assert_same(split, live, params)
    np.testing.assert_array_equal(live.model_preds("zs"), split.logits_zs.argmax(1))
    np.testing.assert_array_equal(live.model_preds("ft"), split.logits_ft.argmax(1))
    for alpha in (0.0, 0.1, 0.5, 0.9, 1.0):
        for cal in (False, True):
            t = (T_ZS, T_FT) if cal else (1.0, 1.0)
            np.testing.assert_array_equal(live.mixture_preds(alpha, cal), mixture_preds(split, alpha, *t))


def test_curves_equal_one_value_at_a_time():
    rng = np.random.default_rng(3)
    splits = [random_split(rng, n=200, c=30), random_split(rng, n=150, c=30)]
    lives = [TopMSplit.from_split_data(s, T_ZS, T_FT) for s in splits]
    alphas = [i / 10 for i in range(11)]
    got = ose_curve(lives, alphas, calibrated=True)
    want = [[(mixture_preds(s, al, T_ZS, T_FT) == s.labels).mean() for s in splits] for al in alphas]
    np.testing.assert_array_equal(got, want)
    base = VRFParams(1.0, 0.3, 2)
    a_values = np.linspace(0.2, 2.5, 7)
    got = vrf_curve(lives, base, a_values)
    want = [[(vrf_preds(s, VRFParams(float(a), 0.3, 2), (T_ZS, T_FT)) == s.labels).mean() for s in splits]
            for a in a_values]
    np.testing.assert_array_equal(got, want)


def test_ties_flat_rows_and_extreme_weights():
    """Exact ties inside and across the top-m lists; flat rows where every class ties (the
    bound cannot certify, so the full row decides); w exactly 0 and 1."""
    rng = np.random.default_rng(4)
    n, c = 500, 40
    zs = rng.integers(-2, 3, size=(n, c)).astype(np.float32)  # few distinct values: many ties
    ft = rng.integers(-2, 3, size=(n, c)).astype(np.float32)
    zs[:50] = 0.0  # flat rows
    ft[:50] = 0.0
    ft[50:100] = zs[50:100]  # both models agree exactly
    zs[100:150, 30:] = zs[100:150, :1]  # the row's first value repeated beyond the top-m lists
    knn = np.sort(rng.uniform(0, 3, size=(n, 4)), axis=1).astype(np.float32)
    split = SplitData("ties", "ood", rng.integers(0, c, n), zs, ft, knn)
    live = TopMSplit.from_split_data(split, 1.0, 1.0, m=3)
    w = rng.uniform(size=n)
    w[::3], w[1::3] = 0.0, 1.0
    for weights in (w, 0.0, 1.0, 0.5, 0.3):
        np.testing.assert_array_equal(live.mixture_preds(weights), mixture_preds(split, weights, 1.0, 1.0))
    assert live.fallback_rows > 0  # the full-row path was exercised
    assert (live.mixture_preds(0.5)[:50] == 0).all()  # a flat row's argmax is class 0, as np.argmax
    np.testing.assert_array_equal(live.model_preds("zs"), zs.argmax(1))


@pytest.mark.parametrize("projection", [ClassProjection.subset([3, 7, 8, 20, 41, 59]),
                                        ClassProjection(((0, 5, 9), (1,), (2, 3), (40, 41, 42, 43), (59, 11)))])
def test_projected_splits(projection):
    """ImageNet-A/R-style subsets and ObjectNet-style groups (max over each group's logits)."""
    full = random_split(np.random.default_rng(5), n=500, c=60)
    split = SplitData("proj", "ood", full.labels % projection.num_classes,
                      project_logits(full.logits_zs, projection), project_logits(full.logits_ft, projection),
                      full.knn_sqdist)
    live = TopMSplit.from_split_data(split, T_ZS, T_FT, m=2)
    for params in PARAMS:
        assert_same(split, live, params)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), c=st.integers(2, 40), m=st.integers(1, 6),
       levels=st.integers(2, 6), t=st.sampled_from([0.5, 1.0, 1.3]))
def test_property_equal_to_full_mixture(seed, c, m, levels, t):
    """Logits drawn from a few levels (ties are common); weights include 0, 1 and repeats."""
    rng = np.random.default_rng(seed)
    n = 64
    zs = rng.integers(0, levels, size=(n, c)).astype(np.float32)
    ft = rng.integers(0, levels, size=(n, c)).astype(np.float32)
    w = rng.choice([0.0, 1.0, 0.5, rng.uniform(), rng.uniform()], size=n)
    split = SplitData("p", "ood", rng.integers(0, c, n), zs, ft, np.zeros((n, 1), np.float32))
    live = TopMSplit.from_split_data(split, t, 1.0, m=m)
    np.testing.assert_array_equal(live.mixture_preds(w, True), mixture_preds(split, w, t, 1.0))
    np.testing.assert_array_equal(live.mixture_preds(float(w[0]), False), mixture_preds(split, w[0], 1.0, 1.0))


def test_method_preds_equal_the_full_computation_and_tables_round_trip():
    """method_preds with the top-m predictor gives the full computation's predictions for every
    method; tables rebuilt from their arrays decide the same."""
    rng = np.random.default_rng(6)
    split = random_split(rng, n=500, c=80)
    wse = np.stack([((1 - al) * split.logits_zs + al * split.logits_ft).argmax(1) for al in (0.0, 0.5, 1.0)])
    split.ood_scores = {"knn": rng.normal(size=len(split)).astype(np.float32)}
    sel = Hyperparameters("s", T_ZS, T_FT, 0.5, 0.3, 0.6, VRFParams(1.2, 0.4, 3),
                    {"msp": 0.5, "energy": 3.0, "knn": 0.1, "mahalanobis": 0.0})
    full = evaluate.method_preds(split, sel, wse_preds=wse, wse_alphas=[0.0, 0.5, 1.0])
    live = TopMSplit.from_split_data(split, T_ZS, T_FT)
    got = evaluate.method_preds(split, sel, live, wse, [0.0, 0.5, 1.0])
    assert list(got) == list(full)  # same methods, same order ("mahalanobis": no score, left out)
    for method in full:
        np.testing.assert_array_equal(got[method], full[method], err_msg=method)
    stored = {t: TopMTable.from_arrays(table.to_arrays(), table.arg_zs, table.arg_ft)
              for t, table in live.tables().items()}
    again = TopMSplit.from_split_data(split, T_ZS, T_FT, tables=stored)
    assert set(stored) == {(1.0, 1.0), (T_ZS, T_FT)}
    for params in PARAMS:
        np.testing.assert_array_equal(again.vrf_preds(params), live.vrf_preds(params))
    with pytest.raises(ValueError, match="temperature|T ="):
        evaluate.method_preds(split, sel, TopMSplit.from_split_data(split, 1.0, 1.0))
    with pytest.raises(ValueError, match="inconsistent shapes"):
        TopMTable.from_arrays({**live.tables()[(1.0, 1.0)].to_arrays(), "r_ft": np.zeros(3, np.float32)},
                         live.model_preds("zs"), live.model_preds("ft"))
