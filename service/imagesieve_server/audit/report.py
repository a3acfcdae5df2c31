"""Audit outputs: ``report.html`` and ``report_data/`` (a small offline web
app rendered from the Jinja2 template ``templates/report.html.j2``: every
finding in pages, worst first, with filters and search, thumbnails beside
it, charts matplotlib's inline SVG; ``webreport``), ``report.json`` (the
summary and the top of each list) and Parquet tables for machines (every
image, every pair, every group), and ``pred_probs.npy`` / ``labels.npy`` to
continue in cleanlab or elsewhere."""
from __future__ import annotations

import io
import itertools
import json
import math
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..checks.base import FlaggedPairs
from ..checks.duplicates import evidence_columns
from . import webreport
from .analyse import AuditResults

MAX_CHECK_ROWS = 100    # per kind of issue in report.json (all of them: report_data/ and the Parquet tables)


def _svg_only(svg: str) -> str:
    """Matplotlib's SVG without its XML prolog and doctype, to inline in HTML."""
    return svg[svg.find("<svg"):]


def _bar_chart(counts: dict[str, int]) -> str:
    """Class balance as an inline SVG horizontal bar chart (matplotlib), the
    40 largest classes."""
    items = sorted(counts.items(), key=lambda kv: -kv[1])[:40]
    if not items:
        return ""
    from matplotlib.figure import Figure      # no pyplot: no global state (Agg renders)

    fig = Figure(figsize=(7, 0.25 * len(items) + 0.6))
    ax = fig.add_subplot()
    # Positions, not names, on the axis: two long names cut alike stay two bars.
    names = [k if len(k) <= 24 else k[:23] + "…" for k, _ in items][::-1]
    values = [v for _, v in items][::-1]
    bars = ax.barh(range(len(items)), values, color="#4a7bd0")
    ax.bar_label(bars, padding=3, fontsize=8)
    # A class name is text, never mathtext ("$5 and $10", "a$\\frac$" crashed the report).
    ax.set_yticks(range(len(items)), names, fontsize=8, parse_math=False)
    ax.set_xlabel("images")
    ax.margins(x=0.12)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    return _svg_only(buf.getvalue())


def summary(r: AuditResults) -> dict:
    n, ok = len(r.paths), int(r.ok.sum())
    s = {"images": n, "embedded": ok, "failed": n - ok, "threshold": r.threshold,
         "classes": len(r.class_names), "notes": r.notes, "seconds": r.stages.seconds,
         "peak_rss_mb": r.stages.peak_rss_mb, "rss_mb": r.stages.rss_mb,
         "class_counts": r.class_counts}
    if r.duplicates is not None:
        d = r.duplicates
        s.update(duplicate_pairs=int(len(d.a)), exact_pairs=int(d.exact.sum()),
                 near_pairs=int(len(d.a) - d.exact.sum()), duplicate_groups=len(d.groups),
                 images_in_groups=int(sum(len(g) for g in d.groups)),
                 # A group holds images every two of which are paired: an image paired only
                 # with members of a group it cannot join is in no group, only in the pairs.
                 images_paired_outside_groups=int(np.setdiff1d(
                     np.unique(np.r_[d.a, d.b]), np.concatenate([np.asarray(g) for g in d.groups] or [[]])).size),
                 leakage_pairs=int(d.cross_split.sum()), label_conflict_pairs=int(d.labels_disagree.sum()),
                 duplicate_method=d.method, duplicate_threshold_reason=d.threshold_reason,
                 duplicate_threshold_asked=r.threshold_asked,
                 duplicate_candidates=int(d.candidates), duplicate_warnings=d.warnings)
        if d.near_misses is not None:
            s["near_misses"] = int(len(d.near_misses.a))
    if "outliers" in r.checks:
        s["outliers"] = r.checks["outliers"].issues["isolated"].count
    if r.label_scores is not None:
        split = r.label_scores.noise_split
        s.update(label_suspects=int(len(r.label_scores.suspects)),
                 estimated_label_noise_rate=float(r.label_scores.noise_rate),
                 estimated_wrong_label_rate=float(split.wrong_rate),
                 estimated_ambiguous_label_rate=float(split.ambiguous_rate),
                 ambiguous_class_pairs=split.named_pairs(r.class_names))
        if split.note:
            s["label_noise_note"] = split.note
    if r.checks:
        s["checks"] = {name: c.summary() for name, c in r.checks.items()}
    if r.sample_size is not None:
        a, sweep = r.sample_size.analysis, r.sample_size.sweep
        # The answer holds for this classifier: a linear one (lda) saturates early.
        s.update(sample_size_answer=f"{a.answer} (Classifier: {sweep.classifier} on the embeddings.)",
                 sample_size_fit=a.chosen, sample_size_classifier=sweep.classifier)
    return s


