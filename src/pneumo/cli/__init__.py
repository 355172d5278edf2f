"""The ``pneumo`` command line: parses options, calls the library, prints the results.

    base         the app, its error handler, shared options
    data         organize, prepare, show-data, audit, show-augment
    training     train, experiment epochs
    evaluation   evaluate, compare, report
    predicting   predict, results, send, serve
    models       calibrate, adapt, ensemble, export, card
"""

import sys

from pneumo.cli.base import app, mismatched_torch

try:  # each module registers its commands; training's flags import the configuration, and with it torchvision
    from pneumo.cli import data, evaluation, models, predicting, training  # noqa: F401
except RuntimeError as error:  # a torch and torchvision from different builds fail as torchvision loads
    if "torchvision::" not in str(error):
        raise
    print(f"error: {mismatched_torch(str(error))}", file=sys.stderr)
    raise SystemExit(2) from None

__all__ = ["app"]
