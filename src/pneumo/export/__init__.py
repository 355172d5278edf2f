"""Exports of model bundles to other runtimes."""
