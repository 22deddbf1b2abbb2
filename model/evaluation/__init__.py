"""Evaluation: melody and prediction metrics, the n-gram reference, the evaluation report and
cross-validation by folds. The top floor of ``model/`` below its command line."""
