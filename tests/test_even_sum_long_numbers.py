"""Numbers longer than the limit (compute.defaults.MAX_TOKEN_BYTES) end the job with the
byte offset where they start, and no block reads or holds more than its range and the
limit; numbers up to the limit stay exact. Real files in tmp_path, a moto server for S3,
worker processes with a nanny for the Dask path."""

import contextlib
import io
import os
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from distributed import Client, LocalCluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.shaped_s3 import shaped_endpoint
from compute import local_read, s3_parts
from compute.defaults import MAX_TOKEN_BYTES, MiB
from compute.errors import InvalidNumber, NumberTooLong
from compute.even_sum import combine, even_sum, plan_blocks, submit_even_sum, sum_block, sum_bytes
from tests.moto_s3 import moto_server, new_bucket, s3_client
from tests.number_files import another_store, expect, number_files, recorded_mappings, reference

# One run of 3 MiB of digits, starting at byte 5, between short numbers.
LONG_RUN = b"1 22 " + b"4" * (3 * MiB) + b" 6\n"
TOO_LONG = r"^the number at byte 5 is longer than 1048576 bytes: '4{40}\.\.\.'$"
# What a block may allocate besides its buffer of at most block + limit: the buffer it
# had (block + look-ahead) while the bytes move over, and the parse's small arrays.
SLACK = 256 * 1024
CREDENTIALS = {"key": "testing", "secret": "testing"}


@pytest.fixture(scope="module", autouse=True)
def kernel_loaded(tmp_path_factory):
    """numba loads each function of the kernel on its first call in a process: not the
    memory or the reads of the calls measured here."""
    data = b"1 " + b"2" * 5000 + b" 3 x"
    path = tmp_path_factory.mktemp("warm") / "numbers.txt"
    path.write_bytes(data)
    with pytest.raises(NumberTooLong):
        sum_block(str(path), 0, 10, max_token_bytes=100)
    with pytest.raises(InvalidNumber):
        sum_block(str(path), 10, len(data))


