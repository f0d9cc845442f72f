"""``detseg eval --report``: report.html (and errors.json) from results files and from models,
rendered by headless chromium as a person would open it (tables filled, sorting, PR curves,
confusion matrices, galleries, no console errors, a non-blank screenshot), plus hostile inputs
(missing or corrupt pictures, --json, usage errors)."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import cv2
import numpy as np
import pytest
from browser import browser, dump_dom, screenshot
from cli_runner import detseg

NAMES = ["cat", "dog", "bird"]


def _planted(root: Path, n_images: int = 4, rle: bool = False, names: list[str] = NAMES
             ) -> tuple[Path, Path, Path, dict, list[dict]]:
    """Hand-drawn pictures of odd sizes, their COCO ground truth and results with one error of
    each TIDE kind planted per image: a true positive, a wrong class (Cls), a poor box (Loc), a
    duplicate (Dupe), a detection on background (Bkg) and a missed object (Miss). Masks are
    the boxes, as polygons or (``rle``) compressed RLE."""
    rng = np.random.default_rng(7)
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, anns, results = [], [], []
    for image_id in range(1, n_images + 1):
        h, w = 157 + 14 * image_id, 203 + 22 * image_id
        picture = np.full((h, w, 3), 235, np.uint8)
        boxes = [[8.0, 10.0, 50.0, 40.0], [w - 70.0, 12.0, 55.0, 45.0],
                 [10.0, h - 62.0, 60.0, 50.0], [w - 80.0, h - 70.0, 64.0, 58.0]]
        for k, (x, y, bw, bh) in enumerate(boxes):
            colour = [(200, 60, 60), (60, 160, 60), (60, 60, 200)][k % 3]
            cv2.ellipse(picture, (int(x + bw / 2), int(y + bh / 2)), (int(bw / 2), int(bh / 2)),
                        0, 0, 360, colour, -1)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1 + k % 3,
                         "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
        name = f"pic_{image_id}.jpg" if image_id % 2 else f"sub/pic_{image_id}.png"
        (images_dir / name).parent.mkdir(exist_ok=True)
        cv2.imwrite(str(images_dir / name), picture)
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        jitter = float(rng.uniform(0, 1))
        x, y, bw, bh = boxes[0]
        results += [
            {"image_id": image_id, "category_id": 1, "bbox": [x + jitter, y, bw, bh],
             "score": 0.95},                                                      # TP
            {"image_id": image_id, "category_id": 1, "bbox": [x + 2, y + 1, bw, bh],
             "score": 0.6},                                                       # Dupe
            {"image_id": image_id, "category_id": 3, "bbox": list(boxes[1]),
             "score": 0.85},                                                      # Cls
            {"image_id": image_id, "category_id": 3, "bbox": [boxes[2][0] + 30, boxes[2][1]
                                                              + 20, 60.0, 50.0],
             "score": 0.8},                                                       # Loc
            {"image_id": image_id, "category_id": 2, "bbox": [w / 2 - 15, h / 2 - 12, 30.0,
                                                              24.0],
             "score": 0.75},                                                      # Bkg
        ]
    sizes = {im["id"]: (im["height"], im["width"]) for im in images}
    for entry in results + anns:
        x, y, bw, bh = entry["bbox"]
        entry["segmentation"] = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
        if rle:
            from pycocotools import mask as mask_utils

            code = mask_utils.merge(mask_utils.frPyObjects(entry["segmentation"],
                                                           *sizes[entry["image_id"]]))
            entry["segmentation"] = {"size": code["size"], "counts": code["counts"].decode()}
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    gt_path, res_path = root / "gt.json", root / "results.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    return gt_path, res_path, images_dir, gt, results


def _self_contained(html: str) -> None:
    """Every src/href is a data: URI or an in-page link; no server is ever asked."""
    links = re.findall(r'(?<![-\w])(?:src|href)="([^"]*)"', html)
    assert links, "no picture or link at all"
    assert all(u.startswith(("data:", "#")) for u in links), \
        [u[:40] for u in links if not u.startswith(("data:", "#"))]
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html)
    assert "@import" not in html and "url(" not in html


def _tidecv(gt_path: Path, res_path: Path, mode: str = "bbox") -> dict[str, float]:
    """The tidecv package's dAP of every error type (the oracle of errors.json)."""
    import contextlib
    import io

    from tidecv import TIDE, datasets

    tide = TIDE()
    with contextlib.redirect_stdout(io.StringIO()):
        tide.evaluate(datasets.COCO(str(gt_path)), datasets.COCOResult(str(res_path)),
                      mode=TIDE.BOX if mode == "bbox" else TIDE.MASK, name="run")
    errors = tide.get_all_errors()
    return {**errors["main"]["run"], **errors["special"]["run"]}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    return _planted(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="module")
