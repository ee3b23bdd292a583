"""An asynchronous Adasum (issue 25's candidate; measured in the emulator only, not in the store).

Adasum (Maleki et al., 2021; Horovod's `op=Adasum`) combines two updates a and b per layer as

    adasum(a, b) = (1 - a.b / (2 |a|^2)) a + (1 - a.b / (2 |b|^2)) b

so orthogonal updates add up (a + b: a larger step where the workers learned different
things) and identical ones are averaged (a: no double step where they learned the same
thing). Why it is a candidate: `normalized` divides every push by K, which is right when the
K deltas agree and wastes K - 1 of them when they do not.

The asynchronous variant: a push's delta D was computed from the version its worker pulled;
the updates applied since then sum to U = W_now - W_pulled. The store would have applied
U + D; Adasum's combination of the two is adasum(U, D), and since U is already in the
weights, the push adds adasum(U, D) - U. A push with no update since its pull (staleness 0,
U = 0) adds D whole. Building it into the store would need the pulled version's weights at
merge time (or a pusher that pulls again and retries on a moved version): measured first.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

Weights = Mapping[str, np.ndarray]


def combine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """adasum(a, b) for one layer, in float64; a zero update leaves the other as it is."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    dot, aa, bb = float(np.vdot(a64, b64)), float(np.vdot(a64, a64)), float(np.vdot(b64, b64))
    if aa == 0.0 or bb == 0.0:
        return a64 + b64
    return (1 - dot / (2 * aa)) * a64 + (1 - dot / (2 * bb)) * b64


def increment(applied: Weights, delta: Weights, scale: float = 1.0) -> dict[str, np.ndarray]:
    """What a push of scale x delta adds to weights that already hold `applied` (the updates
    since its pull), so that together they are adasum(applied, scale x delta), layer by
    layer, in the delta's dtype. Integer tensors (counts such as batch norm's) are not
    updates to combine: they take the delta as it is, unscaled, as merge.apply_delta does."""
    out = {}
    for name, d in delta.items():
        if not np.issubdtype(d.dtype, np.floating):
            out[name] = d
            continue
        u = applied[name].astype(np.float64)
        out[name] = (combine(u, scale * d.astype(np.float64)) - u).astype(d.dtype)
    return out
