"""``detseg eval --mot``: HOTA, CLEAR MOT and identity metrics equal to TrackEval's (the oracle,
run on the same files through its MotChallenge2DBox preprocessing), on hand-made sequences with
planted errors, in MOT17 mode and in the generic class modes; and the hostile inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_runner import detseg

from detseg.eval.mot import evaluate_mot
from detseg.eval.mot.tables import metrics_json

trackeval = pytest.importorskip("trackeval")

FRAMES = 30
HOTA_KEYS = ["HOTA", "DetA", "AssA", "LocA", "DetRe", "DetPr", "AssRe", "AssPr"]
CLEAR_KEYS = {"MOTA": "MOTA", "MOTP": "MOTP", "MODA": "MODA", "CLR_Re": "CLR_Re",
              "CLR_Pr": "CLR_Pr", "IDSW": "IDSW", "Frag": "Frag", "MT": "MT", "PT": "PT",
              "ML": "ML", "TP": "CLR_TP", "FP": "CLR_FP", "FN": "CLR_FN"}
ID_KEYS = ["IDF1", "IDP", "IDR", "IDTP", "IDFN", "IDFP"]


# ---------------------------------------------------------------- sequences with planted errors

def _box(x: float, y: float, w: float = 17.0, h: float = 31.0) -> tuple[float, ...]:
    return (x, y, w, h)


def crossing() -> tuple[list, list]:
    """Two targets cross; after the crossing the tracker swaps their ids (2 ID switches)."""
    gt, pred = [], []
    for f in range(1, 22):
        a, b = _box(10 + 5 * (f - 1), 40.5), _box(110 - 5 * (f - 1), 42.5)
        gt += [(f, 1, *a, 1, 1, 1.0), (f, 2, *b, 1, 1, 1.0)]
        ida, idb = (7, 9) if f <= 11 else (9, 7)
        pred += [(f, ida, a[0] + 0.5, a[1], 17, 31, 0.9), (f, idb, b[0] - 0.5, b[1], 17, 31, 0.8)]
    return gt, pred


def missed_and_fragmented() -> tuple[list, list]:
    """A target missed in frames 8-11 (4 FN, a fragmentation; a false box there instead),
    re-identified as a new track from frame 18 (1 ID switch); a second target never tracked
    (mostly lost)."""
    gt, pred = [], []
    for f in range(1, 26):
        box = _box(20 + 3 * f, 30 + f, 21, 43)
        gt += [(f, 3, *box, 1, 1, 0.8), (f, 4, 150.0, 10.0 + f, 11.0, 23.0, 1, 1, 0.6)]
        if 8 <= f <= 11:  # a false box elsewhere: a frame with no prediction at all keeps
            pred.append((f, 13, 300.0, 300.0, 10, 10, 0.2))  # the last pairing (TrackEval)
            continue
        pred.append((f, 11 if f < 18 else 12, box[0] + 1, box[1] - 1, 21, 43, 0.7))
    return gt, pred


def false_tracks_and_shifts() -> tuple[list, list]:
    """A false track (6 FP), and a target whose box is shifted to IoU exactly 0.5 (a match at
    the threshold) in frames 1-8 and to IoU 7/17 (a miss and a false positive) after."""
    gt, pred = [], []
    for f in range(1, FRAMES + 1):
        gt.append((f, 5, 40.0, 60.0, 12.0, 20.0, 1, 1, 1.0))
        shift = 4.0 if f <= 8 else 5.0
        pred.append((f, 21, 40.0 + shift, 60.0, 12.0, 20.0, 0.6))
        if 10 <= f < 16:
            pred.append((f, 22, 200.0, 100.0, 15.0, 15.0, 0.3))
    return gt, pred


def mot17_conventions() -> tuple[list, list]:
    """Pedestrians, a static person (7) and a distractor (8) with predictions on them (removed),
    a car (3, not considered) and an unconsidered pedestrian with predictions on them (false
    positives), a prediction beside a distractor at IoU < 0.5 (a false positive)."""
    gt, pred = [], []
    for f in range(1, 16):
        walker = _box(10 + 4 * f, 50, 15, 35)
        gt += [(f, 1, *walker, 1, 1, 0.9), (f, 2, 100.0, 20.0, 14.0, 30.0, 0, 7, 1.0),
               (f, 3, 140.0, 60.0, 40.0, 20.0, 0, 3, 1.0),
               (f, 4, 60.0, 120.0, 13.0, 29.0, 0, 1, 0.2),
               (f, 5, 180.0, 20.0, 16.0, 32.0, 1, 8, 0.5)]
        pred += [(f, 30, walker[0] + 1, walker[1], 15, 35, 0.9),
                 (f, 31, 101.0, 21.0, 14, 30, 0.5), (f, 33, 60.0, 121.0, 13, 29, 0.4)]
        if f % 2:
            pred.append((f, 32, 141.0, 60.0, 40, 20, 0.5))
        pred.append((f, 34, 180.0 + (3 if f < 8 else 9), 20.0, 16, 32, 0.5))
    return gt, pred


def random_sequence(seed: int, classes: int = 1) -> tuple[list, list]:
    """Seeded random walks with jittered, dropped, re-identified predictions and false boxes."""
    rng = np.random.default_rng(seed)
    gt, pred, next_id = [], [], 100
    for obj in range(6):
        x, y = rng.uniform(0, 150, 2)
        vx, vy = rng.uniform(-3, 3, 2)
        w, h = rng.uniform(9, 41, 2)
        start = int(rng.integers(1, FRAMES // 2))
        end = int(rng.integers(start + 3, FRAMES + 1))
        cls = int(rng.integers(1, classes + 1))
        pid, next_id = next_id, next_id + 1
        for f in range(start, end + 1):
            bx, by = x + vx * f, y + vy * f
            gt.append((f, obj + 1, round(bx, 2), round(by, 2), round(w, 2), round(h, 2), 1, cls,
                       round(float(rng.uniform()), 2)))
            r = rng.uniform()
            if r < 0.1:
                continue
            if r < 0.15:
                pid, next_id = next_id, next_id + 1
            jx, jy = rng.normal(0, 3, 2)
            pred.append((f, pid, round(bx + jx, 2), round(by + jy, 2),
                         round(w * rng.uniform(0.8, 1.2), 2), round(h * rng.uniform(0.8, 1.2), 2),
                         0.5, cls))
    for _ in range(5):
        pred.append((int(rng.integers(1, FRAMES + 1)), next_id, *rng.uniform(0, 150, 2).round(1),
                     20.0, 20.0, 0.5, 1))
        next_id += 1
    return gt, pred


# ---------------------------------------------------------------- files and the oracle

def _line(row: tuple) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in row)


def write_gt(root: Path, seq: str, rows: list, length: int = FRAMES) -> None:
    (root / seq / "gt").mkdir(parents=True, exist_ok=True)
    (root / seq / "gt" / "gt.txt").write_text("".join(_line(r) + "\n" for r in rows))
    (root / seq / "seqinfo.ini").write_text(f"[Sequence]\nname={seq}\nseqLength={length}\n")


def write_pred(path: Path, rows: list, with_class: bool = False) -> None:
    """MOTChallenge tracker lines: ``frame,id,x,y,w,h,conf,-1,-1,-1`` (or the class in
    column 8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(
        _line((*r[:7], r[7] if with_class and len(r) > 7 else -1, -1, -1)) + "\n" for r in rows))


