"""All three quality dimensions in one pass over the stored embeddings:
class balance, one kNN pass shared by the checks that want it, then every
registered check in turn (``checks.CHECKS``: duplicates, leakage, label
conflicts, outliers, image properties, label issues, sample size). A check
that cannot run on this data (no labels, too few images) says why in
``notes``."""
from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import numpy as np

from imagesieve.progress import StageProgress

from ..analysis.duplicates import region
from ..analysis.duplicates.find import CANDIDATE_K, DuplicateReport
from ..analysis.labels import DEFAULT_CLASSIFIER, rank
from ..analysis.neighbors import knn, mean_found_similarity
from ..analysis.outliers import knn_similarity, outlier_scores
from ..analysis.sample_size.run import SampleSizeReport
from ..checks import CHECKS, duplicates, label_issues, sample_size
from ..checks.base import CheckInputs, CheckResult
from ..index.faiss_index import FLAT_MAX
from .stages import StageLog

NEIGHBORS = 10


@dataclasses.dataclass
class AuditResults:
    """Per-image columns are sequences of N (compact ones from ``columns``
    for an audit of millions); analysis arrays index the ok images."""
    paths: Sequence[str]
    labels: Sequence[str]
    splits: Sequence[str]
    sha256: np.ndarray                   # (N,) S64 hex
    errors: list[str]                    # '' where the image embedded
    vectors: np.ndarray                  # (N, D); zero rows for failed images
    ok: np.ndarray                       # (N,) bool
    threshold: float                     # the duplicates' cosine (after the check: the one it used)
    class_counts: dict                   # split -> label -> count
    duplicates: DuplicateReport | None = None   # positions index the ok images (``ok_index``)
    knn_similarity: np.ndarray | None = None    # (N_ok,)
    outlier_score: np.ndarray | None = None     # (N_ok,) robust z of isolation (checks.outliers flags)
    class_names: list[str] = dataclasses.field(default_factory=list)
    label_ids: np.ndarray | None = None         # (N_ok,) int
    label_scores: object | None = None          # analysis.labels.LabelScores
    sample_size: SampleSizeReport | None = None
    checks: dict[str, CheckResult] = dataclasses.field(default_factory=dict)   # positions index all N images
    notes: list[str] = dataclasses.field(default_factory=list)
    stages: StageLog = dataclasses.field(default_factory=StageLog)   # seconds and memory per stage
    threshold_asked: float = 0.0         # the threshold asked for (0: the check's own)
    sizes: np.ndarray | None = None      # (N, 2) width, height of each file as stored (0: unknown)

    @property
    def ok_index(self) -> np.ndarray:
        """Global positions of the ok images (what analysis positions index)."""
        return np.flatnonzero(self.ok)


def _run_checks(r: AuditResults, inputs: CheckInputs, params: dict, skip: set) -> None:
    """Every registered check (``checks.CHECKS``) but those in ``skip``, in
    order, each a stage of its own; ``params``: a check's Params by name
    (else its defaults). A check that cannot run on this data (ValueError)
    says why in the notes; the others run."""
    for name, check in CHECKS.items():
        if name in skip:
            continue
        with r.stages.stage(name, announce=True), StageProgress(f"  {name}: ") as report:
            inputs.report = report
            try:
                r.checks[name] = inputs.results[name] = check.from_inputs(inputs, params.get(name))
            except ValueError as e:
                r.notes.append(f"{check.TITLE}: skipped: {e}")
                continue
            finally:
                inputs.report = None
            r.notes.extend(f"{check.TITLE}: {n}" for n in r.checks[name].notes)


def _file_reader(paths, sha256: np.ndarray):
    """``read(i)``: the bytes of ``paths[i]`` as they were embedded (the same
    sha256), else ValueError: a file changed since is not what its signature shows."""
    from .embed import read_image_file

    def read(i: int) -> bytes:
        data, sha, _, _, error = read_image_file(paths[i])
        if error or sha.encode() != bytes(sha256[i]):
            raise ValueError(error or f"{paths[i]} changed since it was embedded")
        return data
    return read


