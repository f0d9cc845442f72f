"""Export models to ONNX and TorchScript, with the ModelSpec in the file, and check the result.

Every exported graph takes the same input, whatever the family: ``images``, float RGB in [0, 1],
``N x 3 x H x W`` (the graph normalizes with the spec's mean/std itself).

- detection / instance models (``faster_rcnn``, ``ssd``, ``ssdlite``, ``mask_rcnn``, ...): one
  image per call (``N = 1``; per-image outputs have different lengths), any ``H x W`` with
  ``dynamic``. Outputs ``boxes [K, 4]`` (xyxy pixels of the input), ``labels [K]`` (int64, 0 =
  background), ``scores [K]``, and for instance models ``masks [K, 1, H, W]`` (probabilities).
- semantic models (``unet``, ``segnet``, torchvision presets): ``N`` images; with ``dynamic``
  the batch and the size are free (the size must stay a multiple of the network's stride).
  Output ``logits [N, C, H, W]``.

The spec travels as JSON under the key ``detseg`` (ONNX ``metadata_props``; TorchScript
``_extra_files["detseg.json"]``) together with the input/output description.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from detseg import __version__
from detseg.errors import ExportError, UsageError
from detseg.runtime.files import METADATA_KEY, TORCHSCRIPT_EXTRA
from detseg.runtime.session import GraphSession
from detseg.runtime.tracing import tracing_patches
from detseg.spec import ModelSpec
from detseg.tasks import SemanticAdapter, TaskAdapter, task_adapter

__all__ = ["EXPORT_FORMATS", "METADATA_KEY", "ONNX_OPSET", "SUFFIXES", "TORCHSCRIPT_EXTRA",
           "CheckResult", "ExportResult", "ExportedModel", "build_export_module", "check_export",
           "compare_detections", "export_metadata", "export_model", "read_export_metadata"]

EXPORT_FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}
ONNX_OPSET = 17
#: runs an exported file on numpy images: ``ExportedModel(path)(images [N,3,H,W]) -> outputs``
ExportedModel = GraphSession
#: attributes of a detector (its ``roi_heads`` or itself) fixed in the exported graph
GRAPH_SETTINGS = ("score_thresh", "nms_thresh", "detections_per_img")


@dataclass
class ExportResult:
    """What ``export_model`` wrote and how; ``input_shape`` names free axes ``N``/``H``/``W``."""

    path: Path
    format: str
    input_shape: list[int | str]
    output_names: list[str]
    method: str
    seconds: float
    metadata: dict[str, str] = field(default_factory=dict)
    dynamic_batch: bool = False
    dynamic_size: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class CheckResult:
    """Largest absolute difference between the exported file and PyTorch, per output, over the
    sample inputs in ``input_shapes``. ``max_abs_diff`` is the largest of all; it is ``inf`` when
    an output's shape differs (``notes`` says which)."""

    runtime: str
    input_shapes: list[list[int]]
    per_output: dict[str, float]
    max_abs_diff: float
    notes: list[str] = field(default_factory=list)


def _spec_dict(model: nn.Module) -> dict[str, Any] | None:
    spec = getattr(model, "spec", None)
    return spec.to_dict() if spec is not None else None


def _adapter(model: nn.Module) -> TaskAdapter:
    """The model's task adapter; a plain module without a spec is exported as a tensor-in,
    tensor-out network (semantic, no normalization)."""
    if getattr(model, "spec", None) is None:
        return SemanticAdapter(ModelSpec(family=type(model).__name__, backbone=None,
                                         num_classes=1, task="semantic", mean=(0.0, 0.0, 0.0),
                                         std=(1.0, 1.0, 1.0)))
    return task_adapter(model)


def build_export_module(model: nn.Module, imgsz: int) -> tuple[nn.Module, list[str]]:
    """The wrapper around ``model`` that is exported, and its output names (the task
    adapter's ``export_module``)."""
    return _adapter(model).export_module(model.eval(), imgsz)


