"""Layer-by-layer model summary (like Keras ``model.summary()`` / torchinfo) and receptive fields.

``summarize`` runs one forward pass with hooks and lists every module up to a depth with its
type, output shape and parameter count, in execution order. For the backbone (the submodule
exposing ``channels`` and ``strides``) it adds the cumulative stride and the theoretical
receptive field of each layer, computed by ``receptive_fields`` from kernel size, stride,
padding and dilation over the backbone's ``torch.fx`` graph (so residual branches merge by
taking the larger field, not by chaining).

Receptive field recurrence (one spatial axis), for a layer with kernel ``k``, stride ``s``,
dilation ``d`` applied to a map whose pixels are ``j`` input pixels apart and see ``r`` pixels::

    r' = r + (d * (k - 1)) * j        j' = j * s
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from detseg.profile import count_flops, count_params, example_inputs


@dataclass(frozen=True)
class ReceptiveField:
    """Cumulative ``stride`` (jump, input pixels between neighbouring outputs) and ``size``
    (input pixels one output pixel sees, per axis; ``math.inf`` after a global pooling)."""

    stride: int
    size: float

    def then(self, kernel: int, stride: int, dilation: int = 1) -> ReceptiveField:
        """The field after a sliding window layer."""
        grown = self.size + dilation * (kernel - 1) * self.stride
        return ReceptiveField(self.stride * stride, grown)

    def extent(self) -> int | str:
        """``size`` as an int, or ``"global"`` after a global pooling."""
        return "global" if math.isinf(self.size) else int(self.size)


def _first(value: Any) -> int:
    """First element of an int-or-tuple layer argument (square kernels assumed per axis 0)."""
    return int(value[0] if isinstance(value, (tuple, list)) else value)


def _module_window(module: nn.Module) -> tuple[int, int, int] | None:
    """(kernel, stride, dilation) of a sliding-window module, or None for pointwise modules."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return _first(module.kernel_size), _first(module.stride), _first(module.dilation)
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        stride = module.stride if module.stride is not None else module.kernel_size
        return _first(module.kernel_size), _first(stride), _first(module.dilation)
    if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        stride = module.stride if module.stride is not None else module.kernel_size
        return _first(module.kernel_size), _first(stride), 1
    return None


_GLOBAL_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d,
                 nn.AdaptiveMaxPool2d)


