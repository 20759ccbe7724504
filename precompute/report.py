"""`precompute report`: the results table a bundle stores; `--recompute` derives it again from
the bundle's arrays (vrf_core.derive, the function precompute stored it with) and says
whether the two agree.

JSON output (`--json`):
  bundle           path of the bundle
  mode             "validation" (hyperparameters tuned on the id_val split) or "oracle" (tuned on id_test)
  tuned_on         the split the hyperparameters were chosen on
  hyperparameters  t_zs, t_ft, wse_alpha, ose_alpha, ose_cal_alpha, logit_alpha, logit_cal_alpha,
                   vrf {a, b, k, rule, scale, calibrate, neighbours, features}, ablations {"train" |
                   "zs_features": like vrf}, routing_thresholds {score: threshold} (bundles written before
                   the rivals lack the logit alphas and ablations)
  columns          split names in table order (id_val, id_test, ood...), then "OOD avg"
  rows             {method: {column: {"acc": float, "lo": float, "hi": float}}}; accuracies in [0, 1],
                   lo/hi the 95% bootstrap interval (absent for "OOD avg")
  ceiling          {column: acc}: the fraction where at least one of the two models is right (a
                   reference, not a method; absent in older bundles)
  tuning_edges     [{"name", "value", "low", "high", "at": "low" | "high", "sentence"}]: selections at an
                   edge of their search range (vrf_core.tuning_edges; absent in older bundles)
  recomputed       with --recompute: {"agrees": bool, "differences": [sentence, ...]}
"""

from __future__ import annotations

import json
import time

from vrf_core.bundle import Bundle, BundleError
from vrf_core.bundle_adapter import compare, rederive
from vrf_core.evaluate import CEILING
from vrf_core.tuning_edges import edge_sentence


def report(bundle: Bundle, mode: str = "validation") -> dict:
    """The stored results table and hyperparameters of one tuning mode."""
    hp, results = bundle.manifest["hyperparameters"].get(mode), bundle.manifest["results"].get(mode)
    if hp is None or results is None:
        raise BundleError(f"{bundle.path}: the bundle stores no '{mode}' results "
                          f"(available: {sorted(bundle.manifest['results'])})")
    rep = {"bundle": str(bundle.path), "mode": mode, "tuned_on": hp["tuned_on"], "hyperparameters": hp,
           "columns": results["columns"], "rows": results["rows"]}
    if CEILING in results:
        rep[CEILING] = results[CEILING]
    edges = (bundle.manifest.get("tuning_edges") or {}).get(mode)
    if edges is not None:
        rep["tuning_edges"] = [{**e, "sentence": edge_sentence(e)} for e in edges]
    return rep


def _vrf_text(v: dict) -> str:
    return (f"a={v['a']:.4f} b={v['b']:.4f} k={v['k']} rule={v['rule']} distance={v['scale']} "
            f"calibrated={v['calibrate']}" + (f" neighbours={v['neighbours']} features={v['features']}"
                                              if v.get("neighbours", "zsf") != "zsf" or v.get("features", "ft") != "ft"
                                              else ""))


def format_table(rep: dict) -> str:
    cols = rep["columns"]
    width = max(len(m) for m in rep["rows"]) + 2
    lines = [f"Accuracy (%) — hyperparameters tuned on '{rep['tuned_on']}' ({rep['mode']})",
             "method".ljust(width) + "".join(c[:10].rjust(11) for c in cols)]
    for method, row in rep["rows"].items():
        lines.append(method.ljust(width) + "".join(
            (f"{100 * row[c]['acc']:.1f}" if c in row else "-").rjust(11) for c in cols))
    if CEILING in rep:
        lines.append(f"({'ceiling: one model right'.ljust(width - 1)}" + "".join(
            (f"{100 * rep[CEILING][c]:.1f}" if c in rep[CEILING] else "-").rjust(11) for c in cols) + ")")
    s = rep["hyperparameters"]
    lines += ["", "chosen: "
              f"T_zs={s['t_zs']:.3f} T_ft={s['t_ft']:.3f} WSE alpha={s['wse_alpha']} OSE alpha={s['ose_alpha']} "
              f"OSE(cal) alpha={s['ose_cal_alpha']} "
              + (f"logit alpha={s['logit_alpha']} logit(cal) alpha={s['logit_cal_alpha']} "
                 if s.get("logit_alpha") is not None else "")
              + f"VRF {_vrf_text(s['vrf'])}"]
    lines += [f"        VRF ablation {key}: {_vrf_text(v)}" for key, v in (s.get("ablations") or {}).items()]
    lines += [f"edge: {e['sentence']}" for e in rep.get("tuning_edges", [])]
    return "\n".join(lines)


def print_report(bundle: Bundle, mode: str, as_json: bool, recompute: bool = False) -> int:
    """Prints the stored table; with `recompute`, also whether a fresh derivation agrees. Returns the
    exit status: 0, or 1 when the recomputation disagrees with what is stored."""
    rep = report(bundle, mode)
    status = 0
    if recompute:
        t0 = time.perf_counter()
        differences = compare(bundle, rederive(bundle))
        rep["recomputed"] = {"agrees": not differences, "differences": differences,
                             "seconds": round(time.perf_counter() - t0, 2)}
        status = 1 if differences else 0
    print(json.dumps(rep, indent=1) if as_json else format_table(rep))
    if recompute and not as_json:
        r = rep["recomputed"]
        if r["agrees"]:
            print(f"\nrecomputed from the arrays in {r['seconds']} s: agrees with the stored results "
                  "(hyperparameters, tables, curves, predictions, top-m tables)")
        else:
            print(f"\nrecomputed from the arrays: {len(r['differences'])} difference(s) from the stored results:")
            print("\n".join(f"  {d}" for d in r["differences"][:20]))
    return status
