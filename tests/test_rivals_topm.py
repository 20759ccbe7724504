"""The rivals through the top-m tables: DaWin (both variants) and VRF's ablations decide exactly what the full
N x C computation decides, on every sample, ties and fallback rows included; entropies stored with the tables
equal those computed from the logits; tuning ties and edges; manifests written before the rivals."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vrf_core import evaluate
from vrf_core.calibration import T_MAX
from vrf_core.dawin import dawin_weights, offset_adjustment, transductive_weights
from vrf_core.derive import DeriveSpec, derive
from vrf_core.evaluate import FullMixture, Hyperparameters, SplitData, VRFParams, knn_array, vrf_weights
from vrf_core.logit_ensemble import logit_mix_preds
from vrf_core.row_softmax import entropy_rows
from vrf_core.topm import TopMSplit, TopMTable
from vrf_core.tuning import TuningSpec, tune_hyperparameters, vrf_grid
from vrf_core.tuning_edges import edge_sentence, tuning_edges

T_ZS, T_FT = 1.7, 0.6
ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0]
ABLATIONS = {"train": VRFParams(0.9, 0.2, 3, neighbours="train"), "zs_features": VRFParams(1.1, 0.4, 2, features="zs")}
RIVALS = ("DaWin", "DaWin (transductive)", "VRF (ID-train kNN)", "VRF (zero-shot features)")


def split_with_ablations(zs, ft, rng, name="s", role="ood") -> SplitData:
    n = len(zs)
    knn = [np.sort(rng.uniform(0, 3, (n, 6)), axis=1).astype(np.float32) for _ in range(3)]
    return SplitData(name, role, rng.integers(0, zs.shape[1], n), zs, ft, knn[0], {},
                     knn_sqdist_train=knn[1], knn_sqdist_zs=knn[2])


def random_logits(rng, n, c, scale=3.0):
    return [(rng.normal(size=(n, c)) * scale).astype(np.float32) for _ in range(2)]


def tie_logits(rng, n=500, c=40):
    """Few distinct values (ties everywhere), flat rows, models that agree, values repeated past the top m."""
    zs = rng.integers(-2, 3, size=(n, c)).astype(np.float32)
    ft = rng.integers(-2, 3, size=(n, c)).astype(np.float32)
    zs[:50] = ft[:50] = 0.0
    ft[50:100] = zs[50:100]
    zs[100:150, 30:] = zs[100:150, :1]
    return zs, ft


def hyperparameters(t_zs=T_ZS, t_ft=T_FT) -> Hyperparameters:
    return Hyperparameters("s", t_zs, t_ft, None, 0.3, 0.6, VRFParams(1.2, 0.4, 3), {"msp": 0.5}, 0.4, 0.7,
                           dict(ABLATIONS))


def assert_rivals_exact(split: SplitData, hp: Hyperparameters, m: int) -> TopMSplit:
    full = evaluate.method_preds(split, hp)
    live = TopMSplit.from_split_data(split, hp.t_zs, hp.t_ft, m=m)
    got = evaluate.method_preds(split, hp, live)
    assert list(got) == list(full) and set(RIVALS) <= set(got)
    for method in full:
        np.testing.assert_array_equal(got[method], full[method], err_msg=method)
    return live


@pytest.mark.parametrize("c,m", [(50, 5), (300, 5), (6, 3), (2, 5), (7, 1)])
def test_rivals_equal_the_full_computation(c, m):
    rng = np.random.default_rng(c * 10 + m)
    split = split_with_ablations(*random_logits(rng, 600, c), rng)
    assert_rivals_exact(split, hyperparameters(), m)
    assert_rivals_exact(split, hyperparameters(1.0, 1.0), m)  # calibration 'none'


def test_rivals_with_ties_flat_rows_and_fallbacks():
    rng = np.random.default_rng(4)
    split = split_with_ablations(*tie_logits(rng), rng)
    live = assert_rivals_exact(split, hyperparameters(1.0, 1.0), 3)
    assert live.fallback_rows > 0  # the full-row path decided some samples
    # Flat rows: both entropies are log C, lambda = 1/2, and the argmax is class 0 as np.argmax gives.
    h_zs, h_ft = live.entropies()
    np.testing.assert_allclose(h_zs[:50], np.log(40), rtol=1e-6)
    assert (evaluate.method_preds(split, hyperparameters(1.0, 1.0), live)["DaWin"][:50] == 0).all()


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), c=st.integers(2, 30), m=st.integers(1, 6), levels=st.integers(2, 5),
       t=st.sampled_from([(1.0, 1.0), (0.5, 1.3), (2.0, 0.7)]))
def test_property_rivals_equal_the_full_computation(seed, c, m, levels, t):
    """Logits from a few levels (ties, equal entropies, lambda = 1/2 exactly), any m, any temperatures."""
    rng = np.random.default_rng(seed)
    zs = rng.integers(0, levels, size=(48, c)).astype(np.float32)
    ft = rng.integers(0, levels, size=(48, c)).astype(np.float32)
    assert_rivals_exact(split_with_ablations(zs, ft, rng), hyperparameters(*t), m)


def test_entropies_stored_with_the_tables_equal_the_logits_ones_bitwise():
    rng = np.random.default_rng(5)
    split = split_with_ablations(*random_logits(rng, 700, 120), rng)
    live = TopMSplit.from_split_data(split, T_ZS, T_FT)
    for calibrated, (tz, tf) in ((True, (T_ZS, T_FT)), (False, (1.0, 1.0))):
        h_zs, h_ft = live.entropies(calibrated)
        np.testing.assert_array_equal(h_zs, entropy_rows(split.logits_zs, tz))
        np.testing.assert_array_equal(h_ft, entropy_rows(split.logits_ft, tf))
        z = split.logits_ft.astype(np.float64) / tf
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        np.testing.assert_allclose(h_ft, -(p * np.log(p)).sum(1), rtol=1e-6)
    np.testing.assert_array_equal(FullMixture(split, T_ZS, T_FT).entropies()[1], live.entropies()[1])
    # Tables read from a bundle written before the entropies: computed from the logits, same numbers.
    old = {t: TopMTable.from_arrays({k: v for k, v in tab.to_arrays().items() if not k.startswith("h_")},
                                    tab.arg_zs, tab.arg_ft) for t, tab in live.tables().items()}
    assert all(t.h_zs is None for t in old.values())
    again = TopMSplit.from_split_data(split, T_ZS, T_FT, tables=old)
    np.testing.assert_array_equal(again.entropies()[0], live.entropies()[0])
    hp = hyperparameters()
    for name in RIVALS:
        np.testing.assert_array_equal(evaluate.method_preds(split, hp, again)[name],
                                      evaluate.method_preds(split, hp, live)[name])


def test_dawin_weights_and_offset():
    h_zs, h_ft = np.array([0.1, 2.0, 1.0, 0.0]), np.array([1.5, 0.2, 1.0, 0.0])
    lam = dawin_weights(h_zs, h_ft)
    np.testing.assert_allclose(lam, np.exp(-h_ft) / (np.exp(-h_zs) + np.exp(-h_ft)))
    c, beta = offset_adjustment(h_zs, h_ft)
    assert c == pytest.approx((h_zs.std(ddof=1) / h_zs.mean() + h_ft.std(ddof=1) / h_ft.mean()) / 2)
    assert beta == pytest.approx((h_zs.mean() + h_ft.mean()) / h_zs.mean())
    assert offset_adjustment(np.zeros(5), np.ones(5)) == (0.0, 2.0)  # no mean entropy: no offset
    np.testing.assert_allclose(transductive_weights(np.zeros(5), np.ones(5)), dawin_weights(np.zeros(5), np.ones(5)))


def test_ablation_distances_are_picked_from_the_params_and_missing_ones_say_so():
    rng = np.random.default_rng(6)
    split = split_with_ablations(*random_logits(rng, 50, 5), rng)
    assert knn_array(split, ABLATIONS["train"]) is split.knn_sqdist_train
    assert knn_array(split, ABLATIONS["zs_features"]) is split.knn_sqdist_zs
    assert knn_array(split, VRFParams()) is split.knn_sqdist
    live = TopMSplit.from_split_data(split, 1.0, 1.0)
    for p in ABLATIONS.values():
        np.testing.assert_array_equal(live.vrf_weights(p), vrf_weights(split, p))
    assert not np.array_equal(live.vrf_weights(ABLATIONS["train"]),  # distinct cache entries
                              live.vrf_weights(VRFParams(0.9, 0.2, 3)))
    bare = SplitData("old", "ood", split.labels, split.logits_zs, split.logits_ft, split.knn_sqdist)
    with pytest.raises(ValueError, match="knn_sqdist_train.*rebuild"):
        vrf_weights(bare, ABLATIONS["train"])
    with pytest.raises(ValueError, match="no such distances"):
        knn_array(bare, VRFParams(neighbours="train", features="zs"))
    rows = evaluate.method_preds(bare, hyperparameters())  # rows without their distances are left out
    assert "VRF (ID-train kNN)" not in rows and "DaWin" in rows and "logit ensemble" in rows


def test_logit_ensemble_in_blocks_equals_the_plain_formula():
    rng = np.random.default_rng(8)
    zs, ft = random_logits(rng, 2500, 30)  # more rows than one block
    combos = [(a, tz, tf) for a in ALPHAS for tz, tf in ((1.0, 1.0), (T_ZS, T_FT))]
    got = logit_mix_preds(zs, ft, combos, threads=3)
    for (a, tz, tf), preds in zip(combos, got):
        np.testing.assert_array_equal(preds, ((1 - a) / tz * zs.astype(np.float64) + a / tf * ft).argmax(1))


def test_logit_alpha_ties_go_to_the_smallest_alpha():
    rng = np.random.default_rng(9)
    zs, _ = random_logits(rng, 300, 10)
    twin = split_with_ablations(zs, zs.copy(), rng, "val", "id_val")  # identical models: every alpha ties
    for order in (ALPHAS, ALPHAS[::-1], [0.5, 1.0, 0.0, 0.75, 0.25]):
        hp = tune_hyperparameters(twin, TuningSpec(None, order, [1], calibration="none"))
        assert hp.logit_alpha == 0.0 and hp.logit_cal_alpha == 0.0
        assert set(hp.ablations) == {"train", "zs_features"}


def test_edges_are_flagged_and_alphas_at_the_ends_are_not():
    rng = np.random.default_rng(10)
    n, c = 400, 10
    labels = rng.integers(0, c, n)
    zs = (rng.normal(size=(n, c)) * 1000).astype(np.float32)  # confidently wrong: T_zs pinned at T_MAX
    ft = rng.normal(size=(n, c)).astype(np.float32)
    ft[np.arange(n), labels] += 6.0
    split = split_with_ablations(zs, ft, rng, "val", "id_val")
    split.labels = labels
    spec = TuningSpec(None, ALPHAS, [1, 3, 6])
    hp = tune_hyperparameters(split, spec)
    assert hp.t_zs == T_MAX and hp.logit_alpha == 1.0  # an alpha at the end of [0, 1]: not an edge
    edges = tuning_edges(split, spec, hp)
    assert {"name": "T_zs", "value": T_MAX, "low": 0.1, "high": T_MAX, "at": "high"} in edges
    assert not any("alpha" in e["name"] for e in edges)
    # Hand-placed selections: a at the grid's top, b at its bottom, k at the largest and the smallest candidate.
    a_grid, b_grid = vrf_grid(split, 6, "squared")
    hp.vrf = VRFParams(float(a_grid[-1]), float(b_grid[0]), 6)
    hp.ablations = {"train": VRFParams(float(np.mean(a_grid[:2])), float(b_grid[1]), 1, neighbours="train")}
    names = {e["name"]: e for e in tuning_edges(split, spec, hp)}
    assert names["VRF a"]["at"] == "high" and names["VRF a"]["high"] == a_grid[-1]
    assert names["VRF b"]["at"] == "low" and names["VRF k"]["at"] == "high"
    assert not [n for n in names if n.startswith("VRF (ID-train kNN)")]  # k = 1: nothing smaller to search
    assert "largest value searched" in edge_sentence(names["VRF a"]) and "widen" in edge_sentence(names["VRF a"])
    hp.vrf = VRFParams(float(a_grid[3]), float(b_grid[0]), 3, "binary")
    assert not [e for e in tuning_edges(split, spec, hp) if e["name"].startswith("VRF ")]  # binary: b not searched
    out = derive([split, split_with_ablations(ft, ft, rng, "test", "id_test")], {}, DeriveSpec(spec, m=3, n_boot=10))
    assert out.manifest()["tuning_edges"]["validation"] == tuning_edges(split, spec, out.hyperparameters["validation"])


def test_hyperparameters_from_an_old_manifest():
    old = {"tuned_on": "val", "t_zs": 1.2, "t_ft": 0.9, "wse_alpha": 0.5, "ose_alpha": 0.4, "ose_cal_alpha": 0.6,
           "vrf": {"a": 1.0, "b": 0.3, "k": 5, "rule": "sigmoid", "scale": "squared", "calibrate": True},
           "routing_thresholds": {"msp": 0.5}}
    hp = Hyperparameters.from_json(old)
    assert hp.logit_alpha is None and hp.logit_cal_alpha is None and hp.ablations == {}
    assert hp.vrf.neighbours == "zsf" and hp.vrf.features == "ft"
    again = Hyperparameters.from_json(hyperparameters().to_json())
    assert again == hyperparameters() and again.ablations["train"].neighbours == "train"
    rng = np.random.default_rng(11)
    split = split_with_ablations(*random_logits(rng, 80, 6), rng)
    rows = evaluate.method_preds(split, Hyperparameters.from_json({**old, "t_zs": T_ZS, "t_ft": T_FT}))
    assert "logit ensemble" not in rows and "VRF (ID-train kNN)" not in rows and "DaWin" in rows


@pytest.mark.parametrize("n", [1, 2047, 2048, 5000])
def test_routing_scores_in_blocks_equal_the_whole_computation_bitwise(n):
    from vrf_core.routing import energy_score, msp_score

    z = (np.random.default_rng(n).normal(size=(n, 300)) * 4).astype(np.float32)
    split = SplitData("s", "ood", np.zeros(n, int), z, z, np.zeros((n, 1), np.float32))
    np.testing.assert_array_equal(evaluate.routing_scores(split, "msp", 0.7), msp_score(z / 0.7))
    np.testing.assert_array_equal(evaluate.routing_scores(split, "energy", 0.7), energy_score(z, 0.7))
    assert evaluate.routing_scores(split, "msp", 0.7) is evaluate.routing_scores(split, "msp", 0.7)  # cached