def _arg(node: torch.fx.Node, index: int, name: str, default: Any) -> Any:
    """Positional-or-keyword argument of a traced function call."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _functional_window(node: torch.fx.Node, root: nn.Module) -> tuple[int, int, int] | None:
    """(kernel, stride, dilation) of a functional pooling/convolution call, else None."""
    if node.target in (F.max_pool2d, F.avg_pool2d):
        kernel = _arg(node, 1, "kernel_size", 1)
        stride = _arg(node, 2, "stride", None) or kernel
        dilation = _arg(node, 4, "dilation", 1) if node.target is F.max_pool2d else 1
        return _first(kernel), _first(stride), _first(dilation)
    if node.target in (F.conv2d, torch.conv2d):
        weight = _arg(node, 1, "weight", None)
        if not isinstance(weight, torch.fx.Node) or weight.op != "get_attr" \
                or not isinstance(weight.target, str):
            return None
        kernel = root.get_parameter(weight.target).shape[-2]
        return int(kernel), _first(_arg(node, 3, "stride", 1)), _first(_arg(node, 5, "dilation", 1))
    return None


def _node_fields(root: nn.Module, graph: torch.fx.Graph) -> dict[str, ReceptiveField]:
    """Field of every tensor node of ``graph`` (a symbolic trace of ``root``).

    A node with several inputs (residual add, concatenation, an FPN's lateral + upsampled
    sum) takes the largest field and the finest stride; a global-pooling branch joining a
    spatial one (squeeze-excitation gate) does not make the field global.
    """
    submodules = dict(root.named_modules())
    fields: dict[str, ReceptiveField] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            fields[node.name] = ReceptiveField(1, 1.0)
            continue
        inputs = [fields[n.name] for n in node.all_input_nodes if n.name in fields]
        if not inputs or node.op == "output":
            continue
        local = [f for f in inputs if not math.isinf(f.size)] or inputs
        incoming = ReceptiveField(min(f.stride for f in local), max(f.size for f in local))
        window = None
        if node.op == "call_module":
            sub = submodules[node.target]
            if isinstance(sub, _GLOBAL_POOLS):
                fields[node.name] = ReceptiveField(incoming.stride, math.inf)
                continue
            window = _module_window(sub)
        elif node.op == "call_function":
            window = _functional_window(node, root)
        fields[node.name] = incoming.then(*window) if window else incoming
    return fields


class _Tracer(torch.fx.Tracer):
    """A symbolic tracer that also traces through modules held but not registered (a backbone
    running a private ``create_feature_extractor`` graph over its own registered children)."""

    def path_of_module(self, mod: nn.Module) -> str:
        try:
            return super().path_of_module(mod)
        except NameError:
            if self.is_leaf_module(mod, ""):
                raise
            return f"<unregistered {type(mod).__name__}>"


def _trace(module: nn.Module) -> torch.fx.Graph:
    return _Tracer().trace(module)


def receptive_fields(module: nn.Module) -> dict[str, ReceptiveField]:
    """Receptive field after every submodule of ``module`` that its traced graph calls.

    Keys are submodule names (``named_modules`` paths relative to ``module``), and ``""`` for
    ``module`` itself (its largest output field); a container's field is that of the last
    operation it runs (a residual block's add included). Raises
    ``torch.fx`` errors when the module cannot be traced symbolically (data-dependent control
    flow).
    """
    graph = _trace(module)
    fields = _node_fields(module, graph)
    per_module: dict[str, ReceptiveField] = {}
    outputs = [fields[n.name] for n in graph.output_node().all_input_nodes if n.name in fields]
    if outputs:
        per_module[""] = max(outputs, key=lambda f: (f.size, -f.stride))
    for node in graph.nodes:
        if node.name not in fields:
            continue
        scopes = [path for path, _ in node.meta.get("nn_module_stack", {}).values()]
        if node.op == "call_module":
            scopes.append(node.target)
        for scope in scopes:
            if scope.startswith("<"):
                continue
            parts = scope.split(".")
            for depth in range(1, len(parts) + 1):
                per_module[".".join(parts[:depth])] = fields[node.name]
    return per_module


def output_receptive_fields(module: nn.Module) -> dict[str, ReceptiveField]:
    """Receptive field of each entry of a module's dict output (a backbone's ``s4``, ``s8``...),
    or ``{"out": field}`` for a single tensor output."""
    graph = _trace(module)
    fields = _node_fields(module, graph)
    result = next(n for n in graph.nodes if n.op == "output").args[0]
    if isinstance(result, torch.fx.Node):
        return {"out": fields[result.name]} if result.name in fields else {}
    if isinstance(result, dict):
        return {str(k): fields[v.name] for k, v in result.items()
                if isinstance(v, torch.fx.Node) and v.name in fields}
    return {}


def find_backbone(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The first submodule (maybe the model itself) with ``channels`` and ``strides``."""
    for name, sub in model.named_modules():
        if hasattr(sub, "channels") and hasattr(sub, "strides"):
            return name, sub
    return None


def feature_extractor(model: nn.Module) -> tuple[str, nn.Module]:
    """The part that makes feature maps: the detseg backbone, else torchvision's
    ``model.backbone`` (presets), else the whole model (name ``""``)."""
    found = find_backbone(model)
    if found is not None:
        return found
    backbone = getattr(model, "backbone", None)
    return ("backbone", backbone) if isinstance(backbone, nn.Module) else ("", model)


@dataclass
class LayerRow:
    """One summary line. ``output_shape`` is a list of ints for a tensor output, a list/dict of
    those for containers of tensors; ``stride``/``receptive_field`` only inside the backbone."""

    name: str
    type: str
    depth: int
    output_shape: Any
    params: int
    calls: int = 1
    stride: int | None = None
    receptive_field: int | str | None = None


@dataclass
class ModelSummary:
    """The whole summary; ``to_dict`` is what ``detseg summary --json`` prints."""

    model: str
    backbone: str | None
    input_shape: list[int]
    layers: list[LayerRow]
    params: int
    trainable_params: int
    gflops: float
    weight_mb: float
    backbone_module: str | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shape_of(value: Any) -> Any:
    """Shapes inside a (nested) output: tensors become lists of ints, other leaves None."""
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    if hasattr(value, "tensors") and isinstance(value.tensors, torch.Tensor):  # ImageList
        return list(value.tensors.shape)
    if isinstance(value, dict):
        return {str(k): shape_of(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [shape_of(v) for v in value]
    return None


def format_shape(shape: Any) -> str:
    """Compact text of ``shape_of`` output: ``[1, 64, 32, 32]``, ``{s4: [...], ...}``."""
    if shape is None:
        return "-"
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k}: {format_shape(v)}" for k, v in shape.items()) + "}"
    if shape and all(isinstance(s, int) for s in shape) or shape == []:
        return "[" + ", ".join(str(s) for s in shape) + "]"
    if len(shape) > 3:
        return f"{len(shape)} x {format_shape(shape[0])}"
    return "(" + ", ".join(format_shape(s) for s in shape) + ")"


