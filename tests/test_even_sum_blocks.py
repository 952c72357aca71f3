"""Block by block: plan_blocks + sum_block over a real file, combine, and the Dask graph."""

import io
import itertools
import tempfile
import uuid
from pathlib import Path

import distributed
import pytest
from distributed import get_task_stream
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.defaults import MAX_TOKEN_BYTES
from compute.errors import InvalidNumber
from compute.even_sum import (
    FAN_IN,
    LOOK_AHEAD_BYTES,
    BlockSum,
    combine,
    even_sum,
    plan_blocks,
    submit_even_sum,
    sum_block,
)
from tests.number_files import another_store, expect, number_files, recorded_mappings, reference

block_sizes = st.one_of(st.integers(1, 3), st.integers(4, 70), st.integers(71, 5000))


def sum_in_blocks(path: Path, block_bytes: int) -> dict:
    size = path.stat().st_size
    return combine([sum_block(path.as_uri(), start, end) for start, end in plan_blocks(size, block_bytes)])


def check_in_blocks(data: bytes, block_bytes: int) -> None:
    wanted = expect(data)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "numbers.txt"
        path.write_bytes(data)
        if isinstance(wanted, InvalidNumber):
            with pytest.raises(InvalidNumber) as raised:
                sum_in_blocks(path, block_bytes)
            assert (raised.value.offset, raised.value.text) == (wanted.offset, wanted.text)
        else:
            assert sum_in_blocks(path, block_bytes) == wanted


@settings(max_examples=200, deadline=None)
@given(number_files(), block_sizes)
def test_blocks_add_up_to_the_whole(data, block_bytes):
    check_in_blocks(data, block_bytes)


@settings(max_examples=100, deadline=None)
@given(number_files(invalid=True), block_sizes)
def test_blocks_report_the_first_invalid_token_at_its_file_offset(data, block_bytes):
    check_in_blocks(data, block_bytes)


@given(st.integers(0, 10_000), st.integers(1, 3000))
def test_plan_blocks_covers_the_file_in_order(size, block_bytes):
    blocks = plan_blocks(size, block_bytes)
    assert [start for start, _ in blocks] == list(range(0, size, block_bytes))
    assert all(0 < end - start <= block_bytes for start, end in blocks)
    assert (blocks[-1][1] if blocks else 0) == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))


def test_combine_is_associative_and_empty_is_zero():
    parts = [{"sum": i, "even_count": 1, "count": 2, "bytes": 3} for i in (2, -4, 10**30)]
    assert combine([combine(parts[:2]), parts[2]]) == combine([parts[0], combine(parts[1:])]) == combine(parts)
    assert combine([]) == {"sum": 0, "even_count": 0, "count": 0, "bytes": 0}


def test_a_number_longer_than_the_look_ahead_is_finished(tmp_path):
    data = b"1 " + b"4" * 20_000 + b" 6"  # past LOOK_AHEAD_BYTES, read on and on
    path = tmp_path / "long.txt"
    path.write_bytes(data)
    assert sum_in_blocks(path, 3) == sum_in_blocks(path, 10**6) == reference(data)


def bytes_read_by_this_process() -> int:
    """What this process has passed to read() and pread() so far, files and all (Linux
    counts it in /proc/self/io); a local file is read by the calling thread and its
    reader thread (compute/local_read.py), and nothing else here reads meanwhile."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise KeyError("rchar")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc")
def test_a_block_of_another_store_reads_only_its_range_and_a_little_more(tmp_path):
    path = tmp_path / "numbers.txt"
    path.write_bytes(b"22 " * 1_000_000)  # 3 MB: reading it whole is 10 to 1000 times a range here
    url, options = another_store(path)
    sum_block(url, 0, 3, options)  # first call: numba's compiled kernel is loaded from its cache files
    for start, end in [(1_500_000, 1_503_000), (300_000, 600_000)]:
        before = bytes_read_by_this_process()
        partial = sum_block(url, start, end, options)
        read = bytes_read_by_this_process() - before
        numbers = (end - start) // 3
        assert partial == {"sum": 22 * numbers, "even_count": numbers, "count": numbers, "bytes": end - start}
        # The range, the byte before it, the look-ahead, and what one buffered read may add.
        slack = 1 + LOOK_AHEAD_BYTES + io.DEFAULT_BUFFER_SIZE
        assert end - start <= read <= end - start + slack, f"read {read} bytes for a range of {end - start}"
    assert sum_block(url, 3001, 3003, options)["count"] == 0  # inside a number, which 3000 owns


def mappings_of(path: Path) -> int:
    """How many of this process's mappings are of the file ``path`` (Linux /proc)."""
    return Path("/proc/self/maps").read_text().count(str(path))


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_a_local_block_is_mapped_from_its_range_to_the_limit_and_let_go(tmp_path, monkeypatch):
    """A local file's block is counted in place: the mapping spans the byte before the
    range to the limit past it (or the file's end), and is gone after the task, whether
    the block is exact or has an invalid number."""
    path = tmp_path / "numbers.txt"
    path.write_bytes(b"22 " * 1_000_000 + b"7x")
    size = path.stat().st_size
    spans = recorded_mappings(monkeypatch)
    for start, end, limit in [(1_500_000, 1_503_000, MAX_TOKEN_BYTES), (300_000, 600_000, 100), (0, 3, 10)]:
        spans.clear()
        numbers = (end - start) // 3
        partial = sum_block(path.as_uri(), start, end, max_token_bytes=limit)
        assert partial == {"sum": 22 * numbers, "even_count": numbers, "count": numbers, "bytes": end - start}
        assert spans == [(max(start - 1, 0), min(end + limit, size))]
        assert mappings_of(path) == 0
    with pytest.raises(InvalidNumber, match="7x") as raised:
        sum_block(path.as_uri(), size - 100, size)
    assert spans[-1] == (size - 101, size)
    assert raised.value.offset == size - 2
    assert mappings_of(path) == 0  # though the error and its traceback are still held, as a worker holds them


