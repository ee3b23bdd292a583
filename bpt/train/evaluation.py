"""Scoring weights on a test split, cheaply where a benchmark only needs to know when a
target is first reached.

A time-to-accuracy benchmark evaluates every ~1,000 samples on all 10,000 test images: for
LeNet-5 that costs twice the training between two evaluations. Far below the target the exact
figure does not matter, so a Scorer with a screen first scores the first `screen` test
images, and scores all of them only when the screen is within SCREEN_MARGIN of the target.
On 2,000 images near 87% one standard error is 0.75 points, so a screen 3 points low while
the whole split has reached the target is a 4-sigma event (about 3 in 100,000 evaluations);
every crossing that is reported was measured on the whole split."""

from __future__ import annotations

import numpy as np
import torch

from bpt.train import training

SCREEN_MARGIN = 0.03


class Scorer:
    def __init__(self, model: torch.nn.Module, x: np.ndarray, y: np.ndarray, target: float | None = None,
                 screen: int = 0):
        self.model, self.x, self.y = model, x, y
        self.target, self.screen = target, screen if target is not None and 0 < screen < len(y) else 0
        self.full_evaluations = 0

    def __call__(self, weights: dict[str, np.ndarray]) -> float:
        training.load_numpy_state(self.model, weights)
        if self.screen:
            _, rough = training.evaluate(self.model, self.x[:self.screen], self.y[:self.screen])
            if rough < self.target - SCREEN_MARGIN:
                return rough
        self.full_evaluations += 1
        return training.evaluate(self.model, self.x, self.y)[1]