def chromium() -> str:
    return browser()


def test_report_from_predictions_renders_with_every_part(planted, chromium, tmp_path,
                                                         monkeypatch, capsys):
    gt_path, res_path, images_dir, gt, results = planted
    out = tmp_path / "run"
    code, stdout, stderr = detseg(monkeypatch, capsys, "eval", "--ann", gt_path,
                                  "--predictions", res_path, "--images", images_dir,
                                  "--report", "--no-plots", "--out", out)
    assert code == 0, stderr
    assert "report.html" in stdout and "errors.json" in stdout
    errors = json.loads((out / "errors.json").read_text())
    assert set(errors) == {"bbox"}
    assert errors["bbox"] == pytest.approx(_tidecv(gt_path, res_path), abs=0.05)
    assert min(errors["bbox"][k] for k in ("Cls", "Loc", "Miss")) > 0
    html = (out / "report.html").read_text()
    _self_contained(html)
    assert len(html) < 3_000_000

    dom, console = dump_dom(chromium, out / "report.html", tmp_path / "p1",
                            "#sort=bbox-classes:FP:desc")
    assert not console, console
    assert 'data-ready="1"' in dom
    # The 12 numbers, and the per-class table filled and sorted by FP (from the fragment).
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs",
                "ARm", "ARl"):
        assert f'<div class="label">{key}</div>' in dom
    table = re.search(r'<table id="bbox-classes".*?</table>', dom, re.S).group(0)
    assert 'data-sorted="FP:desc"' in table
    rows = re.findall(r"<tr><td[^>]*>([^<]+)</td>((?:<td[^>]*>[^<]*</td>){7})</tr>", table)
    assert sorted(name for name, _ in rows) == sorted(NAMES)
    fp_values = [float(re.findall(r'data-v="([^"]+)"', cells)[5]) for _, cells in rows]
    assert fp_values == sorted(fp_values, reverse=True) and fp_values[0] > 0
    # PR curves drawn, the confusion matrix holds the analysis' counts, TIDE bars drawn.
    assert re.search(r'<svg[^>]*class="chart pr-chart".*?<polyline', dom, re.S)
    matrix = re.search(r'<table class="matrix" data-mode="counts">.*?</table>', dom, re.S)
    assert matrix and "background" in matrix.group(0)
    # Hand-counted per image: cat found once, its duplicate a false alarm, the other cat
    # missed; the dog taken for a bird; the bird's poor box a false alarm and the bird missed;
    # the background detection a false alarm of dog. Rows truth, columns predicted.
    cells = re.findall(r"<td title=\"[^\"]*: (\d+) \(", matrix.group(0))
    assert [int(c) for c in cells] == [4, 0, 0, 4,
                                       0, 0, 4, 0,
                                       0, 0, 0, 4,
                                       4, 4, 4, 0]
    assert len(re.findall(r'class="bar"', dom)) == 8
    # Galleries: crops of false positives and missed objects, worst images, all pictures.
    for gallery in ("bbox-fp", "bbox-missed", "bbox-worst"):
        block = re.search(rf'<div class="gallery" id="{gallery}">.*?</div>', dom, re.S)
        assert block and block.group(0).count('src="data:image/jpeg;base64,') >= 4, gallery
    assert "Miss" in dom and "Bkg" in dom and "pic_2.png" in dom

    png = tmp_path / "shot.png"
    assert not screenshot(chromium, out / "report.html", tmp_path / "p2", png)
    shot = cv2.imread(str(png))
    assert shot is not None and shot.shape[0] > 1000 and float(shot.std()) > 20


