"""``detseg train``: train or fine-tune a detector or segmenter on a dataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from detseg.spec import MAX_IMGSZ, MIN_IMGSZ

from .console import console, fail, styled, warn


def _progress_callback():
    """A ``TrainCallback`` drawing a rich progress bar with the running losses and it/s."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from detseg.engine.trainer import TrainCallback

    class RichProgress(TrainCallback):
        def __init__(self) -> None:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(bar_width=24),
                MofNCompleteColumn(), TextColumn("{task.fields[speed]}"),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
                console=console, transient=False,
            )
            self.task_id: Any = None
            self.epochs = 0

        def on_fit_start(self, trainer: Any) -> None:
            self.epochs = trainer.config.epochs
            console.print(f"training {trainer.spec.family} ({trainer.spec.backbone}) on "
                          f"{len(trainer.train_set)} images, {trainer.spec.num_classes} classes, "
                          f"device {trainer.device}; output {trainer.out_dir}")
            self.progress.start()

        def on_epoch_start(self, epoch: int, num_batches: int, start_batch: int) -> None:
            self.task_id = self.progress.add_task(
                f"epoch {epoch + 1}/{self.epochs}", total=num_batches, completed=start_batch,
                losses="", speed="",
            )

        def on_batch_end(self, epoch: int, batch: int, num_batches: int,
                         losses: dict[str, float], lr: float) -> None:
            task = self.progress.tasks[self.task_id]
            shown = " ".join(f"{k.removeprefix('loss_')}={v:.3f}" for k, v in losses.items())
            self.progress.update(self.task_id, advance=1, losses=f"{shown} lr={lr:.2e}")
            speed = task.speed
            if speed:
                self.progress.update(self.task_id, speed=f"{speed:.2f} it/s")
            # Without a terminal (logs, nohup) the bar is not redrawn: print a line at each 10%.
            step = max(1, num_batches // 10)
            if not console.is_terminal and ((batch + 1) % step == 0 or batch + 1 == num_batches):
                rate = f"{speed:.2f} it/s" if speed else ""
                console.print(f"epoch {epoch + 1}/{self.epochs} batch {batch + 1}/{num_batches} "
                              f"{shown} lr={lr:.2e} {rate}", highlight=False)

        def on_validation_start(self, epoch: int) -> None:
            self.progress.update(self.task_id, description=f"epoch {epoch + 1}/{self.epochs} val")

        def on_epoch_end(self, epoch: int, row: dict[str, float]) -> None:
            shown = "  ".join(f"{k}={v:.4f}" for k, v in row.items()
                              if k.startswith(("val/loss", "metrics/")) and
                              k.split("/")[-1] in ("loss", "bbox_AP", "bbox_AP50", "segm_AP",
                                                   "segm_AP50", "mIoU", "pixel_acc"))
            self.progress.console.print(f"epoch {epoch + 1}: {shown}  ({row['time_s']:.0f}s)")

        def on_message(self, text: str) -> None:
            self.progress.console.print(styled("note:", "cyan", text), highlight=False)

        def on_fit_end(self, result: Any) -> None:
            self.progress.stop()

    return RichProgress()


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        model: str = typer.Option(None, "--model", "-m",
                                  help="Family or torchvision preset name (see `detseg models`)."),
        backbone: str = typer.Option(None, "--backbone",
                                     help="Backbone name (tiny, resnet18, ...; see `detseg "
                                          "backbones`)."),
        dataset: str = typer.Option(None, "--dataset", "-d",
                                    help="Dataset format (see `detseg dataset formats`)."),
        data_root: Path = typer.Option(None, "--data-root", help="Dataset folder."),
        ann: Path = typer.Option(None, "--ann", help="COCO: the annotation JSON, if not found "
                                 "under --data-root."),
        images: Path = typer.Option(None, "--images",
                                    help="Image folder (mask folders, COCO with --ann)."),
        masks: Path = typer.Option(None, "--masks", help="Mask folder of a masks dataset."),
        mask_type: str = typer.Option(None, "--mask-type",
                                      help="Mask folders: instance (ids per object) or class "
                                           "(class indices); default from classes.txt."),
        mask_suffix: str = typer.Option(None, "--mask-suffix",
                                        help="Mask folders: suffix of mask names (_mask, ...); "
                                             "default: found automatically."),
        epochs: int = typer.Option(None, "--epochs", "-e", min=1, help="Epochs (default 30)."),
        batch_size: int = typer.Option(None, "--batch-size", "-b", min=1,
                                       help="Images per batch and process (default 8)."),
        imgsz: int = typer.Option(None, "--imgsz", min=MIN_IMGSZ, max=MAX_IMGSZ,
                                  help="Training image size in pixels (default: the model's)."),
        crop: int = typer.Option(None, "--crop", min=MIN_IMGSZ, max=MAX_IMGSZ,
                                 help="Semantic models: train on random CROP x CROP windows at "
                                      "full resolution (input size stays --imgsz)."),
        lr: float = typer.Option(None, "--lr", min=0.0,
                                 help="Base learning rate (SGD 0.01, AdamW 1e-3)."),
        optimizer: str = typer.Option(None, "--optimizer", help="sgd (default) or adamw."),
        weight_decay: float = typer.Option(None, "--weight-decay", min=0.0,
                                           help="SGD 1e-4, AdamW 0.05 by default."),
        schedule: str = typer.Option(None, "--schedule",
                                     help="cosine (default) or step, after warmup."),
        warmup_epochs: float = typer.Option(None, "--warmup-epochs", min=0.0,
                                            help="Linear warmup length (default 1)."),
        clip_grad: float = typer.Option(None, "--clip-grad", min=0.0,
                                        help="Max gradient norm (default 10; 0: off)."),
        seed: int = typer.Option(None, "--seed",
                                 help="Random seed (default 0; bit-for-bit repeatable on CPU)."),
        augment: str = typer.Option(None, "--augment", help="none, light (default) or strong."),
        workers: int = typer.Option(None, "--workers", min=0,
                                    help="Data-loading worker processes (default 0)."),
        out: Path = typer.Option(None, "--out", help="Output folder (default runs/train/NAME)."),
        name: str = typer.Option("exp", "--name", help="Run name under runs/train/."),
        weights: str = typer.Option(None, "--weights", "-w",
                                    help="Start from a checkpoint, manifest name or preset "
                                         "weights; heads with another class count are "
                                         "replaced; a checkpoint of the same family keeps "
                                         "the options it was built with (--model-option "
                                         "overrides); one of another family (same "
                                         "backbone) starts the backbone."),
        pretrained_backbone: bool = typer.Option(None, "--pretrained-backbone",
                                                 help="ImageNet weights for the backbone."),
        freeze: int = typer.Option(None, "--freeze", min=0,
                                   help="Freeze the first N backbone stages."),
        backbone_lr_scale: float = typer.Option(
            None, "--backbone-lr-scale", min=0.0,
            help="Backbone LR multiplier (0.1 with pretrained weights, else 1)."),
        accumulate: int = typer.Option(None, "--accumulate", min=1,
                                       help="Batches per optimizer step (default 1)."),
        patience: int = typer.Option(None, "--patience", min=0,
                                     help="Stop after N epochs without improvement (0: off)."),
        amp: bool = typer.Option(None, "--amp/--no-amp", help="Mixed precision on CUDA (on)."),
        device: str = typer.Option(None, "--device", help="auto (default), cpu, cuda, cuda:1."),
        threads: int = typer.Option(None, "--threads", min=1,
                                    help="CPU threads for torch (default: OMP_NUM_THREADS or "
                                         "all cores); kept by --resume."),
        eval_max_images: int = typer.Option(None, "--eval-max-images", min=1,
                                            help="Evaluate on at most N validation images."),
        val_loss: bool = typer.Option(None, "--val-loss/--no-val-loss",
                                      help="Also compute the losses on the validation split "
                                           "every epoch (off: one pass less; always on with "
                                           "no metrics); can change on --resume."),
        ema: bool = typer.Option(None, "--ema/--no-ema",
                                 help="Keep an EMA of the weights; validation and best.pt "
                                      "use it (default off)."),
        mosaic: float = typer.Option(None, "--mosaic", min=0.0, max=1.0,
                                     help="Probability of a four-image mosaic sample "
                                          "(detection; default 0: off)."),
        close_mosaic: int = typer.Option(None, "--close-mosaic", min=0,
                                         help="No mosaic in the last N epochs (default 10)."),
        roi_samples: int = typer.Option(None, "--roi-samples", min=1,
                                        help="R-CNN proposals sampled per image in training "
                                             "(default 512; fewer is faster)."),
        train_split: str = typer.Option(None, "--train-split",
                                        help="Split to train on (default train)."),
        val_split: str = typer.Option(None, "--val-split",
                                      help="Split to validate on (default val)."),
        resume: Path = typer.Option(None, "--resume",
                                    help="Continue the run of this last.pt (with a larger "
                                         "--epochs: extend a finished run)."),
        option: list[str] = typer.Option(None, "--model-option",
                                         help="Extra model builder option KEY=VALUE (repeat)."),
    ) -> None:
        """Train a model, or fine-tune one from --weights, on a dataset.

        Writes last.pt, best.pt, results.csv and results.png to the run folder.

        Examples:

          detseg train --model unet --backbone tiny --dataset shapes --data-root data/shapes

          detseg train --resume runs/train/exp/last.pt --epochs 40
        """
        import torch

        from detseg.engine.trainer import TrainConfig, Trainer
        from detseg.runs import remove_stale_temporaries

        if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        callbacks = [_progress_callback()]
        # Only what the user gave: every default lives in TrainConfig.
        given = {key: value for key, value in {
            "model": model, "backbone": backbone, "epochs": epochs, "batch_size": batch_size,
            "imgsz": imgsz, "crop": crop, "lr": lr, "optimizer": optimizer,
            "weight_decay": weight_decay, "schedule": schedule, "warmup_epochs": warmup_epochs,
            "clip_grad": clip_grad, "seed": seed, "augment": augment, "workers": workers,
            "weights": weights, "pretrained_backbone": pretrained_backbone, "freeze": freeze,
            "backbone_lr_scale": backbone_lr_scale, "accumulate": accumulate,
            "patience": patience, "amp": amp, "device": device, "threads": threads,
            "eval_max_images": eval_max_images, "val_loss": val_loss,
            "ema": ema, "mosaic": mosaic, "close_mosaic": close_mosaic,
            "roi_samples": roi_samples,
            "train_split": train_split, "val_split": val_split,
        }.items() if value is not None}
        if resume is not None:
            if not resume.is_file():
                fail(f"--resume {resume}: no such file")
            remove_stale_temporaries(resume.parent)  # left by a save that was killed midway
            overrides = {k: given[k] for k in ("device", "workers", "threads",
                                                "eval_max_images", "val_loss") if k in given}
            trainer = Trainer.resume(resume, epochs=epochs, callbacks=callbacks,
                                     overrides=overrides)
        else:
            if dataset is None or data_root is None:
                fail("give --dataset and --data-root (or --resume DIR/last.pt)")
            if model is None and weights is None:
                fail("give --model (or --weights with a detseg checkpoint)")
            dataset_options = {key: str(value) if isinstance(value, Path) else value
                               for key, value in {"ann_file": ann, "images_dir": images,
                                                  "masks_dir": masks, "mask_type": mask_type,
                                                  "mask_suffix": mask_suffix}.items()
                               if value is not None}
            config = TrainConfig(model=given.pop("model", None), dataset=dataset,
                                 data_root=str(data_root), dataset_options=dataset_options,
                                 model_options=_parse_options(option or []), **given)
            trainer = Trainer(config, _out_dir(out, name), callbacks)
        try:
            result = trainer.fit()
        finally:
            trainer.close()
        if not trainer.dist.is_main:
            return
        if result.bad_samples:
            warn(f"{result.bad_samples} samples failed to load and were skipped")
        best = f"{result.best_path} (epoch {result.best_epoch}, {result.fitness_key} = " \
               f"{result.best_fitness:.4f})" if result.best_path else "none"
        console.print(f"{result.status} after {result.epochs_done} epochs; best: {best}; "
                      f"last: {result.last_path}", highlight=False)
        if result.status == "interrupted":
            again = f" --threads {threads}" if threads else ""
            console.print(f"resume with: detseg train --resume {result.last_path}{again}",
                          highlight=False)
            raise typer.Exit(130)


def _out_dir(out: Path | None, name: str) -> Path:
    """A fresh run folder; only rank 0 creates it, the other ranks get the same path."""
    from detseg.engine.distributed import dist_info_from_env
    from detseg.runs import new_run_dir

    if dist_info_from_env().enabled:
        if out is None:
            fail("with torchrun, give --out so every process writes to the same folder")
        return out
    return new_run_dir("train", name, out)


def _parse_options(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict; values parsed as YAML scalars (numbers, lists, bools)."""
    import yaml

    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--model-option {item!r}: expected KEY=VALUE")
        options[key] = yaml.safe_load(value)
    return options