def _weight_bytes(model: nn.Module) -> int:
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def summarize(model: nn.Module, imgsz: int | tuple[int, int] = 512, depth: int = 3,
              name: str | None = None) -> ModelSummary:
    """Run one forward pass of a random ``imgsz`` image and tabulate modules up to ``depth``.

    ``depth`` counts name components (``backbone`` is 1, ``backbone.body`` 2); deeper modules
    are folded into their ancestor, whose parameter count includes them.
    """
    model = model.eval()
    inputs = example_inputs(model, imgsz)
    modules = dict(model.named_modules())
    rows: dict[str, LayerRow] = {}
    fired: set[str] = set()

    def record(module_name: str):
        parts = module_name.split(".")
        shown = [".".join(parts[:k]) for k in range(1, min(len(parts), depth) + 1)]

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            shape = shape_of(output)
            for row_name in shown:
                row = rows.get(row_name)
                if row is None:
                    row = rows[row_name] = LayerRow(
                        name=row_name, type=type(modules[row_name]).__name__,
                        depth=row_name.count(".") + 1, output_shape=shape,
                        params=count_params(modules[row_name])[0], calls=0)
                if row_name == module_name:
                    row.calls += 1
                    if row_name not in fired:
                        row.output_shape = shape
                        fired.add(row_name)
                elif row_name not in fired:
                    # a container that is never called itself (e.g. inside a GraphModule)
                    # shows the output of the last layer it holds
                    row.output_shape = shape
        return hook

    hooks = [module.register_forward_hook(record(module_name))
             for module_name, module in modules.items() if module_name]
    try:
        flops = count_flops(model, inputs)
    finally:
        for handle in hooks:
            handle.remove()
    layers = _execution_order(list(rows.values()))
    for row in layers:
        row.calls = max(row.calls, 1)
    notes: list[str] = []
    stages: list[dict[str, Any]] = []
    backbone_info = find_backbone(model)
    rf_name, rf_root = feature_extractor(model)
    try:
        fields = receptive_fields(rf_root)
    except Exception as err:  # torch.fx raises many types for untraceable code
        fields = {}
        reason = str(err).split(". ")[0].splitlines()[0][:100]
        notes.append(f"receptive fields unavailable: {type(rf_root).__name__} cannot be traced "
                     f"symbolically ({type(err).__name__}: {reason})")
    if backbone_info is not None and fields:
        stages = _stage_fields(rf_root, imgsz)
    prefix = f"{rf_name}." if rf_name else ""
    for row in layers:
        rel = "" if row.name == rf_name else (
            row.name[len(prefix):] if row.name.startswith(prefix) else None)
        if rel in fields:
            row.stride = fields[rel].stride
            row.receptive_field = fields[rel].extent()
    total, trainable = count_params(model)
    spec = getattr(model, "spec", None)
    height, width = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    return ModelSummary(
        model=name or (spec.family if spec is not None else type(model).__name__),
        backbone=spec.backbone if spec is not None else None,
        input_shape=[1, 3, height, width],
        layers=layers,
        params=total,
        trainable_params=trainable,
        gflops=round(flops / 1e9, 4),
        weight_mb=round(_weight_bytes(model) / 2**20, 3),
        backbone_module=rf_name or None,
        stages=stages,
        notes=notes,
    )


def _execution_order(rows: list[LayerRow]) -> list[LayerRow]:
    """Hooks fire when a module *finishes*, so a parent would follow its children; put every
    parent right before its first recorded descendant instead."""
    ordered: list[LayerRow] = []
    placed: set[str] = set()
    by_name = {row.name: row for row in rows}
    for row in rows:
        parts = row.name.split(".")
        for k in range(1, len(parts) + 1):
            ancestor = ".".join(parts[:k])
            if ancestor in by_name and ancestor not in placed:
                ordered.append(by_name[ancestor])
                placed.add(ancestor)
    return ordered


def _stage_fields(backbone: Any, imgsz: int | tuple[int, int]) -> list[dict[str, Any]]:
    """Per backbone output: name, channels, stride, output shape and receptive field.

    ``backbone`` is the module ``find_backbone`` picked: any module with ``channels`` and
    ``strides`` lists, not only a ``Backbone``. The field of an output is that of the graph
    node returned under its key.
    """
    height, width = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    with torch.inference_mode():
        features = backbone(torch.rand(1, 3, height, width))
    output_fields = output_receptive_fields(backbone)
    stages = []
    for (key, feat), channels, stride in zip(features.items(), backbone.channels,
                                             backbone.strides, strict=False):
        rf = output_fields.get(key)
        stages.append({"name": key, "channels": int(channels), "stride": int(stride),
                       "output_shape": list(feat.shape),
                       "receptive_field": None if rf is None else rf.extent()})
    return stages
