"""`precompute run` on a tiny image-folder dataset made here, `report --json`, and content-keyed caching."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny import tiny_config, tiny_local_dir

from precompute.config import ConfigError, load_config
from precompute.pipeline import run
from vrf_core import bundle_adapter
from vrf_core.bundle import open_bundle
from vrf_core.ensembles import softmax
from vrf_core.evaluate import Hyperparameters, method_preds, mixture_preds, score_table
from vrf_core.projection import project_logits
from vrf_core.topm import TopMSplit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    cfg_path = tiny_config(tmp, tiny_local_dir(tmp / "model"))
    bundle = run(load_config(cfg_path))
    return tmp, cfg_path, bundle


def test_bundle_is_complete_and_checksummed(tiny_run):
    _, _, bundle = tiny_run
    again = open_bundle(bundle.path, verify=True)
    roles = {s["role"] for s in again.splits.values()}
    assert roles == {"id_train", "zsf", "id_val", "id_test", "ood"}
    assert again.splits["subset"]["projection"] == {"groups": [[0], [2], [3]]}
    assert again.array("test", "features_ft").dtype == np.float16
    assert again.manifest["schema_version"] == 2
    assert again.array("test", "preds_wse").shape == (3, again.splits["test"]["n"])
    assert not any("logits_wse" in rel for rel in again.manifest["files"])
    assert again.manifest["models"]["zs"]["sha256"] and again.manifest["models"]["ft"]["sha256"]
    assert not list(bundle.path.rglob("*.tmp"))
    assert again.thumbnail("test", 0)[:2] == b"\xff\xd8"  # a JPEG


def straightforward_vrf_accuracy(bundle, split, sel):
    """Independent recomputation from raw arrays, written out in full (no vrf_core.evaluate)."""
    proj = bundle_adapter.projection(bundle, split)
    zs = project_logits(np.asarray(bundle.array(split, "logits_zs"), np.float64), proj)
    ft = project_logits(np.asarray(bundle.array(split, "logits_ft"), np.float64), proj)
    v = sel["vrf"]
    d = np.asarray(bundle.array(split, "knn_sqdist"))[:, v["k"] - 1].astype(np.float64)
    if v["scale"] == "l2":
        d = np.sqrt(d)
    w = 1.0 / (1.0 + np.exp((d - v["a"]) / v["b"]))
    p = w[:, None] * softmax(ft / sel["t_ft"]) + (1 - w[:, None]) * softmax(zs / sel["t_zs"])
    return float((p.argmax(1) == np.asarray(bundle.array(split, "labels"))).mean())


def test_report_json_agrees_with_the_bundle_arrays(tiny_run):
    _, _, bundle = tiny_run
    out = subprocess.run([sys.executable, "-m", "precompute", "report", str(bundle.path), "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    rep = json.loads(out.stdout)
    assert rep["tuned_on"] == "val" and rep["columns"][-1] == "OOD avg"
    for split in ("val", "test", "sketch", "subset"):
        labels = np.asarray(bundle.array(split, "labels"))
        proj = bundle_adapter.projection(bundle, split)
        zs = project_logits(np.asarray(bundle.array(split, "logits_zs")), proj)
        ft = project_logits(np.asarray(bundle.array(split, "logits_ft")), proj)
        assert rep["rows"]["zero-shot"][split]["acc"] == pytest.approx((zs.argmax(1) == labels).mean())
        assert rep["rows"]["fine-tuned"][split]["acc"] == pytest.approx((ft.argmax(1) == labels).mean())
        vrf = straightforward_vrf_accuracy(bundle, split, rep["hyperparameters"])
        assert rep["rows"]["VRF"][split]["acc"] == pytest.approx(vrf)
        cell = rep["rows"]["VRF"][split]
        assert cell["lo"] <= cell["acc"] <= cell["hi"]
    ood = [rep["rows"]["VRF"][s]["acc"] for s in ("sketch", "subset")]
    assert rep["rows"]["VRF"]["OOD avg"]["acc"] == pytest.approx(np.mean(ood))


def cached_wse_preds(bundle, split: str) -> np.ndarray:
    """WSE predictions straight from the extraction cache's WSE logits (alpha 0 and 1: the two models)."""
    proj = bundle_adapter.projection(bundle, split)
    rows = []
    for alpha in bundle.wse_alphas:
        part = "zs" if alpha == 0.0 else "ft" if alpha == 1.0 else f"wse_{alpha}"
        (folder,) = (bundle.path / "cache" / "extract" / split).glob(f"{part}-*")
        rows.append(project_logits(np.load(folder / f"logits_{part}.npy"), proj).argmax(1))
    return np.stack(rows)


