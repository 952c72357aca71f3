"""Test images: PNGs of every mode, and the tiles the shuffle moves."""

import io
import struct
import zlib

import numpy as np
from PIL import Image

from compute.png import PNG_SIGNATURE


def tiles(pixels: np.ndarray, block: int) -> list[bytes]:
    """The image's full ``block`` x ``block`` tiles, sorted: equal for an image and any shuffle of it."""
    rows, cols = pixels.shape[0] // block, pixels.shape[1] // block
    return sorted(
        pixels[r * block : (r + 1) * block, c * block : (c + 1) * block].tobytes()
        for r in range(rows)
        for c in range(cols)
    )


# A test image's size: 4 x 3 full 60-pixel tiles, plus 10-pixel strips on both edges.
IMAGE_SIZE = (250, 190)


def make_image(mode: str, rng: np.random.Generator) -> Image.Image:
    w, h = IMAGE_SIZE
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    if mode == "P":
        rgb = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=200)
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (h, w), dtype=np.uint8) * 255).convert("1")
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(rng.integers(0, 255, (h, w, channels), dtype=np.uint8).squeeze(), mode)


def png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


def ramps_png(side: int, seed: int = 1) -> bytes:
    """A small PNG whose shuffle is not: RGBA, each row a ramp of its own slope, stored with
    the Sub filter (a row compresses to a few bytes). Shuffled and stored with the Up
    filter (compute.png), each row is a run of unrelated ramps: about its raw size (a
    side of 8000 pixels: 330 KB in, 243 MB out)."""
    rng = np.random.default_rng(seed)
    rows = np.empty((side, 1 + 4 * side), np.uint8)
    rows[:, 0] = 1  # Sub: each byte is sent as its difference to the pixel on its left
    rows[:, 1:] = np.tile(rng.integers(0, 256, (side, 4), dtype=np.uint8), (1, side))  # the slopes
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    pixels = png_chunk(b"IDAT", zlib.compress(rows, 9))
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + pixels + png_chunk(b"IEND", b"")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
