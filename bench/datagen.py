"""Deterministic even-sum benchmark files, with their exact answers beside them.

    .venv/bin/python bench/datagen.py --size 1GiB --shape lines [--dir bench/data]

Shapes:
- ``lines``: one integer per line, uniform in [0, 2**31) (the classic input);
- ``wide``: 100 integers per line between single spaces, half negative, with 1 to 18
  digits (uniform), so short and long numbers and signs all take their share.

Numbers are formatted by numpy a chunk at a time (digits as columns of a byte matrix,
then the leading blanks masked out), so a GiB takes seconds, not minutes of str(). The
answer ({"sum", "even_count", "count", "bytes"}) is written to ``<file>.json``; an
existing file whose answer matches is reused.
"""

import argparse
import json
import re
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).parent / "data"
NUMBERS_PER_CHUNK = 1_000_000
WIDE_PER_LINE = 100
SEEDS = {"lines": 20240531, "wide": 20240601}
POW10 = 10 ** np.arange(19, dtype=np.uint64)
UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """'100MB' -> 100_000_000, '1GiB' -> 2**30."""
    match = re.fullmatch(r"(\d+)\s*([a-zA-Z]*)", text.strip())
    if not match or match.group(2).upper() not in UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 100MB, 1GiB)")
    return int(match.group(1)) * UNITS[match.group(2).upper()]


def ensure_file(size: int, shape: str, folder: Path = DATA_DIR) -> tuple[Path, dict]:
    """The file of about ``size`` bytes (whole lines) and its answer; made if missing."""
    path = folder / f"even-sum-{shape}-{size}.txt"
    answer_path = path.with_suffix(".json")
    if path.exists() and answer_path.exists():
        answer = json.loads(answer_path.read_text())
        if answer["bytes"] == path.stat().st_size:
            return path, answer
    folder.mkdir(parents=True, exist_ok=True)
    answer = write_file(path, size, shape)
    answer_path.write_text(json.dumps(answer) + "\n")
    return path, answer


def write_file(path: Path, size: int, shape: str) -> dict:
    """Write whole lines up to ``size`` bytes; return the exact answer."""
    rng = np.random.default_rng(SEEDS[shape])
    totals = {"sum": 0, "even_count": 0, "count": 0, "bytes": 0}
    with open(path, "wb") as file:
        while totals["bytes"] < size:
            values = draw_lines(rng, shape)
            text, kept = format_lines(values, shape, size - totals["bytes"])
            if kept == 0:
                break
            file.write(text)
            add_answer(totals, values[:kept], len(text))
    return totals


def draw_lines(rng: np.random.Generator, shape: str) -> np.ndarray:
    if shape == "lines":
        return rng.integers(0, 2**31, NUMBERS_PER_CHUNK, dtype=np.int64)
    digits = rng.integers(1, 19, NUMBERS_PER_CHUNK)
    magnitudes = rng.integers(0, POW10[digits].astype(np.int64), dtype=np.int64)
    return np.where(rng.random(NUMBERS_PER_CHUNK) < 0.5, -magnitudes, magnitudes)


def format_lines(values: np.ndarray, shape: str, budget: int) -> tuple[bytes, int]:
    """The text of as many whole lines of ``values`` as fit in ``budget`` bytes, and how
    many numbers that is."""
    per_line = 1 if shape == "lines" else WIDE_PER_LINE
    separators = np.full(values.size, ord(" "), dtype=np.uint8)
    separators[per_line - 1 :: per_line] = ord("\n")
    rows, lengths = number_rows(values, separators)
    ends = np.cumsum(lengths)[per_line - 1 :: per_line]  # bytes up to each line's end
    lines = int(np.searchsorted(ends, budget, side="right"))
    kept = lines * per_line
    columns = np.arange(rows.shape[1])
    keep = columns >= rows.shape[1] - lengths[:kept, None]
    return rows[:kept][keep].tobytes(), kept


def number_rows(values: np.ndarray, separators: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A byte matrix, one right-aligned number and its separator per row, and each
    row's used length (sign, digits, separator)."""
    negative = values < 0
    magnitudes = np.abs(values).astype(np.uint64)
    digits = np.maximum(np.searchsorted(POW10, magnitudes, side="right"), 1)
    width = int(digits.max()) + 2
    rows = np.empty((values.size, width), dtype=np.uint8)
    rows[:, -1] = separators
    rest = magnitudes.copy()
    for column in range(width - 2, 0, -1):
        rest, digit = np.divmod(rest, np.uint64(10))
        rows[:, column] = digit + ord("0")
    rows[np.flatnonzero(negative), width - 2 - digits[negative]] = ord("-")
    return rows, digits + 1 + negative


def add_answer(totals: dict, values: np.ndarray, nbytes: int) -> None:
    """Add the chunk's answer exactly: int64 sums of the high and low 32 bits each fit."""
    even = values[values % 2 == 0]
    high, low = int((even >> 32).sum()), int((even & 0xFFFFFFFF).sum())
    totals["sum"] += (high << 32) + low
    totals["even_count"] += int(even.size)
    totals["count"] += int(values.size)
    totals["bytes"] += nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=parse_size("100MB"))
    parser.add_argument("--shape", choices=sorted(SEEDS), default="lines")
    parser.add_argument("--dir", type=Path, default=DATA_DIR)
    args = parser.parse_args()
    path, answer = ensure_file(args.size, args.shape, args.dir)
    print(path, json.dumps(answer))


if __name__ == "__main__":
    main()
