"""Audit outputs: ``report.html`` (one self-contained file: thumbnails are
inline data URIs, charts inline SVG, nothing loads from outside),
``report.json`` and Parquet tables for machines, and ``pred_probs.npy`` /
``labels.npy`` to continue in cleanlab or elsewhere."""
from __future__ import annotations

import base64
import html
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
MAX_GROUPS, MAX_SUSPECTS, MAX_OUTLIERS, MAX_LEAKS = 30, 48, 24, 200
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


def _tile(path: str, *lines: str) -> str:
    caption = "".join(f"<div>{html.escape(t)}</div>" for t in lines)
    return (f'<figure><img src="{_thumb_uri(path)}" alt="{html.escape(Path(path).name)}" '
            f'title="{html.escape(path)}"><figcaption>{caption}</figcaption></figure>')


def _bar_chart(counts: dict[str, int], width: int = 640) -> str:
    """Class balance as an inline SVG bar chart."""
    items = sorted(counts.items(), key=lambda kv: -kv[1])[:40]
    if not items:
        return "<p>No images.</p>"
    top = max(v for _, v in items)
    row, label_w = 18, 160
    bars = []
    for i, (name, v) in enumerate(items):
        w = max(1, int((width - label_w - 60) * v / top))
        y = i * row
        bars.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{html.escape(name[:24])}</text>'
                    f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="{row - 6}" fill="#4a7bd0"/>'
                    f'<text x="{label_w + w + 4}" y="{y + 13}">{v}</text>')
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{len(items) * row}" '
            f'font-size="11" font-family="sans-serif">{"".join(bars)}</svg>')


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
    if r.outliers is not None:
        s["outliers"] = int(len(r.outliers))
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
    if r.outliers is not None:
        ok = r.ok_index
        doc["outliers"] = [{"path": r.paths[ok[i]], "score": float(r.outlier_score[i]),
                            "knn_similarity": float(r.knn_similarity[i])} for i in r.outliers.tolist()]
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


def _check_section(name: str, c: dict) -> str:
    """Any check's section: per kind of issue, why images were flagged and
    the worst of them as thumbnails."""
    e = html.escape
    parts = [f"<section id='{e(name)}' class='check'><h2>{e(c['title'])}</h2>",
             f"<p>{c['measured']} images measured.</p>", *(f"<p class='note'>{e(n)}</p>" for n in c["notes"])]
    for kind, f in c["issues"].items():
        parts.append(f"<h3>{e(f['description'])}: {f['count']}</h3><p class='note'>{e(f['reason'])}</p>")
        if f["count"]:
            shown = f["images"][:MAX_CHECK_TILES]
            parts.append(f"<p>Showing {len(shown)} of {f['count']}, worst first ({e(f['unit'])}).</p><div class='grid'>"
                         + "".join(_tile(x["path"], Path(x["path"]).name, f"{x['score']:.3g}") for x in shown)
                         + "</div>")
    parts.append("</section>")
    return "".join(parts)


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


CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px}
.card b{display:block;font-size:22px}.grid{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;width:120px;font-size:11px;word-break:break-all}figure img{width:112px;height:112px;object-fit:contain;background:#f4f4f4}
.group{border:1px solid #e3e3e3;border-radius:6px;padding:6px;margin:6px 0}.note{color:#8a5a00}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
"""

SCRIPT = """
window.auditErrors = [];
window.addEventListener('error', function (e) { window.auditErrors.push(String(e.message || e)); });
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-broken-images', String(broken.length));
  document.body.setAttribute('data-js-errors', String(window.auditErrors.length));
});
"""


def render_html(r: AuditResults, s: dict, doc: dict, source: str) -> str:
    e = html.escape
    cards = [("images", s["images"]), ("embedded", s["embedded"]), ("failed", s["failed"]),
             ("duplicate pairs", s.get("duplicate_pairs", "-")), ("exact", s.get("exact_pairs", "-")),
             ("groups", s.get("duplicate_groups", "-")), ("train/test leakage", s.get("leakage_pairs", "-")),
             ("label suspects", s.get("label_suspects", "-")), ("outliers", s.get("outliers", "-")),
             *((r.checks[n].title.lower() + ": images flagged", r.checks[n].flagged) for n in r.checks)]
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>imagesieve audit</title>"
             f"<style>{CSS}</style><script>{SCRIPT}</script></head><body>",
             f"<h1>imagesieve audit</h1><p>{e(source)}</p>",
             "<section id='summary'><h2>Summary</h2><div class='cards'>"
             + "".join(f"<div class='card'><b>{e(str(v))}</b>{e(k)}</div>" for k, v in cards) + "</div>"]
    if "sample_size_answer" in s:
        parts.append(f"<p><b>How many images:</b> {e(s['sample_size_answer'])}</p>")
    if "estimated_label_noise_rate" in s:
        parts.append(f"<p>Estimated share of wrong labels: {s['estimated_label_noise_rate']:.1%}</p>")
    parts += [f"<p class='note'>{e(n)}</p>" for n in r.notes]
    parts.append("</section>")

    totals: dict[str, int] = {}
    for per in r.class_counts.values():
        for k, v in per.items():
            totals[k] = totals.get(k, 0) + v
    rows = "".join(f"<tr><th>{e(split)}</th><td>{sum(c.values())}</td></tr>" for split, c in r.class_counts.items())
    parts.append(f"<section id='balance'><h2>Class balance</h2>{_bar_chart(totals)}"
                 f"<table><tr><th>split</th><th>images</th></tr>{rows}</table></section>")

    parts.append("<section id='duplicates'><h2>Duplicate groups</h2>")
    d = r.duplicates
    if d is not None:
        how = ("every two members were verified as the same picture (stage 2: their layouts align)"
               if d.method == "verified" else f"every two members have cosine >= {r.threshold:.2f}")
        parts.append(f"<p>Method: {e(d.method)}; threshold {e(d.threshold_reason)}.</p>")
        parts += [f"<p class='note'>{e(w)}</p>" for w in d.warnings]
    if d is not None and d.groups:
        parts.append(f"<p>{len(d.groups)} groups; {how} (lowest cosine shown per group). "
                     f"Showing {min(len(d.groups), MAX_GROUPS)}.</p>")
        order = sorted(range(len(d.groups)), key=lambda g: -len(d.groups[g]))[:MAX_GROUPS]
        for g in order:
            members = d.groups[g].tolist()
            tiles = "".join(_tile(d.keys[i], Path(d.keys[i]).name, r.labels[r.ok_index[i]] or "")
                            for i in members[:8])
            parts.append(f"<div class='group'><div>group of {len(members)}, lowest cosine "
                         f"{d.group_min_cosine[g]:.3f}</div><div class='grid'>{tiles}</div></div>")
    else:
        parts.append("<p>No duplicates at this threshold.</p>")
    parts.append("</section>")

    parts.append("<section id='leakage'><h2>Train/test leakage</h2>")
    leaks = doc.get("leakage_pairs", [])
    if leaks:
        parts.append("<table><tr><th>a</th><th>b</th><th>cosine</th></tr>" + "".join(
            f"<tr><td>{e(x['a'])}</td><td>{e(x['b'])}</td><td>{x['cosine']:.3f}</td></tr>" for x in leaks)
            + "</table>")
    else:
        parts.append("<p>No duplicate pair crosses splits.</p>")
    parts.append("</section>")

    parts.append("<section id='labels'><h2>Label suspects</h2>")
    if r.label_scores is not None and len(r.label_scores.suspects):
        parts.append("<div class='grid'>" + "".join(
            _tile(x["path"], f"given: {x['given']}", f"suggested: {x['suggested']} {x['suggested_probability']:.2f}",
                  f"score {x['score']:.3f}") for x in doc["label_suspects"][:MAX_SUSPECTS]) + "</div>")
    else:
        parts.append("<p>Label scoring did not run (see the notes above).</p>")
    parts.append("</section>")

    parts.append("<section id='outliers'><h2>Outliers</h2>")
    if doc.get("outliers"):
        parts.append("<div class='grid'>" + "".join(
            _tile(x["path"], f"kNN cosine {x['knn_similarity']:.3f}", f"z {x['score']:.1f}")
            for x in doc["outliers"][:MAX_OUTLIERS]) + "</div>")
    else:
        parts.append("<p>No image is unusually far from all others.</p>")
    parts.append("</section>")

    parts += [_check_section(name, c) for name, c in doc.get("checks", {}).items()]

    parts.append("<section id='learning-curve'><h2>How many images are enough</h2>")
    if r.sample_size is not None:
        svg = r.sample_size.plot_svg
        svg = svg[svg.find("<svg"):]                     # drop the XML prolog and doctype
        parts.append(f"<div class='plot'>{svg}</div><p>{e(r.sample_size.analysis.answer)}</p>")
    else:
        parts.append("<p>The sample-size sweep did not run (see the notes above).</p>")
    parts.append("</section></body></html>")
    return "\n".join(parts)
