"""Presets are torchvision's networks: same keys and shapes, same outputs from one state dict.

Keys and shapes are compared for every preset on the meta device. The four ResNet-50 R-CNN
presets go through our families and backbone registry, so their outputs are compared with
torchvision's after loading one random state dict (the two Mask R-CNNs, which contain every
module of the Faster R-CNNs); the others call torchvision's own builder, so their outputs are
equal by construction.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from detseg.errors import ModelBuildError
from detseg.models import build_model, model_info, semantic_logits
from detseg.models.presets import PRESETS

SIDE = 64


def _torchvision(name: str) -> torch.nn.Module:
    kwargs = {"aux_loss": True} if PRESETS[name].options.get("aux_loss") else {}
    return torchvision.models.get_model(name, weights=None, weights_backbone=None, **kwargs)


def _shrink(model: torch.nn.Module) -> None:
    """Small input, few proposals, no score threshold: a cheap forward that returns boxes."""
    model.transform.min_size, model.transform.max_size = (SIDE,), SIDE
    model.rpn._pre_nms_top_n = model.rpn._post_nms_top_n = {"training": 50, "testing": 50}
    model.roi_heads.score_thresh = 0.0
    model.roi_heads.detections_per_img = 10


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_has_torchvision_keys_and_shapes(name: str) -> None:
    """Built on the meta device (no memory, no init): state-dict keys, shapes and transform."""
    with torch.device("meta"):
        ours, theirs = build_model(name), _torchvision(name)
    ours_state, their_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(their_state)
    assert all(ours_state[k].shape == v.shape for k, v in their_state.items())
    if hasattr(theirs, "transform"):
        for attr in ("min_size", "max_size", "image_mean", "image_std", "fixed_size"):
            assert getattr(ours.transform, attr) == getattr(theirs.transform, attr)


@pytest.mark.parametrize("name", ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"])
def test_registry_built_preset_gives_torchvision_outputs(name: str) -> None:
    """The Mask R-CNN presets hold every module of the Faster R-CNN ones (v1 and v2 heads)."""
    ours, theirs = build_model(name), _torchvision(name)
    ours.load_state_dict(theirs.state_dict())
    for model in (ours, theirs):
        _shrink(model)
        model.eval()
    images = [torch.rand(3, SIDE, SIDE)]
    with torch.no_grad():
        (a,), (b,) = ours(images), theirs(images)
    assert set(a) == set(b) and a["boxes"].shape[0] > 0
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_semantic_preset_output() -> None:
    model = build_model("lraspp_mobilenet_v3_large").eval()
    with torch.no_grad():
        logits = semantic_logits(model(torch.rand(1, 3, SIDE, SIDE)))
    assert logits.shape == (1, 21, SIDE, SIDE)


def test_preset_metadata_and_class_names() -> None:
    info = model_info("fasterrcnn_resnet50_fpn_v2")
    assert info["weights"] == "FasterRCNN_ResNet50_FPN_V2_Weights"
    assert (info["task"], info["family"], info["backbone"]) == ("detect", "faster_rcnn",
                                                                 "resnet50")
    for name, preset in PRESETS.items():
        enum = torchvision.models.get_model_weights(name)
        assert enum.__name__ == preset.weights
        names = preset.class_names()
        if preset.task == "semantic":
            assert len(names) == 21 and names[:2] == ["__background__", "aeroplane"]
        else:
            assert len(names) == 91 and names[:2] == ["__background__", "person"]
            assert names[12] == "N/A"


def test_preset_spec_and_custom_classes() -> None:
    model = build_model("lraspp_mobilenet_v3_large", num_classes=4,
                        class_names=["bg", "a", "b", "c"])
    assert model.spec.family == "lraspp_mobilenet_v3_large"
    assert model.spec.class_names == ["bg", "a", "b", "c"]
    assert model.classifier.low_classifier.out_channels == 4
    with pytest.raises(ModelBuildError, match="has backbone"):
        build_model("fcos_resnet50_fpn", backbone="resnet18")
    with pytest.raises(ModelBuildError, match="no option"):
        build_model("ssd300_vgg16", fpn_channels=3)
