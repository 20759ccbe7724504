"""VRF and the results table against an independent, straightforward computation on random arrays."""

import numpy as np
import pytest

from vrf_core.evaluate import SplitData, VRFParams, mixture_preds, vrf_preds


def random_split(rng, name, role, n=300, c=6, k=10):
    labels = rng.integers(0, c, n)
    zs = rng.normal(size=(n, c)) * 2
    zs[np.arange(n), labels] += 1.0
    ft = rng.normal(size=(n, c)) * 2
    ft[np.arange(n), labels] += 2.5
    knn = np.sort(rng.uniform(0, 2, size=(n, k)), axis=1).astype(np.float32)
    return SplitData(name, role, labels, zs, ft, knn, {"knn": -knn[:, 0]})


def loop_vrf(split, p, t_zs, t_ft):
    """One sample at a time, as the paper writes it."""
    preds = []
    for i in range(len(split)):
        d = split.knn_sqdist[i, p.k - 1]
        d = np.sqrt(d) if p.scale == "l2" else d
        w = 1 / (1 + np.exp((d - p.a) / p.b))
        e_ft = np.exp(split.logits_ft[i] / t_ft - np.max(split.logits_ft[i] / t_ft))
        e_zs = np.exp(split.logits_zs[i] / t_zs - np.max(split.logits_zs[i] / t_zs))
        preds.append(np.argmax(w * e_ft / e_ft.sum() + (1 - w) * e_zs / e_zs.sum()))
    return np.array(preds)


@pytest.mark.parametrize("scale", ["squared", "l2"])
def test_vrf_equals_the_per_sample_loop(scale):
    split = random_split(np.random.default_rng(0), "test", "id_test")
    p = VRFParams(a=0.9, b=0.2, k=4, rule="sigmoid", scale=scale, calibrate=True)
    assert (vrf_preds(split, p, (1.7, 0.6)) == loop_vrf(split, p, 1.7, 0.6)).all()


def test_vrf_reduces_to_each_model_at_extreme_weights():
    split = random_split(np.random.default_rng(1), "test", "id_test")
    assert (mixture_preds(split, 1.0, 1.0, 1.0) == split.logits_ft.argmax(1)).all()
    assert (mixture_preds(split, 0.0, 1.0, 1.0) == split.logits_zs.argmax(1)).all()
    far = VRFParams(a=-10.0, b=0.1, k=1)  # every sample far beyond a: w = 0, zero-shot
    assert (vrf_preds(split, far, (1.0, 1.0)) == split.logits_zs.argmax(1)).all()
