"""The rivals' rows of `precompute report --json` (logit ensemble, DaWin and its transductive variant, VRF's
ablations, the per-sample ceiling) against independent recomputations, written plainly in numpy here, from
the bundle's stored arrays and stored hyperparameters; tuning of the logit alphas; old bundles still report."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from precompute.__main__ import main
from vrf_core.bundle import open_bundle
from vrf_core.derive import DeriveSpec, derive
from vrf_core.evaluate import SplitData
from vrf_core.tuning import TuningSpec

ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0]


def report_json(capsys, *args) -> tuple[int, dict]:
    capsys.readouterr()
    rc = main(["report", *map(str, args), "--json"])
    return rc, json.loads(capsys.readouterr().out)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def entropy(p):
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)


def projected(bundle, split, name):
    z = np.asarray(bundle.array(split, name), dtype=np.float64)
    proj = bundle.splits[split].get("projection")
    return z if proj is None else np.stack([z[:, g].max(axis=1) for g in proj["groups"]], axis=1)


def sigmoid_weight(sqdist, p):
    d = sqdist[:, p["k"] - 1].astype(np.float64)
    d = np.sqrt(d) if p["scale"] == "l2" else d
    return 1.0 / (1.0 + np.exp((d - p["a"]) / p["b"]))


def plain_rows(zs, ft, labels, hp, sqdist: dict) -> dict[str, float]:
    """Accuracy of every rival on one split, from projected logits and the hyperparameters' JSON."""
    p_zs, p_ft = softmax(zs / hp["t_zs"]), softmax(ft / hp["t_ft"])
    h_zs, h_ft = entropy(p_zs), entropy(p_ft)
    lam = np.exp(-h_ft) / (np.exp(-h_zs) + np.exp(-h_ft))
    c = (h_zs.std(ddof=1) / h_zs.mean() + h_ft.std(ddof=1) / h_ft.mean()) / 2
    beta = (h_zs.mean() + h_ft.mean()) / h_zs.mean()
    lam_t = (np.exp(-h_ft) + c / beta) / (np.exp(-h_zs) + np.exp(-h_ft) + c)

    def acc(pred):
        return float((pred == labels).mean())

    def mix(w):
        return acc((w[:, None] * p_ft + (1 - w[:, None]) * p_zs).argmax(axis=1))

    a, a_cal = hp["logit_alpha"], hp["logit_cal_alpha"]
    out = {"logit ensemble": acc(((1 - a) * zs + a * ft).argmax(axis=1)),
           "logit ensemble (calibrated)": acc(((1 - a_cal) * zs / hp["t_zs"] + a_cal * ft / hp["t_ft"]).argmax(1)),
           "DaWin": mix(lam), "DaWin (transductive)": mix(lam_t)}
    for key, row in (("train", "VRF (ID-train kNN)"), ("zs_features", "VRF (zero-shot features)")):
        if key in hp["ablations"] and sqdist.get(key) is not None:
            assert hp["ablations"][key]["calibrate"] and hp["ablations"][key]["rule"] == "sigmoid"
            out[row] = mix(sigmoid_weight(sqdist[key], hp["ablations"][key]))
    return out


