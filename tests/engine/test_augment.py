"""Augmented training batches: the C gather against its torch reference, what each transform
does to real digits, the counter-based draws, and training that augments only its batches."""

import dataclasses

import numpy as np
import pytest
import torch

from deepnet import Member, SequentialEngine, TrainConfig
from deepnet.engine import kernels
from deepnet.engine.augment import (
    Augmentation,
    AugmentStream,
    BatchTransforms,
    augment_images,
    gather_augmented,
    gather_augmented_torch,
    uniforms,
)
from deepnet.errors import ConfigError
from deepnet.evaluate import channels_first, images_to_tensor, loss_and_accuracy, predict_logits
from tests.engine.fallback import without_compiler
from tests.engine.images import SIZES, crop

EVERYTHING = Augmentation(shift=3, rotate=30.0, scale=0.2, flip=True)


def population_batch(images, streams, n=48, epoch=2, start=16):
    """A gather's arguments for members ``streams`` (None: no augmentation), n images each."""
    height, width = images.shape[1:3]
    index = torch.as_tensor(np.random.default_rng(0).integers(0, len(images), (len(streams), n)))
    drawn = [s and s.transforms(epoch, start, n, height, width) for s in streams]
    return index, BatchTransforms.of(drawn, n)


@pytest.mark.skipif(not kernels.native(), reason="no C compiler: only the torch path runs")
@pytest.mark.parametrize("size", SIZES)
def test_the_c_gather_matches_the_torch_reference_for_bytes_and_floats(colour27, size):
    images = crop(colour27, size)
    streams = [AugmentStream(EVERYTHING, 5), None, AugmentStream(Augmentation(shift=2), 7)]
    index, transforms = population_batch(images, streams)
    pixels, floats = channels_first(images, torch.uint8), images_to_tensor(images)
    ours = gather_augmented(pixels, index, transforms)
    torch.testing.assert_close(
        ours, gather_augmented_torch(pixels, index, transforms), atol=1e-5, rtol=0
    )
    assert torch.equal(gather_augmented(floats, index, transforms), ours)  # 1/255 as torch's
    assert torch.equal(ours[1], kernels.gather_images(pixels, index)[1])  # not augmenting


@pytest.mark.skipif(not kernels.native(), reason="no C compiler: only the torch path runs")
def test_gathers_split_across_threads_give_the_same_bits(colour27):
    streams = [AugmentStream(EVERYTHING, 5), None, AugmentStream(Augmentation(shift=2), 7)]
    index, transforms = population_batch(colour27, streams * 2)
    pixels, floats = channels_first(colour27, torch.uint8), images_to_tensor(colour27)
    before = torch.get_num_threads()

    def gathers():
        return [gather_augmented(x, index, transforms) for x in (pixels, floats)] + [
            kernels.gather_images(x, index) for x in (pixels, floats)
        ]

    try:
        torch.set_num_threads(1)
        alone = gathers()
        for threads in (2, 4):
            torch.set_num_threads(threads)
            assert all(torch.equal(a, b) for a, b in zip(alone, gathers(), strict=True))
    finally:
        torch.set_num_threads(before)


def digits(small27, n=64):
    return images_to_tensor(small27.x_train[:n])  # (n, 1, 28, 28)


def through(x, augmentation, u):
    """x's images through ``augmentation`` with uniforms ``u`` (5,) for every image."""
    u = np.repeat(np.asarray(u, dtype=np.float64)[:, None], len(x), axis=1)
    return augment_images(x, torch.arange(len(x)), augmentation.affine(u, *x.shape[2:]))


def test_a_whole_pixel_shift_moves_every_image_and_fills_with_zero(small27):
    x = digits(small27)
    moved = through(x, Augmentation(shift=2), [0.75, 0.25, 0.5, 0.5, 0.5])  # dx = 1, dy = -1
    torch.testing.assert_close(moved[:, :, :-1, 1:], x[:, :, 1:, :-1], atol=1e-6, rtol=0)
    assert moved[:, :, -1].abs().max() == 0 and moved[:, :, :, 0].abs().max() == 0


def test_a_flip_mirrors_about_half_the_images_exactly(small27):
    x = digits(small27, 256)
    stream = AugmentStream(Augmentation(flip=True), 3)
    out = augment_images(x, torch.arange(len(x)), stream.transforms(1, 0, len(x), 28, 28))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 96 < sum(flipped) < 160


def test_a_quarter_turn_rotates_about_the_centre(small27):
    x = digits(small27)
    turned = through(x, Augmentation(rotate=90.0), [0.5, 0.5, 1.0 - 2**-53, 0.5, 0.5])
    torch.testing.assert_close(turned, x.rot90(-1, (2, 3)), atol=1e-5, rtol=0)


