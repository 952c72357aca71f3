"""Block by block: plan_blocks + sum_block over a real file, combine, and the Dask graph."""

import itertools
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.errors import InvalidNumber
from compute.even_sum import (
    FAN_IN,
    combine,
    even_sum,
    plan_blocks,
    submit_even_sum,
    sum_block,
)
from tests.s3fixtures import expect, number_files, reference

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


def test_a_block_reads_only_its_range_and_a_little_more(tmp_path):
    path = tmp_path / "numbers.txt"
    path.write_bytes(b"22 " * 100_000)
    partial = sum_block(path.as_uri(), 3000, 6000)
    assert partial == {"sum": 22 * 1000, "even_count": 1000, "count": 1000, "bytes": 3000}
    assert sum_block(str(path), 3001, 3003)["count"] == 0  # inside a number, which 3000 owns


def test_submit_even_sum_on_a_cluster(dask_client, tmp_path):
    data = b"\n".join(b"%d" % i for i in range(-5000, 5000)) + b"\n"
    path = tmp_path / "numbers.txt"
    path.write_bytes(data)
    blocks, total = submit_even_sum(dask_client, path.as_uri(), block_bytes=1000, key_prefix="job-abc")
    assert [future.key for future in blocks] == [f"job-abc-{i}" for i in range(len(blocks))]
    assert len(blocks) == -(-len(data) // 1000) == 53
    assert FAN_IN == 8
    assert total.key == "job-abc-reduce-1-0"  # 53 blocks -> 7 combines -> 1
    assert total.result() == reference(data)


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