def _arrow_strings(column, start: int, stop: int):
    """Rows [start, stop) of a str column as an Arrow array (no copy for ``columns`` types)."""
    import pyarrow as pa

    if hasattr(column, "to_arrow"):
        return column.to_arrow(start, stop)
    return pa.array([column[i] for i in range(start, stop)], pa.string())


def write_tables(r: AuditResults, out: Path, rows_per_group: int = 8192) -> list[str]:
    """images.parquet (one row per image), duplicate_pairs.parquet,
    near_misses.parquet (two stages) and duplicate_groups.parquet (one row a member),
    written ``rows_per_group`` rows at a time: memory stays flat in N."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(r.paths)
    pos = np.full(n, -1)
    pos[r.ok_index] = np.arange(len(r.ok_index))
    ls = r.label_scores

    def per_ok(arr, rows, fill=np.nan):
        p = pos[rows]
        return np.where(p >= 0, np.asarray(arr)[np.maximum(p, 0)], fill) if arr is not None \
            else np.full(len(rows), fill)

    names = pa.array(r.class_names + [""], pa.string())     # suggested-label dictionary ("" = none)
    writer = None
    for start in range(0, n, rows_per_group):
        stop = min(start + rows_per_group, n)
        rows = np.arange(start, stop)
        cols = {"path": _arrow_strings(r.paths, start, stop), "label": _arrow_strings(r.labels, start, stop),
                "split": _arrow_strings(r.splits, start, stop),
                "sha256": pa.array(r.sha256[start:stop]).cast(pa.string()),
                "error": pa.array(r.errors[start:stop], pa.string()),
                "knn_similarity": per_ok(r.knn_similarity, rows).astype(np.float32),
                "outlier_score": per_ok(r.outlier_score, rows).astype(np.float32)}
        if ls is not None:
            cols["label_score"] = per_ok(ls.scores, rows)
            cols["suggested_label"] = pa.DictionaryArray.from_arrays(
                pa.array(per_ok(ls.suggested, rows, fill=len(r.class_names)).astype(np.int32)), names)
            cols["suggested_probability"] = per_ok(ls.suggested_probability, rows)
        batch = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(out / "images.parquet", batch.schema)
        writer.write_table(batch)
    if writer is not None:
        writer.close()
    written = ["images.parquet"]
    d = r.duplicates
    if d is not None:
        # Paths dictionary-encoded: no string per pair (pairs can be millions).
        paths = _arrow_strings(d.keys, 0, len(d.keys))
        cols = {"path_a": pa.DictionaryArray.from_arrays(pa.array(d.a, pa.int64()), paths),
                "path_b": pa.DictionaryArray.from_arrays(pa.array(d.b, pa.int64()), paths),
                "cosine": d.cosine.astype(np.float32), "exact": d.exact,
                "cross_split": d.cross_split, "labels_disagree": d.labels_disagree}
        if d.evidence is not None:     # why each pair was called the same picture
            cols.update(evidence_columns(d.evidence, d.relative, alignment=True))
        pq.write_table(pa.table(cols), out / "duplicate_pairs.parquet")
        written.append("duplicate_pairs.parquet")
        if d.near_misses is not None:  # why a copy a person expected was not paired
            m = d.near_misses
            pq.write_table(pa.table({"path_a": pa.DictionaryArray.from_arrays(pa.array(m.a, pa.int64()), paths),
                                     "path_b": pa.DictionaryArray.from_arrays(pa.array(m.b, pa.int64()), paths),
                                     "cosine": m.cosine, **evidence_columns(m.evidence, m.relative, alignment=True)}),
                           out / "near_misses.parquet")
            written.append("near_misses.parquet")
        # One row a member: every group whole, however many.
        sizes = np.array([len(g) for g in d.groups], np.int64)
        members = np.concatenate(d.groups).astype(np.int64) if len(d.groups) else np.zeros(0, np.int64)
        pq.write_table(pa.table({"group": np.repeat(np.arange(len(d.groups)), sizes),
                                 "path": pa.DictionaryArray.from_arrays(pa.array(members, pa.int64()), paths),
                                 "group_size": np.repeat(sizes, sizes),
                                 "min_internal_cosine": np.repeat(d.group_min_cosine.astype(np.float32), sizes)}),
                       out / "duplicate_groups.parquet")
        written.append("duplicate_groups.parquet")
    return written


def write_report(r: AuditResults, out: str | Path, source: str) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = summary(r)
    files = write_tables(r, out)
    if r.label_scores is not None:
        np.save(out / "pred_probs.npy", r.label_scores.pred_probs.astype(np.float32))
        np.save(out / "labels.npy", r.label_ids)
        (out / "class_names.json").write_text(json.dumps(r.class_names))
        files += ["pred_probs.npy", "labels.npy", "class_names.json"]
    doc = {"source": source, "created_unix_s": time.time(), "summary": s}
    if r.sample_size is not None:
        doc["sample_size"] = r.sample_size.to_dict()
    if r.checks:
        doc["checks"] = {name: _check_doc(r, c) for name, c in r.checks.items()}
    doc["files"] = files + ["report.json", "report.html", webreport.DATA + "/"]
    # The label suspects (1% of the images by default) streamed, not built.
    streamed = {"label_suspects": lambda: _suspects(r)} if r.label_scores is not None else {}
    write_json_streaming(out / "report.json", doc, streamed)
    lists = webreport.write_data(r, out)
    (out / "report.html").write_text(render_html(r, s, lists, files + ["report.json"], source))
    return s


def _suspects(r: AuditResults) -> Iterator[dict]:
    ls, ok = r.label_scores, r.ok_index
    ambiguous = ls.in_ambiguous_pair(r.label_ids)
    for i in ls.suspects.tolist():
        yield {"path": r.paths[ok[i]], "given": r.class_names[r.label_ids[i]],
               "suggested": r.class_names[ls.suggested[i]],
               "suggested_probability": float(ls.suggested_probability[i]), "score": float(ls.scores[i]),
               "in_ambiguous_pair": bool(ambiguous[i])}


def _check_doc(r: AuditResults, c) -> dict:
    """A check's result for report.json: per kind of issue, its threshold,
    why, and up to MAX_CHECK_ROWS flagged images (or pairs, with their
    evidence) worst first."""
    def issue(f) -> dict:
        out = {"description": f.description, "unit": f.unit, "threshold": f.threshold,
               "threshold_unit": getattr(f, "threshold_unit", "") or f.unit, "reason": f.reason, "count": f.count}
        if isinstance(f, FlaggedPairs):
            out["pairs"] = list(itertools.islice(_pair_rows(r, f), MAX_CHECK_ROWS))
        else:
            out["images"] = [{"path": r.paths[i], "score": float(v)} for i, v in
                             zip(f.positions[:MAX_CHECK_ROWS].tolist(), f.scores[:MAX_CHECK_ROWS].tolist())]
        return out
    return {"title": c.title, "measured": c.measured, "notes": c.notes,
            "issues": {k: issue(f) for k, f in c.issues.items()}}


def _finite(v):
    """A JSON value: NaN and infinities (a measure not taken) as null, which
    strict JSON readers accept (``NaN``/``Infinity`` they refuse)."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _pair_rows(r: AuditResults, f: FlaggedPairs) -> Iterator[dict]:
    """Every pair of ``f``, most severe first, with its evidence."""
    for k in range(f.count):
        yield {"a": r.paths[int(f.a[k])], "b": r.paths[int(f.b[k])], "score": _finite(float(f.scores[k])),
               **{name: _finite(v[k].item()) for name, v in f.evidence.items()}}


