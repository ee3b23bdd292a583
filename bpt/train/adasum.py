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
    """adasum(a, b) for one layer; a zero update leaves the other as it is."""
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    dot, aa, bb = float(a64 @ b64), float(a64 @ a64), float(b64 @ b64)
    if aa == 0.0 or bb == 0.0:
        return (a64 + b64).reshape(a.shape).astype(a.dtype)
    return ((1 - dot / (2 * aa)) * a64 + (1 - dot / (2 * bb)) * b64).reshape(a.shape).astype(a.dtype)


def increment(applied: Weights, delta: Weights) -> dict[str, np.ndarray]:
    """What a push adds to weights that already hold `applied` (the updates since its pull),
    so that together they are adasum(applied, delta), layer by layer. Integer tensors (counts
    such as batch norm's) take the delta as it is."""
    out = {}
    for name, d in delta.items():
        u = applied[name]
        if not np.issubdtype(d.dtype, np.floating):
            out[name] = d
            continue
        out[name] = (combine(u, d).astype(np.float64) - u.astype(np.float64)).astype(d.dtype)
    return out
