"""Blocks read from S3 as concurrent sub-range GETs (compute/ranged.py): exact across part
boundaries, only their own range read, errors that name the object. A real moto server on
loopback, behind the shaping proxy of bench/shaped_s3.py where what goes over the wire
is counted."""

import contextlib
import uuid

import fsspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.shaped_s3 import shaped_endpoint
from compute import ranged
from compute.errors import InvalidNumber
from compute.even_sum import LOOK_AHEAD_BYTES, combine, plan_blocks, sum_block
from tests.moto_s3 import iam_enforced, moto_server, new_bucket, s3_client
from tests.number_files import expect, number_files, reference

CREDENTIALS = {"key": "testing", "secret": "testing"}


@pytest.fixture(scope="module")
def endpoint():
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def bucket(endpoint):
    return new_bucket(endpoint)


def options(endpoint: str, **credentials) -> dict:
    return {"client_kwargs": {"endpoint_url": endpoint}, **(credentials or CREDENTIALS)}


def put(endpoint: str, bucket: str, data: bytes) -> str:
    """``data`` as a new object; its s3:// URL."""
    key = f"{uuid.uuid4().hex}.txt"
    s3_client(endpoint).put_object(Bucket=bucket, Key=key, Body=data)
    return f"s3://{bucket}/{key}"


def sum_in_parts(url: str, size: int, block_bytes: int, part_bytes: int, concurrency: int, endpoint: str) -> dict:
    partials = [
        sum_block(url, start, end, options(endpoint), part_bytes=part_bytes, concurrency=concurrency)
        for start, end in plan_blocks(size, block_bytes)
    ]
    return combine(partials)


