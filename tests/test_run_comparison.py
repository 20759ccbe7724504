"""vrf_core.run_comparison: which splits two runs share (same samples, aligned by refs), their results
side by side with differences, and the samples one gets right and the other wrong, against plain numpy."""

import numpy as np
import pytest

from vrf_core.evaluate import OOD_AVG
from vrf_core.run_comparison import RunSplit, compare_results, disagreements, match_splits, ood_average

CLASSES = tuple(f"c{i}" for i in range(5))


def split(name: str, role: str, n: int, seed: int) -> RunSplit:
    rng = np.random.default_rng(seed)
    return RunSplit(name, role, np.array([f"{name}/{i:05d}.jpg" for i in range(n)]), rng.integers(0, 5, n), CLASSES)


def reordered(s: RunSplit, seed: int) -> RunSplit:
    perm = np.random.default_rng(seed).permutation(len(s.refs))
    return RunSplit(s.name, s.role, s.refs[perm], s.labels[perm], s.classnames)


@pytest.fixture
def runs():
    a = {"val": split("val", "id_val", 50, 1), "test": split("test", "id_test", 80, 2),
         "v2": split("v2", "ood", 60, 3), "sketch": split("sketch", "ood", 40, 4), "hard": split("hard", "ood", 30, 5),
         "extra": split("extra", "ood", 20, 6), "small": split("small", "ood", 20, 7),
         "roles": split("roles", "ood", 10, 8)}
    b = {k: v for k, v in a.items() if k != "extra"}
    b["v2"] = reordered(a["v2"], 0)
    refs = a["sketch"].refs.copy()
    refs[[3, 17]] = ["elsewhere/1.jpg", "elsewhere/2.jpg"]
    b["sketch"] = RunSplit("sketch", "ood", refs, a["sketch"].labels, CLASSES)
    labels = a["hard"].labels.copy()
    labels[:2] = (labels[:2] + 1) % 5
    b["hard"] = RunSplit("hard", "ood", a["hard"].refs, labels, CLASSES)
    b["small"] = split("small", "ood", 15, 7)
    b["roles"] = RunSplit("roles", "id_test", a["roles"].refs, a["roles"].labels, CLASSES)
    b["new"] = split("new", "ood", 10, 9)
    return a, b


def test_shared_splits_and_why_the_others_are_not(runs):
    a, b = runs
    matches = {m.name: m for m in match_splits([a, b], ["run-a", "run-b"])}
    assert list(matches) == ["val", "test", "v2", "sketch", "hard", "extra", "small", "roles", "new"]
    assert {n for n, m in matches.items() if m.shared} == {"val", "test", "v2"}
    assert "not in run-b" in matches["extra"].reason and "not in run-a" in matches["new"].reason
    assert "different samples: 2 of 40" in matches["sketch"].reason
    assert "2 labels differ" in matches["hard"].reason
    assert "20 samples against 15" in matches["small"].reason
    assert "role ood in run-a, id_test in run-b" in matches["roles"].reason
    assert not matches["test"].reordered and matches["v2"].reordered
    v2 = matches["v2"]
    assert np.array_equal(b["v2"].refs[v2.rows[1]], a["v2"].refs)
    assert np.array_equal(b["v2"].labels[v2.rows[1]], a["v2"].labels)
    assert np.array_equal(v2.rows[0], np.arange(60))


def test_other_class_lists_and_repeated_refs_are_not_shared():
    a = split("test", "id_test", 10, 0)
    other_classes = RunSplit("test", "id_test", a.refs, a.labels, CLASSES[::-1])
    assert "different class lists" in match_splits([{"test": a}, {"test": other_classes}], ["A", "B"])[0].reason
    refs = a.refs.copy()
    refs[1] = refs[0]
    dup = RunSplit("test", "id_test", refs, a.labels, CLASSES)
    m = match_splits([{"test": dup}, {"test": reordered(dup, 1)}], ["A", "B"])[0]
    assert not m.shared and "repeated refs" in m.reason
    assert match_splits([{"test": dup}, {"test": dup}], ["A", "B"])[0].shared  # same order: nothing to align


def test_three_runs_share_what_all_of_them_share(runs):
    a, b = runs
    c = {"test": reordered(a["test"], 5), "v2": a["v2"]}
    matches = {m.name: m for m in match_splits([a, b, c], ["A", "B", "C"])}
    assert {n for n, m in matches.items() if m.shared} == {"test", "v2"}
    assert matches["val"].reason == "not in C"
    t = matches["test"]
    assert t.reordered and np.array_equal(c["test"].refs[t.rows[2]], a["test"].refs)


