"""Which files are exported models, and the detseg description they carry.

``detseg export`` writes two kinds of files, told apart by content whatever their name:

- ONNX: a protobuf ``ModelProto``; its first field is ``ir_version`` (tag byte ``0x08``, a small
  varint, then the ``producer_name`` string, tag ``0x12``). The description is the JSON under
  the ``metadata_props`` key ``detseg``.
- TorchScript: a zip archive holding ``<name>/code/`` and ``<name>/constants.pkl``; the
  description is the JSON file ``<name>/extra/detseg.json``. A ``torch.save`` checkpoint is a
  zip archive too, but without ``code/``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

#: the metadata key (ONNX) and the JSON key (TorchScript extra file) of the description
METADATA_KEY = "detseg"
#: the TorchScript extra file that holds the description
TORCHSCRIPT_EXTRA = "detseg.json"
#: file name endings that name an exported model whatever the content
SUFFIX_FORMATS = {".onnx": "onnx", ".torchscript": "torchscript"}
ZIP_MAGIC = b"PK\x03\x04"


def _is_torchscript_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.endswith("/constants.pkl")
                       for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _looks_like_onnx(head: bytes) -> bool:
    """An ONNX ``ModelProto`` header: ``ir_version`` (a one-byte varint) then a string field."""
    return len(head) >= 3 and head[0] == 0x08 and 0 < head[1] < 0x80 and head[2] == 0x12


def exported_format(path: str | Path) -> str | None:
    """``"onnx"``, ``"torchscript"`` or ``None`` (not an exported model: a checkpoint, or no
    such file). A ``.onnx`` / ``.torchscript`` name counts even when the content is broken, so
    a truncated export gets the exported-model error rather than a checkpoint one."""
    path = Path(path)
    if not path.is_file():
        return None
    if path.suffix.lower() in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[path.suffix.lower()]
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return None
    if head == ZIP_MAGIC:
        return "torchscript" if _is_torchscript_zip(path) else None
    return "onnx" if _looks_like_onnx(head) else None
