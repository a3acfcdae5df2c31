"""Which images are the same picture? Exact duplicates (identical bytes) and
near duplicates (an altered copy: recompressed, resized, cropped,
recoloured, captioned...), found in two stages by default
(``analysis.duplicates.find``: the embedding's nearest neighbours, the
coarse layouts and shared keypoints propose pairs, stage 2 verifies each by
aligning their layouts or matching their keypoints), or by raw cosine
(``Params.verify`` False).

The pairs this check reports are the one definition of "duplicates" that
leakage (``checks.leakage``) and label conflicts (``checks.label_conflicts``)
refine, in the audit, the FindDuplicates job and the ScoreLabels job alike.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..analysis.duplicates.find import GROUPINGS, KEYPOINT_K, LAYOUT_K, DuplicateReport, find_duplicates
from ..analysis.duplicates.pair_memo import PairMemo, verifier_version
from ..analysis.duplicates.verify import MAX_RELATIVE, MAX_RELATIVE_LAYOUT, MIN_AGREEMENT, PairEvidence
from . import memo
from .base import CheckInputs, CheckResult, FlaggedPairs

NAME = "duplicates"
TITLE = "Duplicates"
PAIR_EVIDENCE = "pair_evidence"     # the kind of kept result (``memo``) that stage 2's evidence is


@dataclasses.dataclass(frozen=True)
class Params:
    """``threshold``: cosine in [0, 1]; 0 = the method's own (verified: its
    candidate floor; raw cosine: derived from the data's neighbours).
    ``verify``: two stages (needs layout signatures) or raw cosine.
    ``knn_k``: candidates an image, 0 = the method's default; ``layout_k``:
    candidates an image by coarse layout (0 = none); ``keypoint_k``: by
    shared keypoints (0 = none); ``grouping``: how
    pairs become groups (``analysis.duplicates.find.GROUPINGS``);
    ``approximate``: raw cosine by a kNN graph instead of an exact range
    search (large sets). ``max_pairs``: the exact range search stops with
    ``pairs.TooManyPairs`` beyond this many pairs (None: no bound; the other
    methods find at most a fixed number an image)."""
    threshold: float = 0.0
    verify: bool = True
    knn_k: int = 0
    layout_k: int = LAYOUT_K
    keypoint_k: int = KEYPOINT_K
    grouping: str = "bounded"
    approximate: bool = False
    max_pairs: int | None = None

    def __post_init__(self):
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be a cosine in [0, 1]; got {self.threshold}")
        if min(self.knn_k, self.layout_k, self.keypoint_k) < 0:
            raise ValueError(f"knn_k, layout_k and keypoint_k must be >= 0; got {self.knn_k}, {self.layout_k}, "
                             f"{self.keypoint_k}")
        if self.grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {GROUPINGS}; got {self.grouping!r}")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ValueError(f"max_pairs must be >= 1 or None; got {self.max_pairs}")


@dataclasses.dataclass
class Found:
    """A duplicates result's ``details``: the :class:`DuplicateReport` (its
    positions index the images it was given) and ``positions`` (N,), what
    each of those images is called in the check's results (None: the same)."""
    report: DuplicateReport
    positions: np.ndarray | None = None


def evidence_columns(ev: PairEvidence, relative: np.ndarray | None = None, alignment: bool = False) -> dict:
    """Stage 2's evidence of some pairs ((P,) each) by name, what they were
    judged by; ``alignment``: with the best alignment's layout and detail
    correlations (the tables'), not only the agreement they make."""
    cols = {"agreement": ev.agreement}
    if alignment:
        cols.update(layout=ev.layout, detail=ev.detail)
    cols.update(matched_area=ev.matched_area, mirrored=ev.mirrored, turned_degrees=ev.turned, inverted=ev.inverted,
                keypoint_inliers=ev.keypoint_inliers, matched_simplicity=ev.matched_simplicity,
                matched_blur_px=ev.matched_blur_px, warp_gain=ev.warp_gain)
    if relative is not None:
        cols["relative_disagreement"] = relative
    return cols


def refine(duplicates: CheckResult, mask_of, kind: str, description: str) -> FlaggedPairs:
    """The pairs of a duplicates result where ``mask_of(report)`` (P,) bool
    holds, ordered as :func:`flagged_pairs` orders them: what leakage and
    label conflicts are made of."""
    found: Found = duplicates.details
    return flagged_pairs(found.report, mask_of(found.report), kind, description, found.positions)


def flagged_pairs(report: DuplicateReport, mask: np.ndarray, kind: str, description: str,
                  positions: np.ndarray | None = None) -> FlaggedPairs:
    """The pairs of ``report`` where ``mask`` (P,) holds, most certain first:
    identical bytes, then by stage 2's agreement (verified) or cosine (raw).
    ``positions``: (N_report,) image position of each of the report's
    images (default: the same)."""
    idx = np.flatnonzero(mask)
    verified = report.evidence is not None
    score = (report.evidence.agreement if verified else report.cosine)[idx].astype(np.float32)
    order = np.lexsort((-score, ~report.exact[idx]))
    idx, score = idx[order], score[order]
    at = (lambda p: p) if positions is None else (lambda p: np.asarray(positions)[p])
    evidence = {"cosine": report.cosine[idx].astype(np.float32), "exact": report.exact[idx]}
    if verified:
        evidence.update(evidence_columns(report.evidence.take(idx),
                                         None if report.relative is None else report.relative[idx]))
    unit = "stage-2 agreement" if verified else "cosine"
    return FlaggedPairs(kind, description, unit, at(report.a[idx]).astype(np.int64),
                        at(report.b[idx]).astype(np.int64), score, float(report.threshold),
                        report.threshold_reason, evidence,
                        threshold_unit="candidate cosine (stage 1)" if verified else "cosine")


