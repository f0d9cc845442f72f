"""``detseg benchmark``: parameters, GFLOPs, latency, throughput and peak memory of models."""

from __future__ import annotations

import typer

from detseg.spec import MAX_IMGSZ, MIN_IMGSZ

from .console import console, fail, print_json, print_table

COLUMNS = ("model", "backbone", "imgsz", "batch_size", "device", "params", "gflops",
           "latency_ms_p50", "latency_ms_p90", "throughput", "peak_mem_mb")


def register(app: typer.Typer) -> None:
    """Add the ``benchmark`` command to the detseg app."""
    app.command("benchmark")(benchmark_command)


def benchmark_command(
    model: str | None = typer.Option(
        None, "--model", "-m", help="Family or preset name (optional with --weights)."),
    backbone: str | None = typer.Option(None, "--backbone", help="Backbone for a family."),
    weights: str | None = typer.Option(
        None, "--weights", "-w", help="Weights (none: random init; speed does not depend on "
        "them)."),
    num_classes: int | None = typer.Option(
        None, "--num-classes", min=1, help="Outputs of a new model."),
    imgsz: int | None = typer.Option(
        None, "--imgsz", min=MIN_IMGSZ, max=MAX_IMGSZ,
        help="Square input side; families without --weights are built for it "
        "(default: each model's spec input size)."),
    batch_size: int = typer.Option(1, "--batch-size", "-b", min=1, help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:1 or auto."),
    half: bool = typer.Option(False, "--half", help="fp16 autocast."),
    iters: int = typer.Option(20, "--iters", min=1, help="Timed forward passes."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed passes first."),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads for torch (default: torch's own choice); on a "
        "busy machine 1 gives steadier CPU timings."),
    all_families: bool = typer.Option(
        False, "--all", help="Sweep every registered family (see `detseg models`) on one "
        "backbone (default tiny) into one table."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON (a list with --all)."),
) -> None:
    """Measure a model: params, GFLOPs, latency p50/p90, images/s, peak memory.

    GFLOPs are counted with torch.utils.flop_counter (1 multiply-add = 2 FLOPs) on one forward
    pass of the whole batch. Latency is per batch after warm-up with the device synchronized.
    Peak memory is CUDA max allocated, or the process' peak RSS on CPU. Detectors resize
    images to their spec's input size; a family built here without --weights gets --imgsz as
    that size, so it really runs at --imgsz.

    Examples:

      detseg benchmark --model faster_rcnn --backbone tiny --imgsz 320

      detseg benchmark --all --backbone tiny --imgsz 320 --threads 1 --json

      detseg benchmark --model deeplabv3_resnet50 --device cuda --half -b 8
    """
    from detseg.engine.device import select_device
    from detseg.models import list_models
    from detseg.profile import benchmark

    from .model_options import build_cli_model

    if not all_families and model is None and weights is None:
        fail("give --model, --weights with a detseg checkpoint, or --all")
    if all_families and (model is not None or weights is not None):
        fail("--all sweeps the families itself; drop --model/--weights")
    if threads is not None:
        if threads < 1:
            fail("--threads must be at least 1")
        import torch

        torch.set_num_threads(threads)
    dev = select_device(device)
    names = list_models(kind="family") if all_families else [model]
    chosen_backbone = backbone or ("tiny" if all_families else None)
    rows = []
    for name in names:
        net = build_cli_model(name, chosen_backbone, weights, num_classes, imgsz)
        size = imgsz or net.spec.input_size
        if not json_out:
            console.print(f"benchmarking {name or net.spec.family} at {size}px on {dev} ...",
                          highlight=False)
        rows.append(benchmark(net, imgsz=size, batch_size=batch_size, device=dev, half=half,
                              iters=iters, warmup=warmup, name=name).to_dict())
        del net
    if json_out:
        print_json(rows if all_families else rows[0])
        return
    print_table("benchmark", COLUMNS, [[row[key] for key in COLUMNS] for row in rows])
