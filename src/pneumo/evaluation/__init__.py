"""Evaluation: metrics with patient-bootstrap confidence intervals, calibration, comparison, reports."""
