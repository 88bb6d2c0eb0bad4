"""Evaluation protocols: patient-grouped splits, per-fold training and metrics, and whole task runs."""