def oracle(gt_root: Path, pred_root: Path, seqs: list[str], preproc: bool,
           benchmark: str = "MOT17") -> dict:
    """TrackEval's results (its dataset class reads and preprocesses the same files):
    ``{seq or 'COMBINED_SEQ': {metric: {field: value}}}``."""
    from trackeval.datasets import MotChallenge2DBox
    from trackeval.metrics import CLEAR, HOTA, Identity

    dataset = MotChallenge2DBox({
        "GT_FOLDER": str(gt_root), "TRACKERS_FOLDER": str(pred_root.parent.parent),
        "TRACKERS_TO_EVAL": [pred_root.parent.name], "TRACKER_SUB_FOLDER": pred_root.name,
        "SKIP_SPLIT_FOL": True, "SEQ_INFO": dict.fromkeys(seqs, FRAMES), "DO_PREPROC": preproc,
        "BENCHMARK": benchmark, "PRINT_CONFIG": False})
    metrics = [HOTA(), CLEAR({"PRINT_CONFIG": False}), Identity({"PRINT_CONFIG": False})]
    out: dict = {}
    for seq in seqs:
        raw = dataset.get_raw_seq_data(pred_root.parent.name, seq)
        data = dataset.get_preprocessed_seq_data(raw, "pedestrian")
        out[seq] = {m.get_name(): m.eval_sequence(data) for m in metrics}
    out["COMBINED_SEQ"] = {m.get_name(): m.combine_sequences({s: out[s][m.get_name()]
                                                             for s in seqs}) for m in metrics}
    return out