@pytest.mark.parametrize("mode", ["validation", "oracle"])
def test_report_rows_agree_with_plain_recomputation(synthetic_bundles, capsys, mode):
    path = synthetic_bundles / "synth"
    rc, rep = report_json(capsys, path, *(["--oracle"] if mode == "oracle" else []))
    assert rc == 0
    bundle, hp, rows = open_bundle(path), rep["hyperparameters"], rep["rows"]
    names = list(rows)
    expected = ["OSE (calibrated)", "logit ensemble", "logit ensemble (calibrated)"]
    assert names[names.index("OSE (calibrated)"):][:3] == expected
    assert names[-1] == "VRF" and names.index("DaWin") > max(i for i, n in enumerate(names) if n.startswith("route"))
    assert names.index("DaWin (transductive)") == names.index("DaWin") + 1
    ood = [s for s in rep["columns"] if s != "OOD avg" and bundle.splits[s]["role"] == "ood"]
    for split in [c for c in rep["columns"] if c != "OOD avg"]:
        zs, ft = projected(bundle, split, "logits_zs"), projected(bundle, split, "logits_ft")
        labels = np.asarray(bundle.array(split, "labels"))
        sq = {key: np.asarray(bundle.array(split, name)) for key, name in
              (("train", "knn_sqdist_train"), ("zs_features", "knn_sqdist_zs")) if bundle.has(split, name)}
        want = plain_rows(zs, ft, labels, hp, sq)
        for row, value in want.items():
            assert rows[row][split]["acc"] == pytest.approx(value, abs=1e-12), (row, split)
        either = (zs.argmax(1) == labels) | (ft.argmax(1) == labels)
        assert rep["ceiling"][split] == pytest.approx(either.mean(), abs=1e-12)
        assert rep["ceiling"][split] >= max(rows["zero-shot"][split]["acc"], rows["fine-tuned"][split]["acc"])
    assert rep["ceiling"]["OOD avg"] == pytest.approx(np.mean([rep["ceiling"][s] for s in ood]))
    assert "ceiling" not in rows
    # The logit alphas: the smallest of the best on the tuning split, over the OSE grid.
    tuned = rep["tuned_on"]
    zs, ft = projected(bundle, tuned, "logits_zs"), projected(bundle, tuned, "logits_ft")
    labels = np.asarray(bundle.array(tuned, "labels"))
    for key, (tz, tf) in (("logit_alpha", (1.0, 1.0)), ("logit_cal_alpha", (hp["t_zs"], hp["t_ft"]))):
        correct = [int((((1 - a) * zs / tz + a * ft / tf).argmax(1) == labels).sum()) for a in bundle.ose_alphas]
        assert hp[key] == bundle.ose_alphas[correct.index(max(correct))]
    # Trade-off curves of the logit ensemble: every alpha, each test split.
    curves = bundle.manifest["curves"][mode]
    test = next(s for s in rep["columns"] if bundle.splits.get(s, {}).get("role") == "id_test")
    zs, ft = projected(bundle, test, "logits_zs"), projected(bundle, test, "logits_ft")
    labels = np.asarray(bundle.array(test, "labels"))
    for i, a in enumerate(bundle.ose_alphas):
        plain = (((1 - a) * zs / hp["t_zs"] + a * ft / hp["t_ft"]).argmax(1) == labels).mean()
        assert curves["logit ensemble (calibrated)"][test][i] == pytest.approx(plain, abs=1e-12)
    assert set(curves["logit ensemble"]) == set(curves["OSE"])


def test_report_lists_the_edges_in_text_and_json(synthetic_bundles, capsys):
    path = synthetic_bundles / "synth"
    stored = open_bundle(path).manifest["tuning_edges"]
    assert set(stored) == {"validation", "oracle"}
    for mode, flag in (("validation", []), ("oracle", ["--oracle"])):
        _, rep = report_json(capsys, path, *flag)
        assert [{k: v for k, v in e.items() if k != "sentence"} for e in rep["tuning_edges"]] == stored[mode]
        capsys.readouterr()
        main(["report", str(path), *flag])
        lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("edge: ")]
        assert lines == [f"edge: {e['sentence']}" for e in rep["tuning_edges"]]
        for e in rep["tuning_edges"]:
            assert e["at"] in ("low", "high") and e["value"] == e[e["at"]]
            assert "value searched" in e["sentence"] and "alpha" not in e["name"]


def test_ablation_rows_agree_with_plain_recomputation():
    """Until synthetic bundles carry the ablations' distances: SplitData built with them."""
    rng = np.random.default_rng(7)
    splits = []
    for name, role, n in (("val", "id_val", 500), ("test", "id_test", 400), ("far", "ood", 300), ("near", "ood", 300)):
        labels = rng.integers(0, 15, n)
        zs, ft = rng.normal(size=(n, 15)) * 2, rng.normal(size=(n, 15)) * 2
        zs[np.arange(n), labels] += 1.5
        ft[np.arange(n), labels] += 3.0 if role != "ood" else 0.3
        knn = [np.sort(rng.uniform(0, 2, (n, 10)), axis=1).astype(np.float32) for _ in range(3)]
        splits.append(SplitData(name, role, labels, zs.astype(np.float32), ft.astype(np.float32), knn[0], {},
                                knn_sqdist_train=knn[1], knn_sqdist_zs=knn[2]))
    out = derive(splits, {}, DeriveSpec(TuningSpec(None, ALPHAS, [1, 3, 10]), m=3, n_boot=20))
    for mode, hp in out.hyperparameters.items():
        hp_json = hp.to_json()
        assert set(hp_json["ablations"]) == {"train", "zs_features"}
        assert hp.ablations["train"].neighbours == "train" and hp.ablations["train"].features == "ft"
        assert hp.ablations["zs_features"].neighbours == "zsf" and hp.ablations["zs_features"].features == "zs"
        rows = out.results[mode]["rows"]
        for s in splits:
            want = plain_rows(s.logits_zs.astype(np.float64), s.logits_ft.astype(np.float64), s.labels, hp_json,
                              {"train": s.knn_sqdist_train, "zs_features": s.knn_sqdist_zs})
            assert {"VRF (ID-train kNN)", "VRF (zero-shot features)"} <= set(want)
            for row, value in want.items():
                assert rows[row][s.name]["acc"] == pytest.approx(value, abs=1e-12), (mode, row, s.name)


