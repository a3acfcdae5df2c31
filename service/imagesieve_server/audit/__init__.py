"""``imagesieve audit``: the whole quality picture of a dataset in one
resumable command. Stages: ``sources`` (what to read) -> ``embed`` (new or
changed images only, in-process, via a server, or on Ray) into ``store``
(sharded, memory-mapped) -> ``analyse`` (duplicates, leakage, outliers,
labels, sample size) -> ``report`` (HTML, JSON, Parquet, numpy)."""