def write_json_streaming(path: Path, doc: dict, streamed: dict[str, Callable[[], Iterable]]) -> None:
    """``doc`` plus the lists ``streamed`` names (each a callable giving an
    iterable of items), written item by item as one indented JSON object:
    memory stays flat however long the lists are."""
    keys = [*doc, *streamed]
    with open(path, "w") as f:
        f.write("{\n")
        for n, key in enumerate(keys):
            f.write(f"  {json.dumps(key)}: ")
            if key in streamed:
                f.write("[")
                for k, item in enumerate(streamed[key]()):
                    f.write(("," if k else "") + "\n    " + json.dumps(item, default=float))
                f.write("\n  ]")
            else:
                f.write(json.dumps(doc[key], indent=2, default=float).replace("\n", "\n  "))
            f.write(",\n" if n < len(keys) - 1 else "\n")
        f.write("}\n")


_TEMPLATES = None


def _template():
    """The report's Jinja2 template (``templates/report.html.j2``), loaded
    once; autoescaped, so paths, labels and notes cannot inject markup."""
    global _TEMPLATES
    if _TEMPLATES is None:
        import jinja2
        _TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("imagesieve_server.audit", "templates"),
                                        autoescape=True, trim_blocks=True, lstrip_blocks=True,
                                        undefined=jinja2.StrictUndefined)
    return _TEMPLATES.get_template("report.html.j2")


