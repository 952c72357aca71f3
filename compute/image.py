"""The image job: shuffle an image's square blocks, keep everything else.

Runs as ONE Dask task (the image is small; splitting it would cost more in
scheduling than the shuffle itself takes).
"""

import io

import numpy as np
import pyspng
from PIL import Image, UnidentifiedImageError

from compute.defaults import DEFAULT_BLOCK_PX, DEFAULT_MAX_PIXELS
from compute.errors import InvalidImage
from compute.png import PNG_SIGNATURE, can_encode, check_pixels, encode_png

# For images compute.png does not cover: zlib level 1 is ~3x faster than Pillow's
# default 6 on cat.png for a file ~15% larger; latency matters more here than bytes.
PILLOW_COMPRESS_LEVEL = 1
# Dask priority of image tasks: a 15 ms image task should not queue behind the block
# tasks of a gigabyte even sum that another client submitted (compute.even_sum).
IMAGE_PRIORITY = 10
# mode -> trailing shape of the array pyspng returns for it
SPNG_MODES = {"L": (), "RGB": (3,), "RGBA": (4,)}


def randomize_image(
    png: bytes, block: int = DEFAULT_BLOCK_PX, seed: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> bytes:
    """Return a PNG whose full ``block`` x ``block`` tiles are a permutation of ``png``'s.

    The strips at the right and bottom that do not fill a tile stay where they are
    (the original blackened them). Size, mode, palette and every pixel are kept.
    """
    image, pixels = _decode(png, max_pixels)
    shuffled = shuffle_blocks(pixels, block, np.random.default_rng(seed))
    return _encode(shuffled, image)


def shuffle_blocks(pixels: np.ndarray, block: int, rng: np.random.Generator) -> np.ndarray:
    """Permute the full tiles of a (height, width[, channels]) array; return a new array."""
    rows, cols = pixels.shape[0] // block, pixels.shape[1] // block
    out = pixels.copy()
    if rows * cols < 2:
        return out
    # Splitting the axes is a view, (rows, block, cols, block, ...): the tiles move in one
    # gather, straight from the input into the output (no intermediate tile arrays).
    source = pixels[: rows * block, : cols * block].reshape(rows, block, cols, block, *pixels.shape[2:])
    target = out[: rows * block, : cols * block].reshape(rows, block, cols, block, *pixels.shape[2:])
    tile_row, tile_col = np.divmod(rng.permutation(rows * cols).reshape(rows, cols), cols)
    # Advanced indices around a slice put their axes first: (rows, cols, block, block, ...).
    target.swapaxes(1, 2)[...] = source[tile_row, :, tile_col]
    return out


def _decode(png: bytes, max_pixels: int) -> tuple[Image.Image, np.ndarray]:
    """The image's header (mode, palette, info) and its pixels as an array."""
    if not png.startswith(PNG_SIGNATURE):
        raise InvalidImage("not a PNG: the data does not start with the PNG signature")
    check_pixels(png, max_pixels)
    try:
        image = Image.open(io.BytesIO(png), formats=["PNG"])  # reads the header only
        return image, _pixels(png, image)
    except UnidentifiedImageError:  # its message names a BytesIO object: no help to the user
        raise InvalidImage("corrupt PNG: its header chunks cannot be read") from None
    except (OSError, SyntaxError, ValueError, RuntimeError, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"corrupt PNG: {exc}") from None


def _pixels(png: bytes, image: Image.Image) -> np.ndarray:
    """libspng decodes 8-bit L/RGB/RGBA about twice as fast as Pillow (10 vs 22 ms on
    cat.png); anything else, or anything it would decode differently (16-bit colour,
    which Pillow reduces to 8 bits; colour-key transparency), goes through Pillow."""
    if image.mode in SPNG_MODES and "transparency" not in image.info:
        pixels = pyspng.load(png)  # raises RuntimeError on corrupt data
        if pixels.dtype == np.uint8 and pixels.shape == (image.height, image.width, *SPNG_MODES[image.mode]):
            return pixels
    image.load()
    return np.asarray(image)


def _encode(pixels: np.ndarray, like: Image.Image) -> bytes:
    if can_encode(like.mode, like.info):
        palette = like.palette.tobytes() if like.mode == "P" and like.palette else None
        return encode_png(pixels, like.mode, palette, like.info.get("transparency"))
    out = Image.fromarray(pixels)  # same mode as `like`, except palette images come back L
    if like.mode == "P" and like.palette:
        out.putpalette(like.palette)  # turns L back into P with the same palette
    params = {"compress_level": PILLOW_COMPRESS_LEVEL}
    for name in ("transparency", "icc_profile"):
        if name in like.info:
            params[name] = like.info[name]
    buffer = io.BytesIO()
    out.save(buffer, format="PNG", **params)
    return buffer.getvalue()
