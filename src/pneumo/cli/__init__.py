"""The ``pneumo`` command line: parses options, calls the library, prints the results.

    base         the app, its error handler, shared options
    data         organize, prepare, show-data, audit, show-augment
    training     train, experiment epochs
    evaluation   evaluate, compare, report
    predicting   predict, results, send, serve
    models       calibrate, adapt, ensemble, export, card
"""

from pneumo.cli import data, evaluation, models, predicting, training  # noqa: F401  (each registers its commands)
from pneumo.cli.base import app

__all__ = ["app"]
