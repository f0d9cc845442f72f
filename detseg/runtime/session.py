"""Open an exported file in its runtime and run it on numpy arrays.

``GraphSession(path)`` runs ONNX files through ONNX Runtime (the CPU provider; the CUDA one
where ONNX Runtime has it and the session is moved to a CUDA device) and TorchScript files
through ``torch.jit``. ONNX Runtime gets ``intra_op_num_threads`` = torch's thread count (so
``--threads`` / ``torch.set_num_threads`` steer both runtimes) and one inter-op thread.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detseg.errors import WeightsError
from detseg.runtime.files import METADATA_KEY, TORCHSCRIPT_EXTRA, ZIP_MAGIC, exported_format

RUNTIME_OF_FORMAT = {"onnx": "onnxruntime", "torchscript": "torchscript"}


def _reason(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1][:200] if lines else 'no message'}"


def onnxruntime_module(path: Path) -> Any:
    """The ``onnxruntime`` module, or ``WeightsError`` saying it is needed for ``path``."""
    try:
        import onnxruntime
    except ImportError as err:
        raise WeightsError(f"{path}: running an ONNX model needs the onnxruntime package "
                           f"(pip install 'detseg[onnx]' or pip install onnxruntime), which is not "
                           f"installed") from err
    return onnxruntime


class GraphSession:
    """An exported graph ready to run: ``session(images [N,3,H,W] float32) -> outputs``.

    Args:
        path: an ONNX or TorchScript file written by ``detseg export`` (told apart by
            content, see ``detseg.runtime.files``).
        quiet: silence ONNX Runtime's own error log (for probing whether a graph runs).
        threads: intra-op threads (default: ``torch.get_num_threads()``).
        device: ``cpu`` or a CUDA device.

    Raises:
        WeightsError: no such file, a file that is not an exported model, a corrupt or
            truncated one, or onnxruntime missing; one line naming the file.
    """

    def __init__(self, path: str | Path, quiet: bool = False, threads: int | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise WeightsError(f"{self.path}: no such exported model file")
        with open(self.path, "rb") as fh:
            zipped = fh.read(4) == ZIP_MAGIC
        fmt = exported_format(self.path) or ("torchscript" if zipped else "onnx")
        self.format = fmt
        self.runtime = RUNTIME_OF_FORMAT[fmt]
        self.quiet = quiet
        self.threads = threads or torch.get_num_threads()
        self.device = torch.device(device)
        self._extra = ""
        if fmt == "onnx":
            self._session = self._onnx_session()
        else:
            self._module = self._torchscript_module()

    # ------------------------------------------------------------------ opening
    def _providers(self) -> list[str]:
        ort = onnxruntime_module(self.path)
        if self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def _onnx_session(self) -> Any:
        ort = onnxruntime_module(self.path)
        options = ort.SessionOptions()
        options.log_severity_level = 4 if self.quiet else 3  # 4: fatal only, 3: errors
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        try:
            return ort.InferenceSession(str(self.path), options, providers=self._providers())
        except Exception as err:  # onnxruntime raises its own untyped errors for bad files
            raise WeightsError(f"{self.path}: not a readable ONNX model ({_reason(err)})") from err

    def _torchscript_module(self) -> Any:
        extra = {TORCHSCRIPT_EXTRA: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
                module = torch.jit.load(str(self.path), map_location=self.device,
                                        _extra_files=extra)
        except Exception as err:  # torch.jit.load raises RuntimeError/ValueError variants
            raise WeightsError(f"{self.path}: not a readable TorchScript model "
                               f"({_reason(err)})") from err
        self._extra = extra[TORCHSCRIPT_EXTRA]
        return module.eval()

    def to(self, device: str | torch.device) -> GraphSession:
        """Run on ``device`` from now on (ONNX: the CUDA provider where available)."""
        device = torch.device(device)
        if device != self.device:
            self.device = device
            if self.format == "onnx":
                self._session = self._onnx_session()
            else:
                self._module = self._module.to(device)
        return self

    # ------------------------------------------------------------------ facts
    @property
    def providers(self) -> list[str]:
        """The ONNX Runtime providers in use (``[]`` for TorchScript)."""
        return list(self._session.get_providers()) if self.format == "onnx" else []

    @property
    def input_shape(self) -> list[int | str]:
        """The graph's input shape, free axes by name (TorchScript: all free)."""
        if self.format == "onnx":
            return list(self._session.get_inputs()[0].shape)
        return ["N", 3, "H", "W"]

    @property
    def metadata(self) -> dict[str, Any]:
        """The detseg description stored in the file (``spec``, ``task``, ``outputs``,
        ``imgsz``, ``dynamic_batch``, ``dynamic_size``...).

        Raises:
            WeightsError: the file carries none (not written by ``detseg export``).
        """
        if self.format == "onnx":
            raw = self._session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        else:
            try:
                raw = json.loads(self._extra or "{}").get(METADATA_KEY)
            except (json.JSONDecodeError, AttributeError):
                raw = None
        try:
            description = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            description = None
        if not isinstance(description, dict):
            raise WeightsError(f"{self.path}: no detseg metadata in this {self.format} file "
                               f"(export the model with `detseg export` to run it here)")
        return description

    # ------------------------------------------------------------------ running
    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        if self.format == "onnx":
            return list(self._session.run(None, {"images": images}))
        with torch.inference_mode():
            out = self._module(torch.from_numpy(images).to(self.device))
        outs = out if isinstance(out, (list, tuple)) else [out]
        return [o.cpu().numpy() for o in outs]

    def run_tensor(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images [N,3,H,W]`` float -> outputs as tensors on ``images``' device
        (TorchScript stays in torch; ONNX goes through numpy)."""
        if self.format == "torchscript":
            out = self._module(images.to(self.device))
            outs = out if isinstance(out, (list, tuple)) else [out]
            return [o.to(images.device) for o in outs]
        arrays = self(np.ascontiguousarray(images.detach().float().cpu().numpy()))
        return [torch.from_numpy(a).to(images.device) for a in arrays]