def run_analyses(paths, labels, splits, sha256, errors, vectors, *, threshold: float, target: float,
                 top_fraction: float = 0.01, sweep: bool = True, seed: int = 0,
                 classifier: str = DEFAULT_CLASSIFIER, sweep_classifier: str | None = None,
                 stages: StageLog | None = None,
                 signatures: np.ndarray | None = None, pixels: np.ndarray | None = None,
                 sizes: np.ndarray | None = None, properties: np.ndarray | None = None,
                 store=None, region_embedder=None) -> AuditResults:
    """Every analysis over the embedded images; ``stages`` (the caller's
    record of earlier stages, if any) gets one entry per analysis.
    ``pixels`` (N, H, W) uint8 (e.g. the signatures' thumbnails): label
    scoring also trains a small CNN on them (``PixelsAndEmbeddings``; needs torch).
    ``signatures`` (N, SIGNATURE_BYTES) uint8: duplicates in two stages
    (verified); None: raw cosine. ``threshold`` 0: the method's default
    (see ``analysis.duplicates.find``). ``sizes`` (N, 2) width, height and
    ``properties`` (N, engine.properties.COUNT) float32: for the checks
    (``checks.CHECKS``), each run on every image. ``store``: the embedding
    store's folder, where checks keep costly results for later commands.
    ``region_embedder()``: an ``engine.pipeline.Embedder``, made when a
    partial match is to be tested where it was found (the image files are
    read again; ``analysis.duplicates.region``); None: not tested."""
    ok = np.array([not e for e in errors], dtype=bool)
    counts: dict = collections.defaultdict(lambda: collections.Counter())
    for label, split, good in zip(labels, splits, ok):
        if good:
            counts[split or "all"][label or "(unlabelled)"] += 1
    sha256 = np.asarray(sha256, dtype="S64")
    r = AuditResults(paths, labels, splits, sha256, errors, vectors, ok,
                     threshold, {s: dict(c) for s, c in counts.items()}, stages=stages or StageLog(),
                     sizes=None if sizes is None else np.asarray(sizes))
    idx = r.ok_index
    x = vectors if len(idx) == len(vectors) else np.ascontiguousarray(vectors[idx])   # no copy when all ok
    all_ok = len(idx) == len(vectors)
    # Lists of the shared label / split strings: a pointer an image.
    lab = list(labels) if all_ok else [labels[i] for i in idx]
    spl = list(splits) if all_ok else [splits[i] for i in idx]
    keys = paths if all_ok else (paths.take(idx) if hasattr(paths, "take") else [paths[i] for i in idx])
    sig = None if signatures is None else (signatures if all_ok else signatures[idx])
    inputs = CheckInputs(ok, np.zeros((len(ok), 2), np.int32) if sizes is None else np.asarray(sizes), properties,
                         vectors=x, keys=keys, labels=lab, splits=spl,
                         sha256=sha256 if all_ok else sha256[idx], signatures=sig,
                         pixels=None if pixels is None else (pixels if all_ok else pixels[idx]), store=store,
                         region_cosines=None if region_embedder is None or sig is None else
                         region.image_cosines(region_embedder, _file_reader(keys, sha256 if all_ok else sha256[idx])))
    checks = {"duplicates": duplicates.Params(threshold=threshold, approximate=len(idx) > FLAT_MAX),
              "label_issues": label_issues.Params(classifier=classifier, top_fraction=top_fraction, seed=seed,
                                                  pixels=pixels is not None),
              "sample_size": sample_size.Params(target=target, classifier=sweep_classifier, seed=seed)}
    skip = set() if sweep else {"sample_size"}
    if not sweep:
        r.notes.append("sample-size sweep skipped (--no-sweep)")
    if len(idx) < 2:
        r.notes.append("fewer than 2 images embedded: nothing to compare")
        _run_checks(r, inputs, checks, skip)
        return r

    k = min(NEIGHBORS, len(idx) - 1)
    labelled = all(lab) and len(set(lab)) >= 2
    evidence = None
    with r.stages.stage("neighbours", announce=True), StageProgress("  neighbours: ") as report:
        # One kNN pass serves the duplicate candidates, the outliers and the
        # labels' neighbour evidence ((N, k) ids and sims: 120 bytes an image).
        neighbours = knn(x, max(k, CANDIDATE_K), report=report) if sig is not None else None
        chunks = None if neighbours is None else [(0, neighbours[0][:, :k], neighbours[1][:, :k])]
        if labelled:
            # The label check's own class indices (it takes this evidence as given).
            names, ids = label_issues.class_indices(lab)
            evidence = (rank.neighbor_evidence(x, ids, k, len(names), report=report) if chunks is None else
                        rank.evidence_from_knn(chunks, ids, len(names), report=report))
            r.knn_similarity = evidence.mean_similarity
        elif chunks is None:
            r.knn_similarity = knn_similarity(x, k=k, report=report)
        else:
            r.knn_similarity = mean_found_similarity(chunks[0][1], chunks[0][2])
        chunks = None
        r.outlier_score = outlier_scores(r.knn_similarity)
    inputs.knn, inputs.label_evidence = neighbours, evidence
    inputs.knn_similarity = np.full(len(ok), np.nan, np.float32)
    inputs.knn_similarity[idx] = r.knn_similarity
    neighbours = evidence = None
    _run_checks(r, inputs, checks, skip)
    # A check that could not run on this data left a note and no result.
    if "duplicates" in r.checks:
        r.duplicates = r.checks["duplicates"].details.report
        r.threshold_asked, r.threshold = r.threshold, r.duplicates.threshold
    scored = r.checks["label_issues"].details if "label_issues" in r.checks else None
    if scored is not None:
        r.label_scores, r.label_ids, r.class_names = scored.scores, scored.label_ids, scored.class_names
    if "sample_size" in r.checks:
        r.sample_size = r.checks["sample_size"].details
    return r
