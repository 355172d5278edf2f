"""pneumo: pediatric chest X-ray classification into normal, bacterial and viral pneumonia.

Research software, not a diagnostic device.
"""

__version__ = "0.1.0"

DISCLAIMER = "Research software, not a diagnostic device: do not use for clinical decisions."


def load(model=None, **options):
    """Load a model: a shipped name, a run folder, a bundle or an .onnx file; see ``pneumo.api.load``.

    >>> model = pneumo.load()  # the default, pneumo-ensemble; or "pneumo-mobilenet", a run folder, ...
    >>> model.predict("xray.jpeg").reason
    """
    from pneumo.api import load as load_model  # torch and friends load here, not on ``import pneumo``

    return load_model(model, **options)
