"""The even sum over S3: s3fs against a real moto server on loopback."""

import pytest

from compute.even_sum import combine, plan_blocks, submit_even_sum, sum_block
from tests.moto_s3 import REGION, iam_enforced, moto_server, new_bucket, s3_client
from tests.number_files import reference

DATA = b"\r\n".join(b"%d" % i for i in range(-3000, 3000)) + b"\r\n" + b"12345678901234567890123456 -7"


@pytest.fixture(scope="module")
def endpoint():
    with moto_server() as url:
        yield url


@pytest.fixture
def bucket(endpoint, monkeypatch):
    """A fresh bucket holding DATA as numbers.txt; AWS settings as a deployment has them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    name = new_bucket(endpoint)
    s3_client(endpoint).put_object(Bucket=name, Key="numbers.txt", Body=DATA)
    return name


def options(endpoint: str, **credentials) -> dict:
    return {"client_kwargs": {"endpoint_url": endpoint}, **credentials}


def test_ranged_block_reads_add_up(endpoint, bucket):
    url = f"s3://{bucket}/numbers.txt"
    for block_bytes in (333, 10**6):  # a request or two per block: few blocks
        partials = [sum_block(url, start, end, options(endpoint)) for start, end in plan_blocks(len(DATA), block_bytes)]
        assert combine(partials) == reference(DATA)


def test_submit_even_sum_over_s3(dask_client, endpoint, bucket):
    url = f"s3://{bucket}/numbers.txt"
    blocks, total = submit_even_sum(
        dask_client, url, block_bytes=4096, storage_options=options(endpoint), key_prefix="s3-job"
    )
    assert [block.key for block in blocks] == [f"s3-job-{i}" for i in range(len(blocks))]
    assert total.result() == reference(DATA)


def test_a_missing_object_is_not_found(dask_client, endpoint, bucket):
    with pytest.raises(FileNotFoundError, match=f"not found: s3://{bucket}/nothing.txt"):
        submit_even_sum(dask_client, f"s3://{bucket}/nothing.txt", storage_options=options(endpoint))


def test_bad_credentials_give_a_readable_error(dask_client, endpoint):
    with iam_enforced(endpoint) as good:
        name = new_bucket(endpoint, **good)
        s3_client(endpoint, **good).put_object(Bucket=name, Key="numbers.txt", Body=DATA)
        url = f"s3://{name}/numbers.txt"
        _, total = submit_even_sum(dask_client, url, block_bytes=10**6, storage_options=options(endpoint, **good))
        assert total.result() == reference(DATA)
        for wrong in ({"key": good["key"], "secret": "wrong"}, {"key": "nobody", "secret": "wrong"}):
            with pytest.raises(PermissionError, match=f"access denied to {url} .*check the storage credentials"):
                submit_even_sum(dask_client, url, storage_options=options(endpoint, **wrong))