def row(accs: dict) -> dict:
    return {s: {"acc": v, "lo": v - 0.01, "hi": v + 0.01} for s, v in accs.items()}


def test_results_side_by_side_with_differences():
    ta = {"zero-shot": row({"test": 0.6, "v2": 0.5, "sketch": 0.4, "extra": 0.9}),
          "VRF": row({"test": 0.8, "v2": 0.7, "sketch": 0.5, "extra": 0.2}),
          "only A": row({"test": 0.1, "v2": 0.1, "sketch": 0.1})}
    for r in ta.values():  # the stored OOD avg covers a shift B lacks: not comparable, so not used
        r[OOD_AVG] = {"acc": 0.123}
    tb = {"VRF": row({"test": 0.85, "v2": 0.6, "sketch": 0.65}),
          "zero-shot": row({"test": 0.6, "v2": 0.5, "sketch": 0.4}),
          "only B": row({"test": 0.2, "v2": 0.2, "sketch": 0.2})}
    cmp = compare_results([ta, tb], ["test", "v2", "sketch"], ["v2", "sketch"])
    assert cmp.methods == ["zero-shot", "VRF"]
    assert cmp.columns == ["test", "v2", "sketch", OOD_AVG]
    assert cmp.only_in == {"only A": [0], "only B": [1]}
    np.testing.assert_allclose(cmp.acc[0, 1], [0.8, 0.7, 0.5, 0.6])
    np.testing.assert_allclose(cmp.acc[1, 1], [0.85, 0.6, 0.65, 0.625])
    np.testing.assert_allclose(cmp.difference(1), [[0, 0, 0, 0], [0.05, -0.1, 0.15, 0.025]], atol=1e-12)
    np.testing.assert_allclose(cmp.difference(0), 0)
    no_shift = compare_results([ta, tb], ["test"], [])
    assert no_shift.columns == ["test"] and no_shift.acc.shape == (2, 2, 1)


def test_ood_average_of_curves():
    curves = {"v2": np.array([0.1, 0.3]), "sketch": np.array([0.3, 0.5]), "extra": np.array([9.0, 9.0])}
    np.testing.assert_allclose(ood_average(curves, ["v2", "sketch"]), [0.2, 0.4])
    assert np.isnan(ood_average(curves, []))


def plain_disagreements(a: RunSplit, b: RunSplit, pa: np.ndarray, pb: np.ndarray) -> set:
    """(ref, label, A's prediction, B's prediction) where exactly one is right, by a dictionary over refs."""
    row_b = {ref: i for i, ref in enumerate(b.refs)}
    out = set()
    for i, ref in enumerate(a.refs):
        j = row_b[ref]
        if (pa[i] == a.labels[i]) != (pb[j] == b.labels[j]):
            out.add((str(ref), int(a.labels[i]), int(pa[i]), int(pb[j])))
    return out


@pytest.mark.parametrize("name", ["test", "v2"])  # v2 is stored in another order by run B
def test_disagreements_equal_a_plain_recomputation(runs, name):
    a, b = runs
    match = {m.name: m for m in match_splits([a, b], ["A", "B"])}[name]
    rng = np.random.default_rng(11)
    right_a, right_b = rng.random(len(a[name].refs)) < 0.7, rng.random(len(b[name].refs)) < 0.6
    pa = np.where(right_a, a[name].labels, (a[name].labels + 1) % 5)
    pb = np.where(right_b, b[name].labels, (b[name].labels + 2) % 5)
    d = disagreements(match, 0, 1, a[name].labels, pa, pb)
    got = {(str(a[name].refs[i]), int(y), int(x), int(z)) for i, y, x, z in zip(d.rows_a, d.labels, d.pred_a, d.pred_b)}
    assert got == plain_disagreements(a[name], b[name], pa, pb) and got
    assert np.array_equal(b[name].refs[d.rows_b], a[name].refs[d.rows_a])
    assert np.array_equal(match.rows[1][d.order], d.rows_b)
    n_a, n_b = d.counts()
    assert n_a == int(np.sum(d.a_right)) and n_a + n_b == len(got)
    # the accuracy difference is exactly the net of the two directions
    acc_a, acc_b = np.mean(pa == a[name].labels), np.mean(pb == b[name].labels)
    assert acc_b - acc_a == pytest.approx((n_b - n_a) / len(a[name].refs))


def test_disagreements_of_a_split_that_is_not_shared(runs):
    a, b = runs
    sketch = {m.name: m for m in match_splits([a, b], ["A", "B"])}["sketch"]
    with pytest.raises(ValueError, match="sketch is not shared: A and B: different samples"):
        disagreements(sketch, 0, 1, a["sketch"].labels, a["sketch"].labels, a["sketch"].labels)
