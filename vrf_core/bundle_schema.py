"""The bundle contract, schema version 2, as data: which manifest keys, which arrays per
split role, and each array's dtype and shape (docs/bundle.md explains them).

`check_manifest(manifest)` returns the first thing wrong as one sentence, or None; it
reads nothing but the manifest. The storage layer (vrf_core.bundle) adds the checks
that need the files (presence, sizes, .npy headers, checksums).
"""

from __future__ import annotations

import re

SCHEMA_VERSION = 2
ROLES = ("id_train", "zsf", "id_val", "id_test", "ood")
EVAL_ROLES = ("id_val", "id_test", "ood")
REQUIRED_KEYS = ("schema_version", "name", "classnames", "num_classes", "feature_dim", "splits", "files", "zsf",
                 "ensemble", "hyperparameters", "topm", "results", "curves")

# Array name -> (dtype, shape). Shape symbols: n (the split's samples), C (the model's classes),
# D (feature_dim), K (ensemble.k_max), A (len(ensemble.wse_alphas)), P (len(topm.temperatures)),
# 2m (twice the split's top-m size: any even number >= 2), "n+1".
ARRAYS = {
    "labels": ("int64", ("n",)),
    "refs": ("unicode", ("n",)),
    "train_index": ("int64", ("n",)),
    "is_zsf": ("bool", ("n",)),
    "features_zs": ("float16", ("n", "D")),
    "features_ft": ("float16", ("n", "D")),
    "logits_zs": ("float32", ("n", "C")),
    "logits_ft": ("float32", ("n", "C")),
    "knn_sqdist": ("float32", ("n", "K")),
    "knn_index": ("int32", ("n", "K")),
    "knn_sqdist_train": ("float32", ("n", "K")),  # optional (VRF's ablations): to the whole ID training set
    "knn_sqdist_zs": ("float32", ("n", "K")),  # optional: to the ZSF set, in zero-shot features
    "preds_zs": ("int64", ("n",)),
    "preds_ft": ("int64", ("n",)),
    "preds_wse": ("int32", ("A", "n")),
    "topm_cand": ("int32", ("P", "2m", "n")),
    "topm_p_ft": ("float32", ("P", "2m", "n")),
    "topm_p_zs": ("float32", ("P", "2m", "n")),
    "topm_r_ft": ("float32", ("P", "n")),
    "topm_r_zs": ("float32", ("P", "n")),
    "topm_h_zs": ("float32", ("P", "n")),  # optional (DaWin): each model's softmax entropy per temperature pair
    "topm_h_ft": ("float32", ("P", "n")),
    "score_mahalanobis": ("float32", ("n",)),
    "score_relative_mahalanobis": ("float32", ("n",)),
    "score_knn": ("float32", ("n",)),
    "umap": ("float32", ("n", 2)),
    "thumbs_offsets": ("int64", ("n+1",)),
}
EVAL_REQUIRED = ("labels", "refs", "features_ft", "logits_zs", "logits_ft", "knn_sqdist", "knn_index",
                 "preds_zs", "preds_ft")
REQUIRED = {
    "id_train": ("labels", "refs", "train_index", "is_zsf", "knn_sqdist", "knn_index"),
    "zsf": ("labels", "refs", "train_index", "preds_zs", "features_ft", "knn_sqdist", "knn_index"),
    **{role: EVAL_REQUIRED for role in EVAL_ROLES},
}
# Arrays of schema 1 that schema 2 replaced, with what to do.
REPLACED = {"logits_wse": "schema 2 stores the WSE predictions (preds_wse, int32 (A, n)) instead",
            "live_cand": "schema 2 names the top-m tables topm_*"}
FILE_PATTERN = re.compile(r"splits/([^/]+)/([^/]+)\.(npy|bin)")


def rebuild_hint(manifest: dict, folder: str = "<this folder>") -> str:
    """The command that rebuilds a bundle (its stage caches make that cheap)."""
    name = str(manifest.get("name", ""))
    if name.startswith("demo"):
        small = " --small" if name == "demo-small" else ""
        return f"`python -m precompute demo{small} --out {folder}`"
    return "`python -m precompute run --config <the config that built it>` (cached stages are reused)"


def _dims(m: dict, split: dict) -> dict:
    return {"n": split["n"], "C": m["num_classes"], "D": m["feature_dim"], "K": m["ensemble"].get("k_max"),
            "A": len(m["ensemble"].get("wse_alphas") or []), "P": len(m["topm"].get("temperatures", [])),
            "n+1": split["n"] + 1}


