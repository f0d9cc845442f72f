"""Batched inference: ``Predictor`` builds a model once and streams ``Result`` objects.

Images are decoded by a thread pool a bounded number of images ahead of the model (memory stays
flat over any number of inputs), grouped into batches of ``batch_size`` (mixed sizes allowed),
and run under ``torch.inference_mode()`` (autocast fp16 on CUDA with ``half``; on CPU the
speed-ups of ``detseg.engine.cpu_speedups``, equal up to float rounding). Detection and
instance models take the raw 0..1 images (they resize and normalize themselves) and return boxes
in input coordinates; semantic models get a normalized batch letterboxed to ``imgsz`` (long
side) and padded to a multiple of 32, and their logits are mapped back to each input's size.

Example::

    predictor = Predictor(weights="runs/train/exp/best.pt", conf=0.3)
    for result in predictor.predict(["images/", "clip.mp4"]):
        print(result.path, result.counts())
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detseg.engine.cpu_speedups import speed_up_for_cpu
from detseg.engine.results import IGNORE_INDEX, Result, StageTimes
from detseg.errors import ImageReadError, UsageError
from detseg.spec import ModelSpec

if TYPE_CHECKING:
    from detseg.engine.video import Frame

PAD_MULTIPLE = 32
# Above this many logit values per image, semantic maps are upsampled as labels, not logits.
MAX_UPSAMPLED_LOGITS = 1 << 26
ErrorCallback = Callable[[ImageReadError], None]


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises ``UsageError`` for an unknown name or a CUDA device that is not there.
    """
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError as err:
        raise UsageError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r} requested but CUDA is not available here")
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"device {device!r}: only {torch.cuda.device_count()} CUDA "
                             f"device(s) present")
    elif dev.type != "cpu":
        raise UsageError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return dev


def resolve_classes(classes: Iterable[str | int] | None, names: Sequence[str]) -> list[int] | None:
    """Model labels for ``classes`` given as names (case-insensitive) or label ids.

    Raises ``UsageError`` naming the unknown entry and the valid names.
    """
    if classes is None:
        return None
    lookup = {n.lower(): i for i, n in enumerate(names)}
    labels = []
    for item in classes:
        text = str(item).strip()
        if text.isdigit() and int(text) < len(names):
            labels.append(int(text))
        elif text.lower() in lookup:
            labels.append(lookup[text.lower()])
        else:
            shown = ", ".join(n for n in names if n.strip("_").lower() != "background")
            raise UsageError(f"unknown class {text!r}; the model knows: {shown} (or their ids "
                             f"0..{len(names) - 1})")
    return sorted(set(labels))


@dataclass
class _Item:
    """An image waiting for the model, with where it came from."""

    image: np.ndarray
    path: Path | None = None
    frame_index: int | None = None
    timestamp: float | None = None


