"""bench/readme_figures.py: every registered figure still maps onto a number
the README states, the registry lists, and one cheap benchmark (dedup at
5,000 vectors, ~5 s) runs through the script end to end."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "readme_figures.py"


@pytest.fixture(scope="module")
def rf():
    spec = importlib.util.spec_from_file_location("bench_readme_figures", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod      # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_every_figure_is_found_in_the_readme(rf):
    values = rf.readme_values((ROOT / "README.md").read_text(encoding="utf-8"))
    assert set(values) == {f.name for f in rf.FIGURES}
    missing = [name for name, v in values.items() if v is None]
    assert not missing, f"README no longer states these where bench/readme_figures.py looks: {missing}"
    # A few anchors, checked against what the README says next to them.
    assert values["dedup_pairs_50k"] == 5116      # "5,116 pairs": thousands separator handled
    assert values["soak_acked_lost"] == 0         # a zero is a value, not a miss
    assert values["samplesize_err_ours"] == 0.0021  # its own section's row, not the label table's


def test_figure_names_are_unique_and_readable(rf):
    names = [f.name for f in rf.FIGURES]
    assert len(names) == len(set(names))
    assert not set(names) & set(rf.BENCHES), "a figure and a bench share a name (--only would be ambiguous)"


def test_list_runs_nothing_and_exits_0(rf):
    r = run("--list", timeout=30)
    assert r.returncode == 0, r.stderr
    for f in rf.FIGURES:
        assert f.name in r.stdout


def test_unknown_name_is_misuse():
    r = run("--only", "no_such_figure", timeout=30)
    assert r.returncode == 2
    assert "no_such_figure" in r.stderr


def test_quick_dedup_end_to_end():
    r = run("--quick", "--only", "dedup_approx_recall_50k")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["quick"] is True
    fig = report["figures"]["dedup_approx_recall_50k"]
    assert fig["error"] is None, fig
    assert isinstance(fig["now"], float) and 0.9 <= fig["now"] <= 1.0
    assert fig["readme"] == pytest.approx(0.995)
    assert fig["ratio"] == pytest.approx(fig["now"] / fig["readme"], abs=1e-3)
    assert fig["stale"] is False and report["stale"] == [] and report["errors"] == []
    assert "QUICK RUN" in r.stdout
    assert "dedup: done" in r.stderr
