"""The load test's jobs: inputs with known answers, the checks of their results, and the
journal in which the locust users write every token the API accepted.

Both sides use it: the locust users (bench/load/locustfile.py) check each result as
their job ends, and the runner (bench/load/run.py) reads the journal to check every
accepted token against Redis, and checks itself any result no user saw.
"""

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from PIL import Image

from bench.datagen import ensure_file

CAT = Path(__file__).parents[2] / "tests" / "fixtures" / "cat.png"
RANDOMIZE, EVEN_SUM = "randomize", "even-sum"
# What a user's check writes for a job whose result is right.
EXACT = "exact"


@dataclass(frozen=True)
class SumInput:
    """An even-sum upload and its exact answer ({"sum", "even_count", "count", "bytes"})."""

    path: str
    answer: dict


def make_inputs(sizes: list[int], folder: Path) -> list[SumInput]:
    """Files of about these sizes in ``folder`` (bench/datagen.py's, made once, then reused)."""
    return [SumInput(str(path), answer) for path, answer in (ensure_file(size, "lines", folder) for size in sizes)]


def write_inputs(inputs: list[SumInput], path: Path) -> None:
    path.write_text(json.dumps([asdict(i) for i in inputs]))


def read_inputs(path: str | Path) -> list[SumInput]:
    return [SumInput(**i) for i in json.loads(Path(path).read_text())]


def _shape(png: bytes) -> tuple[tuple[int, int], str]:
    with Image.open(io.BytesIO(png), formats=["PNG"]) as image:
        image.load()  # decodes every pixel: a truncated or corrupt PNG fails here
        return image.size, image.mode


CAT_SHAPE = _shape(CAT.read_bytes())


def image_problem(png: bytes) -> str | None:
    """None when ``png`` is a valid PNG of cat.png's size and mode, else what is wrong."""
    try:
        shape = _shape(png)
    except Exception as exc:  # Pillow raises many types for a bad file; each is a wrong result here
        return f"not a valid PNG: {type(exc).__name__}: {exc}"
    return None if shape == CAT_SHAPE else f"a {shape} image, expected {CAT_SHAPE}"


def sum_problem(body: bytes, answer: dict) -> str | None:
    """None when the even-sum result is exactly ``answer``, else what differs."""
    try:
        got = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:80]!r}"
    wrong = {k: (got.get(k), v) for k, v in answer.items() if got.get(k) != v}
    return None if not wrong else "wrong " + ", ".join(f"{k}: got {g}, expected {e}" for k, (g, e) in wrong.items())


def result_problem(kind: str, body: bytes, answer: dict | None) -> str | None:
    return image_problem(body) if kind == RANDOMIZE else sum_problem(body, answer or {})


class Journal:
    """Append-only JSON lines, one per event: ``{"token", "kind", "input"}`` when the API
    accepted a job (``input``: the index of its SumInput, None for an image), then
    ``{"token", "outcome"}`` when its user saw it end (EXACT, or what was wrong)."""

    def __init__(self, path: str | Path):
        self._file: TextIO = open(path, "a")  # noqa: SIM115  # open for the whole run, closed by close()

    def accepted(self, token: str, kind: str, input_index: int | None) -> None:
        self._write({"token": token, "kind": kind, "input": input_index})

    def ended(self, token: str, outcome: str) -> None:
        self._write({"token": token, "outcome": outcome})

    def _write(self, event: dict) -> None:
        # One write and a flush per line: what locust wrote survives if it is killed.
        self._file.write(json.dumps(event) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    @staticmethod
    def read(path: str | Path) -> dict[str, dict]:
        """Every accepted token -> {"kind", "input", "outcome"} (outcome None: no user saw it end)."""
        jobs: dict[str, dict] = {}
        for line in Path(path).read_text().splitlines():
            event = json.loads(line)
            jobs.setdefault(event.pop("token"), {"outcome": None}).update(event)
        return jobs
