"""Per-pixel metrics: a hand-computed example and a naive per-pixel implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detseg.eval.pixels import ConfusionMatrix
from detseg.eval.scorers import PixelScorer
from detseg.prediction import Prediction
from detseg.spec import ModelSpec


def test_hand_example():
    target = torch.tensor([[0, 0, 1, 1], [0, 2, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 0, 3]])
    cm = ConfusionMatrix(4, class_names=["bg", "a", "b", "c"])
    cm.update(pred, target)
    # counted pixels: 7; truth bg: 3 (2 right, 1 -> a), a: 2 (2 right), b: 2 (1 right, 1 -> bg).
    np.testing.assert_array_equal(cm.to_numpy(), [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0],
                                                  [0, 0, 0, 0]])
    out = cm.compute()
    assert out["pixel_acc"] == pytest.approx(5 / 7)
    iou = {"bg": 2 / 4, "a": 2 / 3, "b": 1 / 2}
    for name, value in iou.items():
        assert out["per_class"][name]["IoU"] == pytest.approx(value)
    assert out["per_class"]["c"]["IoU"] is None          # absent everywhere: left out
    assert out["mIoU"] == pytest.approx(np.mean(list(iou.values())))
    assert out["mean_acc"] == pytest.approx(np.mean([2 / 3, 1.0, 1 / 2]))
    assert out["fwIoU"] == pytest.approx(3 / 7 * 0.5 + 2 / 7 * 2 / 3 + 2 / 7 * 0.5)
    dice = [2 * 2 / (3 + 3), 2 * 2 / (2 + 3), 2 * 1 / (2 + 1)]
    assert out["mDice"] == pytest.approx(np.mean(dice))


def _naive(pred: np.ndarray, target: np.ndarray, c: int, ignore: int) -> dict:
    mat = np.zeros((c, c), dtype=np.int64)
    for p, t in zip(pred.ravel().tolist(), target.ravel().tolist(), strict=True):
        if t != ignore:
            mat[t, p] += 1
    ious, accs, dices, fw = [], [], [], 0.0
    total = mat.sum()
    for k in range(c):
        tp, t_k, p_k = mat[k, k], mat[k].sum(), mat[:, k].sum()
        if t_k + p_k == 0:
            continue
        ious.append(tp / (t_k + p_k - tp))
        dices.append(2 * tp / (t_k + p_k))
        if t_k:
            accs.append(tp / t_k)
            fw += t_k / total * ious[-1]
    return {"pixel_acc": np.trace(mat) / total, "mean_acc": np.mean(accs), "mIoU": np.mean(ious),
            "fwIoU": fw, "mDice": np.mean(dices), "matrix": mat}


def test_matches_naive_implementation_over_batches_and_logits():
    rng = np.random.default_rng(0)
    c = 5
    cm = ConfusionMatrix(c)
    preds, targets = [], []
    for _ in range(3):
        target = rng.integers(0, c - 1, (2, 9, 7))          # class 4 never in the truth
        target[rng.random(target.shape) < 0.1] = 255
        logits = rng.normal(size=(2, c, 9, 7))
        cm.update(torch.from_numpy(logits), torch.from_numpy(target))
        preds.append(logits.argmax(1))
        targets.append(target)
    ref = _naive(np.concatenate(preds), np.concatenate(targets), c, 255)
    out = cm.compute()
    np.testing.assert_array_equal(cm.to_numpy(), ref["matrix"])
    for key in ("pixel_acc", "mean_acc", "mIoU", "fwIoU", "mDice"):
        assert out[key] == pytest.approx(ref[key], abs=1e-12), key


def test_bad_labels_and_shapes_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="outside"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    assert cm.compute()["mIoU"] == 0.0


def test_pixel_scorer_merges_into_one_that_saw_no_image():
    """Evaluation across processes: a rank that scored no image still takes the others'
    counts, and merging adds them."""
    spec = ModelSpec("unet", "tiny", 3, "semantic")
    seen, empty = PixelScorer(spec), PixelScorer(spec)
    truth = np.array([[0, 1, 2], [2, 2, 255]])
    seen.update(Prediction(size=(2, 3), semantic=np.array([[0, 1, 1], [2, 0, 2]])),
                {"mask": truth})
    empty.merge(seen.state())
    np.testing.assert_array_equal(empty.state(), seen.state())
    empty.merge(seen.state())
    np.testing.assert_array_equal(empty.state(), 2 * seen.state())
    assert empty.state().sum() == 10