def test_segm_report_without_pictures_lists_capped_cases(chromium, tmp_path, monkeypatch,
                                                         capsys):
    # Class names that would break a page that did not escape them.
    names = ["cat", 'dog "<b>" & co', "bird</script><script>alert(1)</script>"]
    gt_path, res_path, _, _, _ = _planted(tmp_path / "data", n_images=30, rle=True,
                                          names=names)
    out = tmp_path / "run"
    code, _, stderr = detseg(monkeypatch, capsys, "eval", "--ann", gt_path, "--predictions",
                             res_path, "--iou-type", "segm", "--report", "--no-plots", "--out",
                             out)
    assert code == 0, stderr
    errors = json.loads((out / "errors.json").read_text())
    assert set(errors) == {"segm"}
    assert errors["segm"] == pytest.approx(_tidecv(gt_path, res_path, "segm"), abs=0.05)
    dom, console = dump_dom(chromium, out / "report.html", tmp_path / "p")
    assert not console, console
    assert 'id="segm"' in dom and 'id="bbox"' not in dom
    assert "Pictures are unavailable" in dom and "data:image" not in dom
    # 30 images with 4 false positives each: the gallery stops at 24 cases, text only.
    fps = re.search(r'<div class="gallery" id="segm-fp">.*?</div>', dom, re.S).group(0)
    assert fps.count('<figure class="nopic">') == 24
    assert fps.count("Cls") >= 1 and "image " in fps
    picker = re.search(r'<div class="pr-view".*?</select>', dom, re.S).group(0)
    options = re.findall(r"<option[^>]*>([^<]+)</option>", picker)
    assert [unescape(o) for o in options] == ["all classes (mean)", *names]
    assert '"<b>" & co' not in dom and "<script>alert(1)" not in dom


