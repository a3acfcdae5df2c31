"""Checks: one module per question a dataset audit asks, each a pure
function of numpy arrays with one parameters type (validated when built)
and one result type (``base.CheckResult``). The audit runs every check
registered in ``CHECKS`` and its report renders any check's result, so a
new kind of issue is one new module here plus one line below.

Today: ``outliers`` (images far from all others) and ``image_properties``
(blurry, dark, bright, low information, grayscale in a colour set, odd size
or aspect). Duplicates, leakage, label issues and sample size still run
from ``audit.analyse`` (issue: one checks layer for gRPC, CLI and audit).
"""
from __future__ import annotations

from . import image_properties, outliers

#: name -> module with ``Params``, ``TITLE`` and ``from_inputs(base.CheckInputs, Params) -> CheckResult``,
#: in the report's order.
CHECKS = {outliers.NAME: outliers, image_properties.NAME: image_properties}
