"""Where weight files live: detseg's download cache, the shipped folder, torch's hub cache.

Downloads are cached under ``$DETSEG_HOME/weights`` (default ``~/.cache/detseg/weights``);
files already in torch's hub cache (``torch.hub.get_dir()/checkpoints``) are used as they are.
Shipped files live in the repository's ``weights/`` folder (``$DETSEG_WEIGHTS_DIR`` overrides).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from detseg.download import ProgressCallback, download, url_file_name

HOME_ENV = "DETSEG_HOME"
WEIGHTS_DIR_ENV = "DETSEG_WEIGHTS_DIR"


def detseg_home() -> Path:
    """detseg's cache root: ``$DETSEG_HOME`` or ``~/.cache/detseg``."""
    return Path(os.environ.get(HOME_ENV) or "~/.cache/detseg").expanduser()


def cache_dir() -> Path:
    """Where downloaded and imported weight files are kept: ``<detseg_home>/weights``."""
    return detseg_home() / "weights"


def shipped_dir() -> Path:
    """The folder of shipped weights and ``manifest.json`` (``$DETSEG_WEIGHTS_DIR`` overrides).

    Defaults to the repository's ``weights/`` folder next to the ``detseg`` package, which is
    where it is for a source checkout and an editable install.
    """
    override = os.environ.get(WEIGHTS_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[2] / "weights"


def torch_hub_checkpoints() -> Path:
    """torch's own download cache (``torch.hub.get_dir()/checkpoints``), reused read-only."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_cached(file_name: str) -> Path | None:
    """The first existing copy of ``file_name`` in detseg's cache, then torch's hub cache."""
    for folder in (cache_dir(), torch_hub_checkpoints()):
        candidate = folder / file_name
        if candidate.is_file():
            return candidate
    return None


def fetch_file(
    url: str,
    file_name: str | None = None,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """A local copy of ``url``: the cached file if there is one, else a verified download.

    ``file_name`` is the cache name (default: the URL's); ``sha256`` the expected digest or
    prefix (default: the hash prefix in the file name).

    Raises:
        WeightsError: the download fails (the message says how to supply the file by hand).
    """
    file_name = file_name or url_file_name(url)
    cached = find_cached(file_name)
    if cached is not None:
        return cached
    return download(url, cache_dir() / file_name, sha256=sha256, progress=progress)
