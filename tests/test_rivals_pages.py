"""The rival methods on the dashboard pages under AppTest, on the synthetic bundle: the logit ensembles, DaWin and
VRF's two ablations as rows of the Overview table (in their groups' order), curves and points on the Trade-off
chart, options on the Per class and Samples pages and columns of the inspector; the per-sample ceiling as a
reference line, never ranked. Numbers are checked against vrf_core's full computation (`FullMixture`). A bundle
derived before the rivals (no rows, no ceiling, no arrays) still renders every page."""

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_dashboard_apptest import PAGES, no_exception, start

from vrf_core import bundle_adapter
from vrf_core import evaluate as ev
from vrf_core.bundle import open_bundle
from vrf_core.metrics import per_class_accuracy

RIVALS = (ev.ROW_LOGIT, ev.ROW_LOGIT_CAL, ev.ROW_DAWIN, ev.ROW_DAWIN_TRANSDUCTIVE, ev.ROW_VRF_TRAIN, ev.ROW_VRF_ZS)
POINTS = (ev.ROW_DAWIN, ev.ROW_DAWIN_TRANSDUCTIVE, ev.ROW_VRF_TRAIN, ev.ROW_VRF_ZS)
SHORT = ("logit", "logit (T)", "DaWin", "DaWin (transd.)", "VRF train-kNN", "VRF ZS-feat")
CEILING = "either model right"


def stored(root: Path, mode: str = "validation") -> dict:
    return json.loads((root / "synth" / "manifest.json").read_text())["results"][mode]


def reference_preds(root: Path, split: str) -> dict[str, np.ndarray]:
    """Every method's predictions on `split` at the validation-tuned values, through the full N x C mixtures."""
    bundle = open_bundle(root / "synth")
    return ev.method_preds(bundle_adapter.eval_split(bundle, split, lazy=False),
                           bundle_adapter.hyperparameters(bundle, "validation"),
                           wse_preds=bundle_adapter.wse_preds(bundle, split), wse_alphas=bundle.wse_alphas)


def _decoded(obj):
    """Plotly's JSON with its typed arrays ({"dtype", "bdata"}: base64) decoded to lists."""
    if isinstance(obj, dict) and set(obj) >= {"dtype", "bdata"}:
        return np.frombuffer(base64.b64decode(obj["bdata"]), dtype=obj["dtype"]).tolist()
    if isinstance(obj, dict):
        return {k: _decoded(v) for k, v in obj.items()}
    return [_decoded(v) for v in obj] if isinstance(obj, list) else obj


def figure(at) -> dict:
    """The first chart of the page as plotly JSON."""
    return _decoded(json.loads(at.get("plotly_chart")[0].proto.spec))


@pytest.fixture(scope="module")
def old_bundles(synthetic_bundles, tmp_path_factory) -> Path:
    """The synthetic bundle as a bundle derived before the rivals: without their rows, ceiling, curves, tuned
    values and arrays (DaWin's entropies, the ablations' distances)."""
    root = tmp_path_factory.mktemp("old") / "bundles"
    shutil.copytree(synthetic_bundles / "synth", root / "synth")
    path = root / "synth" / "manifest.json"
    m = json.loads(path.read_text())
    for mode, res in m["results"].items():
        res.pop(ev.CEILING)
        res["rows"] = {k: v for k, v in res["rows"].items() if k not in RIVALS}
        m["curves"][mode] = {k: v for k, v in m["curves"][mode].items() if k not in (ev.ROW_LOGIT, ev.ROW_LOGIT_CAL)}
        for key in ("logit_alpha", "logit_cal_alpha", "ablations"):
            m["hyperparameters"][mode].pop(key)
    rival_arrays = ("knn_sqdist_train", "knn_sqdist_zs", "topm_h_zs", "topm_h_ft")
    for rel in [f for f in m["files"] if Path(f).stem in rival_arrays]:
        del m["files"][rel]
        (root / "synth" / rel).unlink()
    path.write_text(json.dumps(m))
    return root


