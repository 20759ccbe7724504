"""Hyperparameter tuning through the top-m tables picks what the full N x C computation picks; ties
are broken explicitly; `derive` agrees with straightforward recomputations of every stored result."""

import numpy as np
import pytest

from vrf_core.derive import DeriveSpec, derive
from vrf_core.evaluate import OOD_AVG, FullMixture, SplitData, VRFParams, mixture_preds, vrf_preds
from vrf_core.topm import TopMSplit
from vrf_core.tuning import TuningSpec, tune_hyperparameters

ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0]


def random_split(rng, name, role, n=400, c=30, k=12) -> tuple[SplitData, np.ndarray]:
    labels = rng.integers(0, c, n)
    zs = rng.normal(size=(n, c)) * 2
    zs[np.arange(n), labels] += 1.0
    ft = rng.normal(size=(n, c)) * 2
    ft[np.arange(n), labels] += 2.5 if role != "ood" else 0.5
    knn = np.sort(rng.uniform(0, 2, size=(n, k)), axis=1).astype(np.float32)
    wse = np.stack([((1 - a) * zs + a * ft).argmax(1) for a in ALPHAS]).astype(np.int32)
    split = SplitData(name, role, labels, zs.astype(np.float32), ft.astype(np.float32), knn,
                      {"knn": -knn[:, 0], "mahalanobis": rng.normal(size=n)})
    return split, wse


@pytest.mark.parametrize("rule,scale,calibration", [("sigmoid", "squared", "confidence"), ("linear", "l2", "nll"),
                                                    ("binary", "squared", "none")])
@pytest.mark.parametrize("seed", [0, 1])
def test_top_m_tuning_picks_what_the_full_computation_picks(rule, scale, calibration, seed):
    split, wse = random_split(np.random.default_rng(seed), "val", "id_val")
    spec = TuningSpec(ALPHAS, ALPHAS, [1, 5, 10], rule, scale, calibration)
    fast = tune_hyperparameters(split, spec, wse)
    full = tune_hyperparameters(split, spec, wse, predictor_at=lambda tz, tf: FullMixture(split, tz, tf))
    assert fast == full
    assert fast.vrf.rule == rule and fast.vrf.scale == scale and fast.vrf.calibrate == (calibration != "none")


def test_ties_go_to_the_smallest_alpha_whatever_the_list_order():
    rng = np.random.default_rng(3)
    split, _ = random_split(rng, "val", "id_val")
    # Every alpha gives the same predictions: the tie must go to the smallest alpha (most zero-shot).
    same = np.tile(split.labels, (len(ALPHAS), 1)).astype(np.int32)
    for order in (ALPHAS, ALPHAS[::-1], [0.5, 1.0, 0.0, 0.75, 0.25]):
        hp = tune_hyperparameters(split, TuningSpec(order, order, [1]), same)
        assert hp.wse_alpha == 0.0
    # Identical models: every OSE alpha ties.
    twin = SplitData("val", "id_val", split.labels, split.logits_ft, split.logits_ft, split.knn_sqdist)
    for order in (ALPHAS, ALPHAS[::-1]):
        hp = tune_hyperparameters(twin, TuningSpec(None, order, [1], calibration="none"))
        assert hp.ose_alpha == 0.0 and hp.ose_cal_alpha == 0.0 and hp.wse_alpha is None
        # ...and every VRF candidate: the lowest mean weight on the fine-tuned model wins.
        assert hp.vrf == VRFParams(*_lowest_weight_candidate(twin), 1, "sigmoid", "squared", False)


def _lowest_weight_candidate(split):
    from vrf_core.tuning import vrf_grid
    from vrf_core.weights import kth_distance, weight

    a_grid, b_grid = vrf_grid(split, 1, "squared")
    d = kth_distance(split.knn_sqdist, 1, "squared")
    means = [(weight(d, a, b, "sigmoid").mean(), i, j) for i, a in enumerate(a_grid) for j, b in enumerate(b_grid)]
    _, i, j = min(means)
    return float(a_grid[i]), float(b_grid[j])


def test_derive_agrees_with_straightforward_recomputation():
    rng = np.random.default_rng(4)
    parts = [random_split(rng, "val", "id_val"), random_split(rng, "test", "id_test"),
             random_split(rng, "shift_a", "ood", c=30), random_split(rng, "shift_b", "ood")]
    splits = [p[0] for p in parts]
    wse = {p[0].name: p[1] for p in parts}
    spec = DeriveSpec(TuningSpec(ALPHAS, ALPHAS, [1, 5, 10]), m=4, n_boot=200)
    out = derive([splits[1], splits[0], *splits[2:]], wse, spec)  # roles in table order out
    val, test, shift_a, shift_b = splits
    hp = out.hyperparameters["validation"]
    assert hp.tuned_on == "val" and out.hyperparameters["oracle"].tuned_on == "test"
    assert hp == tune_hyperparameters(val, spec.tuning, wse["val"])
    rows = out.results["validation"]["rows"]
    assert out.results["validation"]["columns"] == ["val", "test", "shift_a", "shift_b", OOD_AVG]
    for s in splits:
        assert rows["fine-tuned"][s.name]["acc"] == pytest.approx((s.logits_ft.argmax(1) == s.labels).mean())
        wse_row = wse[s.name][ALPHAS.index(hp.wse_alpha)]
        assert rows["WSE"][s.name]["acc"] == pytest.approx((wse_row == s.labels).mean())
        vrf = vrf_preds(s, hp.vrf, (hp.t_zs, hp.t_ft))
        assert rows["VRF"][s.name]["acc"] == pytest.approx((vrf == s.labels).mean())
        lo, hi = rows["VRF"][s.name]["lo"], rows["VRF"][s.name]["hi"]
        assert lo <= rows["VRF"][s.name]["acc"] <= hi
        np.testing.assert_array_equal(out.arrays[s.name]["preds_zs"], s.logits_zs.argmax(1))
    assert rows["VRF"][OOD_AVG]["acc"] == pytest.approx(np.mean([rows["VRF"][n]["acc"] for n in ("shift_a",
                                                                                                  "shift_b")]))
    # Curves: OSE at every alpha on the test splits only (val is the tuning split).
    curves = out.curves["validation"]
    assert set(curves["OSE"]) == {"test", "shift_a", "shift_b"}
    for i, alpha in enumerate(ALPHAS):
        assert curves["OSE"]["test"][i] == pytest.approx((mixture_preds(test, alpha, 1, 1) == test.labels).mean())
        cal = mixture_preds(shift_b, alpha, hp.t_zs, hp.t_ft)
        assert curves["OSE (calibrated)"]["shift_b"][i] == pytest.approx((cal == shift_b.labels).mean())
    # Stored top-m tables: (1, 1) first, then each mode's pair; they decide like freshly built ones.
    assert out.temperatures[0] == (1.0, 1.0) and (hp.t_zs, hp.t_ft) in out.temperatures
    fresh = TopMSplit.from_split_data(test, hp.t_zs, hp.t_ft, m=4).tables()[(hp.t_zs, hp.t_ft)].to_arrays()
    p = out.temperatures.index((hp.t_zs, hp.t_ft))
    for name, arr in fresh.items():
        np.testing.assert_array_equal(out.arrays["test"][f"topm_{name}"][p], arr)
    assert out.manifest()["topm"] == {"m": 4, "temperatures": [list(t) for t in out.temperatures]}
    assert derive(splits, wse, spec).manifest() == out.manifest()  # deterministic
    assert derive(splits, wse, spec, reference_tuning=True).manifest() == out.manifest()  # full-mixture tuning
