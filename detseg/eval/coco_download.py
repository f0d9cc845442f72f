"""Fetch COCO val2017 (images + annotations) into the layout ``build_dataset("coco")`` reads.

``ROOT/val2017/*.jpg`` and ``ROOT/annotations/instances_val2017.json``. Each archive is
downloaded with ``detseg.download.download`` (streamed to a ``.part`` file, resumed with an
HTTP Range request after an interruption, progress callback or the installed progress bar),
its CRC-32 checksums are verified (COCO publishes no sha256 to check against), and it is
extracted into a temporary folder that is moved into place only when complete. What is
already in place is not fetched again. ``$DETSEG_COCO_URL_BASE`` replaces the official
``http://images.cocodataset.org`` (a mirror, or a local test server).
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

from detseg.download import ProgressCallback, download
from detseg.errors import DatasetError

URL_BASE_ENV = "DETSEG_COCO_URL_BASE"
OFFICIAL_URL_BASE = "http://images.cocodataset.org"
# (path under the URL base, what the archive provides under ROOT)
VAL2017_FILES = (
    ("zips/val2017.zip", "val2017"),
    ("annotations/annotations_trainval2017.zip", "annotations/instances_val2017.json"),
)


def coco_url_base() -> str:
    return os.environ.get(URL_BASE_ENV, OFFICIAL_URL_BASE).rstrip("/")


def download_coco_val2017(root: str | Path, progress: ProgressCallback | None = None
                          ) -> list[Path]:
    """Download and extract what is missing of COCO val2017 under ``root``.

    Returns the paths that were fetched (empty when everything was already there).
    Raises ``WeightsError`` (download) or ``DatasetError`` (corrupt or unsafe archive).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fetched = []
    for rel, provides in VAL2017_FILES:
        target = root / provides
        if target.exists():
            continue
        archive = download(f"{coco_url_base()}/{rel}", root / Path(rel).name, progress=progress)
        _extract(archive, root)
        if not target.exists():
            raise DatasetError(f"{archive}: the archive does not contain {provides}")
        archive.unlink()
        fetched.append(target)
    return fetched


def _extract(archive: Path, root: Path) -> None:
    """Verify ``archive`` and move its top-level entries into ``root`` once fully extracted."""
    tmp = root / f".extract-{archive.stem}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise DatasetError(f"{archive}: checksum error in {bad}; delete it and retry")
            for name in zf.namelist():
                dest = (tmp / name).resolve()
                if not dest.is_relative_to(tmp.resolve()):
                    raise DatasetError(f"{archive}: member {name!r} would leave the folder")
            zf.extractall(tmp)
    except zipfile.BadZipFile as err:
        archive.unlink(missing_ok=True)
        raise DatasetError(f"{archive}: not a valid zip archive ({err}); deleted, retry") from None
    for entry in tmp.iterdir():
        _merge(entry, root / entry.name)
    shutil.rmtree(tmp, ignore_errors=True)


def _merge(src: Path, dest: Path) -> None:
    if not dest.exists():
        src.rename(dest)
    elif src.is_dir() and dest.is_dir():
        for child in src.iterdir():
            _merge(child, dest / child.name)
