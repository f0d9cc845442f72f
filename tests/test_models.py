"""Model families: build over registry backbones, train-mode losses, eval-mode outputs."""

from __future__ import annotations

import copy

import pytest
import torch

from detseg.backbones import build_backbone
from detseg.errors import ModelBuildError, RegistryError
from detseg.models import (
    build_from_spec,
    build_model,
    list_models,
    load_matching_state_dict,
    model_info,
    semantic_logits,
)
from detseg.spec import ModelSpec

FAMILIES = ["faster_rcnn", "mask_rcnn", "ssd", "ssdlite", "unet", "segnet"]
BACKBONES = ["tiny", "resnet18", "mobilenet_v3_large", "vgg16_bn"]
H, W = 64, 56
_BUILT: dict[str, torch.nn.Module] = {}


@pytest.fixture
def cached_backbones(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build each backbone once per session and hand out deep copies (VGG takes seconds)."""
    import detseg.models as models

    def build(name: str, pretrained: bool = False) -> torch.nn.Module:
        if name not in _BUILT:
            _BUILT[name] = build_backbone(name, pretrained)
        return copy.deepcopy(_BUILT[name])

    monkeypatch.setattr(models, "build_backbone", build)


def _fewer_proposals(model: torch.nn.Module) -> None:
    """Keep R-CNN tests cheap: fewer RPN proposals and sampled RoIs than torchvision's."""
    if hasattr(model, "rpn"):
        model.rpn._pre_nms_top_n = {"training": 200, "testing": 100}
        model.rpn._post_nms_top_n = {"training": 100, "testing": 50}
        model.roi_heads.fg_bg_sampler.batch_size_per_image = 64
        model.roi_heads.detections_per_img = 10


def _images_and_targets() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images = [torch.rand(3, H, W), torch.rand(3, H, W)]
    targets = []
    for box in ([8.0, 10.0, 40.0, 50.0], [20.0, 5.0, 60.0, 30.0]):
        mask = torch.zeros(1, H, W, dtype=torch.uint8)
        x0, y0, x1, y1 = (int(v) for v in box)
        mask[0, y0:y1, x0:x1] = 1
        targets.append({"boxes": torch.tensor([box]), "labels": torch.tensor([1]),
                        "masks": mask})
    return images, targets


def check_family(name: str, backbone: str) -> None:
    """Train mode gives finite losses (backpropagated over ``tiny``: the cheap one); eval mode
    gives outputs of the right keys, shapes and ranges."""
    model = build_model(name, backbone=backbone, num_classes=3, input_size=H)
    assert model.spec.family == name and model.spec.backbone == backbone
    assert model.spec.num_classes == 3 and model.spec.task == model_info(name)["task"]
    _fewer_proposals(model)
    model.train()
    if model.spec.task == "semantic":
        batch = torch.rand(2, 3, H, W)  # batch 2: BatchNorm needs > 1 value per channel
        logits = model(batch)
        assert logits.shape == (2, 3, H, W)
        loss = torch.nn.functional.cross_entropy(logits, torch.randint(0, 3, (2, H, W)))
        if backbone == "tiny":
            loss.backward()
            assert model.backbone.stem[0].weight.grad is not None
        model.eval()
        with torch.no_grad():
            assert semantic_logits(model(batch[:1])).shape == (1, 3, H, W)
        return
    images, targets = _images_and_targets()
    losses = model(images, targets)
    expected = {"ssd": {"bbox_regression", "classification"},
                "ssdlite": {"bbox_regression", "classification"},
                "faster_rcnn": {"loss_box_reg", "loss_classifier", "loss_objectness",
                                "loss_rpn_box_reg"}}
    expected["mask_rcnn"] = expected["faster_rcnn"] | {"loss_mask"}
    assert set(losses) == expected[name]
    total = sum(losses.values())
    assert torch.isfinite(total)
    if backbone == "tiny":
        total.backward()
        assert model.backbone.body.stem[0].weight.grad is not None
    model.eval()
    with torch.no_grad():
        (out,) = model(images[:1])
    keys = {"boxes", "labels", "scores"} | ({"masks"} if name == "mask_rcnn" else set())
    assert set(out) == keys
    n = out["boxes"].shape[0]
    assert out["boxes"].shape == (n, 4) and out["labels"].shape == (n,)
    assert out["labels"].dtype == torch.int64 and out["scores"].shape == (n,)
    if n:
        assert out["boxes"][:, 2].max() <= W and out["boxes"][:, 3].max() <= H
        assert int(out["labels"].min()) >= 1 and int(out["labels"].max()) <= 2
    if name == "mask_rcnn":
        assert out["masks"].shape == (n, 1, H, W) and out["masks"].dtype == torch.float32


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("name", FAMILIES)
def test_family_over_backbone(name: str, backbone: str, cached_backbones: None) -> None:
    check_family(name, backbone)


def test_spec_round_trip_rebuilds_same_outputs() -> None:
    model = build_model("unet", backbone="tiny", num_classes=4, input_size=64).eval()
    again = build_from_spec(ModelSpec.from_dict(model.spec.to_dict())).eval()
    again.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_options_are_stored_and_used() -> None:
    model = build_model("faster_rcnn", backbone="tiny", num_classes=2, input_size=256)
    opts = model.spec.options
    assert opts["anchor_sizes"] == [10, 20, 41, 82, 164]
    assert opts["fpn_channels"] == 64 and opts["min_size"] == 256 and opts["max_size"] == 427
    assert model.transform.min_size == (256,)
    custom = build_model("faster_rcnn", backbone="tiny", num_classes=2, fpn_channels=32,
                         anchor_sizes=[8, 16, 32, 64, 128])
    assert custom.backbone.out_channels == 32
    assert custom.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))


