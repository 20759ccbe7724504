"""What precompute derives from a staged bundle so that readers need not touch the logits.

Per evaluation split: each model's predictions (`preds_zs`, `preds_ft`), the WSE predictions
at every alpha (`preds_wse`), and the live re-weighting tables (`live_*`, see vrf_core.live)
for T = 1 and for each selection mode's temperatures. In the manifest: `live` (the table
size m and the temperature pairs, in the order of the arrays' first axis) and `results`
(the results table of every selection mode, as `precompute report --json` prints it) and
`curves` (OSE, calibrated OSE and WSE accuracy at each alpha on every test split, per mode).

On an ImageNet-sized bundle this turns the dashboard's first load from minutes of
softmaxes into reads of a few tens of megabytes (docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np

from vrf_core.bundle import Bundle, BundleWriter
from vrf_core.evaluate import Selection, score_table
from vrf_core.live import TABLE_ARRAYS, LiveSplit, TopM, baseline_curves, method_preds
from vrf_core.progress import log

LIVE_M = 5  # each model's top classes kept per sample; fallbacks to full rows are rare at 5


def eval_split_names(bundle: Bundle) -> list[str]:
    """Evaluation splits in table order: ID validation, ID test, then the shifts."""
    order = {"id_val": 0, "id_test": 1, "ood": 2}
    return sorted(bundle.split_names(*order), key=lambda s: order[bundle.splits[s]["role"]])


def temperature_pairs(selections: dict[str, Selection]) -> list[tuple[float, float]]:
    pairs = [(1.0, 1.0)]
    for sel in selections.values():
        pair = (float(sel.t_zs), float(sel.t_ft))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def stacked_tables(tables: dict[tuple[float, float], TopM], pairs: list[tuple[float, float]]) -> dict:
    """live_<name> arrays (P, ...) in the order of `pairs`."""
    arrays = [tables[p].to_arrays() for p in pairs]
    return {f"live_{n}": np.stack([a[n] for a in arrays]) for n in TABLE_ARRAYS}


def derive(staged: Bundle, writer: BundleWriter, selections: dict[str, Selection], m: int = LIVE_M) -> dict:
    """Write the derived arrays of every evaluation split into `writer`; returns the manifest keys
    `live`, `results` and `curves`."""
    pairs = temperature_pairs(selections)
    names = eval_split_names(staged)
    preds: dict[str, dict[str, dict]] = {mode: {} for mode in selections}
    curves: dict[str, dict[str, dict]] = {mode: {} for mode in selections}
    splits = []
    for name in names:
        log(f"live tables and predictions: {name}")
        split = staged.split_data(name, wse=False)
        tables: dict[tuple[float, float], TopM] = {}
        lives = {}
        for mode, sel in selections.items():
            lives[mode] = LiveSplit.from_split_data(split, sel.t_zs, sel.t_ft, m, tables=tables)
            tables.update(lives[mode].tables())
        if not selections:  # no selection: only the T = 1 tables
            tables.update(LiveSplit.from_split_data(split, 1.0, 1.0, m).tables())
        wse = staged.wse_predictions(name)
        any_table = next(iter(tables.values()), None)
        if any_table is not None:
            writer.put(name, "preds_zs", any_table.arg_zs)
            writer.put(name, "preds_ft", any_table.arg_ft)
            for arr_name, arr in stacked_tables(tables, pairs).items():
                writer.put(name, arr_name, arr)
        if wse is not None:
            writer.put(name, "preds_wse", wse)
        for mode, sel in selections.items():
            preds[mode][name] = method_preds(lives[mode], sel, wse, staged.wse_alphas)
            if staged.splits[name]["role"] != "id_val":
                for method, curve in baseline_curves({name: lives[mode]}, staged.ose_alphas,
                                                     {name: wse if staged.wse_alphas else None}).items():
                    curves[mode].setdefault(method, {})[name] = curve[name].tolist()
        split.logits_zs = split.logits_ft = None  # free the projected copies before the next split
        splits.append(split)
    ood = staged.split_names("ood")
    results = {mode: {"columns": names + (["OOD avg"] if ood else []), "rows": score_table(preds[mode], splits)}
               for mode in selections}
    return {"live": {"m": m, "temperatures": [list(p) for p in pairs]}, "results": results, "curves": curves}