def in_a_new_thread(call):
    """(what ``call()`` returned or raised, its peak of traced memory, the size of the
    thread's buffer after it, the bytes it read) in a thread of its own, as a worker
    thread runs a task."""
    out: dict = {}

    def run():
        read_before = bytes_read_by_this_process()
        tracemalloc.start()
        try:
            out["result"] = call()
        except Exception as exc:
            out["result"] = exc
        finally:
            out["peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            out["buffer"] = local_read.buffer_bytes()
            out["read"] = bytes_read_by_this_process() - read_before

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out


def least_peak(call, out: dict, runs: int = 3) -> int:
    """The least traced peak of ``call`` over ``runs`` runs, ``out`` the first. tracemalloc
    traces the whole process: what another thread allocates meanwhile (a loop left by an
    earlier test of the session) adds to a run's peak, never takes from it, so the least
    of a few runs is the call's own peak and the least of that noise."""
    return min([out["peak"]] + [in_a_new_thread(call)["peak"] for _ in range(runs - 1)])


def bytes_read_by_this_process() -> int:
    """What this process has passed to read() so far (Linux /proc/self/io), 0 elsewhere: a
    local block is read by its thread and that thread's reader (compute/local_read.py)."""
    io_file = Path("/proc/self/io")
    if not io_file.exists():
        return 0
    return next(int(line.split()[1]) for line in io_file.read_text().splitlines() if line.startswith("rchar:"))


def check_the_long_run(out: dict, start: int, end: int) -> None:
    """A block of LONG_RUN: the one where the run starts raises, the others count the
    short numbers that start in them (none, inside the run); the thread's buffer is a
    block's or none after it."""
    if start <= 5 < end:
        assert isinstance(out["result"], NumberTooLong), out["result"]
        assert (out["result"].offset, out["result"].limit) == (5, MAX_TOKEN_BYTES)
        assert isinstance(out["result"], InvalidNumber)  # what the dispatcher reports as the user's error
    else:
        numbers = [value for at, value in ((0, 1), (2, 22), (len(LONG_RUN) - 2, 6)) if start <= at < end]
        evens = [value for value in numbers if value % 2 == 0]
        assert out["result"] == {
            "sum": sum(evens),
            "even_count": len(evens),
            "count": len(numbers),
            "bytes": end - start,
        }
    assert out["buffer"] <= end - start + 1 + local_read.LOOK_AHEAD_BYTES


@pytest.mark.parametrize("store", ["local", "another"])
@pytest.mark.parametrize("block_bytes", [64 * 1024, 1 * MiB])
def test_a_run_of_3_mib_of_digits_fails_at_its_offset_and_reads_no_more_than_block_and_limit(
    tmp_path, monkeypatch, block_bytes, store
):
    """A local file's block is mapped (its span is measured), another store's is read into
    the thread's buffer (its reads and memory are measured)."""
    path = tmp_path / "long.txt"
    path.write_bytes(LONG_RUN)
    url, options = (path.as_uri(), None) if store == "local" else another_store(path)
    spans = recorded_mappings(monkeypatch)
    blocks = plan_blocks(len(LONG_RUN), block_bytes)
    for start, end in blocks[:3] + blocks[-2:]:
        spans.clear()
        out = in_a_new_thread(lambda start=start, end=end: sum_block(url, start, end, options))
        check_the_long_run(out, start, end)
        peak = least_peak(lambda start=start, end=end: sum_block(url, start, end, options), out)
        assert peak < 2 * block_bytes + MAX_TOKEN_BYTES + SLACK, f"block [{start}, {end}): {peak} bytes"
        # the range, the byte before it, the limit (and what one buffered read may add)
        if store == "local":
            assert out["read"] < io.DEFAULT_BUFFER_SIZE
            assert (
                max(mapped_end - mapped_start for mapped_start, mapped_end in spans)
                <= end - start + 1 + MAX_TOKEN_BYTES
            )
        else:
            assert end - start <= out["read"] <= end - start + 1 + MAX_TOKEN_BYTES + io.DEFAULT_BUFFER_SIZE
            assert not spans
    with pytest.raises(NumberTooLong, match=TOO_LONG):
        combine([sum_block(url, start, end, options) for start, end in blocks])


@pytest.mark.parametrize("block_bytes", [4096, 300_000, 2 * MiB])
def test_a_number_of_exactly_the_limit_is_exact_and_one_byte_more_is_not(tmp_path, block_bytes):
    digits = b"8" * MAX_TOKEN_BYTES
    data = b"3 -2\n" + digits + b"\n7"
    path = tmp_path / "at-the-limit.txt"
    path.write_bytes(data)
    partials = [sum_block(str(path), start, end) for start, end in plan_blocks(len(data), block_bytes)]
    assert combine(partials) == {
        "sum": -2 + 8 * (10**MAX_TOKEN_BYTES - 1) // 9,  # int(digits) is over Python's digit limit
        "even_count": 2,
        "count": 4,
        "bytes": len(data),
    }
    path.write_bytes(b"3 -2\n-" + digits + b"\n7")
    with pytest.raises(NumberTooLong, match=r"^the number at byte 5 is longer than 1048576 bytes: '-8{39}\.\.\.'$"):
        combine([sum_block(str(path), start, end) for start, end in plan_blocks(len(data) + 1, block_bytes)])


@pytest.mark.parametrize(
    ("token", "wanted"),
    [
        (b"0" * 999 + b"2", 2),  # leading zeros count: a run of 1000 bytes is within a limit of 1000
        (b"+" + b"0" * 998 + b"4", 4),
        (b"0" * 1000 + b"2", None),  # and 1001 bytes are not, whatever the number's value
        (b"-" + b"1" * 1000, None),
    ],
)
def test_the_limit_counts_every_byte_of_a_number(tmp_path, token, wanted):
    data = b"5 " + token + b" 8\n"
    path = tmp_path / "zeros.txt"
    path.write_bytes(data)
    for block_bytes in (64, 999, 10_000):
        blocks = plan_blocks(len(data), block_bytes)
        if wanted is None:
            with pytest.raises(NumberTooLong, match=r"^the number at byte 2 is longer than 1000 bytes"):
                combine([sum_block(str(path), start, end, max_token_bytes=1000) for start, end in blocks])
        else:
            partials = [sum_block(str(path), start, end, max_token_bytes=1000) for start, end in blocks]
            assert combine(partials)["sum"] == wanted + 8
    if wanted is None:
        with pytest.raises(NumberTooLong, match=r"^the number at byte 2 is longer than 1000 bytes"):
            sum_bytes(data, max_token_bytes=1000)
    else:
        assert sum_bytes(data, max_token_bytes=1000)["sum"] == wanted + 8


def test_the_limit_is_positive(tmp_path):
    path = tmp_path / "numbers.txt"
    path.write_bytes(b"2 4")
    for call in (lambda: sum_block(str(path), 1, 2, max_token_bytes=0), lambda: sum_bytes(b"2 4", max_token_bytes=0)):
        with pytest.raises(ValueError, match="max_token_bytes must be positive, not 0"):
            call()


def test_the_buffer_is_back_to_its_size_after_a_long_number(tmp_path):
    """A 500 kB number runs over the end of a 4 KiB block of a store read into the thread's
    buffer: the buffer grows to finish it, and is let go after the task; the next block's
    buffer is a block's again."""
    data = b"1 " + b"2" * 500_000 + b" 3\n" + b"44 " * 40_000
    path = tmp_path / "long-but-allowed.txt"
    path.write_bytes(data)
    normal = 4096 + local_read.LOOK_AHEAD_BYTES

    url, options = another_store(path)  # read into the buffer, not mapped

    def three_blocks():
        first = sum_block(url, 600_000, 604_096, options)  # a block of short numbers: the usual buffer
        assert local_read.buffer_bytes() == normal + 1
        long = sum_block(url, 0, 4096, options)  # the number that starts in it runs on to byte 500_002
        after = local_read.buffer_bytes()
        sum_block(url, 600_000, 604_096, options)
        return first, long, after, local_read.buffer_bytes()

    out = in_a_new_thread(three_blocks)
    first, long, after, again = out["result"]
    assert long == {"sum": 2 * (10**500_000 - 1) // 9, "even_count": 1, "count": 2, "bytes": 4096}
    assert first["count"] == 1365
    assert out["peak"] > 500_000  # it did grow, for the long number
    assert after <= normal + 1 and again == normal + 1


@settings(max_examples=150, deadline=None)
@given(number_files(invalid=True), st.integers(1, 70), st.sampled_from([1, 3, 17, 64, 5000]))
def test_the_first_bad_number_is_raised_too_long_or_invalid(tmp_path_factory, data, limit, block_bytes):
    """Against the reference: the first token in the file that is longer than the limit
    (whatever its bytes) or not an integer, at any block size."""
    path = tmp_path_factory.mktemp("first") / "numbers.txt"
    path.write_bytes(data)
    wanted = expect(data, limit)
    blocks = plan_blocks(len(data), block_bytes)
    for whole in (False, True):
        if isinstance(wanted, InvalidNumber):
            with pytest.raises(InvalidNumber) as raised:
                if whole:
                    sum_bytes(data, max_token_bytes=limit)
                else:
                    combine([sum_block(str(path), start, end, max_token_bytes=limit) for start, end in blocks])
            assert (type(raised.value), raised.value.offset) == (type(wanted), wanted.offset)
            # A block reads at most ``limit`` past its end: the text of a number cut there is shorter.
            assert wanted.text.startswith(raised.value.text.removesuffix("..."))
        elif whole:
            assert sum_bytes(data, max_token_bytes=limit) == wanted
        else:
            assert combine([sum_block(str(path), start, end, max_token_bytes=limit) for start, end in blocks]) == wanted


# --- S3 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def endpoint():
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def long_run_url(endpoint):
    bucket = new_bucket(endpoint)
    s3_client(endpoint).put_object(Bucket=bucket, Key="long.txt", Body=LONG_RUN)
    return f"s3://{bucket}/long.txt"


def options(endpoint: str) -> dict:
    return {"client_kwargs": {"endpoint_url": endpoint}, **CREDENTIALS}


def test_a_run_of_3_mib_of_digits_from_s3_fails_at_its_offset_within_block_and_limit(
    endpoint, long_run_url, monkeypatch
):
    """Here the moto server's memory is this process's too: what is measured is the
    largest buffer a block asked for."""
    sizes = []

    def buffer(size: int, keep: int = 0):
        sizes.append(size)
        return local_read_buffer(size, keep)

    local_read_buffer = local_read.buffer
    monkeypatch.setattr(local_read, "buffer", buffer)
    monkeypatch.setattr(s3_parts, "buffer", buffer)
    block_bytes = 256 * 1024
    blocks = plan_blocks(len(LONG_RUN), block_bytes)
    for start, end in [*blocks[:2], blocks[5], blocks[-1]]:
        out = in_a_new_thread(
            lambda start=start, end=end: sum_block(
                long_run_url, start, end, options(endpoint), part_bytes=64 * 1024, concurrency=4
            )
        )
        check_the_long_run(out, start, end)
        assert max(sizes) <= end - start + 1 + MAX_TOKEN_BYTES
        sizes.clear()
    with pytest.raises(NumberTooLong, match=TOO_LONG):
        combine([sum_block(long_run_url, start, end, options(endpoint), part_bytes=64 * 1024) for start, end in blocks])


def test_a_block_gets_no_more_than_block_and_limit_from_s3(endpoint, long_run_url):
    """Counted at the shaping proxy, HTTP headers and all: the block where the run starts
    gets its range and the limit past it, not the 3 MiB to the run's end; a block inside
    the run owns no number and gets its range and the look-ahead."""
    block_bytes, headers = 256 * 1024, 16 * 1024
    with shaped_endpoint(endpoint) as proxy:
        sum_block(long_run_url, 0, 1, options(proxy.url))  # connect first: not counted
        for start, past in [(0, MAX_TOKEN_BYTES), (2 * block_bytes, local_read.LOOK_AHEAD_BYTES)]:
            sent = settled_bytes_sent(proxy)
            with contextlib.suppress(NumberTooLong):
                sum_block(long_run_url, start, start + block_bytes, options(proxy.url), part_bytes=64 * 1024)
            sent = settled_bytes_sent(proxy) - sent
            assert block_bytes + past <= sent < block_bytes + 1 + past + headers, (start, sent)


def settled_bytes_sent(proxy) -> int:
    """The proxy's count once it stops moving: it counts a chunk after sending it, so
    perhaps after the client has it."""
    last = -1
    while proxy.bytes_sent != last:
        last = proxy.bytes_sent
        time.sleep(0.1)
    return last


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(number_files(invalid=True, max_tokens=30), st.integers(1, 70), st.integers(2, 200))
def test_parts_raise_the_first_bad_number_too_long_or_invalid(endpoint, data, limit, block_bytes):
    bucket = new_bucket(endpoint)
    s3_client(endpoint).put_object(Bucket=bucket, Key="n.txt", Body=data)
    url, wanted = f"s3://{bucket}/n.txt", expect(data, limit)
    partials = (
        sum_block(url, start, end, options(endpoint), part_bytes=max(block_bytes // 3, 1), max_token_bytes=limit)
        for start, end in plan_blocks(len(data), block_bytes)
    )
    if isinstance(wanted, InvalidNumber):
        with pytest.raises(InvalidNumber) as raised:
            combine(list(partials))
        assert (type(raised.value), raised.value.offset) == (type(wanted), wanted.offset)
    else:
        assert combine(list(partials)) == wanted


# --- Dask -------------------------------------------------------------------------------


def test_the_job_fails_with_the_offset_on_worker_processes_and_no_worker_restarts(tmp_path):
    """On worker processes under a nanny (as deployed): the error crosses to the client as
    itself, the workers are the same processes afterwards, and they run the next job."""
    path = tmp_path / "long.txt"
    path.write_bytes(LONG_RUN)
    with (
        LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        before = client.run(os.getpid)
        with pytest.raises(NumberTooLong, match=TOO_LONG):
            even_sum(str(path), client=client, block_bytes=128 * 1024)
        _, total = submit_even_sum(client, str(path), block_bytes=512 * 1024, key_prefix="long-run")
        with pytest.raises(NumberTooLong, match=TOO_LONG) as raised:
            total.result()
        assert raised.value.limit == MAX_TOKEN_BYTES
        path.write_bytes(b"2 4 5\n" * 1000)
        assert even_sum(str(path), client=client, block_bytes=1000) == reference(b"2 4 5\n" * 1000)
        assert client.run(os.getpid) == before