def test_missing_pictures_and_bad_entries_are_named_and_the_report_still_written(
        planted, tmp_path, monkeypatch, capsys):
    import shutil

    gt_path, res_path, images_dir, _, _ = planted
    images = tmp_path / "images"
    shutil.copytree(images_dir, images)
    (images / "pic_1.jpg").unlink()
    (images / "sub" / "pic_2.png").write_bytes(b"not a picture")
    # Bad results entries too: skipped and named by the evaluator, left out of the pictures.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(json.loads(res_path.read_text()) + [
        {"image_id": 3, "category_id": 1, "bbox": "x", "score": 0.9},
        {"image_id": [3], "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9}, 7]))
    out = tmp_path / "run"
    code, _, stderr = detseg(monkeypatch, capsys, "eval", "--ann", gt_path, "--predictions",
                             bad, "--images", images, "--report", "--no-plots", "--out", out)
    assert code == 1
    assert "results[20]: bbox 'x' is not [x, y, w, h]; skipped" in stderr
    assert f"{images / 'pic_1.jpg'}: missing" in stderr
    assert f"{images / 'sub' / 'pic_2.png'}: cannot decode the picture" in stderr
    assert stderr.count("pic_1.jpg") == 1          # named once, however often it is needed
    html = (out / "report.html").read_text()
    assert html.count("data:image/jpeg") >= 4       # images 3 and 4 are still shown
    assert 'class="nopic"' in html
    assert json.loads((out / "metrics.json").read_text())["bbox"]["AP"] >= 0
    assert (out / "errors.json").is_file()


def test_report_with_json_and_a_score_threshold(planted, tmp_path, monkeypatch, capsys):
    gt_path, res_path, _, _, _ = planted
    out = tmp_path / "run"
    code, stdout, _ = detseg(monkeypatch, capsys, "eval", "--ann", gt_path, "--predictions",
                             res_path, "--report", "--report-conf", "0.9", "--json",
                             "--no-plots", "--out", out)
    assert code == 0
    assert json.loads(stdout) == json.loads((out / "metrics.json").read_text())
    html = (out / "report.html").read_text()
    assert "score &gt;= 0.9" in html
    # Only the true positives score 0.95: at 0.9 nothing is a false positive, and every
    # object but the 4 cats found is missed.
    table = re.search(r'<table id="bbox-classes".*?</table>', html, re.S).group(0)
    counts = {row[0]: [int(v) for v in row[1:]] for row in re.findall(
        r'<tr><td data-v="(\w+)">.*?' + r'<td data-v="[^"]*">[^<]*</td>' * 3
        + r'<td data-v="[^"]*">(\d+)</td>' * 4 + "</tr>", table)}
    assert counts == {"cat": [8, 4, 0, 4], "dog": [4, 0, 0, 4], "bird": [4, 0, 0, 4]}
    code, _, stderr = detseg(monkeypatch, capsys, "eval", "--ann", gt_path, "--predictions",
                             res_path, "--report", "--report-conf", "1.5")
    assert code == 2 and "--report-conf" in stderr
    code, _, stderr = detseg(monkeypatch, capsys, "eval", "--ann", gt_path, "--predictions",
                             res_path, "--report-conf", "0.9", "--out", tmp_path / "no-report")
    assert code == 2 and "add --report" in stderr
    assert not (tmp_path / "no-report").exists()


def test_report_usage_errors(planted, tmp_path, monkeypatch, capsys):
    gt_path, res_path, images_dir, _, _ = planted
    code, _, stderr = detseg(monkeypatch, capsys, "eval", "--ann", gt_path, "--predictions",
                             res_path, "--images", images_dir, "--out", tmp_path / "a")
    assert code == 2 and "--images does not apply" in stderr
    missing = tmp_path / "nowhere"
    code, _, stderr = detseg(monkeypatch, capsys, "eval", "--ann", gt_path, "--predictions",
                             res_path, "--images", missing, "--report", "--out", tmp_path / "b")
    assert code == 2 and f"--images: {missing} is not a folder" in stderr
    assert not (tmp_path / "b").exists()


def test_per_image_miou_by_hand():
    from detseg.prediction import Prediction
    from detseg.report.semantic_images import SemanticImages

    watcher = SemanticImages(num_classes=2, keep=1)
    # Image 1: perfect (mIoU 1); a 255 truth pixel is left out whatever was predicted.
    truth = np.array([[0, 0, 255], [1, 1, 1]])
    watcher(Prediction(size=(2, 3), semantic=np.array([[0, 0, 1], [1, 1, 1]])),
            {"mask": truth, "image_id": 1})
    # Image 2: class 0 IoU 5/6, class 1 IoU 0/1 -> mIoU 5/12.
    watcher(Prediction(size=(2, 3), semantic=np.array([[0, 0, 0], [0, 0, 1]])),
            {"mask": np.zeros((1, 2, 3), np.int64), "image_id": 2})
    assert [s.miou for s in watcher.scores] == pytest.approx([1.0, 5 / 12])
    assert watcher.mean_image_miou() == pytest.approx((1 + 5 / 12) / 2)
    worst = watcher.worst()
    assert [s.image_id for s in worst] == [2] and worst[0].truth.shape == (2, 3)
    assert watcher.scores[0].truth is None          # only the kept worst images hold maps
    # Accumulated over the dataset the same pixels give (7/8 + 3/4) / 2: another number.
    from detseg.eval.pixels import ConfusionMatrix

    matrix = ConfusionMatrix(2)
    matrix.update(np.array([[0, 0, 1], [1, 1, 1]]), truth)
    matrix.update(np.array([[0, 0, 0], [0, 0, 1]]), np.zeros((2, 3), np.int64))
    assert matrix.compute()["mIoU"] == pytest.approx((7 / 8 + 3 / 4) / 2)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from detseg.data.shapes import generate_shapes

    return generate_shapes(tmp_path_factory.mktemp("shapes"), train=0, val=2, size=64,
                           workers=1)


@pytest.mark.parametrize("weights", ["shapes-mask_rcnn", "shapes-unet"])
def test_report_of_a_model_renders(weights, shapes_root, chromium, tmp_path, monkeypatch,
                                   capsys):
    out = tmp_path / "run"
    code, stdout, stderr = detseg(monkeypatch, capsys, "eval", "--dataset", "shapes",
                                  "--data-root", shapes_root, "--weights", weights,
                                  "--device", "cpu", "--report", "--no-plots", "--out", out)
    assert code == 0, stderr
    html = (out / "report.html").read_text()
    _self_contained(html)
    dom, console = dump_dom(chromium, out / "report.html", tmp_path / "p")
    assert not console, console
    if weights == "shapes-unet":
        assert not (out / "errors.json").exists()
        for label in ("mIoU (dataset)", "mIoU (per image)", "pixel accuracy", "mDice"):
            assert f'<div class="label">{label}</div>' in dom
        assert '<table class="matrix" data-mode="rows">' in dom
        gallery = re.search(r'<div class="gallery" id="semantic-worst">.*?</figure></div>', dom,
                            re.S).group(0)
        assert gallery.count("<figure") == 2
        assert gallery.count('src="data:image/jpeg') == 8       # image, truth, prediction, errors
        rows = re.search(r'<table id="semantic-classes".*?</table>', dom, re.S).group(0)
        assert rows.count("<tr>") == 1 + 5                      # header + background and 4 shapes
    else:
        assert set(json.loads((out / "errors.json").read_text())) == {"bbox", "segm"}
        assert 'id="bbox"' in dom and 'id="segm"' in dom
        assert dom.count('class="chart pr-chart"') == 2
        assert re.search(r'id="segm-worst">.*?src="data:image/jpeg', dom, re.S)


PROBE = """<script>
(function () {
  var out = [], table = document.getElementById("bbox-classes");
  function column(name) {
    var heads = table.tHead.rows[0].cells, col = 0;
    for (var i = 0; i < heads.length; i++) { if (heads[i].textContent === name) { col = i; } }
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
      return r.cells[col].getAttribute("data-v"); }).join(",");
  }
  var th = table.querySelector('th[data-col="AP"]');
  th.click();
  out.push("desc " + th.className + " " + column("AP"));
  th.click();
  out.push("asc " + th.className + " " + column("AP"));
  var pick = document.querySelector("#bbox .pr-view select");
  pick.value = "2";
  pick.dispatchEvent(new Event("change"));
  out.push("pr " + document.querySelectorAll("#bbox .pr-host polyline").length);
  document.querySelector('#bbox .matrix-view button[data-mode="rows"]').click();
  var matrix = document.querySelector("#bbox .matrix-view table");
  out.push("matrix " + matrix.getAttribute("data-mode"));
  var img = document.querySelector("#bbox-worst img");
  img.click();
  var box = document.getElementById("lightbox");
  out.push("lightbox " + box.className + " " + (box.querySelector("img").src === img.src));
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = out.join("\\n");
  document.body.appendChild(pre);
})();
</script></body>"""


def test_clicks_sort_pick_toggle_and_open(planted, chromium, tmp_path, monkeypatch, capsys):
    gt_path, res_path, images_dir, _, _ = planted
    out = tmp_path / "run"
    code, _, _ = detseg(monkeypatch, capsys, "eval", "--ann", gt_path, "--predictions",
                        res_path, "--images", images_dir, "--report", "--no-plots", "--out", out)
    assert code == 0
    page = tmp_path / "probed.html"
    page.write_text((out / "report.html").read_text().replace("</body>", PROBE))
    dom, console = dump_dom(chromium, page, tmp_path / "p")
    assert not console, console
    lines = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1).splitlines()
    desc, asc = ([float(v) for v in line.split()[2].split(",")] for line in lines[:2])
    assert lines[0].split()[1] == "desc" and desc == sorted(desc, reverse=True)
    assert lines[1].split()[1] == "asc" and asc == sorted(asc) and asc != desc
    assert lines[2:] == ["pr 2", "matrix rows", "lightbox open true"]