def near_miss_pairs(report: DuplicateReport, positions: np.ndarray | None = None) -> FlaggedPairs | None:
    """The candidates stage 2 rejected that came closest (``report.near_misses``,
    closest first) as pairs to review, with their evidence; None for raw cosine."""
    m = report.near_misses
    if m is None:
        return None
    at = (lambda p: p) if positions is None else (lambda p: np.asarray(positions)[p])
    evidence = {"cosine": m.cosine, "exact": np.zeros(len(m.a), bool), **evidence_columns(m.evidence, m.relative)}
    return FlaggedPairs("near_misses", "candidates stage 2 did not call the same picture, closest first",
                        "relative disagreement (closer to the images' look-alikes as it nears 1)",
                        at(m.a).astype(np.int64), at(m.b).astype(np.int64), m.relative.astype(np.float32),
                        float(report.threshold),
                        f"rejected by stage 2: most pairs are not much closer than the two images' other "
                        f"candidates (a pair passes at relative disagreement {MAX_RELATIVE:g}, "
                        f"{MAX_RELATIVE_LAYOUT:g} when only the layouts proposed it) or share no more keypoints "
                        "than they do; a closer one failed another test (agreement under "
                        f"{MIN_AGREEMENT:g}, a simple shape, a profile, or a partial match that did not hold where "
                        "it was found): see the evidence", evidence, threshold_unit="candidate cosine (stage 1)")


def run(vectors: np.ndarray, keys, labels, splits, sha256, signatures: np.ndarray | None = None,
        params: Params | None = None, knn=None, report=None, alignment_pool=None,
        positions: np.ndarray | None = None, region_cosines=None, store: Path | None = None,
        processes: bool | None = None) -> CheckResult:
    """Duplicates among N images: ``vectors`` (N, D) unit float32, N keys,
    labels, splits and sha256 each; ``signatures`` (N, SIGNATURE_BYTES)
    uint8 for two stages (None: raw cosine, whatever ``params.verify``
    says). ``knn``: (sims, ids) of a kNN pass already made. ``positions``:
    (N,) what each image is called in the result (default 0..N-1).
    ``region_cosines``: see ``find_duplicates`` (where pixels are at hand).
    ``store``: a folder where stage 2's evidence is kept for the next run
    over these images (``analysis.duplicates.pair_memo``: a pair aligned
    before is read, not aligned again), or None. ``processes``: see
    ``find_duplicates`` (a server without an ``alignment_pool`` passes False:
    its jobs align in their own thread). The result's ``details`` is a
    :class:`Found` (the DuplicateReport: groups, evidence, flags)."""
    p = params or Params()
    sig = signatures if p.verify else None
    kept = None
    if sig is not None and store is not None:
        key = memo.digest(PAIR_EVIDENCE, verifier_version())
        kept = PairMemo.from_arrays(memo.load(store, PAIR_EVIDENCE, key))
    d = find_duplicates(vectors, keys, labels, splits, sha256, p.threshold, p.approximate, p.knn_k, p.grouping,
                        report=report, signatures=sig, knn=knn if sig is not None else None,
                        alignment_pool=alignment_pool, layout_k=p.layout_k, max_pairs=p.max_pairs,
                        keypoint_k=p.keypoint_k, region_cosines=region_cosines if sig is not None else None,
                        pair_memo=kept, processes=processes)
    notes = list(d.warnings)
    if kept is not None:
        if kept.aligned:
            memo.save(store, PAIR_EVIDENCE, key, kept.kept_for_next().to_arrays())
        asked = int(sum(len(k) for k in kept.asked))
        if asked > kept.aligned:
            notes.append(f"stage 2: {asked - kept.aligned:,} of {asked:,} candidate pairs read from an earlier "
                         "run's evidence (the same two signatures, the same verifier), "
                         f"{kept.aligned:,} aligned now")
    near_what = ("verified as the same picture (stage 2: the layouts align or the keypoints match)"
                 if d.method == "verified" else f"cosine >= {d.threshold:.3f}")
    issues = {"exact": flagged_pairs(d, d.exact, "exact", "identical bytes", positions),
              "near": flagged_pairs(d, ~d.exact, "near", f"altered copies: {near_what}", positions)}
    return CheckResult(NAME, TITLE, len(keys), issues, notes, details=Found(d, positions))


def from_inputs(inputs: CheckInputs, params: Params | None = None) -> CheckResult:
    """:func:`run` on the audit's embedded images (positions: all N)."""
    return run(inputs.vectors, inputs.keys, inputs.labels, inputs.splits, inputs.sha256, inputs.signatures,
               params, knn=inputs.knn, report=inputs.report, positions=inputs.ok_index,
               region_cosines=inputs.region_cosines, store=inputs.store)
