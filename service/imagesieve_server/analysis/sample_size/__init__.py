"""How many images are enough: sample-size sweeps and learning-curve fits.

- ``sweep.run_sweep``: train a classifier on growing stratified subsets,
  accuracy on an independent test split (per size: repeats, per class).
- ``curves``: the Keras power law ``a*x^b``, the inverse power law
  ``a - b*x^(-c)`` and the exponential approach ``a - b*exp(-c*x)``; fitting,
  inversion (images for a target), ceilings.
- ``select.select_fit``: pick the family by error at the largest, held-back size.
- ``bootstrap``: resample repeats per size and test images, refit -> interval.
- ``analyse.analyse``: all of the above -> images for a target, accuracy at sizes.
- ``plot.plot_learning_curve``: PNG bytes and SVG text.
"""
from .analyse import SampleSizeAnalysis, analyse
from .bootstrap import BootstrapResult, bootstrap, percentile_interval
from .curves import FAMILIES, CurveFit, ceiling, evaluate, fit_curve, images_for_target
from .select import Selection, select_fit, summarize
from ..defaults import LARGE_SWEEP
from .sweep import DEFAULT_CLASSIFIER, DEFAULT_FRACTIONS, DEFAULT_REPEATS, SweepResult, run_sweep

__all__ = ["SampleSizeAnalysis", "analyse", "BootstrapResult", "bootstrap", "percentile_interval",
           "FAMILIES", "CurveFit", "ceiling", "evaluate", "fit_curve", "images_for_target",
           "Selection", "select_fit", "summarize", "DEFAULT_CLASSIFIER", "DEFAULT_FRACTIONS", "DEFAULT_REPEATS",
           "LARGE_SWEEP",
           "SweepResult", "run_sweep"]
