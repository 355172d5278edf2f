"""The nested training configuration: sections, flat option names, old flat files, and refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pneumo.config import FLAT, SECTIONS, TrainConfig, flat_config
from pneumo.models.info import ModelInfo

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_study_protocol():
    config = TrainConfig()
    assert (config.model.name, config.data.size, config.optim.epochs, config.optim.batch_size, config.optim.lr,
            config.optim.optimizer) == ("cnn", 128, 100, 32, 1e-3, "adam")
    assert (config.augment.rotation, config.augment.shift, config.augment.zoom) == (10.0, 0.1, 0.1)


def test_flat_names_reach_their_sections_and_none_means_unchanged():
    config = TrainConfig().replace(model="mobilenet_v2", data="somewhere", lr=0.01, zoom=0.2, precision="bf16-mixed",
                                   split_seed=7, epochs=None)
    assert (config.model.name, config.data.path, config.optim.lr, config.augment.zoom, config.hardware.precision,
            config.data.split_seed, config.optim.epochs) == ("mobilenet_v2", "somewhere", 0.01, 0.2, "bf16-mixed",
                                                             7, 100)
    assert TrainConfig().flat()["data"] == "data/chest_xray"
    # Every field of every section has exactly one flat name, and each flat name reaches its own field.
    section_fields = {(name, f.name) for name, kind in SECTIONS.items() for f in dataclasses.fields(kind)}
    assert set(FLAT.values()) == section_fields and len(FLAT) == len(section_fields)
    distilled = TrainConfig().replace(teacher="pneumo-ensemble", distill_weight=0.5, distill_temperature=3.0)
    assert (distilled.distill.teacher, distilled.distill.weight, distilled.distill.temperature) == (
        "pneumo-ensemble", 0.5, 3.0)


def test_nested_and_flat_files_load_the_same(tmp_path):
    config = TrainConfig().replace(model="mobilenet_v2", lr=0.02, noise=0.05, devices="2", tags={"who": "test"})
    config.save(tmp_path / "config.yaml")
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert written["optim"]["lr"] == 0.02 and written["model"]["name"] == "mobilenet_v2"  # nested on disk
    assert TrainConfig.from_yaml(tmp_path / "config.yaml") == config
    (tmp_path / "flat.yaml").write_text(yaml.safe_dump(config.flat()))  # as older runs and presets write it
    assert TrainConfig.from_yaml(tmp_path / "flat.yaml") == config
    assert flat_config(config.to_dict()) == config.flat()


@pytest.mark.parametrize("preset", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_load(preset, shared_weights):  # a preset names the shared ImageNet weights
    config = TrainConfig.from_yaml(preset)
    assert config.data.split_file == "splits/internal.csv"


@pytest.mark.parametrize("changes, message", [
    ({"zoom": 2.0}, "The augmentation 'zoom' must be < 1. Got 2.0 instead."),
    ({"model": "resnet-18"}, "Unknown model 'resnet-18'. Did you mean 'resnet18'?"),
    ({"val_fraction": 0.9}, "The 'val_fraction' option must be in (0, 0.5]. Got 0.9 instead."),
    ({"num_nodes": 0}, "The 'num_nodes' option must be at least 1. Got 0 instead."),
    ({"learning_rate": 0.1}, "Unknown configuration keys ['learning_rate']"),
])
def test_bad_values_are_refused_by_name(changes, message):
    with pytest.raises(ValueError) as error:
        TrainConfig().replace(**changes)
    assert message in str(error.value)


def test_unknown_option_inside_a_section_is_refused():
    with pytest.raises(ValueError, match=r"Unknown options \['lrate'\] in section 'optim'"):
        TrainConfig.from_dict({"optim": {"lrate": 0.1}})


def test_recorded_configs_read_flat_whether_nested_or_not():
    nested = TrainConfig().replace(split_file="splits/x.csv", seed=3).to_dict()
    metadata = {"model_name": "cnn", "classes": ["a", "b", "c"], "preprocessing": {"size": 64},
                "training": {"config": nested}}
    assert ModelInfo.of(metadata).training_config["split_file"] == "splits/x.csv"
    metadata["training"]["config"] = {"split_file": "splits/y.csv", "seed": 3}  # an older, flat record
    assert ModelInfo.of(metadata).training_config == {"split_file": "splits/y.csv", "seed": 3}