def ours(reference: dict) -> dict:
    """TrackEval's fields under our metrics.json names (HOTA's averaged over alpha)."""
    values = {k: float(np.mean(reference["HOTA"][k])) for k in HOTA_KEYS}
    values.update({ours: float(reference["CLEAR"][theirs]) for ours, theirs in CLEAR_KEYS.items()})
    values.update({k: float(reference["Identity"][k]) for k in ID_KEYS})
    return values


def assert_equal(mine: dict, reference: dict, where: str) -> None:
    expected = ours(reference)
    for key, value in expected.items():
        assert mine[key] == pytest.approx(value, abs=1e-4), (where, key, mine[key], value)


def scenario_tree(tmp: Path, scenarios: dict, with_class: bool = False) -> tuple[Path, Path]:
    gt_root, pred_root = tmp / "gt", tmp / "trackers" / "mine" / "data"
    for name, (gt, pred) in scenarios.items():
        write_gt(gt_root, name, gt)
        write_pred(pred_root / f"{name}.txt", pred, with_class)
    return gt_root, pred_root


PLANTED = {"crossing": crossing(), "missed": missed_and_fragmented(),
           "false": false_tracks_and_shifts()}


# ---------------------------------------------------------------- equal to TrackEval

def test_cli_mot17_mode_equals_trackeval(tmp_path, monkeypatch, capsys):
    scenarios = {**PLANTED, "mot17": mot17_conventions(), "random": random_sequence(1, 12)}
    gt_root, pred_root = scenario_tree(tmp_path, scenarios)
    code, out, err = detseg(monkeypatch, capsys, "eval", "--mot", gt_root, "--predictions",
                            pred_root, "--out", tmp_path / "run")
    assert code == 0, err
    assert "HOTA" in out and "COMBINED" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["class_mode"] == "pedestrian"  # auto: unconsidered rows of other classes
    for name in ("HOTA", "DetA", "AssA", "MOTA", "IDF1", "IDSW"):
        assert name in metrics["combined"] and name in metrics["sequences"]["crossing"]
    assert isinstance(metrics["combined"]["IDSW"], int)
    reference = oracle(gt_root, pred_root, list(scenarios), preproc=True)
    for seq in scenarios:
        assert_equal(metrics["sequences"][seq], reference[seq], seq)
    assert_equal(metrics["combined"], reference["COMBINED_SEQ"], "combined")
    # the planted errors, counted
    seqs = metrics["sequences"]
    assert seqs["crossing"]["IDSW"] == 2 and seqs["crossing"]["FN"] == 0
    assert seqs["missed"]["FN"] == 4 + 25 and seqs["missed"]["Frag"] == 1
    assert seqs["missed"]["IDSW"] == 1 and seqs["missed"]["ML"] == 1
    assert seqs["false"]["TP"] == 8 and seqs["false"]["FP"] == 22 + 6
    # MOT17: the static person and the distractor take their predictions away, the car and the
    # unconsidered pedestrian do not; the one beside the distractor (IoU < 0.5) stays too
    assert seqs["mot17"]["TP"] == 15 and seqs["mot17"]["FP"] == 15 + 8 + 8
    rows = (tmp_path / "run" / "per_sequence.csv").read_text().splitlines()
    assert rows[0].startswith("sequence,class,HOTA,DetA,AssA") and len(rows) == 1 + 5 + 1


