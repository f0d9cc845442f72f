"""Building the model named by ``--model/--backbone/--weights/--num-classes/--imgsz`` for the
tool commands (export, benchmark, summary, explain)."""

from __future__ import annotations

from typing import Any

from .console import fail


def build_cli_model(model: str | None, backbone: str | None, weights: str | None,
                    num_classes: int | None = None, imgsz: int | None = None,
                    need_trained: bool = False, exported: bool = False) -> Any:
    """The model in eval mode, by the weights policy of ``detseg.models.loading``.

    ``exported``: an exported ``--weights`` file (ONNX, TorchScript) runs through
    ``detseg.runtime`` (explain, benchmark); without it such a file is refused in one line.

    A family built without weights (or a new head with ``num_classes``) is built for ``imgsz``
    (its spec's ``input_size``), so a detector really runs at that resolution; a loaded model
    gets ``imgsz`` through its task adapter (a preset's resize follows it too).
    """
    from detseg.models import build_model, model_info
    from detseg.models.loading import load_model
    from detseg.tasks import InferenceSettings, task_adapter

    if model is None and weights is None:
        fail("give --model, or --weights with a detseg checkpoint or manifest name")
    fresh = model is not None and model_info(model)["kind"] == "family" \
        and weights in (None, "none") and not need_trained
    if fresh or num_classes is not None:
        options: dict[str, Any] = {"input_size": imgsz} if imgsz and fresh else {}
        net = build_model(model, backbone=backbone, num_classes=num_classes, weights=weights,
                          **options)
    else:
        net = load_model(model, weights, backbone, need_trained=need_trained,
                         exported=exported)
    if imgsz is not None:
        task_adapter(net).configure(net, InferenceSettings(imgsz=imgsz))
    return net.eval()
