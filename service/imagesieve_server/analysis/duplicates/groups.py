"""Which images form one group of duplicates, without chaining unrelated ones.

Pairs ``(a, b, sim)`` come from :mod:`.pairs` (all pairs with cosine >= a
threshold; every absent pair is below it). Two groupings:

- :func:`connected_components`: the transitive closure. A ~ B ~ C puts A and
  C together even when A and C are unrelated (a chain of small edits, or a
  near-duplicate "bridge" between two scenes), so a component's lowest
  internal similarity can be far below the threshold.
- :func:`bounded_groups`: a grouping that bounds it. Default
  ``mode="complete"``: greedy complete linkage. Pairs are taken in descending
  cosine; two groups merge only when EVERY pair across them is in the pair
  list (>= threshold). Hence every two members of a group have cosine >=
  threshold: the group is a clique of the threshold graph, which is what a
  user deleting "all but one" of a group needs (any member can be the one
  kept). ``mode="centre"``: star groups, each image with cosine >= threshold
  to its group's centre (the image with the most pairs, then the highest
  similarity sum, picked greedily); looser (two members may be as low as
  ~2*threshold^2-1 apart) but fewer, larger groups. Complete is the default
  because its guarantee holds for every pair, not only through the centre.

Labels are (N,) int64, one label per image (singletons get their own);
:func:`groups_from_labels` turns them into lists of member positions.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as _cc

MODES = ("complete", "centre")


def _check_pairs(n: int, a, b, sim=None):
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    a = np.asarray(a, dtype=np.int64).ravel()
    b = np.asarray(b, dtype=np.int64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same length; got {a.shape[0]} and {b.shape[0]}")
    if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n):
        raise ValueError(f"pair positions must lie in [0, {n}); pass positions, not ids")
    if sim is not None:
        sim = np.asarray(sim, dtype=np.float32).ravel()
        if sim.shape != a.shape:
            raise ValueError(f"sim must have one value a pair; got {sim.shape[0]} for {a.shape[0]}")
    return a, b, sim


def _relabel(labels: np.ndarray) -> np.ndarray:
    # Labels in order of first appearance: 0, 1, 2, ...
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.shape[0], dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.shape[0])
    return rank[inv.ravel()]


def connected_components(n: int, a, b) -> np.ndarray:
    """Connected components of the graph with ``n`` nodes and edges (a[i], b[i]).
    ``a``, ``b``: (P,) int positions in [0, n). Returns labels (N,) int64,
    numbered by first appearance."""
    a, b, _ = _check_pairs(n, a, b)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    g = coo_matrix((np.ones(a.shape[0], dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = _cc(g, directed=False)
    return _relabel(labels.astype(np.int64))


def bounded_groups(n: int, a, b, sim, threshold: float, mode: str = "complete") -> np.ndarray:
    """Groups whose members are all within ``threshold`` of each other
    (``mode="complete"``) or of the group's centre (``mode="centre"``), see
    the module docstring. ``a``, ``b``: (P,) positions; ``sim``: (P,) float32
    cosines; pairs below ``threshold`` are ignored, so a list computed at a
    lower threshold can be regrouped at a higher one. Returns labels (N,)
    int64 numbered by first appearance; deterministic (ties broken by
    position)."""
    a, b, sim = _check_pairs(n, a, b, sim)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if not -1.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold is a cosine in [-1, 1]; got {threshold}")
    keep = (sim >= threshold) & (a != b)
    lo = np.minimum(a[keep], b[keep])
    hi = np.maximum(a[keep], b[keep])
    s = sim[keep]
    if mode == "centre":
        return _centre_groups(n, lo, hi, s)
    nbrs: dict[int, set[int]] = {}
    for u, v in zip(lo.tolist(), hi.tolist()):
        nbrs.setdefault(u, set()).add(v)
        nbrs.setdefault(v, set()).add(u)
    order = np.lexsort((hi, lo, -s))
    label = np.arange(n, dtype=np.int64)
    members: dict[int, list[int]] = {}
    # common[g]: images adjacent to every member of group g. Two groups may
    # merge iff each lies inside the other's common set; tracking it keeps a
    # merge test at O(group size) instead of O(|A| * |B|) pair lookups.
    common: dict[int, set[int]] = {}
    for e in order.tolist():
        u, v = int(lo[e]), int(hi[e])
        gu, gv = int(label[u]), int(label[v])
        if gu == gv:
            continue
        mu = members.get(gu, [u])
        mv = members.get(gv, [v])
        cu = common.get(gu, nbrs[u])
        cv = common.get(gv, nbrs[v])
        if all(y in cu for y in mv) and all(x in cv for x in mu):
            if len(mu) < len(mv):
                gu, gv, mu, mv = gv, gu, mv, mu
            label[mv] = gu
            members[gu] = mu + mv
            common[gu] = cu & cv
            members.pop(gv, None)
            common.pop(gv, None)
    return _relabel(label)


def _centre_groups(n, lo, hi, s):
    deg = np.bincount(lo, minlength=n) + np.bincount(hi, minlength=n)
    total = (np.bincount(lo, weights=s, minlength=n) + np.bincount(hi, weights=s, minlength=n))
    nbrs: dict[int, list[int]] = {}
    for u, v in zip(lo.tolist(), hi.tolist()):
        nbrs.setdefault(u, []).append(v)
        nbrs.setdefault(v, []).append(u)
    label = np.full(n, -1, dtype=np.int64)
    # Centres by (degree desc, similarity sum desc, position asc). Degrees are
    # not updated as images get assigned: simple, deterministic, and every
    # member is still a direct neighbour of its centre.
    for c in np.lexsort((np.arange(n), -total, -deg)).tolist():
        if label[c] >= 0:
            continue
        label[c] = c
        for v in nbrs.get(c, ()):
            if label[v] < 0:
                label[v] = c
    return _relabel(label)


def groups_from_labels(labels, min_size: int = 2) -> list[np.ndarray]:
    """Member positions (sorted int64 arrays) of each label with at least
    ``min_size`` members, ordered by their first member."""
    labels = np.asarray(labels).ravel()
    order = np.argsort(labels, kind="stable")
    sl = labels[order]
    cuts = np.flatnonzero(np.diff(sl)) + 1
    groups = [g for g in np.split(order.astype(np.int64), cuts) if g.size >= min_size]
    groups = [np.sort(g) for g in groups]
    groups.sort(key=lambda g: int(g[0]))
    return groups


def group_min_similarity(vectors, groups) -> np.ndarray:
    """Each group's lowest internal cosine, exactly: (G,) float32.

    ``vectors``: (N, D) float32 unit vectors; ``groups``: a sequence of
    position arrays (e.g. from :func:`groups_from_labels`). Computed within
    each group only (m x m for a group of m); a group of fewer than two
    members has NaN."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array (N, D); got shape {x.shape}")
    out = np.full(len(groups), np.nan, dtype=np.float32)
    for gi, g in enumerate(groups):
        g = np.asarray(g, dtype=np.int64).ravel()
        if g.size and (g.min() < 0 or g.max() >= x.shape[0]):
            raise ValueError(f"group {gi} has positions outside [0, {x.shape[0]})")
        if g.size < 2:
            continue
        v = x[g]
        s = v @ v.T
        iu = np.triu_indices(g.size, 1)
        out[gi] = s[iu].min()
    return out