def test_mot20_mode_equals_trackeval_mot20(tmp_path):
    gt, pred = mot17_conventions()
    gt = [(*r[:7], 6 if r[7] == 7 else r[7], r[8]) for r in gt]  # the static person: vehicle
    scenarios = {"mot20": (gt, pred), "random": random_sequence(7, 12)}
    gt_root, pred_root = scenario_tree(tmp_path, scenarios)
    metrics = metrics_json(evaluate_mot(gt_root, pred_root, "mot20"))
    reference = oracle(gt_root, pred_root, list(scenarios), True, benchmark="MOT20")
    for seq in scenarios:
        assert_equal(metrics["sequences"][seq], reference[seq], seq)
    assert_equal(metrics["combined"], reference["COMBINED_SEQ"], "combined")
    assert metrics["sequences"]["mot20"]["FP"] == 15 + 8 + 8  # class 6 removes its predictions
    assert metrics_json(evaluate_mot(gt_root, pred_root, "pedestrian"))["sequences"]["mot20"][
        "FP"] == 15 + 8 + 8 + 15


@pytest.mark.parametrize("seed", [2, 3])
def test_generic_all_classes_equals_trackeval_without_preprocessing(tmp_path, seed):
    scenarios = {"a": random_sequence(seed, classes=3), "b": random_sequence(seed + 10, 3),
                 **PLANTED}
    gt_root, pred_root = scenario_tree(tmp_path, scenarios)
    metrics = metrics_json(evaluate_mot(gt_root, pred_root))
    assert metrics["class_mode"] == "all"  # auto: every row considered
    reference = oracle(gt_root, pred_root, list(scenarios), preproc=False)
    for seq in scenarios:
        assert_equal(metrics["sequences"][seq], reference[seq], seq)
    assert_equal(metrics["combined"], reference["COMBINED_SEQ"], "combined")


def test_each_class_equals_trackeval_per_class(tmp_path):
    from trackeval.metrics import CLEAR, HOTA, Identity

    scenarios = {"a": random_sequence(4, classes=3), "b": random_sequence(5, classes=3)}
    gt_root, pred_root = scenario_tree(tmp_path / "all", scenarios, with_class=True)
    metrics = metrics_json(evaluate_mot(gt_root, pred_root, "each"))
    classes = sorted({r[7] for gt, pred in scenarios.values() for r in gt + pred})
    per_class = {}
    for cls in classes:  # TrackEval on the class's rows only
        subset = {name: ([r for r in gt if r[7] == cls], [r for r in pred if r[7] == cls])
                  for name, (gt, pred) in scenarios.items()}
        roots = scenario_tree(tmp_path / f"class{cls}", subset)
        per_class[str(cls)] = oracle(*roots, list(scenarios), preproc=False)
        assert_equal(metrics["classes"][str(cls)], per_class[str(cls)]["COMBINED_SEQ"], cls)
        for seq in scenarios:
            assert_equal(metrics["sequence_classes"][seq][str(cls)], per_class[str(cls)][seq],
                         (seq, cls))
    metric_classes = [HOTA(), CLEAR({"PRINT_CONFIG": False}), Identity({"PRINT_CONFIG": False})]

    def det_averaged(key: str) -> dict:
        return {m.get_name(): m.combine_classes_det_averaged(
            {c: r[key][m.get_name()] for c, r in per_class.items()}) for m in metric_classes}

    assert_equal(metrics["combined"], det_averaged("COMBINED_SEQ"), "combined")
    for seq in scenarios:
        assert_equal(metrics["sequences"][seq], det_averaged(seq), seq)


def test_min_visibility_makes_hidden_targets_distractors(tmp_path):
    scenarios = {"random": random_sequence(6), "missed": missed_and_fragmented(), **PLANTED}
    gt_root, pred_root = scenario_tree(tmp_path / "mine", scenarios)
    metrics = metrics_json(evaluate_mot(gt_root, pred_root, "pedestrian", min_visibility=0.7))
    # TrackEval has no visibility option: the same targets written as distractors (class 8)
    hidden = {name: ([(*r[:7], 8 if r[6] and r[7] == 1 and r[8] < 0.7 else r[7], r[8])
                      for r in gt], pred) for name, (gt, pred) in scenarios.items()}
    reference = oracle(*scenario_tree(tmp_path / "oracle", hidden), list(scenarios), True)
    for seq in scenarios:
        assert_equal(metrics["sequences"][seq], reference[seq], seq)
    assert_equal(metrics["combined"], reference["COMBINED_SEQ"], "combined")
    assert metrics["sequences"]["missed"]["GT_dets"] == 25  # the 0.6-visible target is gone


