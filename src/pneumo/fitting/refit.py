"""``refit_bundle``: the one way a bundle is rewritten after something was fitted to it.

Whatever changes (temperature, operating point, conformal scores, novelty check, BatchNorm statistics,
a site's calibration), the same steps follow: save the bundle with its carried-over metadata, load it
back (which checks its hashes), export the ONNX graph again when there is one (so that the two stay a
pair), and render the card again when there is one. A new ``out`` folder gets all three.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from pneumo.card import model_card
from pneumo.export.onnx import export_onnx
from pneumo.files import atomic_write
from pneumo.models.novelty import Novelty
from pneumo.models.bundle import BUNDLE_NAME, Bundle, carried_metadata, load_bundle, save_bundle

__all__ = ["CARD_NAME", "KEEP", "refit_bundle"]

CARD_NAME = "MODEL_CARD.md"
KEEP = object()  # novelty=KEEP: the bundle keeps the novelty check it has


def refit_bundle(bundle: Bundle, *, out: Path | None = None, model: nn.Module | None = None,
                 novelty: Novelty | None | object = KEEP, drop: tuple[str, ...] = (),
                 card_evaluation: dict | None = None, card_external: dict | None = None, **changes: Any) -> Bundle:
    """Write ``bundle`` with ``changes`` to its metadata, in place or into the new folder ``out``; returns it loaded.

    Args:
        bundle: the loaded bundle to refit.
        out: a new folder for model.pt, model.onnx and MODEL_CARD.md; None rewrites the bundle where it is (and
            its ONNX export and card beside it, where they exist).
        model: new weights (e.g. adapted BatchNorm statistics); None keeps the bundle's.
        novelty: the novelty check to carry: KEEP (the bundle's own), a new one, or None (none).
        drop: metadata keys to remove (e.g. an evaluation the change makes stale).
        card_evaluation: measured figures for the card (an ``evaluate`` metrics dict); None: the bundle's own
            ``evaluation``, if any.
        card_external: figures measured outside this repository for the card (``card.external_lines``).
        **changes: metadata to set (``temperature=...``, ``operating_point={...}``, ``conformal={...}``).

    Raises:
        ValueError: a novelty check fitted on other weights than those saved.
    """
    folder = Path(out) if out is not None else bundle.path.parent
    target = folder / BUNDLE_NAME if out is not None else bundle.path
    onnx_file, card_file = folder / "model.onnx", folder / CARD_NAME
    # What sits beside the bundle now, before it changes: a refit in place keeps its companions up to date.
    export = out is not None or onnx_file.is_file()
    card = out is not None or card_file.is_file()
    metadata = {key: value for key, value in carried_metadata(bundle.metadata).items() if key not in drop}
    metadata.update(changes)
    save_bundle(target, model if model is not None else bundle.model, model_name=bundle.info.model_name,
                size=bundle.size, novelty=bundle.novelty if novelty is KEEP else novelty, **metadata)
    written = load_bundle(target)
    if export:
        export_onnx(written, onnx_file)
    if card:
        atomic_write(card_file, model_card(written.metadata, sha256=written.file_sha256,
                                                  evaluation=card_evaluation, external=card_external))
    return written
