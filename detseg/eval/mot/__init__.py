"""Multi-object tracking evaluation: HOTA, CLEAR MOT and identity metrics of MOTChallenge files,
equal to TrackEval's (``evaluate_mot``; the conventions in ``preprocess``, the outputs in
``tables``)."""

from .evaluate import MotEvaluation, SequenceResult, evaluate_mot, summarise
from .preprocess import AUTO, CLASS_MODES, FrameRange

__all__ = ["AUTO", "CLASS_MODES", "FrameRange", "MotEvaluation", "SequenceResult", "evaluate_mot",
           "summarise"]
