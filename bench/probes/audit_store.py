"""What a probe's audit stored, read back: the probes in this folder replay stage 2 on it
(diagnosis only) to name the rule that kept or lost each pair."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np


def tool():
    """The tool's modules a replay uses (imported late: a probe's build needs none of them)."""
    from imagesieve_server.analysis.duplicates import verify
    from imagesieve_server.engine import keypoints, signature
    return verify, keypoints, signature


class AuditStore:
    """Read-only view of an audit's embedding store (``OUT/embeddings``): per image its path,
    file name, sha256, vector (``V``) and layout signature (``L``); ``S`` the cosine matrix
    (fine for a probe's few hundred images), its diagonal -1."""

    def __init__(self, out: Path):
        root = out / "embeddings"
        c = sqlite3.connect(f"file:{root}/index.sqlite?mode=ro", uri=True)
        items = list(c.execute("select path, shard, row, sha256 from items where error is null or error = ''"))
        c.close()
        shards = sorted({s for _, s, _, _ in items})
        vec = {s: np.load(root / f"shard-{s:05d}.npy") for s in shards}
        lay = {s: np.load(root / f"layout-{s:05d}.npy") for s in shards}
        self.paths = [p for p, _, _, _ in items]
        self.sha = [h for _, _, _, h in items]
        self.names = [Path(p).name for p in self.paths]
        self.idx = {n: k for k, n in enumerate(self.names)}
        self.V = np.stack([vec[s][r] for _, s, r, _ in items])
        self.L = np.stack([lay[s][r] for _, s, r, _ in items])
        self.S = self.V @ self.V.T
        np.fill_diagonal(self.S, -1)

    def cos(self, a: str, b: str) -> float:
        return float(self.S[self.idx[a], self.idx[b]])

    def rank(self, a: str, b: str) -> int:
        """1-based rank of b among a's neighbours by cosine."""
        row = self.S[self.idx[a]]
        return int((row > row[self.idx[b]]).sum()) + 1

    def align(self, a: str, b: str) -> dict:
        """Stage 2's evidence for the pair of file names (a, b), as the audit measured it."""
        verify, kp, sg = tool()
        la, lb = self.L[self.idx[a]], self.L[self.idx[b]]
        g, lay, det, area, mir, turn, inv, simp, blur, *_ = verify.pair_alignment(la, lb)
        inl = kp.matched_inliers(sg.keypoints(la), sg.keypoints(lb))
        return dict(agreement=round(float(g), 3), layout=round(float(lay), 3), detail=round(float(det), 3),
                    matched_area=round(float(area), 3), turned=int(turn), inverted=bool(inv),
                    matched_simplicity=round(float(simp), 3), keypoint_inliers=int(inl))