def _one_image_per_call(model: nn.Module) -> bool:
    """Detectors export one image per call (per-image outputs have different lengths)."""
    return not _adapter(model).export_batches


def sample_images(model: nn.Module, imgsz: int, batch_size: int = 1,
                  size: tuple[int, int] | None = None) -> Tensor:
    """A seeded random ``images`` input in [0, 1] on the model's device and dtype."""
    height, width = size or (imgsz, imgsz)
    generator = torch.Generator().manual_seed(height * 1000 + width + batch_size)
    images = torch.rand(batch_size, 3, height, width, generator=generator)
    param = next(model.parameters())
    return images.to(param.device, param.dtype)


def other_size(imgsz: int) -> tuple[int, int]:
    """A second, non-square ``(height, width)`` to try a dynamic graph at; multiples of 32 stay
    multiples of 32."""
    return imgsz + 32, (imgsz - 32 if imgsz > 64 else imgsz + 64)


def export_model(model: nn.Module, fmt: str, out: str | Path, imgsz: int = 320,
                 dynamic: bool = False, half: bool = False,
                 opset: int = ONNX_OPSET) -> ExportResult:
    """Export ``model`` (with ``.spec``) to ``out`` in format ``fmt`` (``onnx``/``torchscript``).

    ``imgsz`` is the side of the sample image the graph is traced with. ``dynamic`` (ONNX) frees
    the input size, and the batch of semantic models. TorchScript is scripted where the model
    scripts, else traced; a traced graph serves whatever sizes it can. Either way the file is
    tried at a second size, and where the graph turns out to fix the size (SegNet's unpooling
    sizes are constants in a trace) the result says so in ``notes`` and in the metadata
    (ONNX is then exported with only the batch dynamic). ``half`` exports fp16 weights and
    input. Raises ``ExportError`` with the reason when the model cannot be exported.
    """
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of "
                         f"{', '.join(EXPORT_FORMATS)}")
    if opset < 17:
        raise UsageError(f"ONNX opset must be 17 or newer, got {opset}")
    if half and next(model.parameters()).device.type == "cpu" and fmt == "onnx":
        raise ExportError("--half ONNX export needs a CUDA device: PyTorch traces fp16 graphs "
                          "there, and onnxruntime's CPU provider lacks fp16 kernels for most ops")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).half() if half else model.float()
    wrapper, names = build_export_module(model, imgsz)
    detection = _one_image_per_call(model)
    sample = sample_images(model, imgsz)
    try:
        with torch.inference_mode():
            wrapper(sample)
    except Exception as err:
        precision = "fp16" if half else "fp32"
        raise ExportError(f"the model does not run in {precision} on {sample.device.type} "
                          f"({_reason(err)}), so it cannot be exported that way") from err
    start = time.perf_counter()
    notes: list[str] = []
    if fmt == "onnx":
        _trace_onnx(wrapper, sample, out, names, dynamic, dynamic and not detection, opset)
        method = f"onnx opset {opset}"
        dynamic_size = dynamic
        if dynamic and not detection and not _serves(ExportedModel(out, quiet=True), model, 1,
                                                     other_size(imgsz)):
            _trace_onnx(wrapper, sample, out, names, False, True, opset)
            dynamic_size = False
        dynamic_batch = dynamic and not detection
    else:
        compiled, method = _compile_torchscript(wrapper, sample)
        dynamic_size = _serves(compiled, model, 1, other_size(imgsz))
        dynamic_batch = not detection and _serves(compiled, model, 2, (imgsz, imgsz))
    if dynamic and not dynamic_size:
        notes.append(f"the {_family(model)} graph fixes the image size (a trace keeps some "
                     f"sizes as constants), so it takes only {imgsz}x{imgsz} images"
                     + ("; the batch stays dynamic" if dynamic_batch else ""))
    metadata = export_metadata(model, names, imgsz, dynamic_batch, dynamic_size, half, fmt)
    if fmt == "onnx":
        _write_onnx_metadata(out, metadata)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
            torch.jit.save(compiled, str(out),
                           _extra_files={TORCHSCRIPT_EXTRA: json.dumps(metadata)})
    input_shape: list[int | str] = [
        "N" if dynamic_batch else len(sample), 3,
        "H" if dynamic_size else imgsz, "W" if dynamic_size else imgsz]
    return ExportResult(path=out, format=fmt, input_shape=input_shape, output_names=names,
                        method=method, seconds=time.perf_counter() - start, metadata=metadata,
                        dynamic_batch=dynamic_batch, dynamic_size=dynamic_size, notes=notes)


