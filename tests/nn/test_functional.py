import math
from functools import partial

import pytest
import torch

from deepnet.nn import categorical_crossentropy, dropout, dropout_scale, max_norm_
from deepnet.nn.functional import DropoutScales


def test_dropout_is_identity_at_eval():
    x = torch.randn(100, 10)
    assert torch.equal(dropout(x, 0.5, training=False), x)


def test_dropout_is_inverted_and_keeps_the_expected_fraction():
    x = torch.ones(200_000)
    y = dropout(x, 0.25, training=True)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(0.75, abs=0.005)
    assert torch.allclose(y[kept], torch.tensor(1 / 0.75))


def test_dropout_takes_its_multipliers_from_scales():
    x = torch.ones(1000)

    def scales(seed: int) -> DropoutScales:
        return partial(dropout_scale, generator=torch.Generator().manual_seed(seed))

    a, b, c = (dropout(x, 0.5, True, scales(seed)) for seed in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(dropout(x, 0.5, True, lambda shape, rate: torch.full(shape, 2.0)), 2 * x)


def test_max_norm_caps_each_units_incoming_weights():
    w = torch.tensor([[3.0, 4.0], [0.3, 0.4]], dtype=torch.float64)  # row norms 5 and 0.5
    max_norm_(w, 3.0)
    norms = w.norm(dim=1)
    assert norms[0].item() == pytest.approx(3.0 * 5 / (5 + 1e-7), rel=1e-12)
    assert norms[1].item() == pytest.approx(0.5 * 0.5 / (0.5 + 1e-7), rel=1e-12)
    # direction is kept
    assert w[0].tolist() == pytest.approx([1.8, 2.4], rel=1e-6)


def test_crossentropy_is_clipped_like_keras():
    logits = torch.tensor([[100.0, -100.0], [0.0, 0.0]], requires_grad=True)
    labels = torch.tensor([1, 0])
    loss = categorical_crossentropy(logits, labels)
    assert loss[0].item() == pytest.approx(-math.log(1e-7), rel=1e-5)  # capped near 16.1
    assert loss[1].item() == pytest.approx(math.log(2), rel=1e-6)
    loss.sum().backward()
    assert torch.equal(logits.grad[0], torch.zeros(2))  # no gradient where the clip bites


def test_crossentropy_matches_torch_away_from_the_clip():
    logits = torch.randn(64, 10, dtype=torch.float64)
    labels = torch.randint(0, 10, (64,))
    torch.testing.assert_close(
        categorical_crossentropy(logits, labels),
        torch.nn.functional.cross_entropy(logits, labels, reduction="none"),
    )
