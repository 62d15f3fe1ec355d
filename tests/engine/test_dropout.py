"""Dropout mask streams: one member's masks are the same in every layout and engine."""

import numpy as np
import pytest
import torch

from deepnet.engine.dropout import MaskStream, draw


def test_a_stream_repeats_for_its_seed_and_differs_between_seeds():
    a, b, c = MaskStream(3), MaskStream(3), MaskStream(4)
    keys = [a.next_key() for _ in range(5)]
    assert keys == [b.next_key() for _ in range(5)]
    assert len(set(keys) | {c.next_key() for _ in range(5)}) == 10


def test_the_sequential_layout_holds_the_populations_values():
    shape = (40, 8, 12, 12)
    alone = MaskStream(5).scale(shape, 0.25)
    together = draw([MaskStream(9), MaskStream(5)], [0.5, 0.25], [33, 40], [1152, 1152], 48)
    assert torch.equal(together[1, :, :40].T.reshape(shape), alone)


def test_a_member_without_dropout_takes_no_draw():
    streams = [MaskStream(1), MaskStream(2)]
    scales = draw(streams, [0.5, 0.0], [16, 16], [10, 10], 16)
    assert torch.equal(scales[1], torch.ones(10, 16))
    assert streams[1].next_key() == MaskStream(2).next_key()
    assert streams[0].next_key() != MaskStream(1).next_key()


def test_masks_are_independent_across_elements_and_draws():
    stream = MaskStream(0)
    first, second = ((stream.scale((2000, 1152), 0.25) > 0).numpy().ravel() for _ in range(2))
    assert first.mean() == pytest.approx(0.75, abs=0.002)
    # neighbouring elements and the same element in consecutive draws are uncorrelated
    for a, b in ((first[:-1], first[1:]), (first, second)):
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.005
