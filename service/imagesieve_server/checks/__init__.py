"""Checks: one module per question a dataset audit asks, each a pure
function of numpy arrays with one parameters type (validated when built)
and one result type (``base.CheckResult``). The audit runs every check
registered in ``CHECKS`` and its report renders any check's result, so a
new kind of issue is one new module here plus one line below.

Today: ``duplicates`` (exact and near: the one definition of "the same
picture"), ``leakage`` and ``label_conflicts`` (its pairs across splits and
with two labels), ``outliers`` (images far from all others) and
``image_properties`` (blurry, dark, bright, low information, grayscale in a
colour set, odd size or aspect), ``label_issues`` (likely wrong labels)
and ``sample_size`` (how many images reach a target accuracy). The audit
runs them all; the FindDuplicates, ScoreLabels and SampleSizeSweep jobs and
the ``labels`` and ``samplesize`` commands run theirs with the same Params.
``consensus`` (which label is right when several annotators disagree) is
run by the ``consensus`` command and the Consensus job; it is not
registered, since an audit's source holds one label an image. ``memo``
keeps a costly result beside the embeddings for later commands.
"""
from __future__ import annotations

from . import duplicates, image_properties, label_conflicts, label_issues, leakage, outliers, sample_size

#: name -> module with ``Params``, ``TITLE`` and ``from_inputs(base.CheckInputs, Params) -> CheckResult``,
#: in the order they run (a check may read the results of those before it) and the report shows them.
CHECKS = {m.NAME: m for m in (duplicates, leakage, label_conflicts, outliers, image_properties, label_issues,
                              sample_size)}
