"""Test images: PNGs of every mode, and the tiles the shuffle moves."""

import io

import numpy as np
from PIL import Image


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