def render_html(r: AuditResults, s: dict, lists: dict, files: list[str], source: str) -> str:
    """The app's page: the summary, the class table, the confusion table
    and the learning curve rendered here; one section per check (and the
    duplicate groups, the label suspects) whose lists the page's script
    loads from ``report_data/`` (``lists``: ``webreport.write_data``'s
    metadata)."""
    from markupsafe import Markup

    cards = [("images", s["images"]), ("embedded", s["embedded"]), ("failed", s["failed"]),
             ("duplicate pairs", s.get("duplicate_pairs", "-")), ("exact", s.get("exact_pairs", "-")),
             ("groups", s.get("duplicate_groups", "-")), ("train/test leakage", s.get("leakage_pairs", "-")),
             ("label suspects", s.get("label_suspects", "-")),
             *((c.title.lower() + ": images flagged", c.flagged if c.measured else "-")
               for c in r.checks.values() if c.issues)]
    totals: dict[str, int] = {}
    for per in r.class_counts.values():
        for k, v in per.items():
            totals[k] = totals.get(k, 0) + v
    sections = []
    for name, c in r.checks.items():
        if not c.issues:            # an answer, not a list (the sample size: its own section below)
            continue
        sections.append({"id": name, "title": c.title, "notes": c.notes, "measured": c.measured,
                         "lists": [f"{name}.{kind}" for kind in c.issues] if c.measured else [],
                         "empty": "Not judged here (see the notes above)."})
        if name == "duplicates" and "groups" in lists:
            sections.append({"id": "duplicate-groups", "title": "Duplicate groups", "notes": [], "measured": 1,
                             "lists": ["groups"], "empty": ""})
    rows = webreport.class_table(r)
    joint = webreport.confusion(r)
    confusion = None
    if joint is not None:
        counts = np.asarray(joint["counts"])
        off = counts - np.diag(np.diag(counts))
        top = float(off.max()) if off.size and off.max() > 0 else 1.0
        confusion = {"classes": joint["classes"], "rows": [
            {"label": c, "cells": [{"text": f"{v:.0f}" if v >= 0.5 else "",
                                    "alpha": 0.0 if g == t else round(min(1.0, v / top) * 0.8, 3)}
                                   for t, v in enumerate(counts[g].tolist())]}
            for g, c in enumerate(joint["classes"])]}
    meta = json.dumps({"lists": lists, "source": source}, separators=(",", ":")).replace("<", "\\u003c")
    curve = _svg_only(r.sample_size.plot_svg) if r.sample_size is not None else ""
    return _template().render(
        source=source, cards=cards, sample_size_answer=s.get("sample_size_answer", ""),
        noise_rate=s.get("estimated_label_noise_rate"), notes=r.notes, files=files,
        noise_split=None if r.label_scores is None else {
            "wrong_rate": s["estimated_wrong_label_rate"], "ambiguous_rate": s["estimated_ambiguous_label_rate"],
            "pairs": s["ambiguous_class_pairs"], "note": s.get("label_noise_note", "")},
        nav=[{"id": x["id"], "title": x["title"]} for x in sections] + [{"id": "learning-curve", "title": "Enough?"}],
        balance_chart=Markup(_bar_chart(totals)),       # matplotlib's own SVG: trusted markup
        class_rows=rows, class_splits=sorted({k for x in rows for k in x["splits"]}),
        sections=sections, confusion=confusion, learning_curve=Markup(curve), page_rows=webreport.PAGE_ROWS,
        meta_json=Markup(meta),        # JSON with "<" escaped: cannot close its script element
        sample_size_full_answer=r.sample_size.analysis.answer if r.sample_size is not None else "")
