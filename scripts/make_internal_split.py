"""Make the fixed internal split of the shared training data (splits/internal.csv).

The archive's test split is held back and scored blind, so model choices and the figures in
the README use this split instead: 1/6 of the patients (>= 15%) as an internal test set,
never used for any choice; 20% of the remaining patients as validation; the rest train.
Patient-grouped and class-stratified. Rerunning it reproduces the file exactly.

    python scripts/make_internal_split.py ../shared/datasets/chest_xray
"""

import sys
from pathlib import Path

from pneumo.data.cache import prepare_folder
from pneumo.data.splits import make_split, save_split

SEED = 2026
HOLDOUT = 1 / 6


def main(data: str) -> None:
    prepared = prepare_folder(Path(data), size=128, cache_dir=Path("cache")).data
    split = make_split(prepared, method="grouped", val_fraction=0.2, holdout=HOLDOUT, seed=SEED)
    out = Path(__file__).resolve().parents[1] / "splits" / "internal.csv"
    save_split(out, split, prepared)
    for role, counts in split.counts(prepared.labels).items():
        print(role, counts, len(set(prepared.patients[split.roles == role])), "patients")
    print("patient overlap", split.patient_overlap(prepared.patients))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/chest_xray")
