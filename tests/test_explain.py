"""`detseg explain`: pictures of the image's size; occlusion and Grad-CAM point at the object."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from detseg.cli.main import app
from detseg.data.io import read_image
from detseg.data.shapes import generate_shapes
from detseg.errors import UsageError
from detseg.explain import EXPLAIN_METHODS, explain
from detseg.explain.gradcam import grad_cam
from detseg.explain.occlusion import occlusion, occlusion_map
from detseg.explain.targets import box_iou
from detseg.models import build_model
from detseg.spec import ModelSpec
from detseg.weights import load_manifest, shipped_dir

runner = CliRunner()


@pytest.fixture(scope="module")
def shapes_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A non-square crop (96 x 80) of a generated shapes image."""
    root = generate_shapes(tmp_path_factory.mktemp("shapes"), train=0, val=1, size=96, workers=1)
    path = next((root / "images" / "val").iterdir())
    crop = read_image(path)[:, :80]
    out = path.with_name("crop.png")
    cv2.imwrite(str(out), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return out


class _SpotBackbone(nn.Module):
    """Stride-2 3x3 mean of the image's brightness, copied to 4 channels."""

    channels = [4]
    strides = [2]

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        nn.init.constant_(self.conv.weight, 1 / 27)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> OrderedDict:
        return OrderedDict(s2=F.relu(self.conv(x)))


class SpotSegmenter(nn.Module):
    """Semantic model: class 1 ("spot") wherever the image is bright, else background."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _SpotBackbone()
        self.head = nn.Conv2d(4, 2, 1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[1] = 1.0  # logit = 4 * brightness - 2
            self.head.bias[1] = -2.0
        self.spec = ModelSpec(family="spot", backbone=None, num_classes=2, task="semantic",
                              class_names=["background", "spot"], mean=(0, 0, 0), std=(1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone(x)["s2"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _spot_image() -> np.ndarray:
    image = np.zeros((64, 96, 3), np.uint8)
    image[16:40, 56:80] = 255
    return image


def test_occlusion_map_is_high_where_the_score_looks() -> None:
    image = torch.ones(3, 40, 60)

    def score(images: torch.Tensor) -> torch.Tensor:  # depends on rows 10..20, cols 30..40
        return images[:, :, 10:20, 30:40].mean(dim=(1, 2, 3))

    heat = occlusion_map(score, image, patch=10, stride=5)
    assert heat.shape == (40, 60)
    assert heat[10:20, 30:40].min() > 0.1
    assert heat[:, :20].max() == 0 and heat[30:].max() == 0
    assert np.unravel_index(heat.argmax(), heat.shape)[0] in range(10, 20)


def test_occlusion_and_gradcam_point_at_the_bright_spot() -> None:
    model, image = SpotSegmenter().eval(), _spot_image()
    inside = np.zeros(image.shape[:2], bool)
    inside[16:40, 56:80] = True

    occ = occlusion(model, image, target="spot", patch=8, stride=4)
    assert occ.target.index == 1 and occ.target.base_score > 0.8
    # an 8 px patch covers 1/9 of the 24 px spot, so it lowers the spot's mean logit (about
    # 1.9; 0 under the grey patch) by about 1.9 / 9 = 0.2 where it lands; elsewhere by almost
    # nothing
    assert occ.heatmap[inside].mean() > 0.1 > 0.01 > occ.heatmap[~inside].mean()
    assert np.unravel_index(occ.heatmap.argmax(), occ.heatmap.shape)[1] >= 52

    cam = grad_cam(model, image, target="spot")
    assert cam.layers == ["backbone:s2"]
    assert cam.heatmap.shape == image.shape[:2]
    assert cam.heatmap[inside].mean() > 0.5 > 0.05 > cam.heatmap[~inside].mean()
    picture = next(iter(cam.images.values()))
    assert picture.shape == image.shape and picture.dtype == np.uint8


@pytest.mark.parametrize("family", ["ssd", "unet"])
def test_every_method_writes_pictures_of_the_image_size(family: str, shapes_image: Path,
                                                        tmp_path: Path) -> None:
    model = build_model(family, backbone="tiny", num_classes=3, input_size=64).eval()
    image = read_image(shapes_image)
    assert image.shape[:2] == (96, 80)
    for method in EXPLAIN_METHODS.names():
        result = explain(model, image, method, patch=40, stride=40)
        paths = result.save(tmp_path / method)
        assert paths and all(cv2.imread(str(p)).shape == (96, 80, 3) for p in paths)
    assert [p.name for p in sorted((tmp_path / "activations").iterdir())] == sorted(
        f"activations_backbone-body_{k}.png" if family == "ssd" else f"activations_backbone_{k}.png"
        for k in ("s2", "s4", "s8", "s16", "s32"))


def test_cli_writes_pngs_and_lists_layers(shapes_image: Path, tmp_path: Path) -> None:
    base = ["explain", str(shapes_image), "--model", "ssd", "--backbone", "tiny", "--weights",
            "none"]
    listed = runner.invoke(app, [*base, "--layer", "list"])
    assert listed.exit_code == 0, listed.output
    assert "backbone.body.stem.0" in listed.output and "Conv2d" in listed.output
    out = tmp_path / "cam"
    done = runner.invoke(app, [*base, "--method", "gradcam", "--target", "0", "--out", str(out)])
    assert done.exit_code == 0, done.output
    pngs = list(out.glob("gradcam_box0-*.png"))
    assert len(pngs) == 1 and cv2.imread(str(pngs[0])).shape == (96, 80, 3)
    assert "target: detection 0" in done.output
    bad = runner.invoke(app, [*base, "--method", "activations", "--layer", "backbone.nope"])
    assert isinstance(bad.exception, UsageError)  # main() turns it into exit code 2
    assert "no layer named 'backbone.nope'" in str(bad.exception)


def _shipped(*names: str) -> str:
    """The first of ``names`` whose weight file is in weights/, else skip saying why."""
    manifest = load_manifest()
    for name in names:
        entry = manifest.get(name)
        if entry is not None and (shipped_dir() / entry.file_name).is_file():
            return name
    pytest.skip(f"none of {', '.join(names)} is shipped in weights/ yet (the TRAIN engineer "
                "adds them with their manifest entries)")


@pytest.fixture(scope="module")
def shapes_val(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """A 256 px shapes image: a big and a small star, a circle, a tiny triangle."""
    root = generate_shapes(tmp_path_factory.mktemp("shapes_val"), train=0, val=1, size=256,
                           seed=7, workers=1)
    return read_image(next((root / "images" / "val").iterdir()))


def test_occluding_the_object_lowers_its_score_shipped_detector(shapes_val: np.ndarray) -> None:
    model = build_model(weights=_shipped("shapes-faster_rcnn", "shapes-mask_rcnn")).eval()
    # the best box is the big star (about 190 x 120 px): 3 x 3 patches of 128 px, each hiding
    # up to half of it (a small patch leaves the many overlapping star boxes of a small model)
    result = occlusion(model, shapes_val, target="0", patch=128, stride=64)
    target = result.target
    assert target.base_score > 0.3
    x0, y0, x1, y1 = (round(v) for v in target.box)
    heat = result.heatmap
    inside = heat[y0:y1, x0:x1].mean()
    away = np.ones_like(heat, bool)
    away[max(0, y0 - 32):y1 + 32, max(0, x0 - 32):x1 + 32] = False
    assert inside > 0.05 and inside > 2 * heat[away].mean()
    # greying the whole box removes the detection, or most of its score
    grey = shapes_val.copy()
    grey[y0:y1, x0:x1] = 128
    with torch.no_grad():
        det = model([torch.from_numpy(grey).permute(2, 0, 1).float() / 255])[0]
    same = det["labels"] == target.label
    iou = box_iou(torch.tensor(target.box), det["boxes"][same])
    remaining = float((det["scores"][same] * iou).max()) if same.any() else 0.0
    assert remaining < 0.5 * target.base_score


def test_occluding_the_object_lowers_its_score_shipped_segmenter(shapes_val: np.ndarray) -> None:
    model = build_model(weights=_shipped("shapes-unet", "shapes-segnet")).eval()
    result = occlusion(model, shapes_val, patch=64, stride=64)  # 4 x 4 patches
    target = result.target
    assert target.index != 0 and target.base_score > 0.2
    image = torch.from_numpy(shapes_val).permute(2, 0, 1).float()[None] / 255
    mean = torch.tensor(model.spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.spec.std).view(1, 3, 1, 1)
    side = model.spec.input_size  # the scale the model sees in `detseg segment` and explain
    with torch.no_grad():
        logits = model(F.interpolate((image - mean) / std, size=(side, side), mode="bilinear"))
        pred = F.interpolate(logits, size=image.shape[-2:], mode="bilinear").argmax(1)[0].numpy()
    on = pred == target.index
    near = cv2.dilate(on.astype(np.uint8), np.ones((33, 33), np.uint8)) > 0
    heat = result.heatmap
    # covering the class' own pixels lowers its probability; covering far-away pixels hardly
    assert heat[on].mean() > 0.01 and heat[on].mean() > 3 * max(heat[~near].mean(), 0.0)
    # the hottest patch covers the object (the map is constant over each 64 px patch, so its
    # argmax pixel is just the patch's corner)
    assert on[heat >= heat.max() - 1e-6].any()