def _family(model: nn.Module) -> str:
    spec = getattr(model, "spec", None)
    return spec.family if spec is not None else type(model).__name__


def _serves(run: Any, model: nn.Module, batch: int, size: tuple[int, int]) -> bool:
    """Whether an exported graph runs on ``batch`` images of ``size`` (semantic: with logits of
    that batch and size). ``run`` is an ``ExportedModel`` or a TorchScript module."""
    images = sample_images(model, size[0], batch, size)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            outputs = run(images.cpu().numpy() if isinstance(run, ExportedModel) else images)
    except Exception:  # a graph with baked-in sizes fails in many runtime-specific ways
        return False
    if _one_image_per_call(model):
        return True
    logits = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    return tuple(logits.shape) == (batch, logits.shape[1], *size)


def export_metadata(model: nn.Module, output_names: list[str], imgsz: int, dynamic_batch: bool,
                    dynamic_size: bool, half: bool, fmt: str) -> dict[str, str]:
    """String key/values stored in the exported file (the spec as JSON under ``detseg``)."""
    task = _adapter(model).name
    detection = _one_image_per_call(model)
    spec = _spec_dict(model)
    description = {
        "spec": spec,
        "format": fmt,
        "task": task,
        "input": "images: float RGB in [0, 1], N x 3 x H x W" + (" (N = 1)" if detection else ""),
        "outputs": output_names,
        "imgsz": imgsz,
        "dynamic_batch": dynamic_batch,
        "dynamic_size": dynamic_size,
        "half": half,
        "inference": graph_settings(model),
        "detseg_version": __version__,
    }
    return {
        METADATA_KEY: json.dumps(description),
        "task": task,
        "class_names": json.dumps(spec["class_names"] if spec else []),
        "imgsz": str(imgsz),
    }


def graph_settings(model: nn.Module) -> dict[str, Any]:
    """What a detector applies inside its exported graph: ``score_thresh``, ``nms_thresh`` and
    ``detections_per_img`` (of its ``roi_heads`` or itself) and ``resize`` (its transform's
    ``min_size``, ``max_size``, ``fixed_size``); ``{}`` for models that hold none."""
    found: dict[str, Any] = {}
    for owner in (getattr(model, "roi_heads", None), model):
        for key in GRAPH_SETTINGS:
            if owner is not None and key not in found and hasattr(owner, key):
                found[key] = float(getattr(owner, key)) if key != "detections_per_img" \
                    else int(getattr(owner, key))
    transform = getattr(model, "transform", None)
    if transform is not None and hasattr(transform, "min_size"):
        fixed = getattr(transform, "fixed_size", None)
        found["resize"] = {"min_size": [int(v) for v in transform.min_size],
                           "max_size": int(transform.max_size),
                           "fixed_size": [int(v) for v in fixed] if fixed else None}
    return found


