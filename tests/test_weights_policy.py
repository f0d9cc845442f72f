"""One weights policy in every command: a preset name alone means its DEFAULT weights (train
fine-tunes from them), and offline every command says the same thing (download or import
them) and exits 2."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conformance import write_mask_folder
from PIL import Image

from detseg.cli.main import main

DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"
SEGMENTER = "lraspp_mobilenet_v3_large"


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """Empty weight caches and a proxy that refuses every connection: no download can work."""
    monkeypatch.setenv("DETSEG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("https_proxy", "http_proxy", "HTTPS_PROXY", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    image = tmp_path / "img.png"
    Image.fromarray(np.full((40, 60, 3), 100, np.uint8)).save(image)
    return image


@pytest.mark.parametrize("args", [
    ["detect", "{image}", "--model", DETECTOR],
    ["segment", "{image}", "--model", SEGMENTER],
    ["eval", "--ann", "{ann}", "--images", "{folder}", "--model", DETECTOR],
    ["benchmark", "--model", SEGMENTER, "--iters", "1"],
    ["summary", "--model", SEGMENTER],
    ["export", "--model", SEGMENTER],
    ["explain", "{image}", "--model", SEGMENTER, "--method", "activations"],
    ["train", "--model", SEGMENTER, "--dataset", "masks", "--data-root", "{masks}",
     "--epochs", "1", "--out", "{run}"],
])
def test_a_preset_alone_asks_for_its_default_weights(monkeypatch, capsys, offline, tmp_path,
                                                     args) -> None:
    ann = tmp_path / "gt.json"
    ann.write_text('{"images": [{"id": 1, "file_name": "img.png", "width": 60, "height": 40}],'
                   ' "annotations": [], "categories": [{"id": 1, "name": "person"}]}')
    masks = write_mask_folder(tmp_path / "masks")
    argv = [a.format(image=offline, ann=ann, folder=offline.parent, masks=masks,
                     run=tmp_path / "run") for a in args]
    monkeypatch.setattr(sys, "argv", ["detseg", *argv])
    with pytest.raises(SystemExit) as info:
        main()
    out = capsys.readouterr()
    text = out.out + out.err
    assert info.value.code == 2, text
    assert "Traceback" not in text
    assert "detseg weights import FILE" in text and "--weights PATH" in text, text
