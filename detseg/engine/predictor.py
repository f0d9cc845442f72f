"""Batched inference: ``Predictor`` builds a model once and streams ``Result`` objects.

Images are decoded by a thread pool a bounded number of images ahead of the model (memory stays
flat over any number of inputs), grouped into batches of ``batch_size`` (mixed sizes allowed),
and run under ``torch.inference_mode()`` (autocast fp16 on CUDA with ``half``; on CPU the
speed-ups of ``detseg.engine.cpu_speedups``, equal up to float rounding). How images are fed
to the model and its output read back is the task adapter's job (``detseg.tasks``); a batch is
split into runs of images the adapter can batch without changing their results, so results do
not depend on ``batch_size``.

Example::

    predictor = Predictor(weights="runs/train/exp/best.pt", conf=0.3)
    for result in predictor.predict(["images/", "clip.mp4"]):
        print(result.path, result.counts())
"""

from __future__ import annotations

import copy
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from torch import nn

from detseg.engine.cpu_speedups import speed_up_for_cpu
from detseg.engine.device import select_device
from detseg.engine.results import Result, StageTimes
from detseg.engine.slicing import SlicedPicture, SliceOptions
from detseg.errors import ImageReadError, UsageError
from detseg.prediction import Prediction
from detseg.spec import ModelSpec, model_spec

if TYPE_CHECKING:
    from detseg.engine.frames import Frame
    from detseg.tasks import Prepared

