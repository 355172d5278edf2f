"""Export a model bundle to ONNX, with the bundle's metadata inside the file.

The graph takes ``image``: float32 (batch, 1, S, S) in [0, 1] and returns ``logits``
(batch, classes) and, where the bundle has a novelty check, ``novelty`` (batch,); the batch
axis is dynamic. The metadata (classes, preprocessing,
temperature, operating point, weights hash) is stored as the ``pneumo`` metadata property,
so an ``.onnx`` file is usable on its own.

Everything that decides an answer is sealed by one hash (``onnx_sha256``): the whole graph (nodes and
weights) and the metadata (temperature, operating point, conformal scores, ...). A file whose graph or
metadata changed after export is refused. An in-file hash detects damage and careless edits, not a
deliberate forgery, which can recompute it: to be sure a deployment runs the file it was given, pin the
file's own sha256 (``--model-sha256``).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import onnx
import onnx.numpy_helper
import torch

from pneumo.errors import ModelFileError
from pneumo.files import atomic_path
from pneumo.models.novelty import ScoredModel
from pneumo.models.bundle import Bundle

OPSET = 17
METADATA_KEY = "pneumo"


def export_onnx(bundle: Bundle, out: str | Path) -> Path:
    """Write ``bundle`` as ONNX to ``out`` (atomically) and return the path."""
    out = Path(out)
    model = bundle.model.eval() if bundle.novelty is None else ScoredModel(bundle.model, bundle.novelty).eval()
    example = torch.rand(2, 1, bundle.size, bundle.size)
    with atomic_path(out) as temporary:
        _export(model, example, temporary, bundle)
    return out


def export_graph(model, example: torch.Tensor, path: Path, outputs: list[str]) -> None:
    """The bare graph of ``model`` at ``path``: input ``image``, the named outputs, a dynamic batch axis."""
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but needs no onnxscript and handles these CNNs exactly.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            model, (example,), str(path), input_names=["image"], output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in ["image", *outputs]}, opset_version=OPSET, dynamo=False,
        )


def _export(model, example: torch.Tensor, temporary: Path, bundle: Bundle) -> None:
    """The graph with the bundle's metadata, checked, written to ``temporary``."""
    export_graph(model, example, temporary, ["logits"] if bundle.novelty is None else ["logits", "novelty"])
    graph = onnx.load(str(temporary))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(dict(bundle.metadata, source_bundle_sha256=bundle.file_sha256))
    graph.doc_string = f"pneumo {bundle.metadata['model_name']}: research software, not a diagnostic device"
    onnx.checker.check_model(graph)
    seal(graph)
    onnx.save(graph, str(temporary))


def content_sha256(graph: onnx.ModelProto, metadata: dict) -> str:
    """The hash of what decides an answer: the whole model (graph, weights, opsets, functions) but its metadata
    entries, and the pneumo metadata less the hashes themselves."""
    bare = onnx.ModelProto()
    bare.CopyFrom(graph)
    del bare.metadata_props[:]
    digest = hashlib.sha256(bare.SerializeToString())
    unsealed = {key: value for key, value in metadata.items() if key not in ("onnx_sha256", "onnx_weights_sha256")}
    digest.update(json.dumps(unsealed, sort_keys=True).encode())
    return digest.hexdigest()


def seal(graph: onnx.ModelProto) -> None:
    """Record, in the graph's pneumo metadata, the hashes that ``read_onnx_metadata`` checks."""
    entry = next(e for e in graph.metadata_props if e.key == METADATA_KEY)
    metadata = json.loads(entry.value)
    metadata["onnx_weights_sha256"] = initializers_sha256(graph)
    metadata["onnx_sha256"] = content_sha256(graph, metadata)
    entry.value = json.dumps(metadata)


def initializers_sha256(graph: onnx.ModelProto) -> str:
    """A hash of an ONNX graph's weights (initializer names, shapes, types and bytes), in name order."""
    digest = hashlib.sha256()
    for tensor in sorted(graph.graph.initializer, key=lambda t: t.name):
        array = onnx.numpy_helper.to_array(tensor)
        digest.update(f"{tensor.name}:{array.shape}:{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def read_onnx_metadata(path: str | Path, *, verify: bool = True) -> dict:
    """The pneumo metadata stored in an exported ONNX file, its weights checked against the hash recorded there.

    Raises:
        ModelFileError: unreadable, no pneumo metadata, or (with ``verify``) weights that differ
            from those exported.
    """
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as error:
        raise ModelFileError(f"{path}: not a readable ONNX file ({error})") from None
    entry = next((e for e in graph.metadata_props if e.key == METADATA_KEY), None)
    if entry is None:
        raise ModelFileError(f"{path}: an ONNX file without pneumo metadata; export it with 'pneumo export'")
    try:
        metadata = json.loads(entry.value)
    except json.JSONDecodeError:
        raise ModelFileError(f"{path}: its pneumo metadata is not readable JSON; the file was altered or damaged. "
                             "Export it again from its bundle with 'pneumo export'") from None
    if verify:
        recorded = metadata.get("onnx_sha256")
        if recorded is None:
            raise ModelFileError(f"{path}: records no hash of its graph and metadata (exported by an older pneumo); "
                                 "export it again with 'pneumo export'")
        if content_sha256(graph, metadata) != recorded:
            raise ModelFileError(f"{path}: its graph or metadata differ from those it was exported with; the file was "
                                 "altered or damaged. Export it again from its bundle with 'pneumo export'")
    return metadata
