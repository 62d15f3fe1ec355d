import pytest

from deepnet.data import LoadOptions, Preprocessing, parse_size
from deepnet.errors import ConfigError


@pytest.mark.parametrize(("text", "size"), [("32x32", (32, 32)), (" 28 X 30 ", (28, 30))])
def test_sizes_are_height_by_width(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["32", "0x32", "32x", "ax3", "32x32x3", "-3x4"])
def test_bad_sizes(text):
    with pytest.raises(ConfigError, match=r"is not an image size: give HEIGHTxWIDTH in pixels"):
        parse_size(text)


@pytest.mark.parametrize("size", [0, 1, 1.0, -0.1])
def test_test_size_is_a_share(size):
    with pytest.raises(ConfigError, match=rf"test_size={size} is not allowed: .* above 0 and"):
        LoadOptions(test_size=size)


@pytest.mark.parametrize("resize", [(0, 5), (32,), (32.0, 32)])
def test_resize_is_two_whole_sizes(resize):
    with pytest.raises(ConfigError, match=r"resize=.* is not a size"):
        LoadOptions(resize=resize)


def test_options_and_preprocessing_round_trip_through_dicts():
    options = LoadOptions(resize=(32, 30), grayscale=True, test_size=0.25, skip_bad=True)
    assert LoadOptions.from_dict(options.to_dict()) == options
    preprocessing = Preprocessing((32, 30), 1, resize=True, grayscale=True)
    assert Preprocessing.from_dict(preprocessing.to_dict()) == preprocessing
