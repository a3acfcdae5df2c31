"""Audit outputs: ``report.html`` (one self-contained file rendered from the
Jinja2 template ``templates/report.html.j2``: thumbnails are inline data
URIs, charts matplotlib's inline SVG, nothing loads from outside),
``report.json`` and Parquet tables for machines, and ``pred_probs.npy`` /
``labels.npy`` to continue in cleanlab or elsewhere."""
from __future__ import annotations

import base64
import io
import itertools
import json
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps

from .analyse import AuditResults

THUMB = 112
MAX_GROUPS, MAX_SUSPECTS, MAX_LEAKS = 30, 48, 200
MAX_CHECK_TILES, MAX_CHECK_ROWS = 24, 1000   # per kind of issue: thumbnails in the page, rows in report.json


def _thumb_uri(path: str) -> str:
    try:
        with Image.open(path) as im:
            im.draft("RGB", (THUMB * 2, THUMB * 2))
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except Exception:  # noqa: BLE001 - an unreadable file gets a blank tile, the report still renders
        return ("data:image/svg+xml;base64," + base64.b64encode(
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{THUMB}" height="{THUMB}">'
            f'<rect width="100%" height="100%" fill="#ccc"/></svg>'.encode()).decode())


def _tile(path: str, *lines: str) -> dict:
    """A thumbnail for the template's ``tile`` macro (escaped there)."""
    return {"uri": _thumb_uri(path), "name": Path(path).name, "path": path, "lines": lines}


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
                 leakage_pairs=int(d.cross_split.sum()), label_conflict_pairs=int(d.labels_disagree.sum()),
                 duplicate_method=d.method, duplicate_threshold_reason=d.threshold_reason,
                 duplicate_candidates=int(d.candidates), duplicate_warnings=d.warnings)
    if "outliers" in r.checks:
        s["outliers"] = r.checks["outliers"].issues["isolated"].count
    if r.label_scores is not None:
        s.update(label_suspects=int(len(r.label_scores.suspects)),
                 estimated_label_noise_rate=float(r.label_scores.noise_rate))
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
    """images.parquet (one row per image) and duplicate_pairs.parquet,
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
            cols.update(agreement=d.evidence.agreement, layout=d.evidence.layout, detail=d.evidence.detail,
                        matched_area=d.evidence.matched_area, mirrored=d.evidence.mirrored,
                        turned_degrees=d.evidence.turned, inverted=d.evidence.inverted,
                        relative_disagreement=d.relative)
        pq.write_table(pa.table(cols), out / "duplicate_pairs.parquet")
        written.append("duplicate_pairs.parquet")
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
    # Lists as long as the duplicates are streamed into report.json, not built.
    streamed = {}
    if r.duplicates is not None:
        streamed = {"duplicate_groups": lambda: _duplicate_groups(r.duplicates),
                    "leakage_pairs": lambda: _leakage_pairs(r.duplicates)}
    if r.label_scores is not None:
        ls, ok = r.label_scores, r.ok_index
        doc["label_suspects"] = [{"path": r.paths[ok[i]], "given": r.class_names[r.label_ids[i]],
                                  "suggested": r.class_names[ls.suggested[i]],
                                  "suggested_probability": float(ls.suggested_probability[i]),
                                  "score": float(ls.scores[i])} for i in ls.suspects.tolist()]
    if r.sample_size is not None:
        doc["sample_size"] = r.sample_size.to_dict()
    if r.checks:
        doc["checks"] = {name: _check_doc(r, c) for name, c in r.checks.items()}
    doc["files"] = files + ["report.json", "report.html"]
    write_json_streaming(out / "report.json", doc, streamed)
    shown = {"leakage_pairs": list(itertools.islice(streamed["leakage_pairs"](), MAX_LEAKS))} if streamed else {}
    (out / "report.html").write_text(render_html(r, s, {**doc, **shown}, source))
    return s


def _check_doc(r: AuditResults, c) -> dict:
    """A check's result for report.json: per kind of issue, its threshold,
    why, and up to MAX_CHECK_ROWS flagged images worst first."""
    return {"title": c.title, "measured": c.measured, "notes": c.notes, "issues": {
        k: {"description": f.description, "unit": f.unit, "threshold": f.threshold, "reason": f.reason,
            "count": f.count, "images": [{"path": r.paths[i], "score": float(v)} for i, v in
                                         zip(f.positions[:MAX_CHECK_ROWS].tolist(), f.scores[:MAX_CHECK_ROWS].tolist())]}
        for k, f in c.issues.items()}}


def _duplicate_groups(d) -> Iterator[dict]:
    for g, m in zip(d.groups, d.group_min_cosine):
        yield {"paths": [d.keys[i] for i in g.tolist()], "min_internal_cosine": float(m)}


def _pair_evidence(d, k: int) -> dict:
    if d.evidence is None:
        return {}
    ev = d.evidence
    return {"agreement": round(float(ev.agreement[k]), 4), "matched_area": round(float(ev.matched_area[k]), 3),
            "mirrored": bool(ev.mirrored[k]), "turned_degrees": int(ev.turned[k]), "inverted": bool(ev.inverted[k])}


def _leakage_pairs(d) -> Iterator[dict]:
    for k in np.flatnonzero(d.cross_split):
        yield {"a": d.keys[int(d.a[k])], "b": d.keys[int(d.b[k])], "cosine": float(d.cosine[k]),
               **_pair_evidence(d, int(k))}


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


def render_html(r: AuditResults, s: dict, doc: dict, source: str) -> str:
    from markupsafe import Markup

    cards = [("images", s["images"]), ("embedded", s["embedded"]), ("failed", s["failed"]),
             ("duplicate pairs", s.get("duplicate_pairs", "-")), ("exact", s.get("exact_pairs", "-")),
             ("groups", s.get("duplicate_groups", "-")), ("train/test leakage", s.get("leakage_pairs", "-")),
             ("label suspects", s.get("label_suspects", "-")),
             *((r.checks[n].title.lower() + ": images flagged", r.checks[n].flagged) for n in r.checks)]
    totals: dict[str, int] = {}
    for per in r.class_counts.values():
        for k, v in per.items():
            totals[k] = totals.get(k, 0) + v
    duplicates = None
    d = r.duplicates
    if d is not None:
        how = ("every two members were verified as the same picture (stage 2: their layouts align)"
               if d.method == "verified" else f"every two members have cosine >= {r.threshold:.2f}")
        order = sorted(range(len(d.groups)), key=lambda g: -len(d.groups[g]))[:MAX_GROUPS]
        duplicates = {"method": d.method, "reason": d.threshold_reason, "warnings": d.warnings, "how": how,
                      "total": len(d.groups), "groups": [
                          {"size": len(d.groups[g]), "min_cosine": float(d.group_min_cosine[g]),
                           "tiles": [_tile(d.keys[i], Path(d.keys[i]).name, r.labels[r.ok_index[i]] or "")
                                     for i in d.groups[g].tolist()[:8]]} for g in order]}
    suspects = [_tile(x["path"], f"given: {x['given']}",
                      f"suggested: {x['suggested']} {x['suggested_probability']:.2f}", f"score {x['score']:.3f}")
                for x in doc.get("label_suspects", [])[:MAX_SUSPECTS]] if r.label_scores is not None else []
    checks = [{"name": name, "title": c["title"], "measured": c["measured"], "notes": c["notes"], "issues": [
        {**f, "tiles": [_tile(x["path"], Path(x["path"]).name, f"{x['score']:.3g}")
                        for x in f["images"][:MAX_CHECK_TILES]]} for f in c["issues"].values()]}
        for name, c in doc.get("checks", {}).items()]
    curve = _svg_only(r.sample_size.plot_svg) if r.sample_size is not None else ""
    return _template().render(
        source=source, cards=cards, sample_size_answer=s.get("sample_size_answer", ""),
        noise_rate=s.get("estimated_label_noise_rate"), notes=r.notes,
        balance_chart=Markup(_bar_chart(totals)),       # matplotlib's own SVG: trusted markup
        splits=[(split, sum(c.values())) for split, c in r.class_counts.items()],
        duplicates=duplicates, leaks=doc.get("leakage_pairs", []), suspects=suspects,
        checks=checks, learning_curve=Markup(curve),
        sample_size_full_answer=r.sample_size.analysis.answer if r.sample_size is not None else "")
