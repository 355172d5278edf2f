"""Explanations of predictions (Grad-CAM)."""
