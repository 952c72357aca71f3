"""randomize_image on every PNG mode it promises to keep, and on bad input."""

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from backend.core.kinds import RANDOMIZE
from compute.errors import InvalidImage, InvalidInput
from compute.image import randomize_image
from compute.png import HEADER_BYTES, PNG_SIGNATURE, output_bound
from tests.images import make_image, png_bytes, png_chunk, ramps_png, tiles


def assert_block_permutation(before: Image.Image, after: Image.Image):
    assert (after.size, after.mode) == (before.size, before.mode)
    a, b = np.asarray(before), np.asarray(after)
    assert tiles(a, 60) == tiles(b, 60), "tiles are not a permutation of the input's"
    assert not np.array_equal(a, b), "nothing moved"
    assert np.array_equal(a[180:], b[180:]) and np.array_equal(a[:, 240:], b[:, 240:]), "edge strips changed"


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "I;16", "1"])
def test_modes_are_kept(mode):
    before = make_image(mode, np.random.default_rng(1))
    after = Image.open(io.BytesIO(randomize_image(png_bytes(before), seed=7)))
    assert_block_permutation(before, after)
    if mode == "P":
        assert after.getpalette() == before.getpalette()


def test_palette_transparency_is_kept():
    before = make_image("P", np.random.default_rng(2))
    after = Image.open(io.BytesIO(randomize_image(png_bytes(before, transparency=5), seed=1)))
    assert_block_permutation(before, after)
    assert after.info["transparency"] == 5


@pytest.mark.parametrize("extra", [{"transparency": 7}, {"icc_profile": b"\x00" * 128}])
def test_other_metadata_goes_through_pillow(extra):
    before = make_image("L", np.random.default_rng(3))
    after = Image.open(io.BytesIO(randomize_image(png_bytes(before, **extra), seed=1)))
    assert_block_permutation(before, after)
    name, value = next(iter(extra.items()))
    assert after.info[name] == value


def test_seed_makes_it_repeatable():
    png = png_bytes(make_image("RGB", np.random.default_rng(4)))
    assert randomize_image(png, seed=3) == randomize_image(png, seed=3)
    assert randomize_image(png, seed=3) != randomize_image(png, seed=4)


def test_smaller_than_two_blocks_is_returned_unchanged():
    before = Image.fromarray(np.arange(50 * 70 * 3, dtype=np.uint8).reshape(50, 70, 3))
    after = Image.open(io.BytesIO(randomize_image(png_bytes(before))))
    assert np.array_equal(np.asarray(after), np.asarray(before))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"GIF89a" + b"\x00" * 100, "not a PNG"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "corrupt PNG"),
        (b"", "not a PNG"),
    ],
)
def test_bad_input(data, message):
    with pytest.raises(InvalidImage, match=message):
        randomize_image(data)


def test_pixel_limit():
    png = png_bytes(Image.new("L", (2000, 1000)))
    with pytest.raises(InvalidImage, match="2000x1000 pixels is over the limit of 1000000"):
        randomize_image(png, max_pixels=1_000_000)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "I;16", "1"])
def test_no_output_is_over_its_bound(mode):
    """compute.png.output_bound is the room an image's job holds for its output in Redis,
    and the worker stores nothing over it: noise (which no filter compresses) comes close
    to it in every mode, metadata carried over included, and never passes it."""
    rng = np.random.default_rng(4)
    profile = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    extras = [{}, {"icc_profile": profile}] + ([{"transparency": 7}] if mode in ("L", "P") else [])
    for extra in extras:
        png = png_bytes(make_image(mode, rng), **extra)
        out, bound = len(randomize_image(png, seed=1)), output_bound(png)
        assert out <= bound, extra
        if not extra and mode != "1":  # Pillow writes 1-bit images at 1 bit; the bound allows 8
            assert out > 0.9 * bound, (out, bound)


def test_a_small_png_can_have_a_large_shuffle_and_its_bound_says_so():
    png = ramps_png(1000)
    out, bound = len(randomize_image(png, seed=1)), output_bound(png)
    assert out > 300 * len(png) and out <= bound < 1.25 * out


def test_the_door_reads_enough_of_an_image_for_its_bound():
    """The API reserves an image's room from its first RANDOMIZE.input.head_bytes: the
    bound of those bytes alone is the whole PNG's (no ICC profile here)."""
    png = ramps_png(100)
    start = png[: RANDOMIZE.input.head_bytes]  # type: ignore[union-attr]
    assert len(start) == HEADER_BYTES and output_bound(start) == output_bound(png)


def test_the_bound_needs_a_png_header():
    with pytest.raises(InvalidInput, match="not a PNG"):
        output_bound(b"GIF89a" + bytes(40))
    with pytest.raises(InvalidImage, match="the first chunk is not IHDR"):
        output_bound(PNG_SIGNATURE + bytes(30))
    header = bytearray(ramps_png(10)[:26])
    header[25] = 5  # no such colour type
    with pytest.raises(InvalidImage, match="colour type 5"):
        output_bound(bytes(header))


def test_a_profile_after_the_pixels_is_in_the_bound():
    """Pillow reads an iCCP chunk after the pixels too, and writes it back: the bound counts it."""
    rng = np.random.default_rng(5)
    png = png_bytes(make_image("LA", rng))
    profile = rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    png = png[:-12] + png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(profile)) + png[-12:]  # before IEND
    out = randomize_image(png, seed=1)
    assert Image.open(io.BytesIO(out)).info["icc_profile"] == profile
    assert len(out) <= output_bound(png)
