"""Video inference: stride and time range, JSONL per frame, a playable annotated video (also
after Ctrl-C), undecodable frames skipped and reported, codec fallback, and the CLI on a mix
of a video and an image."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest
from cli_runner import frame_count, random_checkpoint

from detseg.engine import video as video_mod
from detseg.engine.predictor import Predictor
from detseg.engine.video import VideoFrames, VideoRun
from detseg.errors import VideoReadError

FPS = 8
SIZE = (64, 48)  # width, height
FRAMES = 24


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 3-second 8 fps clip whose frame ``i`` has brightness ``10 * i``."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    for i in range(FRAMES):
        writer.write(np.full((SIZE[1], SIZE[0], 3), 10 * i, np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "det.pt", "faster_rcnn")



def test_stride_and_time_range_select_frames(clip) -> None:
    frames = VideoFrames(clip, stride=3, start=0.5, end=2.0)
    assert (frames.fps, frames.size, frames.frame_count) == (FPS, SIZE, FRAMES)
    got = list(frames)
    frames.close()
    assert [f.index for f in got] == [4, 7, 10, 13] and frames.expected == 4
    assert [f.timestamp for f in got] == [0.5, 0.875, 1.25, 1.625]
    assert [round(float(f.image.mean()) / 10) for f in got] == [4, 7, 10, 13]
    assert got[0].image.shape == (SIZE[1], SIZE[0], 3)


def test_video_run_writes_a_jsonl_line_per_frame_and_a_playable_video(clip, ckpt,
                                                                      tmp_path) -> None:
    predictor = Predictor(weights=ckpt, device="cpu", conf=0.0, max_det=2, batch_size=4)
    job = VideoRun(predictor, clip, tmp_path, stride=2, start=1.0)
    report = job.run()
    assert report.frames == 8 and not report.failed_frames and not report.interrupted
    lines = [json.loads(x) for x in report.jsonl.read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(8, 24, 2))
    assert lines[0]["time"] == 1.0 and len(lines[0]["detections"]) == 2
    assert set(lines[0]["detections"][0]) == {"label", "name", "score", "box_xyxy"}
    cap = cv2.VideoCapture(str(report.video))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS / 2)
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == SIZE
    cap.release()
    assert frame_count(report.video) == 8


def test_ctrl_c_finalizes_what_was_written(clip, ckpt, tmp_path) -> None:
    predictor = Predictor(weights=ckpt, device="cpu", conf=0.0, max_det=1)
    job = VideoRun(predictor, clip, tmp_path)

    def interrupt(report) -> None:
        if report.frames == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        job.run(on_progress=interrupt)
    assert job.report.interrupted and job.report.frames == 3
    assert len(job.report.jsonl.read_text().splitlines()) == 3
    assert frame_count(job.report.video) == 3, "the container was closed, so it plays"


class _FlakyCapture:
    """A real capture whose frame 5 fails to decode."""

    def __init__(self, path: str) -> None:
        self._cap = cv2.VideoCapture(path)
        self._index = -1

    def grab(self) -> bool:
        self._index += 1
        return self._cap.grab()

    def retrieve(self):
        ok, frame = self._cap.retrieve()
        return (False, None) if self._index == 5 else (ok, frame)

    def __getattr__(self, name):
        return getattr(self._cap, name)


def test_undecodable_frame_is_reported_and_skipped(clip) -> None:
    errors: list[VideoReadError] = []
    frames = VideoFrames(clip, end=1.0, on_error=errors.append, capture=_FlakyCapture)
    indices = [f.index for f in frames]
    frames.close()
    assert indices == [0, 1, 2, 3, 4, 6, 7]
    assert frames.failed == [5] and "frame 5 failed to decode" in str(errors[0])


def test_unreadable_video_raises_with_the_reason(tmp_path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("hello")
    with pytest.raises(VideoReadError, match="notes.mp4: cannot open video"):
        VideoFrames(fake)


def test_writer_falls_back_to_the_next_codec(tmp_path, monkeypatch) -> None:
    real = cv2.VideoWriter

    class NoMp4v:
        """cv2.VideoWriter without the mp4v codec."""

        fourcc = staticmethod(real.fourcc)

        def __new__(cls, path, fourcc, fps, size):
            if fourcc == real.fourcc(*"mp4v"):
                return real(path, real.fourcc(*"ZZZZ"), fps, size)
            return real(path, fourcc, fps, size)

    monkeypatch.setattr(video_mod.cv2, "VideoWriter", NoMp4v)
    monkeypatch.setattr(video_mod, "VIDEO_CODECS", (("mp4v", ".avi"), ("MJPG", ".avi")))
    writer, path = video_mod.open_video_writer(tmp_path / "out", 5.0, (32, 32))
    writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.release()
    assert path.name == "out.avi" and frame_count(path) == 1


def test_cli_detect_on_a_video_and_an_image(clip, ckpt, tmp_path, monkeypatch, capsys) -> None:
    from detseg.cli.main import main

    image = tmp_path / "still.png"
    cv2.imwrite(str(image), np.full((40, 50, 3), 90, np.uint8))
    out = tmp_path / "run"
    args = ["detseg", "detect", str(clip), str(image), "--weights", ckpt, "--device", "cpu",
            "--conf", "0", "--max-det", "2", "--vid-stride", "4", "-b", "2", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    assert sorted(p.name for p in out.iterdir()) == [".detseg-run", "clip.jsonl", "clip.mp4",
                                                     "predictions.json", "still.png"]
    assert len((out / "clip.jsonl").read_text().splitlines()) == FRAMES // 4
    assert frame_count(out / "clip.mp4") == FRAMES // 4
    entries = json.loads((out / "predictions.json").read_text())
    assert {e["file_name"] for e in entries} == {"still.png"}
    shown = capsys.readouterr().out
    assert "6 frames" in shown and "ms inference" in shown
