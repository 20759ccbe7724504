"""One colour per method and per dataset, shared by every page, the distance labels, plus the plot styling."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

METHOD_COLORS = {
    "zero-shot": "#4C78A8",
    "fine-tuned": "#F58518",
    "WSE": "#54A24B",
    "OSE": "#B279A2",
    "OSE (calibrated)": "#72B7B2",
    "route: msp": "#9D9D9D",
    "route: energy": "#8C6D31",
    "route: mahalanobis": "#BCBD22",
    "route: knn": "#6B6ECF",
    "route: relative_mahalanobis": "#AD494A",
    "logit ensemble": "#D4A72C",
    "logit ensemble (calibrated)": "#8F6F0E",
    "DaWin": "#7B4FB0",
    "DaWin (transductive)": "#A07CC8",
    "VRF (ID-train kNN)": "#D9738A",
    "VRF (zero-shot features)": "#9E2A2F",
    "VRF": "#E45756",
}
# The per-sample ceiling (at least one model right): a reference line, not a method.
CEILING_COLOR = "#4D4D4D"

# Pseudo-datasets of the training split on the Distances page and the map.
ZSF, OTHER_TRAIN = "ZSF set", "other ID train"
_ROLE_COLORS = {"zsf": "#262626", "id_train": "#A0A0A0", "id_val": "#9ECAE1", "id_test": "#1F77B4"}
_OOD_PALETTE = ["#FF7F0E", "#2CA02C", "#9467BD", "#8C564B", "#E377C2", "#17BECF", "#BCBD22", "#D62728",
                "#7F7F7F", "#AEC7E8"]

OOD_AVG_COLOR = "#6A3D9A"

CORRECTNESS_COLORS = {"both right": "#4C9F70", "only VRF right": "#1F77B4", "only VRF wrong": "#E45756",
                      "both wrong": "#BDBDBD", "ZSF member": "#262626"}

SCALE_NAMES = {"squared": "squared L2", "l2": "L2"}


def distance_unit(scale: str) -> str:
    """The symbol of the kNN distance on a scale: "d²" (squared L2) or "d" (L2)."""
    return "d²" if scale == "squared" else "d"


def distance_words(scale: str) -> str:
    """The kNN distance in words, e.g. "squared L2 distance"."""
    return f"{SCALE_NAMES[scale]} distance"


def scale_label(scale: str) -> str:
    """The scale with its symbol, e.g. "squared L2 (d²)" (the sidebar's choice and captions)."""
    return f"{SCALE_NAMES[scale]} ({distance_unit(scale)})"


def method_color(method: str) -> str:
    return METHOD_COLORS.get(method, "#7F7F7F")


def dataset_colors(splits: dict[str, dict]) -> dict[str, str]:
    """split name -> colour, by role; shifts take the palette in manifest order. Also the
    training split's two parts (ZSF members and the rest) under their display names."""
    colors = {ZSF: _ROLE_COLORS["zsf"], OTHER_TRAIN: _ROLE_COLORS["id_train"]}
    ood = 0
    for name, meta in splits.items():
        if meta["role"] == "ood":
            colors[name] = _OOD_PALETTE[ood % len(_OOD_PALETTE)]
            ood += 1
        else:
            colors[name] = _ROLE_COLORS[meta["role"]]
    return colors


def style(fig: go.Figure, height: int = 420, **layout) -> go.Figure:
    """House style: readable fonts, legend on top (Streamlit's theme supplies the template on screen;
    exports add plotly_white)."""
    fig.update_layout(
        height=height, margin=dict(l=60, r=20, t=50, b=55),
        font=dict(size=13), legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0, title_text=""),
        hoverlabel=dict(font_size=12), **layout)
    return fig


def vline(fig: go.Figure, x: float, text: str, dash: str = "dot") -> None:
    """A labelled vertical line across the plot (cheaper than Figure.add_vline)."""
    fig.add_shape(type="line", x0=x, x1=x, y0=0, y1=1, yref="paper", line=dict(color="black", width=1, dash=dash))
    fig.add_annotation(x=x, y=1, yref="paper", text=text, showarrow=False, xanchor="left", yanchor="bottom",
                       font=dict(size=12))


LOGIT_TICKS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98,
               0.99, 0.995)


def accuracy_axis(acc, logit: bool) -> np.ndarray:
    """Accuracies in axis units: percent, or their logit (the WiSE-FT convention: frontiers closer to lines)."""
    acc = np.clip(np.asarray(acc, dtype=np.float64), 1e-4, 1 - 1e-4)
    return np.log(acc / (1 - acc)) if logit else 100 * acc


def logit_ticks(shown: list[float]) -> dict:
    """Ticks labelled in percent for a logit-scaled accuracy axis spanning `shown` ([lo, hi] in logits)."""
    ticks = [t for t in LOGIT_TICKS if shown[0] - 0.3 <= np.log(t / (1 - t)) <= shown[1] + 0.3]
    return dict(tickvals=[np.log(t / (1 - t)) for t in ticks], ticktext=[f"{100 * t:g}" for t in ticks])
