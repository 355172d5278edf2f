"""Export a model bundle to ONNX, with the bundle's metadata inside the file.

The graph takes ``image``: float32 (batch, 1, S, S) in [0, 1] and returns ``logits``
(batch, classes) and, where the bundle has a novelty check, ``novelty`` (batch,); the batch
axis is dynamic. The metadata (classes, preprocessing,
temperature, operating point, weights hash) is stored as the ``pneumo`` metadata property,
so an ``.onnx`` file is usable on its own.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import onnx
import onnx.numpy_helper
import torch

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


def _export(model, example: torch.Tensor, temporary: Path, bundle: Bundle) -> None:
    """The graph with the bundle's metadata, checked, written to ``temporary``."""
    outputs = ["logits"] if bundle.novelty is None else ["logits", "novelty"]
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but needs no onnxscript and handles these CNNs exactly.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            model, (example,), str(temporary), input_names=["image"], output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in ["image", *outputs]}, opset_version=OPSET, dynamo=False,
        )
    graph = onnx.load(str(temporary))
    metadata = dict(bundle.metadata, source_bundle_sha256=bundle.file_sha256,
                    onnx_weights_sha256=initializers_sha256(graph))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    graph.doc_string = f"pneumo {metadata['model_name']}: research software, not a diagnostic device"
    onnx.checker.check_model(graph)
    onnx.save(graph, str(temporary))


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
    from pneumo.errors import ModelFileError

    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as error:
        raise ModelFileError(f"{path}: not a readable ONNX file ({error})") from None
    entry = next((e for e in graph.metadata_props if e.key == METADATA_KEY), None)
    if entry is None:
        raise ModelFileError(f"{path}: an ONNX file without pneumo metadata; export it with 'pneumo export'")
    metadata = json.loads(entry.value)
    if verify:
        recorded = metadata.get("onnx_weights_sha256")
        if recorded is None:
            raise ModelFileError(f"{path}: records no hash of its weights (exported by an older pneumo); "
                                 "export it again with 'pneumo export'")
        if initializers_sha256(graph) != recorded:
            raise ModelFileError(f"{path}: its weights differ from those it was exported with; the file was altered "
                                 "or damaged. Export it again from its bundle with 'pneumo export'")
    return metadata