def _max_unpool2d_symbolic(g: Any, values: Any, indices: Any, output_size: list[int]) -> Any:
    """ONNX for ``aten::max_unpool2d`` (the exporter has none): scatter each value to its
    per-plane index, ``out[n, c].flat[indices[n, c, i]] = values[n, c].flat[i]``.

    ONNX ``MaxUnpool`` expects whole-tensor indices and a kernel the aten op does not carry, so
    this uses ``ScatterElements`` over flattened planes instead. ``output_size`` is static.
    """
    from torch.onnx._internal.torchscript_exporter import _type_utils

    dtype = _type_utils.JitScalarType.from_value(values).dtype()
    first_two = g.op("Slice", g.op("Shape", values), g.op("Constant", value_t=torch.tensor([0])),
                     g.op("Constant", value_t=torch.tensor([2])))
    rows = g.op("Concat", first_two, g.op("Constant", value_t=torch.tensor([-1])), axis_i=0)
    planes = g.op("Concat", first_two,
                  g.op("Constant", value_t=torch.tensor([output_size[0] * output_size[1]])),
                  axis_i=0)
    zeros = g.op("ConstantOfShape", planes, value_t=torch.zeros(1, dtype=dtype))
    scattered = g.op("ScatterElements", zeros, g.op("Reshape", indices, rows),
                     g.op("Reshape", values, rows), axis_i=2)
    shape = g.op("Concat", first_two, g.op("Constant", value_t=torch.tensor(output_size)),
                 axis_i=0)
    return g.op("Reshape", scattered, shape)


def _register_onnx_symbolics(opset: int) -> None:
    from torch.onnx import symbolic_helper

    torch.onnx.register_custom_op_symbolic(
        "aten::max_unpool2d", symbolic_helper.parse_args("v", "v", "is")(_max_unpool2d_symbolic),
        opset)


def _trace_onnx(wrapper: nn.Module, sample: Tensor, out: Path, names: list[str],
                dynamic_size: bool, dynamic_batch: bool, opset: int) -> None:
    _register_onnx_symbolics(opset)
    axes: dict[str, dict[int, str]] = {}
    if dynamic_size or dynamic_batch:
        image_axes = {2: "height", 3: "width"} if dynamic_size else {}
        output_axes = dict(image_axes)
        if dynamic_batch:
            image_axes[0] = output_axes[0] = "batch"
        axes["images"] = image_axes
        for name in names:
            axes[name] = output_axes if name == "logits" else {0: "detections"}
    try:
        with warnings.catch_warnings(), tracing_patches():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (sample,), str(out), opset_version=opset, dynamo=False,
                              input_names=["images"], output_names=names,
                              dynamic_axes=axes or None)
    except Exception as err:
        raise ExportError(f"cannot export to ONNX: {_reason(err)}") from err
    finally:
        wrapper.eval()  # the exporter restores the pre-export mode recursively


def _write_onnx_metadata(out: Path, metadata: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(out))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "detseg"
    onnx.save(proto, str(out))


def _compile_torchscript(wrapper: nn.Module, sample: Tensor) -> tuple[Any, str]:
    """Script the wrapper; where scripting fails, trace it. Returns the module and how."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.script(wrapper), "torchscript script"
    except Exception as script_err:
        try:
            with warnings.catch_warnings(), torch.no_grad(), tracing_patches():
                warnings.simplefilter("ignore")
                return (torch.jit.trace(wrapper, (sample,), check_trace=False),
                        "torchscript trace")
        except Exception as trace_err:
            raise ExportError(
                f"cannot export to TorchScript: scripting failed ({_reason(script_err)}) and "
                f"tracing failed ({_reason(trace_err)})") from trace_err


def _reason(err: Exception) -> str:
    """The informative line of an exporter exception (the last one for TorchScript's
    interpreter tracebacks, else the first)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return f"{type(err).__name__}: no message"
    line = lines[-1] if "TorchScript interpreter" in lines[0] else lines[0]
    return f"{type(err).__name__}: {line[:300]}"


def read_export_metadata(path: str | Path) -> dict[str, Any]:
    """The detseg description stored in an exported file (``spec``, ``task``, ``outputs``...).

    Raises ``WeightsError`` for a missing or unreadable file, or one without the description.
    """
    return GraphSession(path, quiet=True).metadata