class Predictor:
    """A model built once, ready to run on images, folders, globs, lists and videos.

    Args:
        model: a model family or preset name (``faster_rcnn``, ``fasterrcnn_resnet50_fpn_v2``,
            ``deeplabv3_resnet50``, ...), an ``nn.Module`` with a ``spec``, or ``None`` when
            ``weights`` is a detseg checkpoint or manifest entry (its spec rebuilds the model).
        weights: anything ``detseg.weights.resolve_weights`` accepts, or ``"none"``. A preset
            without weights gets its ``DEFAULT`` (pretrained) weights; a family without weights
            is randomly initialized.
        backbone: backbone name for a family model.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        conf: minimum score of a detection (default 0.25); for semantic models, pixels whose
            top class probability is below it are left unlabeled (255) (default 0: none).
        classes: keep only these classes (names or label ids).
        max_det: most detections kept per image.
        imgsz: inference size in pixels (R-CNN: shorter side, longer side capped in proportion;
            SSD: square side; semantic: longer side). ``None`` keeps the model's own size.
        batch_size: images per forward pass.
        half: autocast in float16 on CUDA (ignored on CPU; see ``half_active``).
        workers: image-decoding threads (default: half the CPU cores, 1 to 4; decoding is cheap
            next to the model, and spare cores keep torch's own threads running).
    """

    def __init__(self, model: str | nn.Module | None = None, weights: str | None = None,
                 backbone: str | None = None, device: str | torch.device = "auto",
                 conf: float | None = None, classes: Iterable[str | int] | None = None,
                 max_det: int = 100, imgsz: int | None = None, batch_size: int = 1,
                 half: bool = False, workers: int | None = None) -> None:
        if batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {batch_size}")
        if max_det < 1:
            raise UsageError(f"max detections must be >= 1, got {max_det}")
        if conf is not None and not 0.0 <= conf <= 1.0:
            raise UsageError(f"conf must be within [0, 1], got {conf}")
        if imgsz is not None and imgsz < PAD_MULTIPLE:
            raise UsageError(f"imgsz must be >= {PAD_MULTIPLE}, got {imgsz}")
        self.device = select_device(device)
        self.model = self._build(model, weights, backbone)
        self.spec: ModelSpec = self.model.spec
        self.task = self.spec.task
        self.names = self.spec.names()
        self.conf = conf if conf is not None else (0.0 if self.task == "semantic" else 0.25)
        self.classes = resolve_classes(classes, self.names)
        self.max_det = max_det
        self.imgsz = imgsz
        self.batch_size = batch_size
        self.half_active = bool(half) and self.device.type == "cuda"
        self.workers = workers or max(1, min(4, (os.cpu_count() or 2) // 2))
        on_cpu = self.device.type == "cpu"
        self._channels_last = on_cpu or (self.device.type == "cuda" and self.task == "semantic")
        self.model.eval().to(self.device)
        if on_cpu:
            speed_up_for_cpu(self.model)
        elif self._channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.task != "semantic":
            self._configure_detector()
        mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
        self._mean, self._std = mean, std

    # ------------------------------------------------------------------ building

    @staticmethod
    def _build(model: str | nn.Module | None, weights: str | None,
               backbone: str | None) -> nn.Module:
        if isinstance(model, nn.Module):
            if not isinstance(getattr(model, "spec", None), ModelSpec):
                raise UsageError("a model passed as a module needs a `spec` (ModelSpec) "
                                 "attribute")
            return model
        if model is None and weights is None:
            raise UsageError("give a model name or weights (a detseg checkpoint carries its "
                             "model)")
        from detseg.models import build_model, model_info

        if model is not None and weights is None and model_info(model)["kind"] == "preset":
            weights = "DEFAULT"
        return build_model(model, backbone=backbone, weights=weights)

    def _configure_detector(self) -> None:
        """Align the model's own score threshold and detection cap with ``conf``/``max_det``.

        torchvision detectors drop boxes below their ``score_thresh`` (0.05 by default) and keep
        ``detections_per_img``; with a class filter the cap stays as large as it was, so
        filtered-out classes do not crowd out the wanted ones.
        """
        for owner in (getattr(self.model, "roi_heads", None), self.model):
            if owner is None:
                continue
            if hasattr(owner, "score_thresh"):
                owner.score_thresh = self.conf
            if hasattr(owner, "detections_per_img"):
                current = int(owner.detections_per_img)
                owner.detections_per_img = (self.max_det if self.classes is None
                                            else max(current, self.max_det))
        transform = getattr(self.model, "transform", None)
        if self.imgsz is not None and transform is not None and hasattr(transform, "min_size"):
            if getattr(transform, "fixed_size", None):
                transform.fixed_size = (self.imgsz, self.imgsz)
            else:
                ratio = transform.max_size / max(transform.min_size)
                transform.min_size = (self.imgsz,)
                transform.max_size = round(self.imgsz * ratio)

    # ------------------------------------------------------------------ public API

    def predict(self, sources: str | Path | np.ndarray | Sequence[str | Path | np.ndarray], *,
                on_error: ErrorCallback | None = None, vid_stride: int = 1,
                start: float | None = None, end: float | None = None) -> Iterator[Result]:
        """Stream results for image files, folders, globs, ``.txt`` lists, videos or arrays.

        Images come first (in ``expand_sources`` order), then each video's frames
        (``vid_stride``, ``start``/``end`` seconds). A source that cannot be read is passed to
        ``on_error`` as an ``ImageReadError`` (``VideoReadError`` for videos) and skipped; without
        ``on_error`` it is raised.
        """
        from detseg.data.io import expand_sources
        from detseg.engine.video import VideoFrames

        items = [sources] if isinstance(sources, str | Path | np.ndarray) else list(sources)
        arrays = [s for s in items if isinstance(s, np.ndarray)]
        if arrays:
            yield from self._stream(_Item(a) for a in arrays)
        found = expand_sources([s for s in items if not isinstance(s, np.ndarray)])
        for missing in found.missing:
            self._report(ImageReadError(missing, "no such file"), on_error)
        yield from self.predict_paths(found.images, on_error=on_error)
        for video in found.videos:
            try:
                frames = VideoFrames(video, stride=vid_stride, start=start, end=end,
                                     on_error=lambda err: self._report(err, on_error))
            except ImageReadError as err:
                self._report(err, on_error)
                continue
            try:
                yield from self.predict_frames(frames, video)
            finally:
                frames.close()

    def predict_paths(self, paths: Iterable[str | Path], *,
                      on_error: ErrorCallback | None = None) -> Iterator[Result]:
        """Results for image files in order, decoded by a thread pool ahead of the model."""
        from detseg.data.io import read_image

        window = self.batch_size * 2 + self.workers
        pending: deque[tuple[Path, Future[np.ndarray]]] = deque()
        queue_in = iter(paths)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="detseg-read")

        def fill() -> None:
            while len(pending) < window:
                path = next(queue_in, None)
                if path is None:
                    return
                pending.append((Path(path), pool.submit(read_image, path)))

        def decoded() -> Iterator[_Item]:
            fill()
            while pending:
                path, future = pending.popleft()
                fill()
                try:
                    yield _Item(future.result(), path=path)
                except ImageReadError as err:
                    self._report(err, on_error)
                except OSError as err:
                    self._report(ImageReadError(path, str(err)), on_error)

        try:
            yield from self._stream(decoded())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def predict_frames(self, frames: Iterable[Frame],
                       path: str | Path | None = None) -> Iterator[Result]:
        """Results for decoded video frames (``detseg.engine.video.Frame``), batched."""
        source = Path(path) if path is not None else None
        yield from self._stream(_Item(f.image, source, f.index, f.timestamp) for f in frames)

    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[Result]:
        """Results for RGB uint8 H x W x 3 arrays, in order."""
        for i, image in enumerate(images):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise UsageError(f"image {i}: expected an H x W x 3 uint8 RGB array, got "
                                 f"{image.dtype} {image.shape}")
        return list(self._stream(_Item(im) for im in images))

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _report(err: ImageReadError, on_error: ErrorCallback | None) -> None:
        if on_error is None:
            raise err
        on_error(err)

    def _stream(self, items: Iterable[_Item]) -> Iterator[Result]:
        batch: list[_Item] = []
        for item in items:
            batch.append(item)
            if len(batch) == self.batch_size:
                yield from self.run_batch(batch)
                batch = []
        if batch:
            yield from self.run_batch(batch)

    def _autocast(self) -> AbstractContextManager:
        if self.half_active:
            return torch.autocast("cuda", dtype=torch.float16)
        return nullcontext()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 H x W x 3 -> float 3 x H x W in [0, 1] on the device (cast after copy)."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).to(self.device, non_blocking=True)
        return tensor.permute(2, 0, 1).float().div_(255.0)

    def run_batch(self, items: Sequence[_Item]) -> list[Result]:
        """One forward pass over ``items``; stage times are split evenly over the batch."""
        with torch.inference_mode():
            t0 = time.perf_counter()
            if self.task == "semantic":
                batch, sizes = self._letterbox([it.image for it in items])
            else:
                tensors = [self._to_tensor(it.image) for it in items]
            self._sync()
            t1 = time.perf_counter()
            with self._autocast():
                output = self.model(batch) if self.task == "semantic" else self.model(tensors)
            self._sync()
            t2 = time.perf_counter()
            if self.task == "semantic":
                results = self._semantic_results(items, output, sizes)
            else:
                results = self._detection_results(items, output)
            t3 = time.perf_counter()
        n = len(items)
        speed = StageTimes((t1 - t0) * 1e3 / n, (t2 - t1) * 1e3 / n, (t3 - t2) * 1e3 / n)
        for result in results:
            result.speed = speed
        return results

    def _result(self, item: _Item, **fields: object) -> Result:
        return Result(image=item.image, spec=self.spec, path=item.path,
                      frame_index=item.frame_index, timestamp=item.timestamp, **fields)

    def _detection_results(self, items: Sequence[_Item],
                           outputs: list[dict[str, torch.Tensor]]) -> list[Result]:
        results = []
        allowed = (torch.tensor(self.classes, device=self.device)
                   if self.classes is not None else None)
        for item, out in zip(items, outputs, strict=True):
            scores, labels = out["scores"], out["labels"]
            keep = scores >= self.conf
            if allowed is not None:
                keep &= torch.isin(labels, allowed)
            idx = keep.nonzero().squeeze(1)
            idx = idx[scores[idx].argsort(descending=True, stable=True)][: self.max_det]
            h, w = item.image.shape[:2]
            boxes = out["boxes"][idx].float()
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            fields: dict[str, object] = {
                "boxes": boxes.cpu().numpy().astype(np.float32),
                "labels": labels[idx].cpu().numpy().astype(np.int64),
                "scores": scores[idx].float().cpu().numpy().astype(np.float32),
            }
            if "masks" in out:
                fields["masks"] = (out["masks"][idx, 0] > 0.5).cpu().numpy()
            results.append(self._result(item, **fields))
        return results

    def _letterbox(self, images: Sequence[np.ndarray]
                   ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Resize each image so its long side is ``imgsz`` (or the spec's input size),
        normalize, and pad all to one size (a multiple of 32). Returns the batch and each
        image's resized ``(h, w)`` (its top-left region of the batch)."""
        side = self.imgsz or self.spec.input_size
        scaled, sizes = [], []
        for image in images:
            h, w = image.shape[:2]
            ratio = side / max(h, w)
            size = (max(1, round(h * ratio)), max(1, round(w * ratio)))
            x = self._to_tensor(image)[None]
            if size != (h, w):
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                                  antialias=ratio < 1)
            scaled.append((x - self._mean) / self._std)
            sizes.append(size)
        ph = math.ceil(max(s[0] for s in sizes) / PAD_MULTIPLE) * PAD_MULTIPLE
        pw = math.ceil(max(s[1] for s in sizes) / PAD_MULTIPLE) * PAD_MULTIPLE
        batch = torch.zeros((len(images), 3, ph, pw), device=self.device)
        for i, (x, (h, w)) in enumerate(zip(scaled, sizes, strict=True)):
            batch[i, :, :h, :w] = x[0]
        if self._channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch, sizes

    def _semantic_results(self, items: Sequence[_Item], output: object,
                          sizes: Sequence[tuple[int, int]]) -> list[Result]:
        from detseg.models import semantic_logits

        logits = semantic_logits(output).float()
        results = []
        for i, (item, (sh, sw)) in enumerate(zip(items, sizes, strict=True)):
            h, w = item.image.shape[:2]
            x = logits[i : i + 1, :, :sh, :sw]
            if self.classes is not None:
                blocked = torch.ones(x.shape[1], dtype=torch.bool, device=x.device)
                blocked[[c for c in self.classes if c < x.shape[1]]] = False
                blocked[0] = False
                x = x.masked_fill(blocked.view(1, -1, 1, 1), float("-inf"))
            if x.shape[1] * h * w <= MAX_UPSAMPLED_LOGITS:
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
                labels = self._pixel_labels(x)
            else:
                labels = self._pixel_labels(x)[None, None].float()
                labels = F.interpolate(labels, size=(h, w), mode="nearest")[0, 0].long()
            results.append(self._result(item, semantic=labels.cpu().numpy().astype(np.int64)))
        return results

    def _pixel_labels(self, logits: torch.Tensor) -> torch.Tensor:
        """1 x C x H x W logits -> H x W labels, 255 where the top probability is below conf."""
        if self.conf <= 0:
            return logits[0].argmax(0)
        prob, labels = logits[0].softmax(0).max(0)
        return labels.masked_fill(prob < self.conf, IGNORE_INDEX)

