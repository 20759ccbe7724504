"""`precompute report`: the results table of a bundle, recomputed from its own arrays.

JSON output (`--json`):
  bundle        path of the bundle
  mode          "validation" (hyperparameters tuned on the id_val split) or "oracle" (tuned on id_test)
  tuned_on      the split the hyperparameters were chosen on
  selection     the chosen hyperparameters: t_zs, t_ft, wse_alpha, ose_alpha, ose_cal_alpha,
                vrf {a, b, k, rule, scale, calibrate}, selective_thresholds {score: threshold}
  columns       split names in table order (id_val, id_test, ood...), then "OOD avg"
  rows          {method: {column: {"acc": float, "lo": float, "hi": float}}}; accuracies in [0, 1],
                lo/hi the 95% bootstrap interval (absent for "OOD avg")
"""

from __future__ import annotations

import json

from precompute.derived import eval_split_names
from vrf_core.bundle import Bundle, BundleError
from vrf_core.evaluate import Selection, score_table
from vrf_core.live import LiveSplit, method_preds


def bundle_selection(bundle: Bundle, mode: str = "validation") -> Selection:
    sel = bundle.manifest.get("selection", {}).get(mode)
    if sel is None:
        raise BundleError(f"{bundle.path}: the manifest has no '{mode}' selection "
                          f"(available: {sorted(bundle.manifest.get('selection', {}))})")
    return Selection.from_json(sel)


def report(bundle: Bundle, mode: str = "validation", n_boot: int = 1000) -> dict:
    """Recomputed from the logits (not read from the manifest's stored `results`): exact live
    re-weighting (vrf_core.live) gives the predictions of the full mixtures."""
    sel = bundle_selection(bundle, mode)
    names = eval_split_names(bundle)
    splits = [bundle.split_data(s, wse=False) for s in names]
    preds = {s.name: method_preds(LiveSplit.from_split_data(s, sel.t_zs, sel.t_ft), sel,
                                  bundle.wse_predictions(s.name), bundle.wse_alphas) for s in splits}
    table = score_table(preds, splits, n_boot=n_boot)
    columns = names + (["OOD avg"] if bundle.split_names("ood") else [])
    return {"bundle": str(bundle.path), "mode": mode, "tuned_on": sel.tuned_on, "selection": sel.to_json(),
            "columns": columns, "rows": table}


def format_table(rep: dict) -> str:
    cols = rep["columns"]
    width = max(len(m) for m in rep["rows"]) + 2
    lines = [f"Accuracy (%) — hyperparameters tuned on '{rep['tuned_on']}' ({rep['mode']})",
             "method".ljust(width) + "".join(c[:10].rjust(11) for c in cols)]
    for method, row in rep["rows"].items():
        lines.append(method.ljust(width) + "".join(
            (f"{100 * row[c]['acc']:.1f}" if c in row else "-").rjust(11) for c in cols))
    s = rep["selection"]
    v = s["vrf"]
    lines += ["", "chosen: "
              f"T_zs={s['t_zs']:.3f} T_ft={s['t_ft']:.3f} WSE alpha={s['wse_alpha']} OSE alpha={s['ose_alpha']} "
              f"OSE(cal) alpha={s['ose_cal_alpha']} VRF a={v['a']:.4f} b={v['b']:.4f} k={v['k']} rule={v['rule']} "
              f"distance={v['scale']} calibrated={v['calibrate']}"]
    return "\n".join(lines)


def print_report(bundle: Bundle, mode: str, as_json: bool) -> None:
    rep = report(bundle, mode)
    print(json.dumps(rep, indent=1) if as_json else format_table(rep))
