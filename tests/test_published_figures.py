"""The figures the project publishes are the measured ones: README.md and benchmarks/accuracy.md
agree with what scripts/finalize_shipped.py and scripts/lever_table.py wrote into models/."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.parent for p in (REPO / "models").glob("*/metrics.json"))


def load_script(name: str):
    """A script of scripts/ as a module (its sibling ``common`` importable, as when it is run)."""
    if str(REPO / "scripts") not in sys.path:
        sys.path.insert(0, str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_shipped_models():
    assert {p.name for p in SHIPPED} == {"pneumo-cnn", "pneumo-ensemble", "pneumo-mobilenet"}


def test_accuracy_md_is_exactly_what_the_report_script_writes():
    written = (REPO / "benchmarks" / "accuracy.md").read_text()
    assert written == load_script("accuracy_report").render(), "rerun: python scripts/accuracy_report.py"


def test_robustness_md_is_exactly_what_the_report_script_writes():
    written = (REPO / "benchmarks" / "robustness.md").read_text()
    assert written == load_script("robustness_report").render(), "rerun: python scripts/robustness_report.py"


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_readme_results_row_is_the_shipped_metrics(folder):
    row = load_script("robustness_report").readme_row(folder.name, json.loads((folder / "metrics.json").read_text()))
    assert row in (REPO / "README.md").read_text()


def test_a_combined_lever_is_compared_with_the_lever_it_builds_on():
    reference_of = load_script("lever_table").reference_of
    levers = ["baseline", "mixup", "size-224", "size-224-stronger-augmentation", "stronger-augmentation"]
    assert reference_of("size-224-stronger-augmentation", levers) == "size-224"
    assert reference_of("stronger-augmentation", levers) == "baseline"
    assert reference_of("size-224", levers) == "baseline"