def check_export(result: ExportResult, model: nn.Module, imgsz: int,
                 image: np.ndarray | None = None) -> CheckResult:
    """Run the exported file and ``model`` on sample images and compare their outputs.

    Samples: one image at ``imgsz`` (``image``, an H x W x 3 uint8 RGB picture resized to
    ``imgsz`` x ``imgsz``, when given; else random); where the graph allows, also a non-square
    size (``other_size``) and a batch of two. Detections are matched by label and box before
    comparing, since equal-score ties may be ordered differently.
    """
    exported = ExportedModel(result.path)
    wrapper, names = build_export_module(model, imgsz)
    detection = _one_image_per_call(model)
    shapes = [(1, imgsz, imgsz)]
    if result.dynamic_batch or result.dynamic_size:
        height, width = other_size(imgsz) if result.dynamic_size else (imgsz, imgsz)
        shapes.append((2 if result.dynamic_batch else 1, height, width))
    per_output = dict.fromkeys(names, 0.0)
    notes: list[str] = []
    for i, (batch, height, width) in enumerate(shapes):
        images = sample_images(model, imgsz, batch, (height, width))
        if i == 0 and image is not None:
            picture = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
            picture = torch.nn.functional.interpolate(picture.float() / 255.0, size=(imgsz, imgsz),
                                                      mode="bilinear", align_corners=False)
            images = picture.to(images.device, images.dtype)
        with torch.inference_mode():
            reference = wrapper(images)
        reference = reference if isinstance(reference, (list, tuple)) else [reference]
        ref = [r.float().cpu().numpy() for r in reference]
        got = exported(images.cpu().numpy())
        diffs = (compare_detections(ref, got, names) if detection
                 else {names[0]: _max_diff(ref[0], got[0])})
        for name, diff in diffs.items():
            if np.isinf(diff):
                notes.append(f"{name}: shape {list(got[names.index(name)].shape)} differs from "
                             f"PyTorch {list(ref[names.index(name)].shape)} at {height}x{width}")
            per_output[name] = max(per_output[name], diff)
    return CheckResult(runtime=exported.runtime, input_shapes=[[b, 3, h, w] for b, h, w in shapes],
                       per_output=per_output, max_abs_diff=max(per_output.values()), notes=notes)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def compare_detections(ref: list[np.ndarray], got: list[np.ndarray],
                       names: list[str]) -> dict[str, float]:
    """Per-output max |difference| after pairing each reference detection with the exported
    detection of the same label whose box and score are closest; ``inf`` if counts differ."""
    ref_boxes, ref_labels, ref_scores = ref[:3]
    got_boxes, got_labels, got_scores = got[:3]
    if len(ref_boxes) != len(got_boxes):
        return dict.fromkeys(names, float("inf"))
    if len(ref_boxes) == 0:
        return dict.fromkeys(names, 0.0)
    cost = (np.abs(ref_boxes[:, None, :] - got_boxes[None, :, :]).max(-1)
            + np.abs(ref_scores[:, None] - got_scores[None, :]))
    cost[ref_labels[:, None] != got_labels[None, :]] = np.inf
    order = _greedy_pairs(cost)
    if order is None:
        return dict.fromkeys(names, float("inf"))
    diffs = {name: _max_diff(ref[k], got[k][order]) for k, name in enumerate(names)}
    diffs["labels"] = float(np.abs(ref_labels - got_labels[order]).max())
    return diffs


def _greedy_pairs(cost: np.ndarray) -> np.ndarray | None:
    """For each row the column it is paired with, cheapest pairs first; None if impossible."""
    rows, cols = cost.shape
    order = np.full(rows, -1)
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    for flat in np.argsort(cost, axis=None, kind="stable"):
        r, c = divmod(int(flat), cols)
        if r in used_rows or c in used_cols or np.isinf(cost[r, c]):
            continue
        order[r] = c
        used_rows.add(r)
        used_cols.add(c)
        if len(used_rows) == rows:
            break
    return order if (order >= 0).all() else None
