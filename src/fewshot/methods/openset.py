"""Open-set rejection for few-shot classification: "none of these classes" by distance to the
nearest class prototype, calibrated on the support set alone.

The top softmax probability is a poor unknown-detector (a one-class support set always scores 1;
a blank page can be confident). Here a query's score is its Euclidean distance (in the method's
embedding) to the nearest class prototype, divided by the typical distance of a support example to
its own class prototype (leave-one-out), so the threshold means "times farther than the support
examples are from their own class" and transfers across models and data sets. With one example per
class the scale is half the median distance between neighbouring prototypes.
"""

from __future__ import annotations

import torch

from ..nn.distances import class_means


class PrototypeRejector:
    """``fit(support [N, D], support_y [N])`` then ``score(query [Q, D]) -> [Q]`` (higher = more likely unknown).

    Attributes after ``fit``: ``prototypes [way, D]`` and ``scale`` (the calibrated unit distance).
    """

    def fit(self, support: torch.Tensor, support_y: torch.Tensor) -> "PrototypeRejector":
        support = support.flatten(1).float()
        way = int(support_y.max()) + 1
        self.prototypes = class_means(support, support_y, way)
        counts = torch.bincount(support_y, minlength=way).float()
        multi = counts[support_y] >= 2
        if multi.any():
            n = counts[support_y][multi, None]
            own = self.prototypes[support_y][multi]
            loo = (n * own - support[multi]) / (n - 1)  # the prototype without the example itself
            scale = (support[multi] - loo).norm(dim=1).median()
        elif way >= 2:
            d = torch.cdist(self.prototypes, self.prototypes)
            d.fill_diagonal_(float("inf"))
            scale = d.min(dim=1).values.median() / 2
        else:
            raise ValueError("distance rejection needs a support set of at least 2 examples (of one class, or one "
                             "each of 2 classes) to calibrate its threshold; add examples")
        if not float(scale) > 0:
            raise ValueError("the support examples are identical in the embedding (distance 0): distance rejection "
                             "cannot be calibrated on them; add varied examples")
        self.scale = float(scale)
        return self

    def score(self, query: torch.Tensor) -> torch.Tensor:
        """Distance to the nearest prototype in units of ``scale``, ``[Q]``."""
        return torch.cdist(query.flatten(1).float(), self.prototypes).min(dim=1).values / self.scale
