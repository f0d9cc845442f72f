"""Running models: training (``trainer``) and inference (``predictor``, ``results``, ``video``).

Kept import-light on purpose: import the submodule you need, e.g.
``from detseg.engine.trainer import Trainer, TrainConfig``.
"""
