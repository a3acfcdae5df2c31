"""report.json is written with its long lists streamed item by item: it must
still be exactly the JSON document the same dict would give."""
from __future__ import annotations

import json

from imagesieve_server.audit.report import write_json_streaming


def test_streamed_json_equals_the_whole_document(tmp_path):
    doc = {"source": "/data/ü", "summary": {"images": 3, "notes": ["a\nb"], "rate": 0.5}, "files": []}
    groups = [{"paths": ["/x/1.jpg", "/x/2.jpg"], "min_internal_cosine": 0.91}, {"paths": ["/y"], "min_internal_cosine": 1.0}]
    write_json_streaming(tmp_path / "r.json", doc, {"duplicate_groups": lambda: iter(groups),
                                                    "leakage_pairs": lambda: iter(())})
    assert json.loads((tmp_path / "r.json").read_text()) == {**doc, "duplicate_groups": groups, "leakage_pairs": []}
    write_json_streaming(tmp_path / "plain.json", doc, {})
    assert json.loads((tmp_path / "plain.json").read_text()) == doc


def test_class_balance_chart_takes_any_class_name():
    """Class names are text: a dollar sign is not mathtext (one crashed the
    report after every analysis had run), and two long names cut alike
    stay two bars."""
    from imagesieve_server.audit.report import _bar_chart
    names = {"a$\\frac$": 3, "$5 and $10": 2, "x" * 30 + "1": 1, "x" * 30 + "2": 4}
    svg = _bar_chart(names)
    assert svg.startswith("<svg") and svg.count("#4a7bd0") == 4
    assert _bar_chart({}) == ""
