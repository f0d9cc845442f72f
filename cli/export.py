"""``detseg export``: write a model as ONNX or TorchScript, with its ModelSpec inside."""

from __future__ import annotations

from pathlib import Path

import typer

from detseg.spec import MAX_IMGSZ, MIN_IMGSZ

from .console import console, fail, print_table, warn


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to the detseg app."""
    app.command("export")(export_command)


def export_command(
    model: str | None = typer.Option(
        None, "--model", "-m", help="Family (faster_rcnn, ssd, unet, ...) or preset name; "
        "optional with a detseg checkpoint in --weights."),
    backbone: str | None = typer.Option(None, "--backbone", help="Backbone for a family."),
    weights: str | None = typer.Option(
        None, "--weights", "-w", help="Checkpoint, manifest name, enum name or DEFAULT "
        "(none: random initialisation)."),
    num_classes: int | None = typer.Option(
        None, "--num-classes", min=1, help="Outputs of a new model."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),
    imgsz: int | None = typer.Option(
        None, "--imgsz", min=MIN_IMGSZ, max=MAX_IMGSZ,
        help="Side of the sample image traced; a family without --weights is "
        "built for it (default: the spec's input size)."),
    dynamic: bool = typer.Option(
        False, "--dynamic", help="Free input height/width (and batch for semantic models)."),
    half: bool = typer.Option(False, "--half", help="fp16 weights and input (ONNX needs CUDA)."),
    device: str = typer.Option("cpu", "--device", help="Device to export on (cpu, cuda:0)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (17 or newer)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output file (default runs/export/exp*/<model>.<format>)."),
    check: bool = typer.Option(
        False, "--check", help="Run the file (onnxruntime / torch.jit) on sample images and "
        "print the max absolute difference from PyTorch."),
    check_image: Path | None = typer.Option(
        None, "--check-image", help="With --check: also compare on this real picture (resized "
        "to --imgsz)."),
) -> None:
    """Export a model to ONNX (opset >= 17) or TorchScript.

    The exported graph takes float RGB images in [0, 1], N x 3 x H x W, and normalizes them
    itself. Detectors take one image (N = 1) and return boxes, labels, scores (and masks);
    semantic models return logits N x C x H x W. The ModelSpec (class names, mean/std, input
    size) is stored in the file: ONNX metadata_props key "detseg", TorchScript extra file
    "detseg.json".

    Examples:

      detseg export --weights shapes-faster_rcnn --format onnx --dynamic --check

      detseg export --model unet --backbone tiny --format torchscript --imgsz 256

      detseg export --weights runs/train/exp/best.pt -f onnx --out model.onnx
    """
    from detseg.engine.device import select_device
    from detseg.export import EXPORT_FORMATS, SUFFIXES, check_export, export_model
    from detseg.runs import new_run_dir

    from .model_options import build_cli_model

    if fmt not in EXPORT_FORMATS:
        fail(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if check_image is not None and not check:
        fail("--check-image goes with --check")
    net = build_cli_model(model, backbone, weights, num_classes, imgsz)
    if weights is None:
        warn("no --weights: exporting randomly initialised weights")
    net = net.to(select_device(device))
    spec = net.spec
    size = imgsz or spec.input_size
    stem = "_".join(part for part in (spec.family, spec.backbone) if part)
    path = out if out is not None else new_run_dir("export") / f"{stem}{SUFFIXES[fmt]}"
    result = export_model(net, fmt, path, imgsz=size, dynamic=dynamic, half=half, opset=opset)
    size_mb = result.path.stat().st_size / 2**20
    console.print(f"exported {stem} -> {result.path} ({result.method}, {size_mb:.1f} MB, "
                  f"{result.seconds:.1f} s)", highlight=False, soft_wrap=True)
    console.print(f"input images {result.input_shape}; outputs {', '.join(result.output_names)}",
                  highlight=False)
    for note in result.notes:
        warn(note)
    if not check:
        return
    picture = None
    if check_image is not None:
        from detseg.data.io import read_image

        picture = read_image(check_image)
    verdict = check_export(result, net, size, picture)
    print_table(f"check ({verdict.runtime} vs PyTorch)", ["output", "max abs diff"],
                [[name, f"{diff:.3g}"] for name, diff in verdict.per_output.items()])
    for note in verdict.notes:
        warn(note)
    console.print(f"max abs diff {verdict.max_abs_diff:.3g} over inputs "
                  f"{', '.join('x'.join(map(str, s)) for s in verdict.input_shapes)}",
                  highlight=False)
