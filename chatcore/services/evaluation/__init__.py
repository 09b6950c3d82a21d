"""Evaluation: test sets, scorers, runs on one or more models, reports with intervals, and the blind arena."""
