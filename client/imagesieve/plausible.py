"""When a duplicate verdict covers an implausible share of the images.

Shared by the server's duplicate analyses (``find_duplicates``: the share of
images in some near-duplicate pair) and the client's ``check`` (the share of
a run's images judged near duplicates of the collection): verification can
pair different pictures of one template (playing cards of one deck, forms,
icons on one base), and an ingestion gate that turns many images away must
say so rather than drop them quietly."""
from __future__ import annotations

#: Near-duplicate verdicts covering more than this share of the images (of at
#: least COVERAGE_MIN_IMAGES) get a warning.
PLAUSIBLE_COVERAGE = 0.10
COVERAGE_MIN_IMAGES = 50


def implausible(near: int, total: int) -> bool:
    """Whether ``near`` of ``total`` images in near-duplicate verdicts is
    more than a collection plausibly holds (counts, >= 0)."""
    if near < 0 or total < 0:
        raise ValueError(f"counts must be >= 0, got near={near}, total={total}")
    return total >= COVERAGE_MIN_IMAGES and near > PLAUSIBLE_COVERAGE * total
