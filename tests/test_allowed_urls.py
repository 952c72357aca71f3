"""Which URLs POST /even-sum {"url"} may name: only objects under the allowed prefixes."""

import httpx
import pytest

from backend.uploads import check_allowed_url
from compute.errors import InvalidInput

PREFIXES = ["s3://spacetime/uploads", "file:///srv/data/uploads"]


@pytest.mark.parametrize(
    "url, normal",
    [
        ("s3://spacetime/uploads/a.txt", "s3://spacetime/uploads/a.txt"),
        ("s3://spacetime/uploads/x/./y.txt", "s3://spacetime/uploads/x/y.txt"),
        ("file:///srv/data/uploads/big.txt", "file:///srv/data/uploads/big.txt"),
        ("file://localhost/srv/data/uploads/big.txt", "file:///srv/data/uploads/big.txt"),
    ],
)
def test_allowed(url, normal):
    assert check_allowed_url(url, PREFIXES) == normal


@pytest.mark.parametrize(
    "url, message",
    [
        ("file:///etc/passwd", "not allowed"),
        ("file:///srv/data/uploads/../../../etc/passwd", "not allowed"),
        ("s3://spacetime/uploads/../secrets/key", "not allowed"),
        ("s3://spacetime/uploads-evil/a.txt", "not allowed"),
        ("s3://other-bucket/uploads/a.txt", "not allowed"),
        ("s3://spacetime/uploads", "not allowed"),
        ("s3://spacetime/uploads/%2e%2e/secrets", "escapes"),
        ("http://example.com/a.txt", "scheme"),
        ("gs://spacetime/uploads/a.txt", "scheme"),
        ("/srv/data/uploads/a.txt", "scheme"),
        ("file://evil-host/srv/data/uploads/a.txt", "local path"),
        ("s3://spacetime/uploads/a.txt?versionId=1", "query"),
    ],
)
def test_refused(url, message):
    with pytest.raises(InvalidInput, match=message):
        check_allowed_url(url, PREFIXES)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "s3://elsewhere/x", "ftp://a/b"])
def test_api_refuses_with_400(api_url, url):
    response = httpx.post(f"{api_url}/even-sum", json={"url": url})
    assert response.status_code == 400
    assert response.json()["error"]


@pytest.mark.parametrize("body", [b"{}", b"not json", b'{"url": 5}', b"[]"])
def test_api_refuses_bad_json_with_400(api_url, body):
    response = httpx.post(f"{api_url}/even-sum", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "url" in response.json()["error"]
