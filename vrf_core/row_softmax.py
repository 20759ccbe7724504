"""Row-wise softmax pieces in float64, shared by the top-m tables (`vrf_core.topm`) and DaWin's
entropies (`vrf_core.dawin`), so that every path forms them with the same operations and gets
bit-identical numbers for the same rows, whatever the row blocks.
"""

from __future__ import annotations

import numpy as np

ROW_CHUNK = 256  # rows per block: two float64 blocks stay in a 4 MiB L2 cache


def exp_rows(logits: np.ndarray, temperature: float, keep_shifted: bool = False, out: np.ndarray | None = None):
    """exp(z / T - max) (n, C) float64, its row sums (n, 1) and each row's argmax (n,), as
    `ensembles.softmax` forms them; with keep_shifted also z / T - max (n, C), for the entropy.
    The max is taken before the division: z -> z / T is monotone, so it is the same number.
    out: a reused (>= n, C) float64 buffer for the exponentials when keep_shifted (a second
    fresh block per call costs page faults: 2.5x the time of the whole block here)."""
    arg = logits.argmax(axis=1)
    top = np.asarray(logits[np.arange(len(arg)), arg], dtype=np.float64)[:, None] / temperature
    x = np.divide(logits, temperature, dtype=np.float64)
    x -= top
    if not keep_shifted:
        e = np.exp(x, out=x)
        return e, e.sum(axis=1, keepdims=True), arg
    e = np.exp(x, out=None if out is None else out[:len(x)])
    return e, e.sum(axis=1, keepdims=True), arg, x


def softmax_rows(logits: np.ndarray, temperature: float) -> np.ndarray:
    """float32 softmax of logits / T, bit-identical to `SplitData.probs` (float64 math, rows
    independent), with the temporaries reused in place. logits: (n, C) -> (n, C) float32."""
    e, s, _ = exp_rows(logits, temperature)
    e /= s
    return e.astype(np.float32)


def entropy_from_exp(e: np.ndarray, s: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of softmax(z / T) from `exp_rows(..., keep_shifted=True)`:
    H = -sum p log p with log p = x - log s, i.e. log s - sum(e x) / s. (n,) float32. The row sums of e x
    without an (n, C) temporary (einsum: twice as fast as multiply and sum here)."""
    ex = np.einsum("ij,ij->i", e, x)
    return (np.log(s[:, 0]) - ex / s[:, 0]).astype(np.float32)


def entropy_rows(logits: np.ndarray, temperature: float, chunk: int = ROW_CHUNK) -> np.ndarray:
    """Entropy of softmax(z / T) of every row, in row blocks (memory maps are read block by block,
    no N x C temporary). (N,) float32."""
    n = len(logits)
    out = np.empty(n, np.float32)
    buffer = np.empty((min(chunk, n), logits.shape[1]), np.float64)
    for s0 in range(0, n, chunk):
        e, s, _, x = exp_rows(logits[s0:s0 + chunk], temperature, keep_shifted=True, out=buffer)
        out[s0:s0 + chunk] = entropy_from_exp(e, s, x)
    return out
