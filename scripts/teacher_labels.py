"""Write a teacher's labels file: its probabilities on the training role of splits/internal.csv.

    python scripts/teacher_labels.py TEACHER OUT.npz [--size 224]

TEACHER is anything ``distill.teacher`` takes (a shipped name, run folder or bundle). The file holds
the teacher's temperature-scaled probabilities by image content, with its id, weights hash and
temperature, exactly as a student would compute them; a recipe whose ``distill.teacher`` names the
file learns from it without the teacher's weights (``pneumo.training.distill``). ``--size`` is the
student's input size: the images are matched by content, and the teacher sees them at its own size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from common import CACHE, DATA, role

from pneumo.allocator import keep_freed_memory
from pneumo.training.distill import LABELS_SUFFIX, teacher_probabilities, write_teacher_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher")
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=224, help="the student's input size (default 224)")
    args = parser.parse_args()
    if args.out.suffix != LABELS_SUFFIX:
        parser.error(f"OUT must end in {LABELS_SUFFIX}, which is how a recipe tells a labels file from a model")
    train = role(args.size, "train")
    probabilities, description = teacher_probabilities(args.teacher, train, np.arange(len(train.labels)),
                                                       data_path=DATA, cache_dir=CACHE)
    write_teacher_labels(args.out, probabilities, train.sha256, description)
    print(f"{args.out}: {description['id']} on {len(train.labels)} training images")


if __name__ == "__main__":
    keep_freed_memory()  # ~3x faster PyTorch inference on a CPU (pneumo.allocator)
    main()