def test_json_flag_prints_metrics_and_single_files_work(tmp_path, monkeypatch, capsys):
    gt, pred = crossing()
    write_gt(tmp_path / "gt", "cross", gt)
    write_pred(tmp_path / "cross.txt", pred)
    code, out, _ = detseg(monkeypatch, capsys, "eval", "--mot",
                          tmp_path / "gt" / "cross" / "gt" / "gt.txt", "--predictions",
                          tmp_path / "cross.txt", "--json", "--out", tmp_path / "run")
    assert code == 0
    printed = json.loads(out)
    assert list(printed["sequences"]) == ["cross"]  # named after the sequence folder
    assert printed["combined"]["IDSW"] == 2 and 0 < printed["combined"]["HOTA"] < 1


# ---------------------------------------------------------------- hostile inputs

def _two_sequences(tmp: Path) -> tuple[Path, Path]:
    gt_root, pred_root = tmp / "gt", tmp / "pred"
    for name, (gt, pred) in {"good": crossing(), "bad": missed_and_fragmented()}.items():
        write_gt(gt_root, name, gt)
        write_pred(pred_root / f"{name}.txt", pred)
    return gt_root, pred_root


@pytest.mark.parametrize("content, expected", [
    ("1,1,10,10,20,20,1\n2,1,10,x,20,20,1\n", "line 2: not numbers"),
    ("1,1,10,10,20,20,1\n1,2,10,10\n", "line 2: 4 columns"),
    ("1,1,10,10,20,20,1\n99,1,10,10,20,20,1\n", "line 2: frame 99 is out of range"),
    ("0,1,10,10,20,20,1\n", "line 1: frame 0 is out of range"),
    ("1,-1,10,10,20,20,1\n", "id -1 is negative"),
    ("1,1,10,10,-5,20,1\n", "negative box width"),
    ("1,1.5,10,10,20,20,1\n", "id 1.5 is not a whole number"),
    ("3,4,10,10,20,20,1\n3,4,50,10,20,20,1\n", "frame 3: id 4 appears twice (lines 1 and 2)"),
    ("1,1,10,10,20,20,1,2,-1,-1\n", "class 2 is not pedestrian"),
])
def test_a_bad_prediction_file_fails_its_sequence_only(tmp_path, monkeypatch, capsys, content,
                                                       expected):
    gt_root, pred_root = _two_sequences(tmp_path)
    (pred_root / "bad.txt").write_text(content)
    (gt_root / "bad" / "gt" / "gt.txt").write_text("1,1,10,10,20,20,1,1,1\n"
                                                  "1,2,50,50,9,9,0,7,1\n")
    code, _, err = detseg(monkeypatch, capsys, "eval", "--mot", gt_root, "--predictions",
                          pred_root, "--out", tmp_path / "run")
    assert code == 1
    assert expected in err and str(pred_root / "bad.txt") in err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert list(metrics["sequences"]) == ["good"] and "bad" in metrics["failed"]


def test_malformed_ground_truth_and_seqinfo_are_named(tmp_path, monkeypatch, capsys):
    gt_root, pred_root = _two_sequences(tmp_path)
    (gt_root / "bad" / "gt" / "gt.txt").write_text("1,1,10,10,20,20,1,1,1\nnonsense\n")
    (gt_root / "good" / "seqinfo.ini").write_text("[Sequence]\nseqLength=ten\n")
    code, _, err = detseg(monkeypatch, capsys, "eval", "--mot", gt_root, "--predictions",
                          pred_root, "--out", tmp_path / "run")
    assert code == 1
    assert f"{gt_root / 'bad' / 'gt' / 'gt.txt'}: line 2" in err
    assert "seqinfo.ini: seqLength 'ten' is not a whole number" in err
    assert "no sequence could be evaluated" in err