def reduce_keys(prefix: str, n_blocks: int) -> list[str]:
    """The combine tasks of a tree of fan-in FAN_IN over ``n_blocks`` partials, level by
    level: each level combines groups of FAN_IN (the last group may be smaller) until a
    level has one node, the result. An empty file still has its one combine."""
    keys: list[str] = []
    level, width = 0, n_blocks
    while True:
        groups = max(1, -(-width // FAN_IN))
        keys += [f"{prefix}-reduce-{level}-{j}" for j in range(groups)]
        if groups == 1:
            return keys
        level, width = level + 1, groups


@pytest.mark.parametrize("n_blocks", [1, FAN_IN, FAN_IN + 1, FAN_IN**2 + 5])
def test_submit_even_sum_reduces_in_a_tree_of_fan_in_on_a_cluster(dask_client, tmp_path, n_blocks):
    block_bytes = 100  # ten numbers of ten bytes each
    data = b"".join(b"%09d\n" % i for i in range(10 * n_blocks))
    path = tmp_path / "numbers.txt"
    path.write_bytes(data)
    prefix = f"tree-{uuid.uuid4().hex[:8]}"
    with get_task_stream(dask_client) as stream:
        blocks, total = submit_even_sum(dask_client, path.as_uri(), block_bytes=block_bytes, key_prefix=prefix)
        assert total.result() == reference(data)
    assert [future.key for future in blocks] == [f"{prefix}-{i}" for i in range(n_blocks)]
    expected = reduce_keys(prefix, n_blocks)
    assert total.key == expected[-1]
    ran = {str(task["key"]) for task in stream.data}
    assert {key for key in ran if key.startswith(f"{prefix}-reduce-")} == set(expected)
    assert {f"{prefix}-{i}" for i in range(n_blocks)} <= ran


def test_a_one_block_and_an_empty_file_on_a_cluster(dask_client, tmp_path):
    small, empty = tmp_path / "small.txt", tmp_path / "empty.txt"
    small.write_bytes(b"2 4 5")
    empty.write_bytes(b"")
    assert even_sum(str(small), client=dask_client) == reference(b"2 4 5")
    assert even_sum(str(empty), client=dask_client) == reference(b"")


def test_an_invalid_file_fails_the_job_with_the_offset(dask_client, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"1 2 3 " * 1000 + b"4.5 6")
    _, total = submit_even_sum(dask_client, str(path), block_bytes=700, key_prefix="bad-job")
    with pytest.raises(InvalidNumber, match=r"byte 6000: '4\.5'"):
        total.result()


def test_a_missing_file_is_not_found_before_any_task(dask_client, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not found: .*missing\.txt"):
        submit_even_sum(dask_client, str(tmp_path / "missing.txt"))


def test_the_job_raises_the_first_bad_number_in_the_file_when_a_later_block_fails_first(dask_client, tmp_path):
    """Blocks finish in any order: here the job is told of the last block first (as when
    the earlier ones are slow), and blocks 0 and 2 have bad numbers. The job raises block
    0's, the first in the file, as the blocks in turn do."""
    path = tmp_path / "two-bad.txt"
    path.write_bytes(b"1 x1 3 " + b"2 " * 100 + b"x2 4\n")  # x2 at byte 207: blocks of 100
    first = r"^invalid number at byte 2: 'x1'$"
    with pytest.raises(InvalidNumber, match=first):
        sum_in_blocks(path, 100)

    def last_first(futures: set) -> set:
        last = max(futures, key=lambda future: int(future.key.rsplit("-", 1)[1]))
        distributed.wait([last])
        return {last}

    job = BlockSum(dask_client, str(path), block_bytes=100, key_prefix=f"last-first-{uuid.uuid4().hex[:8]}")
    with pytest.raises(InvalidNumber, match=first):
        job.run(wait=last_first)
