import base64
import io

from PIL import Image

from fruits_assets.defs.plots import image_markdown, thumbnail_strip
from tests.images_factory import BAD_IMAGES, GOOD_IMAGES


def test_thumbnail_strip_skips_undecodable_files():
    strip = thumbnail_strip([*BAD_IMAGES.values(), *GOOD_IMAGES.values()], size=40)
    assert strip.size == (40 * len(GOOD_IMAGES), 40)
    assert strip.mode == "P"


def test_no_strip_when_nothing_decodes():
    assert thumbnail_strip(list(BAD_IMAGES.values())) is None


def test_image_markdown_is_an_inline_png():
    markdown = image_markdown(Image.new("RGB", (8, 4), "red"), "sample images").value
    prefix = "![sample images](data:image/png;base64,"
    assert markdown.startswith(prefix) and markdown.endswith(")")
    assert Image.open(io.BytesIO(base64.b64decode(markdown[len(prefix) : -1]))).size == (8, 4)
