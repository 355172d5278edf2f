"""Give each shipped model its novelty check, leaving its weights, calibration and measured figures as they are.

    python scripts/add_novelty.py [NAME...]     # default: every model under models/

For each model the check is fitted as ``pneumo train`` and ``pneumo calibrate`` fit it
(``fit_novelty``: the training role of splits/internal.csv, threshold on its validation role at
a 1% false-alarm rate); the bundle is saved with it, the ONNX file exported again, the card
rewritten and the metrics files pointed at the new bundle (the weights they measured are the
same). The internal test role is not used: ``novelty_study.py`` measures the check afterwards.
``finalize_shipped.py`` and ``finalize_ensemble.py`` end by calling ``add_novelty``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from common import CACHE, DATA, MODELS, REPO, SPLIT, refit_shipped, shipped

from pneumo.allocator import keep_freed_memory
from pneumo.evaluation.evaluate import select_images
from pneumo.inference.novelty import fit_novelty
from pneumo.models.bundle import load_bundle


def add_novelty(folder: Path, data: Path = DATA, cache: Path = CACHE) -> None:
    """Fit the novelty check of the model in ``folder`` and write it into its bundle, ONNX file, card and metrics."""
    bundle = load_bundle(folder)
    roles = {role: select_images(Path(data), size=bundle.size, cache_dir=Path(cache), role=role, split_file=SPLIT)[0]
             for role in ("train", "val")}
    novelty = fit_novelty(bundle.model, bundle.metadata["model_name"], roles["train"].images, roles["val"].images,
                          source=f"the train and val roles of {SPLIT.relative_to(REPO)}")
    refit_shipped(bundle, novelty=novelty)
    print(f"{folder.name}: threshold {novelty.threshold:.3f}, {novelty.description['val_flagged']:.1%} of "
          f"{len(roles['val'])} validation images flagged", flush=True)


if __name__ == "__main__":
    keep_freed_memory()
    for name in sys.argv[1:] or shipped():
        add_novelty(MODELS / name)
