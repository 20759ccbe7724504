"""The Sensitivity page on a synthetic bundle: under AppTest (it runs, its heatmap equals VRF accuracy computed cell
by cell with vrf_core, a click on a cell adopts its (a, b), the edge flags of the manifest show in the sidebar and
on the heatmap and are absent without them), and in Chromium (a click on a heatmap cell moves the sidebar's a)."""

import base64
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from test_dashboard_apptest import current_params, no_exception, start, tuned
from test_dashboard_browser import CHROMIUM, browser, open_page, page, screenshot, server, settle, url_param  # noqa: F401

from vrf_core import bundle_adapter
from vrf_core.bundle import open_bundle

PAGE = "views/sensitivity.py"
EDGES = [{"name": "VRF a", "value": 9.0, "low": 0.5, "high": 9.0, "at": "high"},
         {"name": "T_zs", "value": 0.1, "low": 0.1, "high": 10.0, "at": "low"}]


def open_sensitivity(root: Path, monkeypatch, query: dict | None = None) -> AppTest:
    at = start(root, monkeypatch, query)
    at.switch_page(PAGE).run()
    no_exception(at)
    return at


def chart_spec(at: AppTest, key: str) -> dict:
    chart = next(e for e in at.get("plotly_chart") if e.key == key)
    return json.loads(chart.proto.spec)


def decoded(values) -> np.ndarray:
    """A plotly array from the figure's JSON: a list, or base64 typed-array data."""
    if isinstance(values, dict):
        arr = np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"]))
        shape = values.get("shape")
        return arr.reshape([int(n) for n in str(shape).split(",")]) if shape else arr
    return np.asarray(values, dtype=float)


def select_point(at: AppTest, key: str, point: dict) -> AppTest:
    """Runs the app as the browser does after a click selects one point of a chart: AppTest has no element class
    for charts, so the chart's selection goes in as its widget state."""
    chart = next(e for e in at.get("plotly_chart") if e.key == key)
    states = at._tree.get_widget_states()
    state = states.widgets.add()
    state.id = chart.proto.id
    state.string_value = json.dumps({"selection": {"points": [{"curve_number": 1, "point_number": 0,
                                                               "point_index": 0, **point}],
                                                   "point_indices": [0], "box": [], "lasso": []}})
    return at._run(states)


def click_cell(at: AppTest, customdata: list) -> AppTest:
    return select_point(at, "se-heat", {"customdata": customdata})


