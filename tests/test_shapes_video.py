"""``detseg dataset shapes-video``: MOTChallenge clips of moving shapes whose ground truth is
exact (boxes are the drawn pixels, visibility the seen fraction on a planted occlusion), laid
out like MOT17, with an mp4 per clip, deterministic by seed."""

from __future__ import annotations

import configparser
from pathlib import Path

import numpy as np
import pytest
from cli_runner import detseg, frame_count

from detseg.data.shapes_video import Clip, MovingShape, plan_clip, render_frame


def _rectangle(track_id: int, x0: float, y0: float, x1: float, y1: float,
               color: tuple[int, int, int]) -> MovingShape:
    """An axis-aligned rectangle that stays where it is."""
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    outline = np.array([[x0 - cx, y0 - cy], [x1 - cx, y0 - cy], [x1 - cx, y1 - cy],
                        [x0 - cx, y1 - cy]])
    return MovingShape(track_id=track_id, cls=1, outline=outline, centre=(cx, cy),
                       velocity=(0.0, 0.0), color=color)


def _flat_clip(shapes: list[MovingShape], width: int = 61, height: int = 47) -> Clip:
    return Clip(name="planted", width=width, height=height, frames=1, fps=30.0,
                background=np.zeros((height, width, 3), np.float32), noise=0.0, shapes=shapes)


def _pixels(image: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    return np.all(image == np.array(color, np.uint8), axis=2)


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_planted_occlusion_gives_whole_boxes_and_visible_fractions() -> None:
    low = _rectangle(1, 6.3, 5.3, 30.3, 25.3, (200, 40, 40))
    high = _rectangle(2, 20.3, 12.3, 44.3, 40.3, (40, 200, 40))
    hidden = _rectangle(3, 24.3, 20.3, 30.3, 30.3, (40, 40, 200))  # under ``high``
    alone = render_frame(_flat_clip([low]), 1)
    drawn = render_frame(_flat_clip([hidden, low, high]), 1)
    truth = {o.track_id: o for o in drawn.objects}
    assert set(truth) == {1, 2}, "a shape hidden completely is left out"
    whole_low = _pixels(alone.image, low.color)
    seen_low = _pixels(drawn.image, low.color)
    seen_high = _pixels(drawn.image, high.color)
    # the whole box of the lower shape (as drawn alone), its visible fraction by pixel count
    assert truth[1].box == _box(whole_low)
    assert truth[1].visibility == pytest.approx(seen_low.sum() / whole_low.sum())
    assert 0.5 < truth[1].visibility < 0.9
    assert truth[2].box == _box(seen_high) and truth[2].visibility == 1.0
    assert (drawn.layer == 2).sum() == seen_high.sum()


def test_generated_ground_truth_is_exact(tmp_path: Path) -> None:
    clip = plan_clip(1, 83, 67, frames=24, seed=5)
    clip.noise = 0.0
    occluded = 0
    for frame in range(1, clip.frames + 1):
        drawn = render_frame(clip, frame)
        for obj in drawn.objects:
            seen = drawn.layer == obj.track_id
            x1, y1, x2, y2 = obj.box
            inside = np.zeros_like(seen)
            inside[y1:y2, x1:x2] = True
            assert seen.any() and not (seen & ~inside).any(), (frame, obj)
            if obj.visibility == 1.0:
                assert _box(seen) == obj.box, (frame, obj)
            else:
                occluded += 1
            assert 0 < obj.visibility <= 1
    assert occluded, "the planned crossings hide something"


def test_cli_writes_mot17_layout_deterministically(tmp_path: Path, monkeypatch, capsys) -> None:
    args = ["dataset", "shapes-video", "--sequences", "2", "--frames", "7", "--size", "75x53",
            "--fps", "12.5"]
    code, out, err = detseg(monkeypatch, capsys, *args, "--out", tmp_path / "a", "--seed", "3")
    assert code == 0, err
    assert "wrote 2 clips" in out
    seqs = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert seqs == ["shapes-01", "shapes-02"]
    seq = tmp_path / "a" / "shapes-02"
    info = configparser.ConfigParser()
    info.read(seq / "seqinfo.ini")
    assert dict(info["Sequence"]) == {"name": "shapes-02", "imdir": "img1",
                                      "framerate": "12.5", "seqlength": "7", "imwidth": "75",
                                      "imheight": "53", "imext": ".jpg"}
    assert sorted(p.name for p in (seq / "img1").iterdir()) == \
        [f"{i:06d}.jpg" for i in range(1, 8)]
    assert frame_count(seq / "shapes-02.mp4") == 7
    rows = np.loadtxt(seq / "gt" / "gt.txt", delimiter=",", ndmin=2)
    assert rows.shape[1] == 9
    assert set(rows[:, 0]) <= set(range(1, 8)) and rows[:, 0].min() == 1
    assert (rows[:, 6] == 1).all() and set(rows[:, 7]) <= {1, 2, 3, 4}
    assert (rows[:, 2] >= 0).all() and (rows[:, 2] + rows[:, 4] <= 75).all()
    assert (rows[:, 3] >= 0).all() and (rows[:, 3] + rows[:, 5] <= 53).all()
    for frame in set(rows[:, 0]):
        ids = rows[rows[:, 0] == frame, 1]
        assert len(ids) == len(set(ids)), "one row per id and frame"
    code, _, err = detseg(monkeypatch, capsys, *args, "--out", tmp_path / "b", "--seed", "3")
    assert code == 0, err
    for name in ("gt/gt.txt", "img1/000004.jpg", "seqinfo.ini"):
        assert (seq / name).read_bytes() == (tmp_path / "b" / "shapes-02" / name).read_bytes()
    detseg(monkeypatch, capsys, *args, "--out", tmp_path / "c", "--seed", "4")
    assert (seq / "gt/gt.txt").read_bytes() != (tmp_path / "c/shapes-02/gt/gt.txt").read_bytes()


@pytest.mark.parametrize("extra, message", [
    (["--size", "20x80"], "at least 48 pixels"),
    (["--size", "big"], "expected WIDTHxHEIGHT"),
    (["--frames", "0"], "--frames"),
])
def test_bad_options_are_one_line(tmp_path, monkeypatch, capsys, extra, message) -> None:
    code, out, err = detseg(monkeypatch, capsys, "dataset", "shapes-video", "--out",
                            tmp_path / "x", *extra)
    assert code == 2 and message in out + err


def test_refuses_a_folder_that_holds_files(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    code, _, err = detseg(monkeypatch, capsys, "dataset", "shapes-video", "--out", tmp_path)
    assert code == 2 and "not an empty folder" in err
    assert (tmp_path / "keep.txt").read_text() == "mine"
