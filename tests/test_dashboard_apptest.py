"""The dashboard under streamlit.testing.v1.AppTest, on a synthetic bundle: every page runs, the
controls agree with vrf_core computed directly, broken bundles give a message naming the file."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from vrf_core import bundle_adapter
from vrf_core.bundle import open_bundle
from vrf_core.evaluate import OOD_AVG, Hyperparameters, VRFParams, mixture_preds, vrf_preds

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
PAGES = ["views/overview.py", "views/tradeoff.py", "views/distances.py", "views/samples.py",
         "views/embedding.py", "views/per_class.py", "views/sensitivity.py", "views/compare.py"]
TIMEOUT = 90


def start(root: Path, monkeypatch, query: dict | None = None) -> AppTest:
    monkeypatch.setenv("VRF_BUNDLES", str(root))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(query or {})
    return at.run()


def no_exception(at: AppTest) -> None:
    assert not at.exception, "\n".join(e.message + "\n" + "\n".join(e.stack_trace or []) for e in at.exception)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def tuned(root: Path, mode: str = "validation") -> Hyperparameters:
    return bundle_adapter.hyperparameters(open_bundle(root / "synth"), mode)


def expected_vrf(root: Path, params: VRFParams) -> tuple[str, str]:
    """VRF accuracy on ID test and the OOD average, computed with vrf_core directly, formatted as shown."""
    bundle = open_bundle(root / "synth")
    hp = tuned(root)

    def acc(split: str) -> float:
        sd = bundle_adapter.eval_split(bundle, split, lazy=False)
        return float((vrf_preds(sd, params, (hp.t_zs, hp.t_ft)) == sd.labels).mean())

    ood = np.mean([acc(s) for s in bundle.split_names("ood")])
    return f"{100 * acc('test'):.1f}%", f"{100 * ood:.1f}%"


def shown_vrf(at: AppTest) -> tuple[str, str]:
    return metric(at, "VRF · ID test (test)"), metric(at, f"VRF · {OOD_AVG}")


def current_params(at: AppTest) -> VRFParams:
    s = at.session_state
    return VRFParams(float(s["a"]), float(s["b"]), int(s["k"]), s["rule"], s["scale"], bool(s["cal"]))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs(synthetic_bundles, monkeypatch, page):
    at = start(synthetic_bundles, monkeypatch)
    at.switch_page(page).run()
    no_exception(at)
    assert at.title, f"{page} shows no title"
    assert [s for s in at.sidebar.slider if s.key == "a"], f"{page}: the sidebar's VRF controls are missing"
    if page != "views/compare.py":  # with one bundle it explains how to build a second and stops
        assert any("VRF recompute" in c.value for c in at.sidebar.caption), "the latency line is missing"


def test_starts_at_the_validation_tuned_values(synthetic_bundles, monkeypatch):
    at = start(synthetic_bundles, monkeypatch)
    vrf = tuned(synthetic_bundles).vrf
    assert current_params(at) == vrf
    assert shown_vrf(at) == expected_vrf(synthetic_bundles, vrf)


@pytest.mark.parametrize("control,value", [("a", 1.30), ("b", 0.4), ("k", 1), ("rule", "binary"),
                                           ("rule", "linear"), ("cal", False)])
def test_controls_change_vrf_like_vrf_core(synthetic_bundles, monkeypatch, control, value):
    at = start(synthetic_bundles, monkeypatch)
    before = shown_vrf(at)
    widget = {"rule": at.radio, "cal": at.toggle}.get(control, at.slider)(key=control)
    widget.set_value(value).run()
    no_exception(at)
    params = current_params(at)
    assert getattr(params, {"cal": "calibrate"}.get(control, control)) == value
    assert shown_vrf(at) == expected_vrf(synthetic_bundles, params)
    if control in ("a", "rule"):
        assert shown_vrf(at) != before, f"moving {control} should change VRF's accuracy on this bundle"
    table = at.dataframe[0].value  # the results table shows the same number
    assert any(f"{float(shown_vrf(at)[0][:-1]):.1f}" in str(cell) for cell in table.loc["VRF"])


def test_url_sets_and_mirrors_the_controls(synthetic_bundles, monkeypatch):
    at = start(synthetic_bundles, monkeypatch, {"a": "1.35", "k": "5", "rule": "linear"})
    params = current_params(at)
    assert (params.a, params.k, params.rule) == (1.35, 5, "linear")
    assert shown_vrf(at) == expected_vrf(synthetic_bundles, params)
    at.slider(key="b").set_value(0.25).run()
    assert at.query_params["b"] == "0.25" and at.query_params["a"] == "1.35"


def test_scale_switch_converts_a_and_reset_restores(synthetic_bundles, monkeypatch):
    at = start(synthetic_bundles, monkeypatch)
    before = current_params(at)
    at.radio(key="scale").set_value("l2").run()
    no_exception(at)
    assert at.session_state["a"] == pytest.approx(math.sqrt(before.a), abs=1e-6)
    assert shown_vrf(at) == expected_vrf(synthetic_bundles, current_params(at))
    at.slider(key="k").set_value(3).run()
    at.button(key="reset").click().run()
    assert current_params(at) == before


def test_oracle_mode_uses_the_oracle_hyperparameters(synthetic_bundles, monkeypatch):
    at = start(synthetic_bundles, monkeypatch)
    at.radio(key="mode").set_value("oracle").run()
    no_exception(at)
    assert current_params(at) == tuned(synthetic_bundles, "oracle").vrf
    assert at.query_params["tune"] == "oracle"


def test_samples_inspector_opens(synthetic_bundles, monkeypatch):
    at = start(synthetic_bundles, monkeypatch)
    at.switch_page("views/samples.py").run()
    buttons = [b for b in at.button if (b.key or "").startswith("sa-inspect-")]
    assert len(buttons) == 12
    buttons[0].click().run()
    no_exception(at)
    assert any("Top-5 classes" in m.value for m in at.markdown)
    assert any("Nearest zero-shot failure training images" in m.value for m in at.markdown)
    top5 = next(d.value for d in at.dataframe if "VRF" in d.value.columns)
    assert np.all(top5["VRF"].diff().dropna() <= 1e-9)  # sorted by VRF probability


def test_samples_filters_and_galleries(synthetic_bundles, monkeypatch):
    at = start(synthetic_bundles, monkeypatch)
    at.switch_page("views/samples.py").run()
    at.selectbox(key="sa-dataset").set_value("shift_render").run()
    at.button_group(key="sa-who-VRF").set_value("wrong").run()
    no_exception(at)
    assert any("of " in c.value and "samples" in c.value for c in at.caption)
    at.button_group(key="sa-show").set_value("largest d").run()
    no_exception(at)
    assert any("farthest from" in c.value for c in at.caption)


def test_map_selection_fills_the_grid(synthetic_bundles, monkeypatch):
    at = start(synthetic_bundles, monkeypatch)
    at.session_state["map_selection"] = [("test", 0), ("shift_v2", 3), ("zsf", 7)]
    at.switch_page("views/embedding.py").run()
    no_exception(at)
    assert any("3 points selected" in c.value for c in at.caption)
    keys = {b.key for b in at.button}
    assert {"em-inspect-test-0", "em-inspect-shift_v2-3"} <= keys
    for colour in ("distance", "weight", "correctness"):
        at.button_group(key="em-colour").set_value(colour).run()
        no_exception(at)


def test_tradeoff_and_per_class_options(synthetic_bundles, monkeypatch):
    at = start(synthetic_bundles, monkeypatch)
    at.switch_page("views/tradeoff.py").run()
    at.toggle(key="to-logit").set_value(True).run()
    at.button_group(key="to-over").set_value("b").run()
    at.selectbox(key="to-y").set_value("shift_sketch").run()
    at.button_group(key="to-sens").set_value("k").run()
    no_exception(at)
    at.switch_page("views/per_class.py").run()
    at.selectbox(key="pc-ref").set_value("zero-shot").run()
    no_exception(at)
    table = next(d.value for d in at.dataframe if "VRF − zero-shot" in d.value.columns)
    assert table["VRF − zero-shot"].is_monotonic_decreasing


def test_baselines_at_a_chosen_alpha_equal_the_full_mixture(synthetic_bundles, monkeypatch):
    """An OSE alpha off the precomputed grid, calibrated, and a WSE alpha: the table equals vrf_core's full
    computation on every test split."""
    at = start(synthetic_bundles, monkeypatch)
    at.switch_page("views/tradeoff.py").run()
    at.slider(key="to-ose-alpha").set_value(0.37).run()
    at.toggle(key="to-ose-cal").set_value(True).run()
    at.select_slider(key="to-wse-alpha").set_value(0.3).run()
    no_exception(at)
    table = next(d.value for d in at.dataframe if {"method", OOD_AVG} <= set(d.value.columns)).set_index("method")
    bundle = open_bundle(synthetic_bundles / "synth")
    hp = tuned(synthetic_bundles)
    for split in bundle.split_names("id_test", "ood"):
        sd = bundle_adapter.eval_split(bundle, split, lazy=False)
        ose = (mixture_preds(sd, 0.37, hp.t_zs, hp.t_ft) == sd.labels).mean()
        wse = (bundle_adapter.wse_preds(bundle, split)[bundle.wse_alphas.index(0.3)] == sd.labels).mean()
        assert table.loc["OSE (calibrated), alpha = 0.37", split] == pytest.approx(round(100 * ose, 1))
        assert table.loc["WSE, alpha = 0.3", split] == pytest.approx(round(100 * wse, 1))


def test_picker_opens_demo_first_and_switches(synthetic_bundles, tmp_path, monkeypatch):
    for name in ("alpha", "demo"):
        shutil.copytree(synthetic_bundles / "synth", tmp_path / "bundles" / name)
    at = start(tmp_path / "bundles", monkeypatch)
    assert at.selectbox(key="bundle").value == "demo"
    at.selectbox(key="bundle").set_value("alpha").run()
    no_exception(at)
    assert at.query_params["bundle"] == "alpha"
    assert shown_vrf(at) == expected_vrf(synthetic_bundles, current_params(at))


def broken_copy(src: Path, dst_root: Path, damage) -> Path:
    dst_root.mkdir()
    shutil.copytree(src, dst_root / "synth")
    return damage(dst_root / "synth")


def test_wrong_schema_version_names_the_manifest(synthetic_bundles, tmp_path, monkeypatch):
    def damage(b: Path) -> Path:
        m = json.loads((b / "manifest.json").read_text())
        m["schema_version"] = 99
        (b / "manifest.json").write_text(json.dumps(m))
        return b / "manifest.json"

    manifest = broken_copy(synthetic_bundles / "synth", tmp_path / "bundles", damage)
    at = start(tmp_path / "bundles", monkeypatch)
    no_exception(at)
    assert at.error and str(manifest) in at.error[0].value and "schema version 99" in at.error[0].value


def test_missing_array_names_the_file(synthetic_bundles, tmp_path, monkeypatch):
    def damage(b: Path) -> Path:
        (b / "splits" / "test" / "logits_ft.npy").unlink()
        return Path("splits/test/logits_ft.npy")

    missing = broken_copy(synthetic_bundles / "synth", tmp_path / "bundles", damage)
    at = start(tmp_path / "bundles", monkeypatch)
    no_exception(at)
    assert at.error and str(missing) in at.error[0].value


def test_no_bundle_offers_to_build_the_demo(tmp_path, monkeypatch):
    at = start(tmp_path, monkeypatch)
    no_exception(at)
    assert at.button(key="build-demo").label == "Build the demo bundle"
    assert any("python -m precompute demo --out" in c.value for c in at.code)


def test_launcher_adds_its_defaults_unless_given():
    """`python -m dashboard`: no usage statistics and no Deploy button unless the user says otherwise; the
    app's own arguments stay after `--`."""
    from dashboard.__main__ import APP, streamlit_argv

    argv = streamlit_argv(["--server.port", "9", "--client.toolbarMode=auto", "--", "--bundles", "b"])
    assert argv[:3] == ["streamlit", "run", str(APP)]
    assert argv[argv.index("--"):] == ["--", "--bundles", "b"]
    assert "--browser.gatherUsageStats" in argv[:argv.index("--")]
    assert "--client.toolbarMode" not in argv and "--client.toolbarMode=auto" in argv
    assert streamlit_argv([])[-4:] == ["--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"]
