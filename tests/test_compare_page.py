"""The Compare runs page under AppTest on three synthetic runs of one world (tests/compare_runs.py: run-b
fine-tuned differently, run-c with a split of another size and one missing): tables and differences
against the stored results, disagreement counts against them, filters, the two-run inspector, three
runs, and a folder with one bundle. In Chromium: tests/test_compare_browser.py."""

from pathlib import Path

import numpy as np
import pytest
from compare_runs import write_compare_bundles
from streamlit.testing.v1 import AppTest

from vrf_core.bundle import open_bundle
from vrf_core.evaluate import OOD_AVG

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
PAGE = "views/compare.py"
TIMEOUT = 120


@pytest.fixture(scope="module")
def compare_bundles(tmp_path_factory):
    return write_compare_bundles(tmp_path_factory.mktemp("compare-bundles"))


def start(root: Path, monkeypatch, runs: list[str] | None = None) -> AppTest:
    monkeypatch.setenv("VRF_BUNDLES", str(root))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["bundle"] = "run-a"
    at.run()
    at.switch_page(PAGE).run()
    if runs is not None:
        at.multiselect(key="cmp-runs").set_value(runs).run()
    no_exception(at)
    return at


def no_exception(at: AppTest) -> None:
    assert not at.exception, "\n".join(e.message + "\n" + "\n".join(e.stack_trace or []) for e in at.exception)


def frames(at: AppTest, column) -> list:
    """The tables shown that have `column` (AppTest gives plain tables no key)."""
    return [d.value for d in at.dataframe if column in d.value.columns]


def results(at: AppTest):
    (table,) = frames(at, ("test (ID)", "run-a"))
    return table


def counts(at: AppTest):
    (table,) = frames(at, "split")
    return table


def stored(root: Path, run: str, method: str, split: str) -> float:
    return open_bundle(root / run).manifest["results"]["validation"]["rows"][method][split]["acc"]


def test_two_runs_side_by_side(compare_bundles, monkeypatch):
    at = start(compare_bundles, monkeypatch)
    assert at.multiselect(key="cmp-runs").value == ["run-a", "run-b"]
    assert "Compared on 6 shared split(s): val, test, shift_v2, shift_sketch, shift_hard, shift_render" in \
        at.success[0].value
    # The sidebar may flag tuned values at the edge of their search range (dashboard.edges); the page itself
    # warns of no left-out split.
    assert not [w for w in at.main.warning if w.icon != ":material/border_outer:"]
    table = results(at)
    for split, column in (("test", "test (ID)"), ("shift_hard", "shift_hard (OOD)")):
        a, b = stored(compare_bundles, "run-a", "VRF", split), stored(compare_bundles, "run-b", "VRF", split)
        assert table.loc["VRF", (column, "run-a")] == pytest.approx(100 * a)
        assert table.loc["VRF", (column, "run-b")] == pytest.approx(100 * b)
        assert table.loc["VRF", (column, "Δ run-b − run-a")] == pytest.approx(100 * (b - a))
    assert table.loc["fine-tuned", ("OOD avg", "Δ run-b − run-a")] == pytest.approx(
        100 * (stored(compare_bundles, "run-b", "fine-tuned", OOD_AVG)
               - stored(compare_bundles, "run-a", "fine-tuned", OOD_AVG)))
    assert (table.loc["zero-shot", [c for c in table.columns if c[1].startswith("Δ")]] == 0).all()  # same model
    assert (table.loc["fine-tuned", [c for c in table.columns if c[1].startswith("Δ")]] != 0).any()


def test_disagreement_counts_add_up_to_the_differences(compare_bundles, monkeypatch):
    """The per-sample predictions (method_preds on the top-m tables) against the stored results tables."""
    at = start(compare_bundles, monkeypatch)
    table = results(at)
    for method in ("VRF", "fine-tuned", "OSE (calibrated)"):
        at.selectbox(key="cmp-method").set_value(method).run()
        per_split = counts(at).set_index("split")
        for split in per_split.index:
            role = "ID val" if split == "val" else "ID" if split == "test" else "OOD"
            assert per_split.loc[split, "net run-b − run-a (points)"] == pytest.approx(
                table.loc[method, (f"{split} ({role})", "Δ run-b − run-a")], abs=0.006)
        assert per_split["run-a right, run-b wrong"].sum() + per_split["run-b right, run-a wrong"].sum() > 0