def test_overview_rows_in_order_and_the_ceiling_unranked(synthetic_bundles, monkeypatch):
    at = start(synthetic_bundles, monkeypatch)
    no_exception(at)
    rows = list(at.dataframe[0].value.index)
    assert set(RIVALS) <= set(rows) and set(rows) == set(stored(synthetic_bundles)["rows"])
    routes = [i for i, m in enumerate(rows) if m.startswith(ev.ROUTE_PREFIX)]
    assert rows[:2] == [ev.ROW_ZS, ev.ROW_FT] and rows[-1] == ev.ROW_VRF
    assert rows.index(ev.ROW_OSE_CAL) < rows.index(ev.ROW_LOGIT) < rows.index(ev.ROW_LOGIT_CAL) < min(routes)
    assert max(routes) < rows.index(ev.ROW_DAWIN) < rows.index(ev.ROW_DAWIN_TRANSDUCTIVE) \
        < rows.index(ev.ROW_VRF_TRAIN) < rows.index(ev.ROW_VRF_ZS)
    assert not any("ceiling" in m or CEILING in m for m in rows), "the ceiling is a reference, not a row"
    assert not any("ceiling" in m.label for m in at.metric)

    ceiling = stored(synthetic_bundles)[ev.CEILING]
    line = next(m.value for m in at.markdown if CEILING in m.value)
    for split in ("test", "shift_v2", "shift_render", ev.OOD_AVG):
        assert f"{split} **{100 * ceiling[split]:.1f}%**" in line
    shown = at.dataframe[0].value  # the ceiling tops every method: it would have been bold had it been a row
    assert all(100 * ceiling[ev.OOD_AVG] > float(str(v).split()[0]) for v in shown.iloc[:, -1])

    ranking = next(m.value for m in at.markdown if "VRF ranks" in m.value)
    ood = {m: r[ev.OOD_AVG]["acc"] for m, r in stored(synthetic_bundles)["rows"].items()}
    rank = 1 + sum(a > ood[ev.ROW_VRF] for a in ood.values())  # the controls start at the stored VRF row's values
    assert f"{ev.OOD_AVG}: VRF ranks **{rank} of {len(ood)}**, best {max(ood, key=ood.get)}" in ranking
    assert "ceiling" not in ranking and CEILING not in ranking

    tuned = at.dataframe[1].value.set_index("hyperparameter")
    hp = bundle_adapter.hyperparameters(open_bundle(synthetic_bundles / "synth"), "validation")
    assert tuned.loc[f"{ev.ROW_LOGIT} alpha"].iloc[0] == f"{hp.logit_alpha:.4g}"
    assert tuned.loc[f"{ev.ROW_VRF_ZS} k"].iloc[0] == str(hp.ablations["zs_features"].k)


@pytest.mark.parametrize("logit_axes,y_axis", [(False, ev.OOD_AVG), (True, "shift_sketch")])
def test_tradeoff_curves_points_and_ceiling_lines(synthetic_bundles, monkeypatch, logit_axes, y_axis):
    at = start(synthetic_bundles, monkeypatch)
    at.switch_page("views/tradeoff.py").run()
    at.toggle(key="to-logit").set_value(logit_axes).run()
    at.selectbox(key="to-y").set_value(y_axis).run()
    no_exception(at)
    fig, res = figure(at), stored(synthetic_bundles)
    traces = {t["name"]: t for t in fig["data"]}

    def tx(acc: float) -> float:
        return float(np.log(acc / (1 - acc))) if logit_axes else 100 * acc

    bundle = open_bundle(synthetic_bundles / "synth")
    hp = bundle_adapter.hyperparameters(bundle, "validation")
    curves = json.loads((synthetic_bundles / "synth" / "manifest.json").read_text())["curves"]["validation"]
    for method, alpha in ((ev.ROW_LOGIT, hp.logit_alpha), (ev.ROW_LOGIT_CAL, hp.logit_cal_alpha)):
        assert len(traces[method]["x"]) == len(bundle.ose_alphas)
        j = bundle.ose_alphas.index(alpha)
        assert traces[f"{method} (tuned)"]["x"] == pytest.approx([tx(curves[method]["test"][j])])
    for method in POINTS:
        assert traces[method]["x"] == pytest.approx([tx(res["rows"][method]["test"]["acc"])])
        assert traces[method]["y"] == pytest.approx([tx(res["rows"][method][y_axis]["acc"])])
        assert traces[method]["text"] == [method]
    assert not any(CEILING in name or "ceiling" in name for name in traces), "the ceiling is not a method"
    shapes = {s["name"]: s for s in fig["layout"]["shapes"]}
    x, y = shapes[f"{CEILING} (ID)"]["x0"], shapes[f"{CEILING} (OOD)"]["y0"]
    assert (x, y) == pytest.approx((tx(res[ev.CEILING]["test"]), tx(res[ev.CEILING][y_axis])))
    for axis, value in (("xaxis", x), ("yaxis", y)):
        if "range" in fig["layout"][axis]:  # zoomed: the frame still shows the ceiling
            lo, hi = fig["layout"][axis]["range"]
            assert lo < value < hi
    assert sum(CEILING in a["text"] for a in fig["layout"]["annotations"]) == 2
    assert any(c.value.startswith("Rivals: ") and CEILING in c.value for c in at.caption)