@st.composite
def cuts(draw, size: int) -> tuple[int, int, int]:
    """(block bytes, part bytes, concurrency) for a file of ``size`` bytes: a few blocks of
    a few parts each (every part is a request), at odd offsets."""
    block_bytes = max(size // draw(st.integers(1, 5)) + draw(st.integers(-3, 3)), 1)
    part_bytes = max(block_bytes // draw(st.integers(1, 8)) + draw(st.integers(-2, 2)), 1)
    return block_bytes, part_bytes, draw(st.integers(1, 4))


def check_in_parts(data: bytes, cut: tuple[int, int, int], endpoint: str, bucket: str) -> None:
    url, wanted = put(endpoint, bucket, data), expect(data)
    if isinstance(wanted, InvalidNumber):
        with pytest.raises(InvalidNumber) as raised:
            sum_in_parts(url, len(data), *cut, endpoint)
        assert (raised.value.offset, raised.value.text) == (wanted.offset, wanted.text)
    else:
        assert sum_in_parts(url, len(data), *cut, endpoint) == wanted


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_parts_add_up_to_the_whole(endpoint, bucket, data):
    file = data.draw(number_files(max_tokens=30))
    check_in_parts(file, data.draw(cuts(len(file))), endpoint, bucket)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_parts_report_the_first_invalid_token_at_its_file_offset(endpoint, bucket, data):
    file = data.draw(number_files(invalid=True, max_tokens=30))
    check_in_parts(file, data.draw(cuts(len(file))), endpoint, bucket)


@pytest.mark.parametrize(
    ("data", "block_bytes", "part_bytes"),
    [
        (b"1 " + b"4" * 20_000 + b" 6 8", 1000, 300),  # runs on past the look-ahead: read on to its end
        (b"1 " + b"4" * 20_000 + b" 6 8", 30_000, 4096),
        (b"-" + b"2" * 3000 + b"\n7\n", 1000, 97),  # over several blocks and parts
        (b"12 34 56 78 90 " * 20, 64, 3),  # a boundary at every place of a number
        (b"   \n\t 22" + b" " * 700 + b"-4", 64, 16),  # blocks and parts of whitespace only
    ],
)
def test_numbers_across_part_and_block_boundaries(endpoint, bucket, data, block_bytes, part_bytes):
    url = put(endpoint, bucket, data)
    assert sum_in_parts(url, len(data), block_bytes, part_bytes, 3, endpoint) == reference(data)


def test_a_block_reads_its_range_and_not_the_file(endpoint, bucket):
    """Counted at the shaping proxy: a 4 KiB block of a 1 MiB object in 1 KiB parts takes
    4 GETs (the byte before rides with the first, the look-ahead with the last) and
    their bytes, HTTP headers included, and no more."""
    url = put(endpoint, bucket, b"22 " * (2**20 // 3))
    start, end = 100_002, 100_002 + 4096
    with shaped_endpoint(endpoint) as proxy:
        fsspec.filesystem("s3", **options(proxy.url)).info(url)  # connect first: not counted
        responses, sent = proxy.responses, proxy.bytes_sent
        partial = sum_block(url, start, end, options(proxy.url), part_bytes=1024, concurrency=4)
        responses, sent = proxy.responses - responses, proxy.bytes_sent - sent
    assert partial == {"sum": 22 * 1366, "even_count": 1366, "count": 1366, "bytes": 4096}
    assert responses == 4
    assert 1 + 4096 + LOOK_AHEAD_BYTES < sent < 1 + 4096 + LOOK_AHEAD_BYTES + responses * 1024
    print(f"a 4 KiB block: {responses} GETs, {sent} bytes sent of a 1 MiB object")


def test_a_job_on_a_cluster_through_the_shaped_endpoint(dask_client, endpoint, bucket):
    data = b"\n".join(b"%d" % i for i in range(-20_000, 20_000)) + b"\n"
    url = put(endpoint, bucket, data)
    with shaped_endpoint(endpoint) as proxy:
        futures = [
            dask_client.submit(sum_block, url, start, end, options(proxy.url), part_bytes=8192, concurrency=4)
            for start, end in plan_blocks(len(data), 40_000)
        ]
        assert dask_client.submit(combine, futures).result() == reference(data)


def test_reading_stops_at_the_first_bad_number(endpoint, bucket):
    """An invalid number in the first part ends the block's read: the requests in flight
    are cancelled, and the next read works."""
    data = b"1 2 x3 " + b"4 " * 50_000
    url = put(endpoint, bucket, data)
    with pytest.raises(InvalidNumber, match=r"byte 4: 'x3'"):
        sum_block(url, 0, len(data), options(endpoint), part_bytes=1024, concurrency=8)
    assert sum_block(url, 6, len(data), options(endpoint), part_bytes=1024, concurrency=8)["count"] == 50_000


def test_fill_puts_the_ranges_one_after_another(endpoint, bucket):
    data = bytes(range(256)) * 40
    url = put(endpoint, bucket, data)
    fs, path = fsspec.core.url_to_fs(url, **options(endpoint))
    ranges = [(0, 1), (1, 700), (700, 10_000), (9_000, 10_000), (5, 6), (10_000, 10_300)]
    buffer = bytearray(12_000)
    with contextlib.closing(ranged.fill(fs, path, ranges, memoryview(buffer), concurrency=2)) as parts:
        assert list(parts) == [1, 700, 10_000, 11_000, 11_001, 11_241]  # the last one short: the end
    assert buffer[:11_241] == b"".join(data[start:end] for start, end in ranges)
    with pytest.raises(OSError, match="240 bytes at 10000 where 300 were asked: did it change"):
        list(ranged.fill(fs, path, [(10_000, 10_300), (0, 1)], memoryview(buffer)))
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        next(ranged.fill(fs, path, ranges, memoryview(buffer), concurrency=0))


def test_fill_parts_tells_how_far_each_part_is_as_its_bytes_arrive(endpoint, bucket):
    """What lets a block task count a part while it downloads: progress mid-part, not
    only as parts end (the proxy sends 256 KiB at a time at 4 MB/s a connection)."""
    data = bytes(range(256)) * 4096  # 1 MiB
    url = put(endpoint, bucket, data)
    ranges = [(0, 600_000), (600_000, len(data))]
    buffer = bytearray(len(data))
    with shaped_endpoint(endpoint, first_byte_s=0, bytes_per_s=4e6) as proxy:
        fs, path = fsspec.core.url_to_fs(url, **options(proxy.url))
        with contextlib.closing(ranged.fill_parts(fs, path, ranges, memoryview(buffer), step=100_000)) as filling:
            seen = [(list(state.got), list(state.ended)) for state in filling]
    assert any(0 < got[0] < 600_000 and not ended[0] for got, ended in seen), seen
    assert seen[-1] == ([600_000, len(data) - 600_000], [True, True])
    assert buffer == data


def test_a_body_cut_short_is_read_again(endpoint, bucket):
    """The proxy cuts the connection of the next 3 responses after their first chunk:
    s3fs's retries and ours (the body) see the block through."""
    data = b"22 " * 100_000
    url = put(endpoint, bucket, data)
    with shaped_endpoint(endpoint, first_byte_s=0) as proxy:
        proxy.cut_responses = 3
        partial = sum_block(url, 0, len(data), options(proxy.url), part_bytes=64 * 1024, concurrency=2)
        assert proxy.cut_responses == 0
    assert partial == reference(data)


def test_a_missing_object_is_named(endpoint, bucket):
    url = f"s3://{bucket}/gone.txt"
    with pytest.raises(FileNotFoundError, match=f"^not found: {url}$"):
        sum_block(url, 0, 100, options(endpoint))


def test_refused_credentials_are_named(dask_client, endpoint):
    with iam_enforced(endpoint) as good:
        name = new_bucket(endpoint, **good)
        s3_client(endpoint, **good).put_object(Bucket=name, Key="numbers.txt", Body=b"2 4 6")
        url = f"s3://{name}/numbers.txt"
        assert sum_block(url, 0, 5, options(endpoint, **good), part_bytes=2) == reference(b"2 4 6")
        wrong = options(endpoint, key=good["key"], secret="wrong")
        with pytest.raises(PermissionError, match=f"access denied to {url} .*check the storage credentials"):
            dask_client.submit(sum_block, url, 0, 5, wrong, part_bytes=2).result()