def test_scaling_keeps_the_centre_and_blurs_nothing_at_factor_one(colour27):
    x = images_to_tensor(crop(colour27, "7x9"))[:32]  # odd sides: the centre is a pixel
    zoomed = through(x, Augmentation(scale=0.5), [0.5, 0.5, 0.5, 1.0 - 2**-53, 0.5])
    torch.testing.assert_close(zoomed[:, :, 3, 4], x[:, :, 3, 4], atol=1e-5, rtol=0)
    assert not torch.allclose(zoomed, x)
    same = through(x, Augmentation(scale=0.5), [0.5, 0.5, 0.5, 0.5, 0.5])
    assert torch.equal(same, x)


def test_draws_are_a_pure_function_of_seed_epoch_and_position():
    whole = uniforms(7, 3, 0, 20000)
    assert np.array_equal(uniforms(7, 3, 400, 100), whole[:, 400:500])
    assert not np.array_equal(uniforms(8, 3, 0, 20000), whole)
    assert not np.array_equal(uniforms(7, 4, 0, 20000), whole)
    assert whole.min() >= 0 and whole.max() < 1
    assert np.abs(whole.mean(1) - 0.5).max() < 0.01  # 4.5 standard errors
    correlations = np.corrcoef(whole)[np.triu_indices(5, 1)]  # components, pairwise
    assert np.abs(correlations).max() < 0.03  # 4 standard errors


def member(config, seed=3):
    return Member("m", config, np.arange(900), np.arange(900, 1200), seed)


def test_training_augments_its_batches_never_its_validation(small27):
    args = (small27.x_train, small27.y_train, 2)
    base = TrainConfig(epochs=2, batch_size=64)
    shifted = base.replace(augment_shift=3, augment_rotate=10.0)
    training = SequentialEngine().train(*args, [member(shifted)])
    augmented = list(training)
    plain = list(SequentialEngine().train(*args, [member(base)]))
    assert augmented[0].train_loss != plain[0].train_loss
    assert augmented[-1].val_accuracy > 0.9  # it still learns
    x, y = images_to_tensor(small27.x_train[900:1200]), torch.as_tensor(small27.y_train[900:1200])
    val_loss, _ = loss_and_accuracy(predict_logits(training.model("m"), x), y)
    assert val_loss == pytest.approx(augmented[-1].val_loss, rel=1e-6)


def test_a_resumed_member_draws_the_transforms_it_would_have_drawn(small27):
    config = TrainConfig(epochs=2, batch_size=128, augment_shift=2, augment_flip=True)
    args = (small27.x_train, small27.y_train, 2, [member(config)])
    full = [dataclasses.replace(r, seconds=0.0) for r in SequentialEngine().train(*args)]
    training = SequentialEngine().train(*args)
    before = training.step()
    resumed = SequentialEngine().train(*args, {"m": training.snapshot("m")})
    after = [dataclasses.replace(r, seconds=0.0) for r in before + list(resumed)]
    assert after == full


def test_a_shift_past_half_the_image_is_refused_before_training(small27):
    config = TrainConfig(epochs=1, augment_shift=15)
    with pytest.raises(ConfigError, match=r"augment_shift=15 .* 28x28 .* augment_shift=14"):
        SequentialEngine().train(small27.x_train, small27.y_train, 2, [member(config)])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"index": torch.full((2, 16), 64)}, "index 64 is outside the 64 images"),
        ({"index": torch.zeros(2, 32, dtype=torch.int64)}, "affine must have shape"),
        ({"affine": torch.full((2, 6, 16), float("nan"))}, "finite"),
        ({"augmented": torch.ones(2, dtype=torch.int64)}, "augmented must be torch.int32"),
    ],
    ids=["index", "shape", "nan", "dtype"],
)
def test_the_gather_refuses_what_would_misread(small27, change, message):
    x = channels_first(small27.x_train[:64], torch.uint8)
    fields = {"affine": torch.zeros(2, 6, 16), "augmented": torch.ones(2, dtype=torch.int32)}
    fields.update({k: v for k, v in change.items() if k != "index"})
    index = change.get("index", torch.zeros(2, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match=message):
        gather_augmented(x, index, BatchTransforms(fields["affine"], fields["augmented"]))


def test_without_a_compiler_augmented_training_gives_the_same_numbers(small27, tmp_path):
    config = TrainConfig(epochs=1, batch_size=64, augment_shift=2, augment_scale=0.1)
    args = (small27.x_train, small27.y_train, 2, [member(config)])
    (native,) = SequentialEngine().train(*args)
    with without_compiler(tmp_path):
        (fallback,) = SequentialEngine().train(*args)
    assert fallback.val_loss == pytest.approx(native.val_loss, rel=1e-4)
