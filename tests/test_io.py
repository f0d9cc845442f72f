"""The image reader (every format, odd modes, bad files) and source expansion."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from detseg.data.io import expand_sources, image_size, read_image
from detseg.errors import ImageReadError


def _pattern(h: int = 20, w: int = 30) -> np.ndarray:
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, : w // 2] = (250, 10, 10)
    rgb[:, w // 2:] = (10, 10, 250)
    rgb[: h // 2, :, 1] = 200
    return rgb


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".webp"])
def test_lossless_formats_round_trip(tmp_path, suffix) -> None:
    rgb = _pattern()
    path = tmp_path / f"img{suffix}"
    options = {"lossless": True} if suffix == ".webp" else {}
    Image.fromarray(rgb).save(path, **options)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_is_close(tmp_path) -> None:
    rgb = _pattern()
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() < 8


def test_grayscale_jpeg_and_palette_png_become_rgb(tmp_path) -> None:
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (8, 1))
    Image.fromarray(gray, "L").save(tmp_path / "g.jpg", quality=100)
    out = read_image(tmp_path / "g.jpg")
    assert out.shape == (8, 25, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert np.abs(out[..., 0].astype(int) - gray).max() <= 3

    pal = Image.fromarray(_pattern()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"),
                                  np.asarray(pal.convert("RGB")))


def test_rgba_drops_alpha(tmp_path) -> None:
    rgba = np.zeros((6, 7, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 0  # fully transparent: colour is kept, alpha dropped
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (6, 7, 3)
    assert (out[..., 0] == 200).all() and (out[..., 1:] == 0).all()


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path) -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    out = read_image(tmp_path / "d.png")
    assert out.shape == (1, 4, 3)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])


def test_cmyk_jpeg(tmp_path) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    out = read_image(tmp_path / "c.jpg")
    assert out.shape == (16, 16, 3)
    assert out[..., 0].mean() > 230 and out[..., 1:].mean() < 25


def test_exif_orientation_is_applied(tmp_path) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red, right half blue, as stored
    stored[:, 20:] = (0, 0, 255)
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    img.save(tmp_path / "r.jpg", exif=exif, quality=100)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (40, 20, 3)
    assert image_size(tmp_path / "r.jpg") == (20, 40)
    assert out[:15, :, 0].mean() > 200 and out[:15, :, 2].mean() < 40  # left went to the top
    assert out[25:, :, 2].mean() > 200 and out[25:, :, 0].mean() < 40


@pytest.mark.parametrize("case, reason", [
    ("empty", "empty"), ("truncated", "truncated"), ("text", "not a recognized image"),
    ("missing", "no such file"), ("folder", "directory"), ("garbage", "")])
def test_bad_files_raise_typed_errors(tmp_path, case, reason) -> None:
    path = tmp_path / "bad.jpg"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
            tmp_path / "full.jpg", quality=90)
        data = (tmp_path / "full.jpg").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "text":
        path.write_text("this is not an image\n")
    elif case == "folder":
        path.mkdir()
    elif case == "garbage":  # a JPEG header followed by noise
        path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.path == path
    assert reason in info.value.reason
    assert str(path) in str(info.value)


def test_expand_sources(tmp_path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for rel in ("d/b.jpg", "d/a.png", "d/sub/c.webp", "d/notes.md", "d/clip.mp4"):
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "e.jpg").write_bytes(b"x")
    (tmp_path / "odd.xyz").write_bytes(b"x")
    (tmp_path / "list.txt").write_text("# a list\ne.jpg\n\nd/a.png\nnowhere.jpg\n")
    out = expand_sources([str(tmp_path / "d"), str(tmp_path / "*.jpg"), str(tmp_path / "list.txt"),
                          str(tmp_path / "odd.xyz"), str(tmp_path / "gone.png"),
                          str(tmp_path / "none*.jpg")])
    rel = [p.relative_to(tmp_path).as_posix() for p in out.images]
    assert rel == ["d/a.png", "d/b.jpg", "d/sub/c.webp", "e.jpg", "odd.xyz"]
    assert [p.name for p in out.videos] == ["clip.mp4"]
    assert len(out.missing) == 3
    assert any("nowhere.jpg" in m for m in out.missing)
    assert any("gone.png" in m for m in out.missing)
    assert any("none*.jpg" in m for m in out.missing)
