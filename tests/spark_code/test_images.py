import numpy as np
import pytest
from PIL import Image

from spark_code.images import ImageDecodeError, check_image, load_rgb, preprocess
from tests.images_factory import BAD_IMAGES, GOOD_IMAGES, encoded, fruit_like


@pytest.mark.parametrize("name", sorted(GOOD_IMAGES))
def test_any_common_image_becomes_a_scaled_rgb_array(name):
    arr = preprocess(GOOD_IMAGES[name], 224)
    assert arr.shape == (224, 224, 3)
    assert arr.dtype == np.float32
    assert arr.min() >= -1.0 and arr.max() <= 1.0


def test_scaling_matches_mobilenet_v2_preprocessing():
    white = encoded(Image.new("RGB", (10, 10), (255, 255, 255)), "PNG")
    black = encoded(Image.new("RGB", (10, 10), (0, 0, 0)), "PNG")
    assert np.all(preprocess(white, 32) == 1.0)
    assert np.all(preprocess(black, 32) == -1.0)


def test_transparent_pixels_become_white_like_the_dataset_background():
    transparent = encoded(Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG")
    assert load_rgb(transparent).getpixel((3, 3)) == (255, 255, 255)


def test_sixteen_bit_images_are_scaled_not_clipped():
    mid_grey = encoded(Image.fromarray(np.full((4, 4), 32896, np.uint16)), "PNG")
    assert load_rgb(mid_grey).getpixel((0, 0)) == (128, 128, 128)


def test_check_image_reports_size_and_format():
    assert check_image(encoded(fruit_like((37, 21)), "PNG")) == (37, 21, "PNG")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty.jpg", "empty file"),
        ("truncated.jpg", "cannot decode"),
        ("text.jpg", "not an image"),
        ("page.png", "not an image"),
        ("bomb.png", "decompression bomb"),
    ],
)
def test_bad_files_raise_with_a_reason(name, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        preprocess(BAD_IMAGES[name], 224)
    with pytest.raises(ImageDecodeError, match=reason):
        check_image(BAD_IMAGES[name])
