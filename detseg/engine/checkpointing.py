"""Random-state capture and seeding for repeatable training, and shippable weight exports.

Every random-number generator the training loop touches (Python ``random``, NumPy, torch CPU
and CUDA) is seeded from ``(seed, epoch, rank)`` at each epoch start, and captured as plain
tensors/lists so that a checkpoint stays loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from detseg.errors import WeightsError
from detseg.spec import ModelSpec


def derive_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 31-bit seed for one epoch of one rank, distinct for every (seed, epoch, rank)."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**31 - 1)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """The state of every generator, as tensors, ints and lists only."""
    # The global generator is MT19937: its state is the legacy tuple (the stubs allow a dict).
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    kind, keys, pos, has_gauss, cached = legacy
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def export_weights(src: str | Path, dst: str | Path, half: bool = True,
                   ema: bool = False) -> Path:
    """Write the model weights and spec of checkpoint ``src`` alone to ``dst`` (fp16 if ``half``).

    ``ema``: write the averaged weights a resumable checkpoint (``last.pt`` of a run with
    ``--ema``) keeps beside the trained ones (``WeightsError`` where it has none).
    The optimizer and training state are dropped; the training metrics are kept under
    ``metrics`` and the training arguments under ``train_args`` so the file documents itself.
    """
    from detseg.weights import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(src)
    state = ckpt.state_dict
    if ema:
        averaged = ckpt.extra.get("ema")
        if not isinstance(averaged, dict) or "weights" not in averaged:
            raise WeightsError(f"{src}: no EMA weights (only last.pt of a run with --ema "
                               f"keeps them)")
        state = averaged["weights"]
    keep = {k: ckpt.extra[k] for k in ("metrics", "train_args", "epoch") if k in ckpt.extra}
    return save_checkpoint(dst, state, ckpt.spec, half=half, **keep)


def spec_for_dataset(spec: ModelSpec, class_names: list[str], category_ids: list[int],
                     input_size: int | None) -> ModelSpec:
    """``spec`` with the dataset's class names and category ids (and the training image size)."""
    data = spec.to_dict()
    data.update(class_names=list(class_names), category_ids=[int(c) for c in category_ids],
                num_classes=len(class_names))
    if input_size:
        data["input_size"] = int(input_size)
    return ModelSpec.from_dict(data)


def ship_weights(best: str | Path, name: str, weights_dir: str | Path = "weights",
                 description: str = "", command: str = "", ema: bool = False) -> dict[str, Any]:
    """Export checkpoint ``best`` (its EMA weights with ``ema``, see ``export_weights``) as
    ``weights_dir/NAME.pt`` (fp16) and record it in ``weights_dir/manifest.json`` (file,
    sha256, task, family, backbone; other keys such as ``metrics`` are kept). Returns the
    manifest entry."""
    import hashlib
    import json

    weights_dir = Path(weights_dir)
    dst = export_weights(best, weights_dir / f"{name}.pt", half=True, ema=ema)
    from detseg.weights import load_checkpoint

    spec = load_checkpoint(dst).spec
    manifest_path = weights_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    entry = dict(manifest.get(name, {}))
    entry.update(file=dst.name, sha256=hashlib.sha256(dst.read_bytes()).hexdigest(),
                 task=spec.task, family=spec.family, backbone=spec.backbone)
    if description:
        entry["description"] = description
    if command:
        entry["command"] = command
    manifest[name] = entry
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(manifest_path)
    return entry