def test_filters_and_the_two_run_inspector(compare_bundles, monkeypatch):
    at = start(compare_bundles, monkeypatch)
    at.selectbox(key="cmp-split").set_value("shift_sketch").run()
    at.session_state["cmp-direction"] = False  # run-b right, run-a wrong
    at.run()
    at.selectbox(key="cmp-class").select_index(1).run()
    no_exception(at)
    wanted = at.selectbox(key="cmp-class").value
    captions = [c.value for c in at.caption if "run-a:" in c.value]
    assert captions and all(":red[✗] run-a" in c and ":green[✓] run-b" in c for c in captions)
    shown = [m.value for m in at.markdown if "shift_sketch #" in m.value]
    classes = open_bundle(compare_bundles / "run-a").split_classnames("shift_sketch")
    assert len(shown) == len(captions) and all(t.startswith(f"**{classes[wanted]}**") for t in shown)
    inspect = [b for b in at.button if b.key and b.key.startswith("cmp-inspect-shift_sketch-")]
    inspect[0].click().run()
    no_exception(at)
    tops = frames(at, "ZS")
    said = [m.value for m in at.markdown if m.value.startswith("VRF: ")]  # each run's VRF prediction
    assert len(tops) == 2 and len(said) == 2
    assert ":red[✗]" in said[0] and ":green[✓]" in said[1]  # run-a wrong, run-b right
    for top, verdict in zip(tops, said):
        probs = top[["ZS", "FT", "VRF"]].to_numpy()
        assert len(top) >= 5 and np.all((probs >= 0) & (probs <= 1))
        # the highest VRF probability in the table is the class the run's VRF predicts (marked when right)
        assert f"**{top['class'][0].removeprefix('✓ ')}**" in verdict
        assert top["class"][0].startswith("✓ ") == (":green[✓]" in verdict)
        assert sum(t.startswith("✓ ") for t in top["class"]) <= 1
    texts = " ".join(m.value for m in at.markdown)
    assert "run-a" in texts and "run-b" in texts and "shift_sketch" in texts


def test_a_run_with_other_splits_is_compared_on_the_shared_ones(compare_bundles, monkeypatch):
    at = start(compare_bundles, monkeypatch, ["run-a", "run-c"])
    warnings = " ".join(w.value for w in at.warning)
    assert "shift_hard" in warnings and "600 samples against 500" in warnings
    assert "shift_render" in warnings and "not in run-c" in warnings
    assert "shift_v2" in at.success[0].value and "shift_hard" not in at.success[0].value
    table = results(at)
    assert ("shift_hard (OOD)", "run-a") not in table.columns
    shared = ("shift_v2", "shift_sketch")
    for run in ("run-a", "run-c"):  # OOD avg over the two shared shifts, not each run's stored average
        want = np.mean([stored(compare_bundles, run, "VRF", s) for s in shared])
        assert table.loc["VRF", ("OOD avg", run)] == pytest.approx(100 * want)
    assert any("mean over the 2 shared shift(s)" in c.value for c in at.caption)


def test_three_runs(compare_bundles, monkeypatch):
    at = start(compare_bundles, monkeypatch, ["run-b", "run-a", "run-c"])
    table = results(at)
    assert {c[1] for c in table.columns} == {"run-b", "run-a", "run-c", "Δ run-a − run-b", "Δ run-c − run-b"}
    at.selectbox(key="cmp-a").set_value(1).run()
    at.selectbox(key="cmp-b").set_value(2).run()
    no_exception(at)
    assert "run-a right, run-c wrong" in counts(at).columns
    at.selectbox(key="cmp-a").set_value(2).run()  # run B's choice is no longer an option: it falls back
    no_exception(at)
    assert at.selectbox(key="cmp-b").value != 2 and "run-c right, run-b wrong" in counts(at).columns


def test_one_bundle_explains_how_to_get_a_second(compare_bundles, tmp_path, monkeypatch):
    (tmp_path / "only").symlink_to(compare_bundles / "run-a", target_is_directory=True)
    monkeypatch.setenv("VRF_BUNDLES", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page(PAGE).run()
    no_exception(at)
    assert "two or more bundles" in at.info[0].value
    assert any("python -m precompute run --config" in c.value for c in at.code)


def test_a_broken_bundle_is_left_out_with_its_reason(compare_bundles, tmp_path, monkeypatch):
    (tmp_path / "run-a").symlink_to(compare_bundles / "run-a", target_is_directory=True)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{")
    at = start(tmp_path, monkeypatch)
    assert at.multiselect(key="cmp-runs").value == ["run-a", "broken"]
    assert "broken** left out" in at.warning[0].value and "not valid JSON" in at.warning[0].value
    assert "Pick two or more runs" in at.info[0].value


def test_the_sidebar_tuning_mode_applies_to_every_run(compare_bundles, monkeypatch):
    at = start(compare_bundles, monkeypatch)
    at.sidebar.radio(key="mode").set_value("oracle").run()
    no_exception(at)
    table = results(at)
    for run in ("run-a", "run-b"):
        want = open_bundle(compare_bundles / run).manifest["results"]["oracle"]["rows"]["VRF"]["shift_v2"]["acc"]
        assert table.loc["VRF", ("shift_v2 (OOD)", run)] == pytest.approx(100 * want)
    assert any("ID test (oracle)" in c.value for c in at.caption)
