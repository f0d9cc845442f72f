"""An exponential moving average of a model's weights, as YOLO-style training keeps one.

After each optimizer step, every floating-point entry of the state dict (parameters and
BatchNorm statistics) moves toward the trained model's: ``ema = d * ema + (1 - d) * model``,
with a decay that ramps up from 0 over the first updates, ``d = decay * (1 - exp(-updates /
tau))``, so early averages are not dominated by the random initialisation. Integer buffers
(``num_batches_tracked``) are copied. The averaged model is what validation scores and what
``best.pt`` holds.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


class ModelEMA:
    """The averaged copy ``module`` of a model (in eval mode, no gradients).

    Args:
        model: the model being trained (unwrapped, not the DDP wrapper).
        decay: the decay once ramped up (0.9999 as in YOLOv5/YOLOv8).
        tau: updates over which the decay ramps up (2000).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        if tau <= 0:
            raise ValueError(f"ema tau must be positive, got {tau}")
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    def current_decay(self) -> float:
        """The decay the next ``update`` uses."""
        return self.decay * (1.0 - math.exp(-(self.updates + 1) / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step toward ``model``'s current weights."""
        decay = self.current_decay()
        self.updates += 1
        trained = model.state_dict()
        for name, averaged in self.module.state_dict().items():
            value = trained[name].detach()
            if averaged.dtype.is_floating_point:
                averaged.mul_(decay).add_(value.to(averaged.dtype), alpha=1.0 - decay)
            else:
                averaged.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        """What a resumable checkpoint keeps: the averaged weights and the update count."""
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``'s output (resume)."""
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