def test_report_from_files_imports_no_torch(planted, tmp_path):
    import os
    import subprocess
    import sys

    gt_path, res_path, images_dir, _, _ = planted
    code = (
        "import sys\n"
        "from detseg.cli.main import app\n"
        f"args = ['eval', '--ann', {str(gt_path)!r}, '--predictions', {str(res_path)!r},\n"
        f"        '--images', {str(images_dir)!r}, '--report', '--no-plots', '-q',\n"
        f"        '--out', {str(tmp_path / 'run')!r}]\n"
        "try:\n    app(args)\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('TORCH', 'torch' in sys.modules)\n")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH False" in proc.stdout
    assert (tmp_path / "run" / "report.html").is_file()


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_bad_ground_truth_entries_are_named_and_left_out_of_the_pictures(
        iou_type, planted, tmp_path, monkeypatch, capsys):
    gt_path, res_path, images_dir, gt, _ = planted
    bad = {**gt, "annotations": [*gt["annotations"], {
        "id": 999, "image_id": 1, "category_id": [1], "bbox": [1, 2, 3, 4], "area": 12,
        "iscrowd": 0}, {"id": 1000, "image_id": 1, "category_id": 1, "bbox": [5, 5, 30, 30],
                        "area": 900, "iscrowd": 0,
                        "segmentation": {"size": [3, 3], "counts": "bad"}}]}
    bad_path = tmp_path / "gt.json"
    bad_path.write_text(json.dumps(bad))
    out = tmp_path / "run"
    code, _, stderr = detseg(monkeypatch, capsys, "eval", "--ann", bad_path, "--predictions",
                             res_path, "--images", images_dir, "--iou-type", iou_type,
                             "--report", "--no-plots", "--out", out)
    assert code == 1
    assert "gt.json: annotations[16]" in stderr and "skipped" in stderr
    if iou_type == "segm":
        assert "annotations[17]: mask size [3, 3] differs from the image size" in stderr
    assert "error" not in stderr
    assert (out / "report.html").read_text().count("data:image/jpeg") >= 8