def check_array(m: dict, rel: str, info: dict) -> str | None:
    """The first thing wrong with one listed file, judged by the manifest alone."""
    match = FILE_PATTERN.fullmatch(rel)
    if not match:
        return f"{rel}: not a path of schema 2 (splits/<split>/<array>.npy or splits/<split>/thumbs.bin)"
    split, name, ext = match.groups()
    if split not in m["splits"]:
        return f"{rel}: split {split!r} is not listed under 'splits'"
    if ext == "bin":
        return None if name == "thumbs" else f"{rel}: the only .bin file of schema 2 is thumbs.bin"
    if name in REPLACED:
        return f"{rel}: not part of schema 2 ({REPLACED[name]})"
    if name not in ARRAYS:
        return f"{rel}: {name!r} is not an array of schema 2 (known: {', '.join(ARRAYS)})"
    dtype, shape = ARRAYS[name]
    got_dtype, got_shape = str(info.get("dtype")), tuple(info.get("shape", ()))
    if got_dtype == "object":
        return f"{rel}: holds Python objects (dtype object), which would need unpickling; refused"
    if dtype == "unicode" and not got_dtype.startswith("<U"):
        return f"{rel}: dtype {got_dtype}, expected a unicode string array (<U...)"
    if dtype != "unicode" and got_dtype != dtype:
        return f"{rel}: dtype {got_dtype}, expected {dtype}"
    dims = _dims(m, m["splits"][split])
    want = tuple(dims.get(s, s) if isinstance(s, str) else s for s in shape)
    if len(got_shape) != len(want) or any(w != "2m" and g != w for g, w in zip(got_shape, want)):
        return (f"{rel}: shape ({', '.join(map(str, got_shape))}), expected ({', '.join(map(str, want))}) "
                f"(n = {dims['n']} for split {split!r})")
    if "2m" in want and (got_shape[1] < 2 or got_shape[1] % 2):
        return f"{rel}: {got_shape[1]} top-m candidates per sample, expected an even number >= 2"
    return None


EDGE_KEYS = ("name", "value", "low", "high", "at")


def _check_edges(edges) -> str | None:
    """The optional `tuning_edges` key (vrf_core.tuning_edges): mode -> [{name, value, low, high, at}]."""
    if edges is None:
        return None
    if not isinstance(edges, dict) or not all(isinstance(v, list) for v in edges.values()):
        return "'tuning_edges' must map each tuning mode to a list of edges"
    for mode, items in edges.items():
        for e in items:
            if not isinstance(e, dict) or any(k not in e for k in EDGE_KEYS) or e["at"] not in ("low", "high") or \
                    not all(isinstance(e[k], (int, float)) for k in ("value", "low", "high")):
                return (f"'tuning_edges.{mode}': {e!r} is not an edge {{name, value, low, high, at: 'low' | 'high'}} "
                        f"(rebuild the bundle, or drop the key)")
    return None


def check_manifest(m: dict, folder: str = "<this folder>") -> str | None:
    """The first thing wrong with a manifest (as one sentence naming the key or file), or None.
    folder: the bundle's folder, as the rebuild command should name it."""
    version = m.get("schema_version")
    if version != SCHEMA_VERSION:
        if isinstance(version, int) and version > SCHEMA_VERSION:
            return f"bundle schema version {version}, this tool reads {SCHEMA_VERSION}: upgrade the tool"
        return (f"bundle schema version {version!r}, this tool reads {SCHEMA_VERSION}; rebuild it with "
                f"{rebuild_hint(m, folder)}")
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        return f"the manifest lacks the keys {missing}"
    if not isinstance(m["files"], dict) or not isinstance(m["splits"], dict):
        return "'files' and 'splits' must be JSON objects"
    if len(m["classnames"]) != m["num_classes"]:
        return f"num_classes is {m['num_classes']} but classnames lists {len(m['classnames'])}"
    for name, s in m["splits"].items():
        if s.get("role") not in ROLES:
            return f"split {name!r} has role {s.get('role')!r}; expected one of {ROLES}"
        if not isinstance(s.get("n"), int) or s["n"] < 0:
            return f"split {name!r}: 'n' must be a count of samples, got {s.get('n')!r}"
        need = list(REQUIRED[s["role"]])
        if s["role"] in EVAL_ROLES and m["ensemble"].get("wse_alphas"):
            need.append("preds_wse")
        absent = [a for a in need if f"splits/{name}/{a}.npy" not in m["files"]]
        if absent:
            return f"split {name!r} (role {s['role']}) lacks the arrays {absent}"
    for mode, role in (("validation", "id_val"), ("oracle", "id_test")):
        if not any(s["role"] == role for s in m["splits"].values()):
            return f"no split of role {role!r}: hyperparameters are tuned on id_val (oracle: id_test)"
        for key in ("hyperparameters", "results", "curves"):
            if mode not in m[key]:
                return f"'{key}' has no {mode!r} entry (tuned on the {role} split)"
    problem = _check_edges(m.get("tuning_edges"))
    if problem:
        return problem
    for rel, info in m["files"].items():
        problem = check_array(m, rel, info)
        if problem:
            return problem
    return None