def test_page_runs_and_its_heatmap_equals_vrf_accuracy_cell_by_cell(synthetic_bundles, monkeypatch):
    at = open_sensitivity(synthetic_bundles, monkeypatch)
    assert at.title[0].value.startswith("Sensitivity")
    assert any("Held at the sidebar's values: k =" in c.value for c in at.caption)
    assert any("the grid (200 cells) took" in c.value for c in at.caption)
    at.selectbox(key="se-show").set_value("test").run()
    no_exception(at)
    spec = chart_spec(at, "se-heat")
    heat = spec["data"][0]
    a_grid, b_grid, z = decoded(heat["x"]), 10 ** decoded(heat["y"]), decoded(heat["z"])
    assert z.shape == (10, 20)
    bundle = open_bundle(synthetic_bundles / "synth")
    live = bundle_adapter.topm_split(bundle, "test", "validation")
    held = current_params(at)
    cells = [1, 57, 123, 199]  # a few cells (all 200 would take a while)
    want = [live.vrf_accuracy(replace(held, a=float(a_grid[c % 20]), b=float(b_grid[c // 20]))) for c in cells]
    np.testing.assert_allclose(z.ravel()[cells], 100 * np.array(want), rtol=0, atol=1e-9)
    k_spec = chart_spec(at, "se-k")
    assert {t["name"] for t in k_spec["data"]} >= {"test"}
    assert len(decoded(k_spec["data"][0]["x"])) == bundle.k_max


def test_a_click_on_a_cell_adopts_its_a_and_b(synthetic_bundles, monkeypatch):
    at = open_sensitivity(synthetic_bundles, monkeypatch)
    before = current_params(at)
    spec = chart_spec(at, "se-heat")
    cells = spec["data"][1]
    pick = cells["customdata"][37]
    assert pick[0] == "cell"
    at = click_cell(at, pick)
    no_exception(at)
    after = current_params(at)
    assert (after.a, after.b) == pytest.approx((pick[1], pick[2]))
    assert (after.k, after.rule, after.scale) == (before.k, before.rule, before.scale)
    assert at.query_params["a"] == f"{pick[1]:.4g}"
    at = click_cell(at, ["tuned", 0.0, 0.0, 0.0])  # the tuned marker restores every tuned value
    assert current_params(at) == tuned(synthetic_bundles).vrf


def test_a_click_on_the_k_chart_adopts_its_k(synthetic_bundles, monkeypatch):
    at = open_sensitivity(synthetic_bundles, monkeypatch)
    before = current_params(at)
    at = select_point(at, "se-k", {"x": 7, "y": 50.0})
    no_exception(at)
    assert current_params(at) == replace(before, k=7)


def test_binary_rule_and_other_views(synthetic_bundles, monkeypatch):
    at = open_sensitivity(synthetic_bundles, monkeypatch, {"rule": "binary", "k": "3", "cal": "0"})
    assert current_params(at).rule == "binary"
    for choice in ("val", "shift_sketch"):
        at.selectbox(key="se-show").set_value(choice).run()
        no_exception(at)
    z = decoded(chart_spec(at, "se-heat")["data"][0]["z"])
    assert (z == z[:1]).all()  # b plays no part under the binary rule


def copy_with_edges(src: Path, root: Path, edges: dict | None) -> Path:
    """A copy of the bundle whose manifest has `edges` as its tuning_edges (None: no such key, an older bundle)."""
    root.mkdir()
    shutil.copytree(src, root / "synth")
    manifest = json.loads((root / "synth" / "manifest.json").read_text())
    manifest.pop("tuning_edges", None)
    if edges is not None:
        manifest["tuning_edges"] = edges
    (root / "synth" / "manifest.json").write_text(json.dumps(manifest))
    return root


def sidebar_warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.sidebar.warning]


def test_edge_flags_show_when_the_manifest_has_them(synthetic_bundles, tmp_path, monkeypatch):
    edges = {"validation": EDGES, "oracle": []}
    at = open_sensitivity(copy_with_edges(synthetic_bundles / "synth", tmp_path / "bundles", edges), monkeypatch)
    [box] = sidebar_warnings(at)
    lines = box.split("\n- ")[1:]
    assert len(lines) == 2
    assert "VRF a = 9 is the largest value searched (0.5–9)" in lines[0] and "widen it" in lines[0]
    assert "T_zs = 0.1 is the smallest value searched (0.1–10)" in lines[1] and "calibration" in lines[1]
    [note] = [n["text"] for n in chart_spec(at, "se-heat")["layout"].get("annotations", []) if n.get("name") == "edge"]
    assert "a at the high end of its search" in note
    at.radio(key="mode").set_value("oracle").run()  # this mode has no edges
    assert not sidebar_warnings(at)


def test_no_edge_flags_without_the_key(synthetic_bundles, tmp_path, monkeypatch):
    at = open_sensitivity(copy_with_edges(synthetic_bundles / "synth", tmp_path / "bundles", None), monkeypatch)
    assert not sidebar_warnings(at)
    assert not [n for n in chart_spec(at, "se-heat")["layout"].get("annotations", []) if n.get("name") == "edge"]


def click_and_read_a(pg, x: float, y: float) -> float:
    """Hover (plotly picks the point under the pointer), click, wait for the rerun: the URL's a afterwards."""
    pg.mouse.move(x, y)
    pg.wait_for_timeout(300)
    pg.mouse.click(x, y)
    settle(pg)
    return float(url_param(pg, "a"))


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing")
def test_clicking_a_heatmap_cell_in_the_browser_moves_a(server, page):  # noqa: F811
    page.goto(f"{server}/sensitivity")
    page.wait_for_selector("[data-testid='stApp']")
    settle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    # A cell far from the tuned and current markers, in page pixels, with its (a, b).
    cell = page.evaluate("""() => {
        const gd = document.querySelector("[data-testid='stPlotlyChart'] .js-plotly-plot");
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
        const cells = gd._fullData.find(d => d.name === 'cells');
        const marks = gd._fullData.filter(d => d.name !== 'cells' && d.type === 'scatter');
        const px = (t, j) => [r.left + xa._offset + xa.l2p(t.x[j]), r.top + ya._offset + ya.l2p(t.y[j])];
        const taken = marks.flatMap(t => Array.from(t.x, (_, j) => px(t, j)));
        let best = null;
        for (let j = 0; j < cells.x.length; j++) {
            const p = px(cells, j);
            const gap = Math.min(...taken.map(([x, y]) => Math.hypot(x - p[0], y - p[1])));
            if (!best || gap > best.gap) best = {gap, x: p[0], y: p[1], a: cells.customdata[j][1]};
        }
        return best;
    }""")
    before, after = float(url_param(page, "a")), click_and_read_a(page, cell["x"], cell["y"])
    assert after != before and after == pytest.approx(cell["a"], abs=1e-3)
    assert f"{after:.3f}" in page.locator("[data-testid='stSidebar']").inner_text()
    screenshot(page, "sensitivity")

