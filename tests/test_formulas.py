"""Every formula against small hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from vrf_core.calibration import fit_temperature_confidence, fit_temperature_nll, mean_confidence, nll
from vrf_core.data import ClassProjection
from vrf_core.ensembles import ose_probs, softmax, vrf_probs
from vrf_core.knn import _torch_search, brute_force_sqdist, knn_sqdist, l2_normalize
from vrf_core.metrics import bootstrap_ci, per_class_accuracy
from vrf_core.projection import project_logits
from vrf_core.routing import GaussianFit, energy_score, id_threshold, msp_score
from vrf_core.weights import binary_weight, k_from_rule, kth_distance, linear_weight, sigmoid_weight
from vrf_core.wse import interpolate_state_dicts
from vrf_core.zsf import zsf_mask


def test_sigmoid_weight_hand_values():
    # w = 1 / (1 + exp((d - a) / b)); at d = a it is 1/2, one b below a it is 1/(1+e^-1).
    w = sigmoid_weight(np.array([1.5, 0.9, 2.1]), a=1.5, b=0.6)
    assert w == pytest.approx([0.5, 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))])


def test_linear_and_binary_weights():
    d = np.array([0.0, 1.0, 1.5, 2.0, 3.0])
    assert linear_weight(d, a=1.5, b=0.5) == pytest.approx([1.0, 1.0, 0.5, 0.0, 0.0])
    assert binary_weight(d, a=1.5).tolist() == [1, 1, 0, 0, 0]
    with pytest.raises(ValueError, match="b must be positive"):
        sigmoid_weight(d, 1.0, 0.0)


def test_kth_distance_scales_and_k_rules():
    sq = np.array([[0.25, 1.0, 2.25]])
    assert kth_distance(sq, 2, "squared") == pytest.approx([1.0])
    assert kth_distance(sq, 3, "l2") == pytest.approx([1.5])
    with pytest.raises(ValueError, match="k=4"):
        kth_distance(sq, 4)
    assert k_from_rule("reference", zsf_size=128_000, train_size=1_281_167) == 100
    assert k_from_rule("paper", zsf_size=128_000, train_size=1_281_167) == 128
    assert k_from_rule(7, 10, 10) == 7 and k_from_rule("paper", 10, 100) == 1


def test_zsf_mask():
    y = np.array([0, 1, 2, 3])
    assert zsf_mask(np.array([1, 1, 0, 3]), np.array([0, 1, 2, 0]), y).tolist() == [True, False, True, False]


def test_ose_endpoints_and_vrf_mixture():
    rng = np.random.default_rng(0)
    zs, ft = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    assert ose_probs(zs, ft, 0.0) == pytest.approx(softmax(zs))
    assert ose_probs(zs, ft, 1.0) == pytest.approx(softmax(ft))
    w = np.array([0.0, 1.0, 0.5, 0.25, 1.0])
    p = vrf_probs(zs, ft, w, t_zs=2.0, t_ft=0.5)
    expected = w[:, None] * softmax(ft / 0.5) + (1 - w[:, None]) * softmax(zs / 2.0)
    assert p == pytest.approx(expected)
    assert p.sum(1) == pytest.approx(np.ones(5))


def test_wse_endpoints_equal_the_two_models():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    assert torch.equal(interpolate_state_dicts(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate_state_dicts(a, b, 1.0)["w"], b["w"])
    assert torch.allclose(interpolate_state_dicts(a, b, 0.25)["w"], torch.tensor([1.5, 3.0]))
    assert interpolate_state_dicts(a, b, 0.5)["n"].item() == 5  # integer buffers follow the fine-tuned model
    with pytest.raises(ValueError, match="different keys"):
        interpolate_state_dicts(a, {"w": b["w"]}, 0.5)


def test_projection_subset_and_max_groups():
    logits = np.array([[1.0, 5.0, 2.0, 0.5], [3.0, 0.0, 4.0, 9.0]])
    assert project_logits(logits, ClassProjection.subset([2, 0])).tolist() == [[2.0, 1.0], [4.0, 3.0]]
    groups = ClassProjection(((0, 1), (2, 3)))
    assert project_logits(logits, groups).tolist() == [[5.0, 2.0], [3.0, 9.0]]
    assert project_logits(logits, None) is logits


def test_confidence_calibration_matches_accuracy():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 400)
    logits = rng.normal(size=(400, 5)) * 3
    logits[np.arange(400), labels] += 2.0  # over-confident: accuracy well below 1
    t = fit_temperature_confidence(logits, labels)
    acc = (logits.argmax(1) == labels).mean()
    assert mean_confidence(logits, t) == pytest.approx(acc, abs=2e-3)
    t_nll = fit_temperature_nll(logits, labels)
    for other in (t_nll * 0.8, t_nll * 1.25):
        assert nll(logits, labels, t_nll) <= nll(logits, labels, other) + 1e-9


def test_knn_matches_brute_force_and_leave_one_out():
    rng = np.random.default_rng(2)
    base, queries = rng.normal(size=(50, 8)), rng.normal(size=(20, 8))
    for backend in ("faiss", "torch"):
        sq, idx = knn_sqdist(queries, base, 5, backend=backend)
        assert sq == pytest.approx(brute_force_sqdist(queries, base, 5), abs=1e-5)
        assert np.all(np.diff(sq, axis=1) >= -1e-6)
    sq, idx = knn_sqdist(base, base, 3, exclude_self=True)
    assert not np.any(idx == np.arange(50)[:, None])
    assert sq == pytest.approx(brute_force_sqdist(base, base, 4)[:, 1:], abs=1e-5)


@pytest.mark.parametrize("devices,budget", [(["cpu"], None), (["cpu"], 0), (["cpu", "cpu", "cpu"], 0)])
def test_sharded_and_streamed_search_equals_one_block(devices, budget):
    """The base cut into shards smaller than k, spread over several devices and streamed from host
    memory (budget 0: nothing resident) gives the same neighbours as one block."""
    rng = np.random.default_rng(7)
    base = l2_normalize(rng.normal(size=(203, 16)))
    queries = l2_normalize(rng.normal(size=(37, 16)))
    ref_s, ref_i = _torch_search(queries, base, 9, ["cpu"], base_chunk=1000)
    s, i = _torch_search(queries, base, 9, devices, query_chunk=10, base_chunk=7, memory_budget=budget)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(s, ref_s, atol=1e-6)
    assert 2 - 2 * s == pytest.approx(brute_force_sqdist(queries, base, 9), abs=1e-5)


def test_selective_scores_and_threshold():
    logits = np.array([[10.0, 0.0], [0.0, 0.0]])
    assert msp_score(logits) == pytest.approx([1 / (1 + math.exp(-10)), 0.5])
    assert energy_score(logits) == pytest.approx([10 + math.log(1 + math.exp(-10)), math.log(2)])
    scores = np.arange(100, dtype=float)
    thr = id_threshold(scores, 0.95)
    assert (scores >= thr).mean() == pytest.approx(0.95, abs=0.011)
    rng = np.random.default_rng(3)
    feats = np.concatenate(
        [rng.normal(size=(100, 4)) * 0.1 + [1, 0, 0, 0], rng.normal(size=(100, 4)) * 0.1 + [0, 1, 0, 0]]
    )
    g = GaussianFit(feats, np.repeat([0, 1], 100), 2)
    near, far = g.mahalanobis(np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0]]))
    assert near > far


def test_per_class_accuracy_and_bootstrap():
    preds, labels = np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2])
    out = per_class_accuracy(preds, labels, 4)
    assert out[:3].tolist() == [1.0, 1.0, 0.5] and math.isnan(out[3])
    lo, hi = bootstrap_ci(np.r_[np.ones(80), np.zeros(20)])
    assert lo < 0.8 < hi and hi - lo < 0.2