def test_stored_results_and_topm_tables_equal_a_full_recomputation(tiny_run):
    """The manifest's `results` equal the full-mixture table (every method, every split, both modes);
    the stored WSE predictions equal the cached WSE logits' argmax; the stored top-m tables equal
    tables built from the logits; lazy splits read the same projected logits."""
    _, _, bundle = tiny_run
    names = ["val", "test", "sketch", "subset"]
    assert bundle.manifest["topm"]["temperatures"][0] == [1.0, 1.0]
    eager = {s: bundle_adapter.eval_split(bundle, s, lazy=False) for s in names}
    wse = {s: cached_wse_preds(bundle, s) for s in names}
    for mode in ("validation", "oracle"):
        hp = Hyperparameters.from_json(bundle.manifest["hyperparameters"][mode])
        full = score_table({s: method_preds(eager[s], hp, wse_preds=wse[s], wse_alphas=bundle.wse_alphas)
                            for s in names}, list(eager.values()))
        stored = bundle.manifest["results"][mode]
        assert stored["columns"] == names + ["OOD avg"]
        assert stored["rows"] == json.loads(json.dumps(full))
        assert "WSE" in stored["rows"] and "route: msp" in stored["rows"]
        curves = bundle.manifest["curves"][mode]
        for split in names[1:]:
            data = eager[split]
            for i, alpha in enumerate(bundle.ose_alphas):
                assert curves["OSE"][split][i] == (mixture_preds(data, alpha, 1.0, 1.0) == data.labels).mean()
                assert curves["OSE (calibrated)"][split][i] == \
                    (mixture_preds(data, alpha, hp.t_zs, hp.t_ft) == data.labels).mean()
            np.testing.assert_array_equal(curves["WSE"][split], (wse[split] == data.labels).mean(1))
    for split in names:
        lazy = bundle_adapter.eval_split(bundle, split)
        np.testing.assert_array_equal(np.asarray(lazy.logits_zs), eager[split].logits_zs)
        np.testing.assert_array_equal(lazy.logits_ft[[2, 0]], eager[split].logits_ft[[2, 0]])
        np.testing.assert_array_equal(bundle.array(split, "preds_wse"), wse[split])
        stored = bundle_adapter.stored_topm(bundle, split)
        assert len(stored) == len(bundle.manifest["topm"]["temperatures"])
        for (t_zs, t_ft), table in stored.items():
            fresh = TopMSplit.from_split_data(eager[split], t_zs, t_ft).tables()[(t_zs, t_ft)]
            for name in ("cand", "p_ft", "p_zs", "r_ft", "r_zs", "arg_zs", "arg_ft"):
                np.testing.assert_array_equal(getattr(table, name), getattr(fresh, name))


def test_report_recompute_agrees_and_notices_a_tampered_table(tiny_run, tmp_path):
    import shutil

    _, _, bundle = tiny_run
    out = subprocess.run([sys.executable, "-m", "precompute", "report", str(bundle.path), "--recompute"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "agrees with the stored results" in out.stdout
    copy = tmp_path / "copy"
    shutil.copytree(bundle.path, copy, ignore=shutil.ignore_patterns("cache", "checkpoints"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["results"]["validation"]["rows"]["VRF"]["test"]["acc"] += 0.01
    (copy / "manifest.json").write_text(json.dumps(manifest))
    out = subprocess.run([sys.executable, "-m", "precompute", "report", str(copy), "--recompute", "--json"],
                         cwd=ROOT, capture_output=True, text=True)
    rep = json.loads(out.stdout)
    assert out.returncode == 1 and not rep["recomputed"]["agrees"]
    assert rep["recomputed"]["differences"] == [
        f"manifest.results.validation.rows.VRF.test.acc: stored "
        f"{manifest['results']['validation']['rows']['VRF']['test']['acc']!r}, recomputed "
        f"{bundle.manifest['results']['validation']['rows']['VRF']['test']['acc']!r}"]


def test_rerun_recomputes_nothing_and_changes_recompute_what_they_affect(tiny_run):
    tmp, cfg_path, bundle = tiny_run
    manifest = bundle.path / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    ckpts = sorted(p.name for p in (bundle.path / "checkpoints").iterdir())
    again = run(load_config(cfg_path))
    assert manifest.stat().st_mtime_ns == stamp  # nothing rewritten
    assert again.manifest["assemble_key"] == bundle.manifest["assemble_key"]

    # A new template changes the zero-shot head, hence fine-tuning and everything downstream.
    text = cfg_path.read_text().replace('"a drawing of a {}."', '"a sketch of a {}."')
    cfg2 = tmp / "run2.toml"
    cfg2.write_text(text)
    changed = run(load_config(cfg2))
    assert changed.manifest["assemble_key"] != bundle.manifest["assemble_key"]
    assert len(list((bundle.path / "checkpoints").iterdir())) == len(ckpts) + 1

    # Changing only k_max re-assembles but reuses the fine-tuned weights and extraction caches.
    extract_dirs = set((bundle.path / "cache" / "extract").iterdir())
    cfg3 = tmp / "run3.toml"
    cfg3.write_text(text.replace("k_max = 8", "k_max = 6"))
    third = run(load_config(cfg3))
    assert third.k_max == 6
    assert set((bundle.path / "cache" / "extract").iterdir()) == extract_dirs
    assert len(list((bundle.path / "checkpoints").iterdir())) == len(ckpts) + 1


def test_config_typos_name_the_key(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nname = "x"\n[data.train]\npath = "a"\nval_holdot = 3\n[data.test]\npath = "b"\n')
    with pytest.raises(ConfigError, match=r"data\.train\.val_holdot.*val_holdout"):
        load_config(cfg)
    cfg.write_text('[modle]\nname = "x"\n')
    with pytest.raises(ConfigError, match=r"\[modle\].*\[model\]"):
        load_config(cfg)
    cfg.write_text('[model]\nname = "x"\n[data.train]\npath = "a"\n[data.test]\npath = "b"\n')
    with pytest.raises(ConfigError, match="held-out ID validation split"):
        load_config(cfg)
