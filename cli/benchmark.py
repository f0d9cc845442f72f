"""``detseg benchmark``: parameters, GFLOPs, latency, throughput and peak memory of models;
with ``--runtime``, of one model in several runtimes (PyTorch, ONNX Runtime, TorchScript)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import typer

from detseg.spec import MAX_IMGSZ, MIN_IMGSZ

from .console import console, fail, print_json, print_table

COLUMNS = ("model", "backbone", "imgsz", "batch_size", "device", "params", "gflops",
           "latency_ms_p50", "latency_ms_p90", "throughput", "peak_mem_mb")
#: ``--runtime`` names: PyTorch, then the export format each other runtime runs
RUNTIME_FORMATS = {"torch": None, "onnxruntime": "onnx", "torchscript": "torchscript"}


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
    runtime: str | None = typer.Option(
        None, "--runtime", help="Compare runtimes in one table, comma-separated: torch, "
        "onnxruntime, torchscript (the model is exported to a temporary file for each "
        "non-torch runtime; default: torch, or the runtime of an exported --weights file)."),
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

      detseg benchmark --weights shapes-ssd --runtime torch,onnxruntime --threads 1
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
    runtimes = _runtimes(runtime)
    if runtimes is not None:
        if all_families:
            fail("--runtime compares one model; drop --all")
        _compare_runtimes(runtimes, model, backbone, weights, num_classes, imgsz, batch_size,
                          dev, half, iters, warmup, json_out)
        return
    names = list_models(kind="family") if all_families else [model]
    chosen_backbone = backbone or ("tiny" if all_families else None)
    rows = []
    for name in names:
        net = build_cli_model(name, chosen_backbone, weights, num_classes, imgsz, exported=True)
        if half and _runtime_of(net) != "torch":
            fail("--half: an exported model runs in the precision it was exported in")
        size = imgsz or net.spec.input_size
        if not json_out:
            console.print(f"benchmarking {name or net.spec.family} at {size}px on {dev} ...",
                          highlight=False)
        rows.append(benchmark(net, imgsz=size, batch_size=batch_size, device=dev, half=half,
                              iters=iters, warmup=warmup, name=name,
                              counted_on=_counted_on(net, size)).to_dict())
        del net
    if json_out:
        print_json(rows if all_families else rows[0])
        return
    print_table("benchmark", COLUMNS, [[row[key] for key in COLUMNS] for row in rows])


def _runtimes(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in RUNTIME_FORMATS]
    if unknown or not names:
        fail(f"--runtime: unknown runtime {', '.join(unknown) or repr(value)}; choose from "
             f"{', '.join(RUNTIME_FORMATS)}")
    return list(dict.fromkeys(names))


def _runtime_of(net: Any) -> str:
    return str(getattr(net, "runtime", "torch"))


def _counted_on(net: Any, size: int) -> Any:
    """The PyTorch network whose parameters and FLOPs stand for an exported model's (built
    randomly from the spec in the file: counts do not depend on the weights); ``None`` for a
    PyTorch model."""
    if _runtime_of(net) == "torch":
        return None
    from detseg.models import build_from_spec
    from detseg.tasks import InferenceSettings, task_adapter

    counted = build_from_spec(net.spec)
    task_adapter(counted).configure(counted, InferenceSettings(imgsz=size))
    return counted


def _compare_runtimes(runtimes: list[str], model: str | None, backbone: str | None,
                      weights: str | None, num_classes: int | None, imgsz: int | None,
                      batch_size: int, dev: Any, half: bool, iters: int, warmup: int,
                      json_out: bool) -> None:
    """One row per runtime for one model: the PyTorch model, and its export to a temporary
    ONNX / TorchScript file run through ``detseg.runtime``."""
    from detseg.export import export_model
    from detseg.profile import benchmark
    from detseg.runtime import load_exported

    from .model_options import build_cli_model

    net = build_cli_model(model, backbone, weights, num_classes, imgsz, exported=True)
    own = _runtime_of(net)
    if own != "torch" and runtimes != [own]:
        fail(f"--runtime {','.join(runtimes)}: --weights {weights} is an exported {own} model; "
             f"compare runtimes from the PyTorch checkpoint")
    if half and runtimes != ["torch"]:
        fail("--half applies to the torch runtime only (an exported graph runs in the "
             "precision it was exported in)")
    size = imgsz or net.spec.input_size
    label = model or net.spec.family
    rows = []
    with tempfile.TemporaryDirectory(prefix="detseg-benchmark-") as tmp:
        for name in runtimes:
            fmt = RUNTIME_FORMATS[name]
            subject, counted = net, _counted_on(net, size)
            if fmt is not None and own == "torch":
                if not json_out:
                    console.print(f"exporting {label} to {fmt} at {size}px ...",
                                  highlight=False)
                path = Path(tmp) / f"{net.spec.family}.{fmt}"
                export_model(net, fmt, path, imgsz=size, dynamic=batch_size > 1)
                subject, counted = load_exported(path), net
            if not json_out:
                console.print(f"benchmarking {label} in {name} at {size}px on {dev} ...",
                              highlight=False)
            result = benchmark(subject, imgsz=size, batch_size=batch_size, device=dev,
                               half=half, iters=iters, warmup=warmup, name=label,
                               counted_on=counted)
            rows.append({"runtime": name, **result.to_dict()})
    if json_out:
        print_json(rows)
        return
    columns = ("runtime", *COLUMNS)
    print_table("benchmark by runtime", columns, [[row[key] for key in columns] for row in rows])
