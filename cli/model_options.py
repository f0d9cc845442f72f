"""Building the model named by ``--model/--backbone/--weights/--num-classes/--imgsz`` for the
tool commands (export, benchmark, summary, explain)."""

from __future__ import annotations

from typing import Any

from detseg.cli.console import fail


def build_cli_model(model: str | None, backbone: str | None, weights: str | None,
                    num_classes: int | None = None, imgsz: int | None = None) -> Any:
    """The model in eval mode.

    A family built without weights is built for ``imgsz`` (its spec's ``input_size``), so a
    detector really runs at that resolution; with weights or a preset the spec decides, and
    ``imgsz`` is only the side of the image fed in.
    """
    from detseg.models import build_model, model_info

    if model is None and weights is None:
        fail("give --model, or --weights with a detseg checkpoint or manifest name")
    options: dict[str, Any] = {}
    if imgsz is not None and weights in (None, "none") and model_info(model)["kind"] == "family":
        options["input_size"] = imgsz
    return build_model(model, backbone=backbone, num_classes=num_classes, weights=weights,
                       **options).eval()
