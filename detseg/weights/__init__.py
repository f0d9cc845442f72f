"""Where weights come from, where they are cached, and how checkpoints are read and written.

``resolve_weights`` turns a ``--weights`` value (parsed once by ``parse_weights`` into a
``WeightsRef``) into tensors:

- ``DEFAULT``: the torchvision weights the caller names as ``default_enum`` (a preset's);
- a torchvision enum name such as ``FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1``;
- a local ``.pt`` / ``.pth`` / ``.ckpt`` / ``.safetensors`` file: a detseg checkpoint, a plain
  state dict, a torchvision-references or Lightning-style training checkpoint;
- a name in ``weights/manifest.json`` (``shapes-faster_rcnn``);
- an ``http(s)://`` URL, verified by the manifest's sha256, the hash prefix in its file name
  (``name-<hex>.pth``) or a ``#sha256=<hex>`` fragment.

Every file is read with ``torch.load(weights_only=True)`` (plus a few harmless classes) or
safetensors: a pickle that needs arbitrary code raises ``UnsafeCheckpointError`` and nothing in
it runs. ``load_state_dict_checked`` loads tensors into a model strictly, naming every mismatch.

One job per module: ``cache`` (folders, cached downloads), ``manifest`` (read and write),
``references`` (parsing ``--weights``), ``torchvision_enums``, ``safe_load``, ``checkpoint``
(file layouts, detseg checkpoints), ``atomic`` (atomic writes), ``resolve``, ``fitting``
(loading into a model), ``catalog`` (list, import, verify). This package never imports
``detseg.models`` or ``detseg.backbones``.
"""

from detseg.weights.cache import (
    HOME_ENV,
    WEIGHTS_DIR_ENV,
    cache_dir,
    detseg_home,
    fetch_file,
    find_cached,
    shipped_dir,
    torch_hub_checkpoints,
)
from detseg.weights.catalog import (
    PretrainedModel,
    VerifyResult,
    WeightsInfo,
    import_weights,
    list_weights,
    verify_weights,
)
from detseg.weights.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    Checkpoint,
    LoadedWeights,
    load_checkpoint,
    read_weights_file,
    save_checkpoint,
)
from detseg.weights.fitting import load_state_dict_checked
from detseg.weights.manifest import (
    ManifestEntry,
    load_manifest,
    manifest_file,
    manifest_path,
    save_manifest,
)
from detseg.weights.references import WEIGHT_SUFFIXES, WeightsRef, parse_weights
from detseg.weights.resolve import download_weights, resolve_weights, url_target, weights_file
from detseg.weights.safe_load import harmless_globals, safe_torch_load
from detseg.weights.torchvision_enums import (
    load_torchvision_weights,
    torchvision_enum,
    torchvision_file,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "HOME_ENV",
    "WEIGHTS_DIR_ENV",
    "WEIGHT_SUFFIXES",
    "Checkpoint",
    "LoadedWeights",
    "ManifestEntry",
    "PretrainedModel",
    "VerifyResult",
    "WeightsInfo",
    "WeightsRef",
    "cache_dir",
    "detseg_home",
    "download_weights",
    "fetch_file",
    "find_cached",
    "harmless_globals",
    "import_weights",
    "list_weights",
    "load_checkpoint",
    "load_manifest",
    "load_state_dict_checked",
    "load_torchvision_weights",
    "manifest_file",
    "manifest_path",
    "parse_weights",
    "read_weights_file",
    "resolve_weights",
    "safe_torch_load",
    "save_checkpoint",
    "save_manifest",
    "shipped_dir",
    "torch_hub_checkpoints",
    "torchvision_enum",
    "torchvision_file",
    "url_target",
    "verify_weights",
    "weights_file",
]
