"""Each member's images of one step as a padded index matrix, and the per-member tally."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deepnet.engine.kernels import LANES


def pad(
    parts: Sequence[torch.Tensor], device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index rows (P, b) padded with image 0 to a multiple of LANES, and weights 1/len
    (0 on padding, which therefore adds nothing to any loss or gradient), on ``device``
    (made on the CPU, then moved there)."""
    b = -(-max(len(p) for p in parts) // LANES) * LANES
    index = torch.zeros(len(parts), b, dtype=torch.int64)
    weight = torch.zeros(len(parts), b)
    for i, p in enumerate(parts):
        index[i, : len(p)] = p
        weight[i, : len(p)] = 1.0 / len(p) if len(p) else 0.0
    return index.to(device), weight.to(device)


class Tally:
    """Each member's summed loss and count of correct predictions over padded chunks, kept
    on the device that computes them."""

    def __init__(self, n: int, device: torch.device | None = None):
        self.loss = torch.zeros(n, dtype=torch.float64, device=device)
        self.correct = torch.zeros(n, dtype=torch.int64, device=device)

    @torch.no_grad()
    def add(
        self, losses: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, real: torch.Tensor
    ) -> None:
        self.loss += (losses * real).sum(1, dtype=torch.float64)
        self.correct += ((logits.argmax(2) == labels) & real).sum(1)

    def means(self, sizes: Sequence[int]) -> list[tuple[float, float] | None]:
        """(mean loss, accuracy) of each member over its ``sizes`` images; None where 0."""
        return [
            (self.loss[i].item() / k, self.correct[i].item() / k) if k else None
            for i, k in enumerate(sizes)
        ]