def _strip_rivals(src, dst):
    """A copy of a bundle as schema 2 wrote it before the rivals: no entropies, no new manifest keys."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    for rel in [r for r in m["files"] if "/topm_h_" in r or "/knn_sqdist_train" in r or "/knn_sqdist_zs" in r]:
        (dst / rel).unlink()
        del m["files"][rel]
    m.pop("tuning_edges", None)
    for mode in m["hyperparameters"]:
        hp = m["hyperparameters"][mode]
        for key in ("logit_alpha", "logit_cal_alpha", "ablations"):
            hp.pop(key)
        for key in ("neighbours", "features"):
            hp["vrf"].pop(key)
        m["results"][mode].pop("ceiling")
        for row in ("logit ensemble", "logit ensemble (calibrated)", "DaWin", "DaWin (transductive)",
                    "VRF (ID-train kNN)", "VRF (zero-shot features)"):
            m["results"][mode]["rows"].pop(row, None)
        for curve in ("logit ensemble", "logit ensemble (calibrated)"):
            m["curves"][mode].pop(curve)
    (dst / "manifest.json").write_text(json.dumps(m))


def test_a_bundle_written_before_the_rivals_still_reports(synthetic_bundles, tmp_path, capsys):
    old = tmp_path / "old"
    _strip_rivals(synthetic_bundles / "synth", old)
    rc, rep = report_json(capsys, old)
    assert rc == 0 and "DaWin" not in rep["rows"] and "ceiling" not in rep and "tuning_edges" not in rep
    assert rep["hyperparameters"].get("logit_alpha") is None
    capsys.readouterr()
    assert main(["report", str(old)]) == 0
    assert "zero-shot" in capsys.readouterr().out
    rc, rep = report_json(capsys, old, "--recompute")
    assert rc == 1 and not rep["recomputed"]["agrees"]
    diffs = rep["recomputed"]["differences"]
    assert any("rows.DaWin: only in the recomputed results" in d for d in diffs)
    assert any("topm_h_zs.npy: recomputed but not stored" in d for d in diffs)
    # Nothing that was stored before differs.
    assert not [d for d in diffs if "stored values differ" in d or ": stored " in d]


@pytest.mark.parametrize("page", ["views/overview.py", "views/tradeoff.py", "views/samples.py", "views/per_class.py"])
def test_a_bundle_written_before_the_rivals_shows_in_the_dashboard(synthetic_bundles, tmp_path_factory, monkeypatch,
                                                                   page):
    from streamlit.testing.v1 import AppTest

    root = tmp_path_factory.getbasetemp() / "old-bundles"
    if not (root / "old").exists():
        root.mkdir(exist_ok=True)
        _strip_rivals(synthetic_bundles / "synth", root / "old")
    monkeypatch.setenv("VRF_BUNDLES", str(root))
    app = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=90).run()
    at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title


def test_a_malformed_tuning_edges_key_is_one_clear_line(synthetic_bundles, tmp_path, capsys):
    from vrf_core.bundle_schema import check_manifest

    m = json.loads((synthetic_bundles / "synth" / "manifest.json").read_text())
    assert check_manifest(m) is None
    for bad in ({"validation": [{"name": "VRF a", "value": 1.0}]}, {"validation": "a"},
                {"oracle": [{"name": "T_zs", "value": 10.0, "low": 0.1, "high": 10.0, "at": "top"}]}):
        assert "tuning_edges" in check_manifest({**m, "tuning_edges": bad})
    shutil.copytree(synthetic_bundles / "synth", tmp_path / "bad")
    (tmp_path / "bad" / "manifest.json").write_text(json.dumps({**m, "tuning_edges": {"validation": "a"}}))
    capsys.readouterr()
    assert main(["report", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tuning_edges" in err[0] and "Traceback" not in err[0]
