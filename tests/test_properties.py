"""Properties of the math, over random inputs (hypothesis): what must hold whatever the data."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vrf_core.calibration import T_MAX, T_MIN, fit_temperature_confidence, fit_temperature_nll, mean_confidence, nll
from vrf_core.data import ClassProjection
from vrf_core.ensembles import mix_probs, ose_probs, softmax, vrf_probs
from vrf_core.evaluate import SplitData, mixture_preds
from vrf_core.knn import brute_force_sqdist, knn_sqdist
from vrf_core.projection import project_logits
from vrf_core.weights import RULES, weight
from vrf_core.wse import interpolate_state_dicts
from vrf_core.zsf import zsf_mask

PROPERTY = settings(max_examples=40, deadline=None)  # modest: the whole file runs in seconds

distances = arrays(np.float64, st.integers(1, 50), elements=st.floats(-1.0, 6.0, allow_nan=False))


@st.composite
def logit_pairs(draw, max_classes: int = 12):
    """(zs logits, ft logits, labels): (N, C) float64 of moderate scale, seeded."""
    n, c = draw(st.integers(1, 40)), draw(st.integers(2, max_classes))
    scale = draw(st.floats(0.1, 30.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.normal(size=(n, c)) * scale, rng.normal(size=(n, c)) * scale, rng.integers(0, c, n)


# ---- weights (paper Eq. 6) ---------------------------------------------------------------

@pytest.mark.parametrize("rule", RULES)
@PROPERTY
@given(d=distances, a=st.floats(0.0, 4.0), b=st.floats(1e-3, 3.0))
def test_weights_lie_in_0_1_and_never_increase_with_d(rule, d, a, b):
    w = weight(np.sort(d), a, b, rule)
    assert np.all((w >= 0.0) & (w <= 1.0))
    assert np.all(np.diff(w) <= 0.0)


# ---- mixtures: VRF and OSE endpoints ------------------------------------------------------

@PROPERTY
@given(pair=logit_pairs(), t_zs=st.floats(0.1, 10.0), t_ft=st.floats(0.1, 10.0))
def test_vrf_is_the_fine_tuned_model_at_w_1_and_the_zero_shot_model_at_w_0(pair, t_zs, t_ft):
    zs, ft, labels = pair
    n = len(labels)
    np.testing.assert_array_equal(vrf_probs(zs, ft, np.ones(n), t_zs, t_ft), softmax(ft / t_ft))
    np.testing.assert_array_equal(vrf_probs(zs, ft, np.zeros(n), t_zs, t_ft), softmax(zs / t_zs))
    split = SplitData("s", "id_test", labels, zs, ft, np.zeros((n, 1)))
    np.testing.assert_array_equal(mixture_preds(split, np.ones(n), t_zs, t_ft), split.probs("ft", t_ft).argmax(1))
    np.testing.assert_array_equal(mixture_preds(split, np.zeros(n), t_zs, t_ft), split.probs("zs", t_zs).argmax(1))
    # Per sample: w(x) in {0, 1} routes each sample wholly to one model.
    route = np.arange(n) % 2 == 0
    expected = np.where(route, split.probs("ft", t_ft).argmax(1), split.probs("zs", t_zs).argmax(1))
    np.testing.assert_array_equal(mixture_preds(split, route.astype(float), t_zs, t_ft), expected)


@PROPERTY
@given(pair=logit_pairs(), alpha=st.floats(0.0, 1.0))
def test_ose_endpoints_and_convexity(pair, alpha):
    zs, ft, _ = pair
    np.testing.assert_array_equal(ose_probs(zs, ft, 0.0), softmax(zs))
    np.testing.assert_array_equal(ose_probs(zs, ft, 1.0), softmax(ft))
    p = mix_probs(zs, ft, alpha)
    lo, hi = np.minimum(softmax(zs), softmax(ft)), np.maximum(softmax(zs), softmax(ft))
    assert np.all(p >= lo - 1e-12) and np.all(p <= hi + 1e-12)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-12)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), alpha=st.floats(0.0, 1.0))
def test_wse_endpoints_are_the_two_models(seed, alpha):
    g = torch.Generator().manual_seed(seed)
    zs = {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g), "steps": torch.tensor(5)}
    ft = {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g), "steps": torch.tensor(9)}
    for k, v in interpolate_state_dicts(zs, ft, 0.0).items():
        assert torch.equal(v, zs[k] if v.is_floating_point() else ft[k]), k
    for k, v in interpolate_state_dicts(zs, ft, 1.0).items():
        assert torch.equal(v, ft[k]), k
    mid = interpolate_state_dicts(zs, ft, alpha)
    for k in ("w", "b"):
        assert torch.all(mid[k] >= torch.minimum(zs[k], ft[k]) - 1e-6)
        assert torch.all(mid[k] <= torch.maximum(zs[k], ft[k]) + 1e-6)


# ---- kNN distances --------------------------------------------------------------------------

@st.composite
def point_sets(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dim, n_base, n_query = draw(st.integers(2, 16)), draw(st.integers(2, 60)), draw(st.integers(1, 30))
    base = rng.normal(size=(n_base, dim)).astype(np.float32)
    if draw(st.booleans()):  # exact duplicates: ties at distance 0
        base[-1] = base[0]
    return rng.normal(size=(n_query, dim)).astype(np.float32), base, draw(st.integers(1, n_base - 1))


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@PROPERTY
@given(points=point_sets())
def test_knn_distances_equal_brute_force(backend, points):
    queries, base, k = points
    sq, idx = knn_sqdist(queries, base, k, backend)
    np.testing.assert_allclose(sq, brute_force_sqdist(queries, base, k), atol=1e-4)
    assert np.all(np.diff(sq, axis=1) >= -1e-6) and np.all((sq >= 0) & (sq <= 4))
    # The returned indices point at members at the returned distances.
    q, b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (queries, base))
    np.testing.assert_allclose(((q[:, None, :] - b[idx]) ** 2).sum(-1), sq, atol=1e-4)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@PROPERTY
@given(points=point_sets())
def test_leave_one_out_distances_equal_brute_force_over_the_others(backend, points):
    _, base, k = points
    sq, _ = knn_sqdist(base, base, k, backend, exclude_self=True)
    expected = np.stack([brute_force_sqdist(base[i:i + 1], np.delete(base, i, axis=0), k)[0]
                         for i in range(len(base))])
    np.testing.assert_allclose(sq, expected, atol=1e-4)


# ---- calibration ---------------------------------------------------------------------------

@PROPERTY
@given(pair=logit_pairs())
def test_confidence_calibration_matches_accuracy_or_stops_at_the_bracket(pair):
    _, logits, labels = pair
    t = fit_temperature_confidence(logits, labels)
    acc = float((logits.argmax(1) == labels).mean())
    assert T_MIN <= t <= T_MAX
    if t == T_MIN:
        assert mean_confidence(logits, T_MIN) <= acc
    elif t == T_MAX:
        assert mean_confidence(logits, T_MAX) >= acc
    else:
        assert abs(mean_confidence(logits, t) - acc) < 1e-4


@PROPERTY
@given(pair=logit_pairs())
def test_nll_calibration_is_no_worse_than_any_temperature_on_a_grid(pair):
    _, logits, labels = pair
    t = fit_temperature_nll(logits, labels)
    grid = np.exp(np.linspace(np.log(T_MIN), np.log(T_MAX), 60))
    assert nll(logits, labels, t) <= min(nll(logits, labels, g) for g in grid) + 1e-6


# ---- projections and the ZSF set ---------------------------------------------------------------

@st.composite
def projections(draw):
    c = draw(st.integers(1, 12))
    groups = draw(st.lists(st.lists(st.integers(0, c - 1), min_size=1, max_size=4), min_size=1, max_size=8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 10)), c) if draw(st.booleans()) else (
        draw(st.integers(1, 10)), c)
    return rng.normal(size=shape), ClassProjection(tuple(tuple(g) for g in groups))


@PROPERTY
@given(case=projections())
def test_projection_agrees_with_an_explicit_loop(case):
    logits, proj = case
    flat = logits.reshape(-1, logits.shape[-1])
    expected = np.array([[max(row[i] for i in group) for group in proj.groups] for row in flat])
    np.testing.assert_array_equal(project_logits(logits, proj), expected.reshape(*logits.shape[:-1], -1))
    assert project_logits(logits, None) is logits


@PROPERTY
@given(labels=arrays(np.int64, st.integers(0, 50), elements=st.integers(0, 4)), seed=st.integers(0, 2**32 - 1))
def test_zsf_mask_is_the_papers_set(labels, seed):
    rng = np.random.default_rng(seed)
    zs, ft = rng.integers(0, 5, len(labels)), rng.integers(0, 5, len(labels))
    expected = [ft[i] == labels[i] and zs[i] != labels[i] for i in range(len(labels))]
    assert zsf_mask(zs, ft, labels).tolist() == expected
