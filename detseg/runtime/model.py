"""``RuntimeModel``: an exported file behind the interface of the PyTorch model it came from.

Every detseg tool runs a model through its task adapter (``prepare`` -> model -> ``postprocess``);
a ``RuntimeModel`` takes the model's place there, so detect, segment, eval, track, explain
(occlusion) and benchmark run an ONNX or TorchScript export with the same pre- and
post-processing as the checkpoint. Which interface it offers follows the graph's outputs:

- ``boxes, labels, scores[, masks]`` (detectors): ``model(images)`` takes a list of
  ``3 x H x W`` float images in [0, 1] and returns one ``{boxes [K, 4] xyxy pixels of that
  image, labels [K], scores [K], masks [K, 1, H, W] probabilities}`` per image. A graph that
  takes any size gets the image as it is (the graph resizes and normalizes it as the model
  does); a graph exported for ``imgsz x imgsz`` only gets the image resized to that square,
  and its boxes and masks are mapped back to the image.
- ``logits`` (semantic): ``model(batch)`` takes the adapter's normalized ``N x 3 x H x W``
  batch and returns ``N x C x H x W`` logits (the graph normalizes itself, so the batch is
  mapped back to [0, 1] first). A fixed-size graph gets the batch padded to its size (or
  resized, when larger) and the logits cropped (or resized) back; a fixed batch of one runs
  image by image.

What the graph holds fixed (a detector's score threshold, NMS IoU, detection cap and resize,
read from the export's ``inference`` description) shows up as the model attributes the task
adapter's ``configure`` writes: a setting the graph can honour (a higher ``conf``, fewer
``max_det``: the adapter's postprocess applies them) is accepted, one it cannot is refused
with a ``UsageError`` naming the option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detseg.errors import UsageError, WeightsError
from detseg.runtime.session import GraphSession
from detseg.spec import ModelSpec

DETECTION_OUTPUTS = ("boxes", "labels", "scores")


def _refuse(option: str, value: Any, what: str, path: Path) -> UsageError:
    return UsageError(f"{option} {value}: {what} is part of the exported graph {path.name}; "
                      f"run the PyTorch checkpoint, or export it again with that setting")


class GraphResize:
    """The resize a detector graph applies itself (torchvision's transform sizes at export):
    ``min_size`` (shorter side), ``max_size`` (longer-side cap) and ``fixed_size`` (SSD's
    square), read by the adapter's ``working_size``; setting another value is refused."""

    def __init__(self, sizes: dict[str, Any], path: Path) -> None:
        self._sizes = {"min_size": tuple(sizes["min_size"]), "max_size": sizes["max_size"],
                       "fixed_size": tuple(sizes["fixed_size"]) if sizes.get("fixed_size")
                       else None}
        self._path = path

    def __getattr__(self, name: str) -> Any:
        sizes = self.__dict__.get("_sizes", {})
        if name in sizes:
            return sizes[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        baked = self._sizes.get(name)
        given = tuple(value) if isinstance(value, (list, tuple)) else value
        if given != baked:
            shown = given[0] if isinstance(given, tuple) else given
            raise _refuse("--imgsz", shown, f"the input size ({name} {baked})", self._path)


class RuntimeModel(nn.Module):
    """An exported model (``GraphSession``) run like its PyTorch model; see the module doc.

    Attributes:
        spec: the ``ModelSpec`` stored in the file.
        runtime: ``onnxruntime`` or ``torchscript``.
        path: the file.
        imgsz, dynamic_size, dynamic_batch: the sizes the graph takes.

    Raises:
        WeightsError: the file carries no detseg description, or its spec is unusable.
    """

    mean: Tensor  # [1, 3, 1, 1] buffer: the spec's normalization
    std: Tensor  # [1, 3, 1, 1] buffer

    def __init__(self, session: GraphSession) -> None:
        super().__init__()
        description = session.metadata
        try:
            self.spec = ModelSpec.from_dict(description["spec"])
            self.outputs: list[str] = list(description["outputs"])
            self.imgsz = int(description["imgsz"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise WeightsError(f"{session.path}: the detseg metadata has no usable model spec "
                               f"({type(err).__name__}: {err})") from err
        self.session = session
        self.runtime = session.runtime
        self.path = session.path
        self.dynamic_size = bool(description.get("dynamic_size"))
        self.dynamic_batch = bool(description.get("dynamic_batch"))
        self.dense = self.outputs == ["logits"]
        if not self.dense and tuple(self.outputs[:3]) != DETECTION_OUTPUTS:
            raise WeightsError(f"{session.path}: unknown outputs {self.outputs} (detseg runs "
                               f"'logits' or 'boxes, labels, scores[, masks]' graphs)")
        inference = description.get("inference") or {}
        self._limits = {k: inference[k] for k in ("score_thresh", "nms_thresh",
                                                  "detections_per_img") if k in inference}
        resize = inference.get("resize")
        self.transform = GraphResize(resize, self.path) if resize else None
        self.register_buffer("mean", torch.tensor(self.spec.mean).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(self.spec.std).view(1, 3, 1, 1),
                             persistent=False)

    def extra_repr(self) -> str:
        return f"{self.runtime}, {self.path}"

    def __deepcopy__(self, memo: dict[int, Any]) -> RuntimeModel:
        session = GraphSession(self.path, threads=self.session.threads,
                               device=self.session.device)
        return RuntimeModel(session)

    # ------------------------------------------------------------------ settings
    @property
    def score_thresh(self) -> float:
        return float(self._limits.get("score_thresh", 0.0))

    @score_thresh.setter
    def score_thresh(self, value: float) -> None:
        if value < self.score_thresh - 1e-9:
            raise _refuse("--conf", value, f"the score threshold ({self.score_thresh}, below "
                          f"which the graph drops detections)", self.path)

    @property
    def nms_thresh(self) -> float | None:
        value = self._limits.get("nms_thresh")
        return float(value) if value is not None else None

    @nms_thresh.setter
    def nms_thresh(self, value: float) -> None:
        if self.nms_thresh is not None and abs(value - self.nms_thresh) > 1e-9:
            raise _refuse("--iou", value, f"the NMS IoU threshold ({self.nms_thresh})",
                          self.path)

    @property
    def detections_per_img(self) -> int:
        return int(self._limits.get("detections_per_img", 1 << 30))

    @detections_per_img.setter
    def detections_per_img(self, value: int) -> None:
        if value > self.detections_per_img:
            raise _refuse("--max-det", value, f"the cap of {self.detections_per_img} "
                          f"detections per image", self.path)

    def to(self, *args: Any, **kwargs: Any) -> RuntimeModel:
        """Move the session to a device (``cpu`` or CUDA); dtypes other than float32 are
        refused (an exported graph keeps the precision it was exported in)."""
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        if dtype is not None and dtype != torch.float32:
            raise UsageError(f"{self.path.name} runs in the precision it was exported in; "
                             f"export it with --half for float16")
        if device is not None:
            if device.type not in ("cpu", "cuda"):
                raise UsageError(f"--device {device}: an exported {self.runtime} model runs "
                                 f"on cpu or cuda")
            self.session.to(device)
            super().to(device)
        return self

    # ------------------------------------------------------------------ running
    def forward(self, inputs: Any) -> Any:
        if torch.is_autocast_enabled("cuda") or torch.is_autocast_enabled("cpu"):
            raise UsageError(f"--half: {self.path.name} runs in the precision it was exported "
                             f"in (export the checkpoint with --half for float16)")
        return self._segment(inputs) if self.dense else self._detect(inputs)

    def _detect(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        results = []
        for image in images:
            height, width = int(image.shape[-2]), int(image.shape[-1])
            x, (rh, rw) = self._graph_input(image[None].float())
            out = dict(zip(self.outputs, self.session.run_tensor(x), strict=True))
            if (rh, rw) != (height, width):
                scale = torch.tensor([width / rw, height / rh] * 2, device=out["boxes"].device)
                out["boxes"] = out["boxes"] * scale
                if "masks" in out:
                    masks = out["masks"][:, :, :rh, :rw]
                    out["masks"] = (F.interpolate(masks, size=(height, width), mode="bilinear",
                                                  align_corners=False) if len(masks)
                                    else masks.new_zeros((0, 1, height, width)))
            results.append(out)
        return results

    def _graph_input(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``x [1, 3, h, w]`` in [0, 1] -> the graph's input, and the ``(h, w)`` of the image
        inside it (top left) that the graph's boxes refer to.

        A fixed-size graph gets the image squashed to its square. A graph that resizes by
        shorter/longer side (R-CNN) gets the image resized here as the PyTorch model resizes it
        (torchvision's float64 scale and sizes; a traced graph computes them in float32, which
        is a row or column off for about one size in ten), padded with the mean colour (zero
        after the graph's normalization, as the model pads) to where the graph's own resize is
        the identity: one extra row or column where float64 rounding came out a pixel short.
        """
        height, width = int(x.shape[-2]), int(x.shape[-1])
        if not self.dynamic_size:
            side = (self.imgsz, self.imgsz)
            if side == (height, width):
                return x, side
            return F.interpolate(x, size=side, mode="bilinear", align_corners=False), side
        resize = self.transform
        if resize is None or resize.fixed_size:
            return x, (height, width)  # the graph's fixed-size resize matches the model's
        low, high = int(resize.min_size[-1]), int(resize.max_size)
        scale = min(low / min(height, width), high / max(height, width))
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", recompute_scale_factor=True,
                          align_corners=False)
        rh, rw = int(x.shape[-2]), int(x.shape[-1])
        pad_h, pad_w = _identity_padding(rh, rw, low, high)
        if pad_h or pad_w:
            mean = self.mean.to(x.device)
            canvas = mean.expand(1, 3, rh + pad_h, rw + pad_w).clone()
            canvas[:, :, :rh, :rw] = x
            x = canvas
        return x, (rh, rw)

    def _segment(self, batch: Tensor) -> Tensor:
        height, width = int(batch.shape[-2]), int(batch.shape[-1])
        side = (height, width) if self.dynamic_size else (self.imgsz, self.imgsz)
        fits = height <= side[0] and width <= side[1]
        x = batch.float()
        if fits and side != (height, width):
            x = F.pad(x, (0, side[1] - width, 0, side[0] - height))  # zeros after normalizing
        elif not fits:
            x = F.interpolate(x, size=side, mode="bilinear", align_corners=False)
        images = x * self.std.to(x.device) + self.mean.to(x.device)
        chunks = [images] if self.dynamic_batch else list(images.split(1))
        logits = torch.cat([self.session.run_tensor(chunk)[0] for chunk in chunks])
        if not fits:
            return F.interpolate(logits, size=(height, width), mode="bilinear",
                                 align_corners=False)
        return logits[:, :, :height, :width]


def _graph_scale(height: int, width: int, low: int, high: int) -> float:
    """The scale a traced torchvision resize computes for an input (float32, as in the graph)."""
    scale = torch.minimum(torch.tensor(float(low)) / torch.tensor(float(min(height, width))),
                          torch.tensor(float(high)) / torch.tensor(float(max(height, width))))
    return float(scale)


def _identity_padding(height: int, width: int, low: int, high: int) -> tuple[int, int]:
    """Rows and columns to add at the bottom/right of a ``height x width`` image, already
    resized as the model resizes, so the graph's resize (shorter side to ``low``, longer side
    at most ``high``) leaves it as it is: none when it already does, else the fewest that
    bring the shorter side to ``low`` or the longer side to ``high``."""
    if _graph_scale(height, width, low, high) == 1.0:
        return 0, 0
    options = []
    for target_short in (low, None):
        short_h = height <= width
        ph = (target_short - height if short_h else 0) if target_short else \
            (0 if short_h else high - height)
        pw = (0 if short_h else target_short - width) if target_short else \
            (high - width if short_h else 0)
        if ph >= 0 and pw >= 0 and _graph_scale(height + ph, width + pw, low, high) == 1.0:
            options.append((ph + pw, ph, pw))
    return min(options)[1:] if options else (0, 0)
