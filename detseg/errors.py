"""Typed errors raised by the library.

The CLI turns every ``DetsegError`` into a one-line message and an exit code;
library code never prints or exits.
"""

from __future__ import annotations

from pathlib import Path


class DetsegError(Exception):
    """Base class of every error detseg raises on purpose."""


class UsageError(DetsegError):
    """An option or argument combination that cannot work (CLI exit code 2)."""


class RegistryError(UsageError):
    """An unknown backbone or model name, or a combination that makes no sense."""


class ModelBuildError(UsageError):
    """A model family cannot be built over the requested backbone (the message says why)."""


class WeightsError(DetsegError):
    """Weights that cannot be found, downloaded, verified or loaded."""


class UnsafeCheckpointError(WeightsError):
    """A checkpoint that needs arbitrary code to unpickle; detseg refuses to load it."""


class ImageReadError(DetsegError):
    """An image file that cannot be decoded. ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class VideoReadError(ImageReadError):
    """A video file that cannot be opened or decoded."""


class DatasetError(DetsegError):
    """A dataset or annotation file that is missing or malformed."""


class EvalInputError(DetsegError):
    """Evaluation input (ground truth or results) that is malformed; names the offending entry."""


class NonFiniteLossError(DetsegError):
    """Training produced a NaN or infinite loss; the message says where and which checkpoint
    was kept."""


class ExportError(DetsegError):
    """A model that cannot be exported in the requested format; the message says why."""


class OutputError(DetsegError):
    """An output file that cannot be written (disk full, folder removed); names the file."""


class OutputFolderError(OutputError, UsageError):
    """An output folder that cannot be created or written to (CLI exit code 2)."""