def test_missing_prediction_counts_all_missed_and_extra_files_are_named(tmp_path, monkeypatch,
                                                                       capsys):
    gt_root, pred_root = _two_sequences(tmp_path)
    (pred_root / "bad.txt").rename(pred_root / "stray.txt")
    (gt_root / "MOT17-01" / "img1").mkdir(parents=True)  # a test sequence: no gt/gt.txt
    (gt_root / "MOT17-01" / "seqinfo.ini").write_text("[Sequence]\nseqLength=3\n")
    code, _, err = detseg(monkeypatch, capsys, "eval", "--mot", gt_root, "--predictions",
                          pred_root, "--out", tmp_path / "run")
    assert code == 1
    assert "sequence bad: no prediction file" in err and "counted as all missed" in err
    assert f"{pred_root / 'stray.txt'}: no ground-truth sequence" in err
    assert f"{gt_root / 'MOT17-01'}: a sequence folder without gt/gt.txt" in err
    bad = json.loads((tmp_path / "run" / "metrics.json").read_text())["sequences"]["bad"]
    assert bad["FN"] == bad["GT_dets"] == 50 and bad["HOTA"] == 0 and bad["MOTA"] == 0


def test_empty_files_evaluate(tmp_path, monkeypatch, capsys):
    write_gt(tmp_path / "gt", "empty", [])
    write_pred(tmp_path / "pred" / "empty.txt", [])
    write_gt(tmp_path / "gt", "nogt", [])
    write_pred(tmp_path / "pred" / "nogt.txt", [(1, 1, 5.0, 5.0, 10.0, 10.0, 0.5)])
    code, _, err = detseg(monkeypatch, capsys, "eval", "--mot", tmp_path / "gt",
                          "--predictions", tmp_path / "pred", "--out", tmp_path / "run")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["sequences"]["nogt"]["FP"] == 1 and metrics["sequences"]["nogt"]["MOTA"] == 0
    assert metrics["combined"]["MOTA"] == -1.0  # TrackEval's combination: (0 - 1) / max(1, 0)


@pytest.mark.parametrize("args, expected", [
    (["--predictions", "P"], "--mot G: no such file or folder"),
    (["--weights", "x.pt", "--predictions", "P"], "--weights does not apply"),
    ([], "--mot needs --predictions"),
    (["--predictions", "P", "--mot-classes", "cars"], "--mot-classes must be auto or one of"),
    (["--predictions", "P", "--mot-min-visibility", "2"], "in 0-1"),
])
def test_usage_errors_exit_2(tmp_path, monkeypatch, capsys, args, expected):
    gt_root, pred_root = _two_sequences(tmp_path)
    gt = tmp_path / "missing" if expected.startswith("--mot G") else gt_root
    args = [str(pred_root) if a == "P" else a for a in args]
    code, _, err = detseg(monkeypatch, capsys, "eval", "--mot", gt, *args,
                          "--out", tmp_path / "run")
    assert code == 2
    assert expected.replace("G", str(gt)) in err


def test_each_mode_needs_prediction_classes(tmp_path):
    gt_root, pred_root = _two_sequences(tmp_path)
    evaluation = evaluate_mot(gt_root, pred_root, "each")
    assert not evaluation.results
    assert "has no class (column 8 missing or -1)" in evaluation.failed["good"]


def test_whitespace_columns_blank_lines_and_trailing_commas_read_alike(tmp_path):
    gt, pred = missed_and_fragmented()
    write_gt(tmp_path / "gt", "seq", gt)
    write_pred(tmp_path / "plain" / "seq.txt", pred)
    lines = (tmp_path / "plain" / "seq.txt").read_text().splitlines()
    variants = {"spaces": "\n".join(line.replace(",", "  ") for line in lines) + "\n",
                "untidy": "\n\n".join(f" {line}, " for line in lines) + "\n\n"}
    expected = metrics_json(evaluate_mot(tmp_path / "gt", tmp_path / "plain"))["combined"]
    for name, text in variants.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "seq.txt").write_text(text)
        assert metrics_json(evaluate_mot(tmp_path / "gt", tmp_path / name))["combined"] \
            == expected, name
    (tmp_path / "untidy" / "seq.txt").write_text("\n".join(lines[:3]) + "\n1,2,3,x,5,6,7\n")
    evaluation = evaluate_mot(tmp_path / "gt", tmp_path / "untidy")
    assert "line 4: not numbers" in evaluation.failed["seq"]


