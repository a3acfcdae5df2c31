"""The defaults that more than one front-end shows (the audit, the commands,
the gRPC jobs), in one place and free of heavy imports, so a command's
``--help`` can name them without loading the analyses."""

#: Label scoring's classifier on the embeddings (``labels``, the ScoreLabels
#: job, the audit): shrunk LDA fits from sufficient statistics (no copies of
#: the vectors, one pass a fit) and ranked mislabels best (analysis.labels.score).
LABELS_CLASSIFIER = "lda"
#: The sample-size sweep's classifier wherever a sweep runs (``samplesize``,
#: the SampleSizeSweep job, the audit): logistic regression keeps gaining
#: with more images where a linear discriminant saturates early and
#: understates the gain (README, "How many images").
SWEEP_CLASSIFIER = "logreg"
#: Training images above which the audit's sweep uses LABELS_CLASSIFIER
#: instead, and says so: logistic regression on 100k+ 1024-d vectors costs
#: GBs (a float64 copy) and minutes a fit.
LARGE_SWEEP = 50_000
#: The consensus model's classifier (``consensus``, the Consensus job):
#: out-of-fold logistic regression on the embeddings, trained on the
#: majority vote; calibrated probabilities are what Dawid-Skene's prior and
#: CROWDLAB's weighting need.
CONSENSUS_CLASSIFIER = "logreg"
