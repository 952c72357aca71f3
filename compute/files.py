"""Whole files in a store (a local folder, or S3 through s3fs) named by fsspec URL: what
holds a large image's input and output in place of Redis, where every byte would also
be written to the append-only file by Redis's one thread (docs/benchmarks.md, "Hostile
clients", scenario 1). The API writes an input and reads an output; the image task
(compute.stored) the reverse. Nothing here imports numpy: the API uses it.
"""

import contextlib
import posixpath
from collections.abc import Iterator
from typing import IO

import fsspec
from fsspec import AbstractFileSystem

from compute.defaults import MiB

# What a reader of a file holds at once: the size of a piece of a value in Redis.
PIECE_BYTES = MiB


def write_file(url: str, data: bytes, storage_options: dict) -> None:
    """``data`` as the file at ``url`` (its folder made where it has to be)."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    with open_new(fs, path) as out:
        out.write(data)


def open_new(fs: AbstractFileSystem, path: str) -> IO[bytes]:
    """``path`` opened to be written, its folder made where it has to be."""
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    return fs.open(path, "wb")


def read_file(url: str, storage_options: dict) -> bytes | None:
    """The bytes of the file at ``url``, None when there is none."""
    pieces = list(file_pieces(url, storage_options))
    return b"".join(pieces) if pieces else None


def file_pieces(url: str, storage_options: dict) -> Iterator[bytes]:
    """The file at ``url`` PIECE_BYTES at a time (none when it is missing), so that a
    reader sending each on holds one piece, not the file. An empty file is one empty piece."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    try:
        source = fs.open(path, "rb")
    except FileNotFoundError:
        return
    with source:
        yield source.read(PIECE_BYTES)
        while piece := source.read(PIECE_BYTES):
            yield piece


def read_head(url: str, size: int, storage_options: dict) -> bytes:
    """The first ``size`` bytes of the file at ``url`` (b"" when it is missing)."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    try:
        with fs.open(path, "rb") as source:
            return source.read(size)
    except FileNotFoundError:
        return b""


def delete_file(url: str, storage_options: dict) -> None:
    """Delete the file at ``url``; one already gone is no error."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path)