def test_per_class_compares_vrf_with_each_method(synthetic_bundles, monkeypatch):
    at = start(synthetic_bundles, monkeypatch)
    at.switch_page("views/per_class.py").run()
    at.selectbox(key="pc-dataset").set_value("shift_render").run()
    assert set(at.selectbox(key="pc-ref").options) == set(stored(synthetic_bundles)["rows"]) - {ev.ROW_VRF}
    ref = reference_preds(synthetic_bundles, "shift_render")
    bundle = open_bundle(synthetic_bundles / "synth")
    labels, names = np.asarray(bundle.array("shift_render", "labels")), bundle.split_classnames("shift_render")
    for method in RIVALS:
        at.selectbox(key="pc-ref").set_value(method).run()
        no_exception(at)
        table = next(d.value for d in at.dataframe if f"VRF − {method}" in d.value.columns)
        assert table[f"VRF − {method}"].is_monotonic_decreasing
        expected = dict(zip(names, 100 * per_class_accuracy(ref[method], labels, len(names))))
        assert table[method].tolist() == pytest.approx([expected[c] for c in table["class"]])
        assert table[f"VRF − {method}"].tolist() == pytest.approx((table["VRF"] - table[method]).tolist())


def top5_table(at):
    return next(d.value for d in at.dataframe if "VRF" in d.value.columns and "class" in d.value.columns)


@pytest.mark.parametrize("split", ["test", "shift_render"])
def test_inspector_columns_are_each_methods_probabilities(synthetic_bundles, monkeypatch, split):
    """The sample where the rivals disagree most: each column's most probable class is the method's
    prediction (full computation), and the verdicts say whether it is right."""
    ref = reference_preds(synthetic_bundles, split)
    labels = np.asarray(open_bundle(synthetic_bundles / "synth").array(split, "labels"))
    disagree = sum((ref[a] != ref[b]).astype(int) for a in RIVALS for b in RIVALS)
    i = int(np.argmax(disagree))
    at = start(synthetic_bundles, monkeypatch)
    at.session_state["inspect"] = (split, i)
    at.switch_page("views/samples.py").run()
    no_exception(at)
    assert list(top5_table(at).columns) == ["class", "zero-shot", "fine-tuned", "VRF", ev.ROW_LOGIT_CAL, ev.ROW_DAWIN]
    at.multiselect(key="insp-rivals").set_value(list(RIVALS)).run()
    no_exception(at)
    top5 = top5_table(at)
    assert list(top5.columns)[4:] == list(RIVALS)
    classes = [c.removeprefix("✓ ") for c in top5["class"]]
    names = open_bundle(synthetic_bundles / "synth").split_classnames(split)
    verdicts = next(m.value for m in at.markdown if m.value.startswith("Rivals (tuned on"))
    for method, short in zip(RIVALS, SHORT):
        assert ((top5[method] >= 0) & (top5[method] <= 1)).all()
        assert classes[int(top5[method].argmax())] == names[ref[method][i]], method
        ok = ref[method][i] == labels[i]
        assert f":{'green' if ok else 'red'}[{'✓' if ok else '✗'} {short}]" in verdicts


def test_samples_filter_by_another_method(synthetic_bundles, monkeypatch):
    at = start(synthetic_bundles, monkeypatch)
    at.switch_page("views/samples.py").run()
    at.selectbox(key="sa-dataset").set_value("shift_render").run()
    at.selectbox(key="sa-other").set_value(ev.ROW_DAWIN).run()
    at.button_group(key="sa-who-other").set_value("wrong").run()
    at.button_group(key="sa-who-VRF").set_value("right").run()
    no_exception(at)
    ref = reference_preds(synthetic_bundles, "shift_render")
    labels = np.asarray(open_bundle(synthetic_bundles / "synth").array("shift_render", "labels"))
    n = int(((ref[ev.ROW_DAWIN] != labels) & (ref[ev.ROW_VRF] == labels)).sum())
    assert n > 0
    assert any(f"of {n:,} samples" in c.value for c in at.caption)


@pytest.mark.parametrize("page", PAGES)
def test_bundle_without_rivals_renders_every_page(old_bundles, monkeypatch, page):
    at = start(old_bundles, monkeypatch)
    at.switch_page(page).run()
    no_exception(at)
    assert at.title
    if page == "views/overview.py":
        assert not set(RIVALS) & set(at.dataframe[0].value.index)
        assert not any(CEILING in m.value for m in at.markdown)
    if page == "views/tradeoff.py":
        fig = figure(at)
        assert not set(RIVALS) & {t["name"] for t in fig["data"]} and not fig["layout"].get("shapes")
        assert not any(c.value.startswith("Rivals: ") for c in at.caption)
    if page == "views/per_class.py":
        assert not set(RIVALS) & set(at.selectbox(key="pc-ref").options)
    if page == "views/samples.py":
        at.button(key=next(b.key for b in at.button if (b.key or "").startswith("sa-inspect-"))).click().run()
        no_exception(at)
        assert list(top5_table(at).columns) == ["class", "zero-shot", "fine-tuned", "VRF"]
