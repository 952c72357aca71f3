"""A fast PNG writer for the image job's output.

Pillow's encoder spends most of its time choosing a filter per row and in zlib; on
cat.png it takes ~48 ms at level 1. Here every row uses the "Up" filter (one numpy
subtraction) and ISA-L's deflate compresses: ~5 ms for a file of the same size.
Modes it does not cover (1-bit, ICC profiles, colour-key transparency) go to Pillow.
"""

import struct

import numpy as np
from isal import isal_zlib

from compute.errors import InvalidInput

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# mode -> (bit depth, PNG colour type)
_FORMATS = {"L": (8, 0), "I;16": (16, 0), "RGB": (8, 2), "P": (8, 3), "LA": (8, 4), "RGBA": (8, 6)}
_UP_FILTER = 2
# ISA-L level 1: as small as zlib level 2 on photos, at a quarter of zlib level 1's time.
DEFLATE_LEVEL = 1


def can_encode(mode: str, info: dict) -> bool:
    if mode not in _FORMATS or "icc_profile" in info:
        return False
    return mode == "P" or "transparency" not in info


def encode_png(pixels: np.ndarray, mode: str, palette: bytes | None = None, transparency=None) -> bytes:
    """PNG bytes of a (height, width[, channels]) array in ``mode`` (see ``can_encode``)."""
    depth, colour = _FORMATS[mode]
    height, width = pixels.shape[:2]
    if depth == 16:
        pixels = pixels.astype(">u2")
    rows = pixels.reshape(height, -1).view(np.uint8)
    filtered = np.empty((height, rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = _UP_FILTER
    filtered[0, 1:] = rows[0]  # the row above the first one counts as zeros
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))]
    if mode == "P":
        if palette is None:
            raise ValueError("a palette image needs its palette")
        chunks.append(_chunk(b"PLTE", palette))
        if transparency is not None:
            chunks.append(_chunk(b"tRNS", _palette_alpha(transparency)))
    chunks.append(_chunk(b"IDAT", isal_zlib.compress(filtered, DEFLATE_LEVEL)))  # the array's buffer, not a copy
    chunks.append(_chunk(b"IEND", b""))
    return PNG_SIGNATURE + b"".join(chunks)


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = isal_zlib.crc32(data, isal_zlib.crc32(kind))  # ISA-L's: ~5x zlib's, and no kind + data copy
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _palette_alpha(transparency) -> bytes:
    """Pillow gives a palette image's transparency as alpha bytes, or as one index."""
    if isinstance(transparency, int):
        return b"\xff" * transparency + b"\x00"
    return bytes(transparency)


def check_png(body: bytes) -> None:
    """InvalidInput unless ``body`` starts as a PNG does: refused at the API's door."""
    if not body.startswith(PNG_SIGNATURE):
        raise InvalidInput("the body is not a PNG image (send Content-Type: image/png and the file's bytes)")