def test_rpn_proposal_counts_are_options() -> None:
    torch.manual_seed(0)
    few = build_model("faster_rcnn", backbone="tiny", num_classes=3, input_size=128,
                      rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=7).eval()
    images, _ = few.transform([torch.rand(3, 128, 96)])
    with torch.no_grad():
        proposals, _ = few.rpn(images, few.backbone(images.tensors))
    assert 0 < proposals[0].shape[0] <= 7
    # a spec stored before the options existed keeps torchvision's 1000
    stored = few.spec.to_dict()
    for key in ("rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test"):
        del stored["options"][key]
    old = build_from_spec(ModelSpec.from_dict(stored)).eval()
    assert old.rpn.pre_nms_top_n() == old.rpn.post_nms_top_n() == 1000
    with pytest.raises(ModelBuildError, match="rpn_post_nms_top_n_test must be at least 1"):
        build_model("faster_rcnn", backbone="tiny", num_classes=3, rpn_post_nms_top_n_test=0)


def test_bad_requests_raise_clear_errors() -> None:
    with pytest.raises(ModelBuildError, match="no option"):
        build_model("unet", backbone="tiny", num_classes=2, anchor_sizes=[1])
    with pytest.raises(RegistryError, match="did you mean"):
        build_model("faster_rcn", backbone="tiny", num_classes=2)
    with pytest.raises(RegistryError, match="unknown backbone"):
        build_model("unet", backbone="resnet5", num_classes=2)
    with pytest.raises(ModelBuildError, match="strides"):
        build_model("ssd", backbone="tiny", num_classes=2, source_levels=["s8", "s64"])


def test_load_matching_state_dict_skips_head() -> None:
    source = build_model("faster_rcnn", backbone="tiny", num_classes=5)
    target = build_model("faster_rcnn", backbone="tiny", num_classes=3)
    skipped = load_matching_state_dict(target, source.state_dict())
    assert skipped == ["roi_heads.box_predictor.bbox_pred.bias",
                       "roi_heads.box_predictor.bbox_pred.weight",
                       "roi_heads.box_predictor.cls_score.bias",
                       "roi_heads.box_predictor.cls_score.weight"]
    key = "backbone.body.stages.0.1.0.weight"
    assert torch.equal(target.state_dict()[key], source.state_dict()[key])