#: an image is downscaled before the model when it is this many times larger on each side than
#: the size the model resizes it to anyway
SHRINK_FACTOR = 2
ErrorCallback = Callable[[ImageReadError], None]


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
            ``deeplabv3_resnet50``, ...), an ``nn.Module`` with a ``spec`` (copied: the caller's
            module is left as it was), or ``None`` when ``weights`` is a detseg checkpoint or
            manifest entry (its spec rebuilds the model).
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
        iou: NMS IoU threshold of detectors (boxes of one class overlapping a higher-scored one
            by more are dropped); ``None`` keeps the model's own.
        need_trained: refuse a family name without weights (``detseg.models.loading``) instead
            of running it randomly initialised.
        slicing: cut pictures larger than ``slicing.size`` into overlapping tiles, run the
            tiles (``batch_size`` at a time) and merge their detections or blend their class
            scores (``detseg.engine.slicing``); ``None`` runs every picture whole.
    """

    def __init__(self, model: str | nn.Module | None = None, weights: str | None = None,
                 backbone: str | None = None, device: str | torch.device = "auto",
                 conf: float | None = None, classes: Iterable[str | int] | None = None,
                 max_det: int = 100, imgsz: int | None = None, batch_size: int = 1,
                 half: bool = False, workers: int | None = None,
                 need_trained: bool = False, iou: float | None = None,
                 slicing: SliceOptions | None = None) -> None:
        from detseg.tasks import InferenceSettings, task_adapter

        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        self.device = select_device(device)
        self.model = self._build(model, weights, backbone, need_trained)
        self.spec: ModelSpec = model_spec(self.model)
        self.task = self.spec.task
        self.names = self.spec.names()
        self.adapter = task_adapter(self.spec)
        self.settings = InferenceSettings(
            conf=conf if conf is not None else self.adapter.default_conf, max_det=max_det,
            imgsz=imgsz, iou=iou,
            classes=(tuple(c) if (c := resolve_classes(classes, self.names)) is not None
                     else None))
        self.batch_size = batch_size
        self.slicing = slicing
        if half and getattr(self.model, "runtime", "torch") != "torch":
            raise UsageError(f"--half: {weights} is an exported model; it runs in the precision "
                             f"it was exported in (export the checkpoint with --half for "
                             f"float16)")
        self.half_active = bool(half) and self.device.type == "cuda"
        self.workers = workers or max(1, min(4, (os.cpu_count() or 2) // 2))
        on_cpu = self.device.type == "cpu"
        self.model.eval().to(self.device)
        if on_cpu:
            speed_up_for_cpu(self.model)
        elif self.adapter.channels_last_on_cuda:
            self.model.to(memory_format=torch.channels_last)
        self.adapter.configure(self.model, self.settings)

    @property
    def conf(self) -> float:
        """The score threshold in use."""
        return float(self.settings.conf or 0.0)

    @property
    def classes(self) -> list[int] | None:
        """The model labels kept, or ``None`` for all."""
        return list(self.settings.classes) if self.settings.classes is not None else None

    @property
    def max_det(self) -> int | None:
        return self.settings.max_det

    @property
    def imgsz(self) -> int | None:
        return self.settings.imgsz

    # ------------------------------------------------------------------ building

    @staticmethod
    def _build(model: str | nn.Module | None, weights: str | None,
               backbone: str | None, need_trained: bool) -> nn.Module:
        """The model to run. A module passed in is copied, so the caller's module keeps its
        mode, device, thresholds and layers."""
        if isinstance(model, nn.Module):
            if not isinstance(getattr(model, "spec", None), ModelSpec):
                raise UsageError("a model passed as a module needs a `spec` (ModelSpec) "
                                 "attribute")
            return copy.deepcopy(model)
        from detseg.models.loading import load_model

        return load_model(model, weights, backbone, need_trained=need_trained)

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
        from detseg.engine.frames import VideoFrames

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
        """Results of ``items`` in order: one forward pass per run of images the task adapter
        batches without changing their results; stage times are split evenly over a run."""
        if self.slicing is not None:
            return [self._run_sliced(item) for item in items]
        results: list[Result] = []
        start = 0
        keys = [self.adapter.batch_key(it.image.shape[0], it.image.shape[1], self.settings.imgsz)
                for it in items]
        for end in range(1, len(items) + 1):
            if end == len(items) or keys[end] != keys[start]:
                results.extend(self._run_same_key(items[start:end]))
                start = end
        return results

    def _shrunk(self, image: np.ndarray) -> np.ndarray:
        """``image`` downscaled (area-averaged, in uint8) when it is over twice as large on each
        side as what the model works at, so a huge picture never becomes a huge float tensor;
        its prediction is mapped back to the full size."""
        h, w = image.shape[:2]
        wh, ww = self.adapter.working_size(h, w, self.settings.imgsz)
        if h < SHRINK_FACTOR * wh or w < SHRINK_FACTOR * ww:
            return image
        return cv2.resize(image, (ww, wh), interpolation=cv2.INTER_AREA)

    def _forward(self, images: Sequence[np.ndarray]) -> tuple[Any, Prepared, float, float]:
        """The model's raw output for RGB uint8 ``images`` of one batch key, the prepared batch,
        and the seconds spent preparing and running it (call under ``inference_mode``)."""
        t0 = time.perf_counter()
        prepared = self.adapter.prepare([self._to_tensor(im) for im in images],
                                        self.settings.imgsz)
        if self.device.type == "cuda" and self.adapter.channels_last_on_cuda:
            prepared.inputs = prepared.inputs.contiguous(memory_format=torch.channels_last)
        self._sync()
        t1 = time.perf_counter()
        with self._autocast():
            output = self.adapter.forward(self.model, prepared)
        self._sync()
        return output, prepared, t1 - t0, time.perf_counter() - t1

    def _predictions(self, items: Sequence[_Item]) -> tuple[list[Prediction], StageTimes]:
        """Predictions of ``items`` (one batch key) at their full size, and the stage times per
        image."""
        with torch.inference_mode():
            t0 = time.perf_counter()
            inputs = [self._shrunk(it.image) for it in items]
            shrink = time.perf_counter() - t0
            output, prepared, prep, infer = self._forward(inputs)
            t2 = time.perf_counter()
            predictions = self.adapter.postprocess(output, prepared, self.settings)
            predictions = [p if p.size == it.image.shape[:2] else p.rescaled(it.image.shape[:2])
                           for p, it in zip(predictions, items, strict=True)]
            post = time.perf_counter() - t2
        n = len(items)
        return predictions, StageTimes((shrink + prep) * 1e3 / n, infer * 1e3 / n,
                                       post * 1e3 / n)

    def _result(self, item: _Item, prediction: Prediction, speed: StageTimes) -> Result:
        return Result(image=item.image, spec=self.spec, path=item.path,
                      frame_index=item.frame_index, timestamp=item.timestamp, speed=speed,
                      **prediction.fields())

    def _run_same_key(self, items: Sequence[_Item]) -> list[Result]:
        predictions, speed = self._predictions(items)
        return [self._result(item, prediction, speed)
                for item, prediction in zip(items, predictions, strict=True)]

    def _class_map(self, scores: torch.Tensor) -> np.ndarray:
        """h x w int64 class map of C x h x w class scores (``conf``, ``classes`` applied)."""
        labels = self.adapter.labels_from_scores(scores, self.settings).semantic
        assert labels is not None, "only semantic adapters give class scores"
        return labels

    def _run_sliced(self, item: _Item) -> Result:
        """One picture through ``self.slicing``: the whole picture first with ``full``, then its
        tiles ``batch_size`` at a time, merged or blended; stage times summed over the passes."""
        assert self.slicing is not None, "called only with slicing"
        h, w = item.image.shape[:2]
        if not self.slicing.applies(h, w):
            return self._run_same_key([item])[0]
        picture = SlicedPicture(h, w, self.slicing, to_labels=self._class_map)
        # every tile is kept: conf and classes apply after the merge, max_det to the picture
        tile_settings = replace(self.settings, max_det=None)
        passes: list[int | None] = [None] if self.slicing.full else []
        passes += list(range(0, len(picture.tiles), self.batch_size))
        times = np.zeros(3)
        pixelwise = False
        with torch.inference_mode():
            for start in passes:
                images = ([self._shrunk(item.image)] if start is None
                          else picture.crops(item.image, start, start + self.batch_size))
                output, prepared, prep, infer = self._forward(images)
                t0 = time.perf_counter()
                scores = self.adapter.pixel_scores(output, prepared)
                pixelwise = scores is not None
                tiles = [None] if start is None else list(range(start, start + len(images)))
                if scores is not None:
                    for tile, tile_scores in zip(tiles, scores, strict=True):
                        picture.add_scores(tile, tile_scores)
                else:
                    predictions = self.adapter.postprocess(output, prepared, tile_settings)
                    for tile, prediction in zip(tiles, predictions, strict=True):
                        if tile is None and prediction.size != (h, w):  # shrunk
                            prediction = prediction.rescaled((h, w))
                        picture.add_detections(tile, prediction)
                times += (prep, infer, time.perf_counter() - t0)
            t0 = time.perf_counter()
            prediction = (Prediction(size=(h, w), semantic=picture.labels()) if pixelwise
                          else picture.detections(self.settings.conf, self.settings.classes,
                                                  self.settings.max_det))
            times[2] += time.perf_counter() - t0
        return self._result(item, prediction, StageTimes(*(times * 1e3).tolist()))
