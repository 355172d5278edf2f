"""Write a teacher's labels file: its probabilities on the training role of splits/internal.csv.

    python scripts/teacher_labels.py TEACHER OUT.npz

TEACHER is anything ``distill.teacher`` takes (a shipped name, run folder or bundle). The file holds
the teacher's temperature-scaled probabilities by image content, with its id, weights hash and
temperature, exactly as a student would compute them; a recipe whose ``distill.teacher`` names the
file learns from it without the teacher's weights (``pneumo.training.distill``). Students find their
images in it by content, whatever their input size; the teacher sees them at its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from common import CACHE, DATA, role

from pneumo.allocator import keep_freed_memory
from pneumo.training.distill import LABELS_SUFFIX, is_labels_file, teacher_probabilities, write_teacher_labels

SIZE = 224  # any prepared size will do: the rows are matched by content


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    if not is_labels_file(args.out):
        parser.error(f"OUT must end in {LABELS_SUFFIX}, which is how a recipe tells a labels file from a model")
    if is_labels_file(args.teacher):
        parser.error(f"{args.teacher} is a labels file already; TEACHER is the model that labels")
    train = role(SIZE, "train")
    probabilities, description = teacher_probabilities(args.teacher, train, np.arange(len(train.labels)),
                                                       data_path=DATA, cache_dir=CACHE)
    write_teacher_labels(args.out, probabilities, train.sha256, description)
    print(f"{args.out}: {description['id']} on {len(train.labels)} training images")


if __name__ == "__main__":
    keep_freed_memory()  # ~3x faster PyTorch inference on a CPU (pneumo.allocator)
    main()