def test_mot_frames_scores_only_the_tracked_frames(tmp_path, monkeypatch, capsys):
    gt, pred = crossing()
    frames = set(range(3, 20, 2))  # what `detseg track --start 3 --end 19 --vid-stride 2` runs
    write_gt(tmp_path / "gt", "cross", gt)
    write_pred(tmp_path / "pred" / "cross.txt", [r for r in pred if r[0] in frames])
    code, _, err = detseg(monkeypatch, capsys, "eval", "--mot", tmp_path / "gt", "--predictions",
                          tmp_path / "pred", "--mot-frames", "3:19:2", "--out", tmp_path / "run")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    reference = oracle(*scenario_tree(tmp_path / "oracle", {"cross": (
        [r for r in gt if r[0] in frames], [r for r in pred if r[0] in frames])}), ["cross"], True)
    assert_equal(metrics["combined"], reference["COMBINED_SEQ"], "frames")
    assert metrics["combined"]["GT_dets"] == 2 * len(frames) and metrics["combined"]["FN"] == 0
    # predictions outside the frames are left out, with a warning
    write_pred(tmp_path / "pred" / "cross.txt", pred)
    code, _, err = detseg(monkeypatch, capsys, "eval", "--mot", tmp_path / "gt", "--predictions",
                          tmp_path / "pred", "--mot-frames", "3:19:2", "--out", tmp_path / "run2")
    assert code == 1 and "24 predictions in frames outside --mot-frames left out" in err
    for bad in ("3:x", "0:5", "9:3", "1:2:3:4", "::0"):
        code, _, err = detseg(monkeypatch, capsys, "eval", "--mot", tmp_path / "gt",
                              "--predictions", tmp_path / "pred", "--mot-frames", bad)
        assert code == 2 and "--mot-frames" in err, bad


def test_shapes_video_ground_truth_is_evaluated_class_agnostic(tmp_path, monkeypatch, capsys):
    """``detseg dataset shapes-video`` clips (classes 1-4, all considered, visibilities):
    auto picks the class-agnostic mode; a tracker output made from the ground truth (dropped
    boxes, swapped ids, jitter) scores as TrackEval scores it."""
    code, _, err = detseg(monkeypatch, capsys, "dataset", "shapes-video", "--out",
                          tmp_path / "clips", "--sequences", "2", "--frames", "12",
                          "--size", "97x75")
    assert code == 0, err
    rng = np.random.default_rng(0)
    seqs = sorted(p.name for p in (tmp_path / "clips").iterdir() if p.is_dir())
    for seq in seqs:
        rows = [line.split(",") for line in
                (tmp_path / "clips" / seq / "gt" / "gt.txt").read_text().split()]
        pred = [(int(r[0]), int(r[1]) + (50 if int(r[0]) > 6 and int(r[1]) % 2 else 0),
                 float(r[2]) + rng.normal(0, 1.5), float(r[3]) + rng.normal(0, 1.5),
                 float(r[4]), float(r[5]), 0.9) for r in rows if rng.uniform() > 0.15]
        write_pred(tmp_path / "trackers" / "t" / "data" / f"{seq}.txt", pred)
    pred_root = tmp_path / "trackers" / "t" / "data"
    metrics = metrics_json(evaluate_mot(tmp_path / "clips", pred_root))
    assert metrics["class_mode"] == "all"
    reference = oracle(tmp_path / "clips", pred_root, seqs, preproc=False)
    for seq in seqs:
        assert_equal(metrics["sequences"][seq], reference[seq], seq)
    assert_equal(metrics["combined"], reference["COMBINED_SEQ"], "combined")
    assert metrics["combined"]["IDSW"] > 0 and metrics["combined"]["FN"] > 0


def test_mot_path_imports_no_torch(tmp_path):
    import subprocess
    import sys

    gt, pred = crossing()
    write_gt(tmp_path / "gt", "cross", gt)
    write_pred(tmp_path / "pred" / "cross.txt", pred)
    code = ("import sys; from detseg.cli.main import main; sys.argv = ['detseg', 'eval', "
            f"'--mot', {str(tmp_path / 'gt')!r}, '--predictions', {str(tmp_path / 'pred')!r}, "
            f"'--out', {str(tmp_path / 'run')!r}, '-q']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "metrics.json").is_file()