def test_list_models_by_task() -> None:
    assert set(FAMILIES) <= set(list_models())
    semantic = list_models(task="semantic")
    assert "unet" in semantic and "deeplabv3_resnet50" in semantic and "ssd" not in semantic
    assert list_models("fasterrcnn_*") == [
        "fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_mobilenet_v3_large_fpn",
        "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2"]


def test_cli_models_json_and_task_filter() -> None:
    import json

    from typer.testing import CliRunner

    from detseg.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["models", "--json", "--task", "instance"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == ["mask_rcnn", "maskrcnn_resnet50_fpn",
                                         "maskrcnn_resnet50_fpn_v2"]
    assert rows[0] == {"name": "mask_rcnn", "task": "instance", "family": "mask_rcnn",
                       "backbone": "resnet50", "pretrained": False}
    assert rows[1]["family"] == "mask_rcnn" and rows[1]["pretrained"] is True
    table = runner.invoke(app, ["models"])
    assert table.exit_code == 0 and "deeplabv3_resnet50" in table.output
    assert runner.invoke(app, ["models", "--task", "panoptic"]).exit_code == 2
    assert "Examples" in runner.invoke(app, ["models", "--help"]).output


def test_backbone_facts_do_not_draw_random_numbers() -> None:
    from detseg.backbones import backbone_info

    state = torch.random.get_rng_state()
    for name in ("tiny", "regnet_y_800mf", "resnet18"):
        backbone_info(name)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_weights_file_rebuilds_model_and_transfers_to_new_classes(tmp_path) -> None:
    from detseg.weights import save_checkpoint

    model = build_model("ssdlite", backbone="tiny", num_classes=4, input_size=64,
                        class_names=["__background__", "a", "b", "c"]).eval()
    path = save_checkpoint(tmp_path / "ssdlite.pt", model.state_dict(), model.spec)
    again = build_model(weights=str(path)).eval()
    assert again.spec == model.spec
    images = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        assert torch.equal(again(images)[0]["scores"], model(images)[0]["scores"])
    other = build_model(weights=str(path), num_classes=3)
    assert other.spec.num_classes == 3 and other.spec.class_names == []
    key = "backbone.body.stages.4.2.0.weight"
    assert torch.equal(other.state_dict()[key], model.state_dict()[key])
    with pytest.raises(ModelBuildError, match="not unet"):
        build_model("unet", weights=str(path))


def test_preset_weights_load_strictly_or_transfer(monkeypatch) -> None:
    """A torchvision state dict (no spec) for a preset: strict load, or a new head."""
    import detseg.weights
    from detseg.weights import LoadedWeights

    reference = build_model("lraspp_mobilenet_v3_large").state_dict()
    asked = []

    def fake_resolve(weights, default_enum=None):
        asked.append((weights, default_enum))
        return LoadedWeights(state_dict=reference, spec=None, source="test")

    monkeypatch.setattr(detseg.weights, "resolve_weights", fake_resolve)
    model = build_model("lraspp_mobilenet_v3_large", weights="DEFAULT")
    assert asked == [("DEFAULT", "LRASPP_MobileNet_V3_Large_Weights")]
    assert model.spec.class_names[:2] == ["__background__", "aeroplane"]
    key = "classifier.high_classifier.weight"
    assert torch.equal(model.state_dict()[key], reference[key])
    new = build_model("lraspp_mobilenet_v3_large", weights="DEFAULT", num_classes=3)
    assert new.state_dict()[key].shape[0] == 3
    key = "backbone.0.0.weight"
    assert torch.equal(new.state_dict()[key], reference[key])
