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

import json
import sys
from pathlib import Path

from pneumo.allocator import keep_freed_memory
from pneumo.card import model_card
from pneumo.evaluation.evaluate import select_images
from pneumo.export.onnx import export_onnx
from pneumo.inference.novelty import fit_novelty
from pneumo.models.bundle import carried_metadata, load_bundle, save_bundle

REPO = Path(__file__).resolve().parents[1]
SPLIT = REPO / "splits" / "internal.csv"
DATA = Path("../shared/datasets/chest_xray")


def add_novelty(folder: Path, data: Path = DATA, cache: Path = REPO / "cache") -> None:
    """Fit the novelty check of the model in ``folder`` and write it into its bundle, ONNX file, card and metrics."""
    bundle = load_bundle(folder)
    roles = {role: select_images(Path(data), size=bundle.size, cache_dir=Path(cache), role=role, split_file=SPLIT)[0]
             for role in ("train", "val")}
    novelty = fit_novelty(bundle.model, bundle.metadata["model_name"], roles["train"].images, roles["val"].images,
                          source=f"the train and val roles of {SPLIT.relative_to(REPO)}")
    save_bundle(bundle.path, bundle.model, model_name=bundle.metadata["model_name"], size=bundle.size,
                novelty=novelty, **carried_metadata(bundle.metadata))
    saved = load_bundle(bundle.path)
    export_onnx(saved, folder / "model.onnx")
    # The card's metrics: the model's metrics.json where it has one (the internal test evaluation, stress included).
    metrics = folder / "metrics.json"
    evaluation = json.loads(metrics.read_text()) if metrics.is_file() else None
    (folder / "MODEL_CARD.md").write_text(model_card(saved.metadata, sha256=saved.file_sha256, evaluation=evaluation))
    for measured in sorted(folder.glob("metrics*.json")):
        record = json.loads(measured.read_text())
        record["model_sha256"] = saved.file_sha256  # the same weights; the file now also carries the check
        measured.write_text(json.dumps(record, indent=1))
    print(f"{folder.name}: threshold {novelty.threshold:.3f}, {novelty.description['val_flagged']:.1%} of "
          f"{len(roles['val'])} validation images flagged", flush=True)


if __name__ == "__main__":
    keep_freed_memory()
    names = sys.argv[1:] or sorted(p.name for p in (REPO / "models").iterdir() if (p / "model.pt").is_file())
    for name in names:
        add_novelty(REPO / "models" / name)
