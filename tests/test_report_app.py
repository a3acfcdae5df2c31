"""The audit report as an offline web app, at a size where lists page:
generated findings over real image files (``bench/report.py``'s), written
by the audit's own ``write_report`` and driven in headless Chromium through
the page's address: pages, filters by class and split, path search,
groups whose every member is reachable, and no list in report.json."""
import importlib.util
import json
import re
from pathlib import Path

import pytest

from test_audit import chromium_dom, list_box

spec = importlib.util.spec_from_file_location("bench_report", Path(__file__).parent.parent / "bench" / "report.py")
bench_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_report)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from imagesieve_server.audit.report import write_report
    tmp = tmp_path_factory.mktemp("report")
    paths = bench_report.make_files(tmp / "images", 1500)
    r = bench_report.findings(paths, 700)
    write_report(r, tmp / "out", str(tmp / "images"))
    return tmp / "out", r


def total(box: str) -> int:
    return int(re.search(r'data-total="(\d+)"', box).group(1))


def test_lists_page_worst_first(report, tmp_path):
    out, r = report
    near = r.checks["duplicates"].issues["near"]
    assert near.count > 150
    url = (out / "report.html").as_uri()
    dom, attrs, console = chromium_dom(url + "#list=duplicates.near&page=3", tmp_path / "a")
    assert attrs["ready"] == "1" and attrs["js-errors"] == "0" and console == [], (attrs, console)
    box = list_box(dom, "duplicates.near")
    assert f"showing 101–150 of {near.count}" in box and total(box) == near.count
    # Page 3 shows rows 100..149 of the list as written: most alike first.
    names = re.findall(r'<img[^>]* alt="([^"]+)"', box)
    want = [Path(r.paths[int(x)]).name for k in range(100, 150) for x in (near.a[k], near.b[k])]
    assert names == want
    assert list(near.scores) == sorted(near.scores, reverse=True)
    doc = json.loads((out / "report.json").read_text())
    assert len(doc["checks"]["duplicates"]["issues"]["near"]["pairs"]) == 100      # the top; the rest in pages
    assert "leakage_pairs" not in doc and "duplicate_groups" not in doc
    assert (out / "report.json").stat().st_size < 1_000_000


def test_filters_and_search_reach_every_row(report, tmp_path):
    out, r = report
    leak = r.checks["leakage"].issues["cross_split"]
    url = (out / "report.html").as_uri()
    want = sum(1 for a, b in zip(leak.a, leak.b) if "class3" in (r.labels[a], r.labels[b]))
    dom, attrs, _ = chromium_dom(url + "#list=leakage.cross_split&label=class3&page=2", tmp_path / "b")
    box = list_box(dom, "leakage.cross_split")
    assert total(box) == want and f"(filtered from {leak.count})" in box
    shown = min(50, max(0, want - 50))
    assert box.count('class="pair"') == shown
    # Search by path: one image's rows, whichever list they are on the pages of.
    target = r.paths[int(leak.a[-1])]
    name = Path(target).name
    hits = sum(1 for a, b in zip(leak.a, leak.b) if name in (Path(r.paths[a]).name, Path(r.paths[b]).name))
    dom, attrs, _ = chromium_dom(url + f"#list=leakage.cross_split&q={name}", tmp_path / "c")
    box = list_box(dom, "leakage.cross_split")
    assert total(box) == hits >= 1 and name in box and attrs["js-errors"] == "0"
    # A score range and a split together.
    dom, _, _ = chromium_dom(url + "#list=duplicates.near&split=test&min=0.9&max=0.95", tmp_path / "d")
    near = r.checks["duplicates"].issues["near"]
    want = sum(1 for a, b, v in zip(near.a, near.b, near.scores)
               if 0.9 <= v <= 0.95 and "test" in (r.splits[a], r.splits[b]))
    assert total(list_box(dom, "duplicates.near")) == want


def test_groups_show_every_member(report, tmp_path):
    out, r = report
    d = r.duplicates
    sizes = sorted(len(g) for g in d.groups)
    assert sizes[-1] > 12                       # a group larger than the first view of one
    dom, attrs, _ = chromium_dom((out / "report.html").as_uri(), tmp_path / "e")
    box = list_box(dom, "groups")
    assert total(box) == len(d.groups)
    assert "show all" in box or all(len(g) <= 12 for g in d.groups[:50])
    rows = []
    for k in range((len(d.groups) + 49) // 50):
        rows += json.loads(re.search(r"reportPage\(\"groups\",\d+,(.*)\);", (out / "report_data" / "groups" /
                                                                           f"{k}.js").read_text()).group(1))
    assert sorted(row["n"] for row in rows) == sizes and all(len(row["m"]) == row["n"] for row in rows)
