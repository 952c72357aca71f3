"""Which URLs POST /even-sum {"url"} may name: only objects under the allowed prefixes."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from backend.api.uploads import check_allowed_url
from backend.jobs import keys
from compute.errors import InvalidInput
from tests.servers import free_port

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
        ("simplecache::s3://spacetime/uploads/a.txt", "scheme"),
        ("memory://spacetime/uploads/a.txt", "scheme"),
        ("s3://spacetime/uploads/a.txt::http://127.0.0.1/x", "must look like"),
        ("s3://spacetime/uploads/*.txt", "must look like"),
        ("s3://Spacetime/uploads/a.txt", "must look like"),
        ("file:///srv/data/uploads/a\x00.txt", "control characters"),
        ("file:///srv/data/uploads/a\r\n.txt", "control characters"),
        ("file:///srv/data/uploads/a\t.txt", "control characters"),
        ("file:///srv/data/uploads/a b.txt", "spaces"),
        ("file:///srv/data/uploads/caf\u00e9.txt", "non-ASCII"),
        ("s3://[spacetime/uploads/a.txt", "not a URL"),
        ("file:///srv/data/uploads/" + "a" * 2100, "longer than 2048"),
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


# -- hostile URLs through the real API: refused before any I/O ------------------------------------


@pytest.fixture
def canary():
    """An HTTP server on 127.0.0.1 that counts what reaches it, as a cloud metadata endpoint would."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(f"{self.command} {self.path}")
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"2 4 6")

        do_HEAD = do_POST = do_PUT = do_GET

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}", hits
    server.shutdown()
    server.server_close()
    thread.join(5)


def hostile_urls(uploads_url: str, canary: str) -> list[str]:
    uploads = uploads_url.removeprefix("file://")
    return [
        f"http://{canary}/latest/meta-data/iam/security-credentials/",
        f"https://{canary}/x",
        f"simplecache::http://{canary}/x",
        f"simplecache::{uploads_url}/a.txt",
        "simplecache::s3://spacetime/uploads/a.txt",
        f"{uploads_url}/a.txt::http://{canary}/x",
        "memory://uploads/a.txt",
        "memory:///spacetime/uploads/a.txt",
        "s3://another-bucket/uploads/a.txt",
        "s3://spacetime/uploads/../private/a.txt",
        f"{uploads_url}/../../../../etc/passwd",
        f"file://{canary}{uploads}/a.txt",
        f"file://{uploads}/../etc/passwd",
        f"{uploads_url}/a\x00.txt",
        f"{uploads_url}/a\r\nX-Injected: 1",
        f"{uploads_url}/a\n.txt",
        f"{uploads_url}/" + "a" * 10_000,
        f"{uploads_url}/" + "a/" * 30_000,
        f"{uploads_url}/link-out.txt",  # made below: a link to /etc/passwd
        f"{uploads_url}/folder-out/passwd",  # made below: a link to /etc
    ]


def test_hostile_urls_are_refused_before_any_io(make_settings, start_api, redis, canary):
    address, hits = canary
    own_uploads = make_settings().uploads_url
    settings = make_settings(allowed_url_prefixes=[own_uploads, "s3://spacetime/uploads"])
    api_url = start_api(settings)
    uploads = Path(settings.uploads_url.removeprefix("file://"))
    uploads.mkdir(parents=True)
    (uploads / "link-out.txt").symlink_to("/etc/passwd")
    (uploads / "folder-out").symlink_to("/etc")
    for url in hostile_urls(settings.uploads_url, address):
        response = httpx.post(f"{api_url}/even-sum", json={"url": url})
        assert response.status_code == 400, (url[:100], response.text)
        assert response.json()["error"], url[:100]
    assert hits == [], "the canary was reached"
    assert redis.llen(keys.TASKS) == 0 and not redis.keys("result:*"), "a job was created"
    assert sorted(p.name for p in uploads.iterdir()) == ["folder-out", "link-out.txt"]


def test_a_link_that_stays_inside_the_allowed_folder_is_accepted(api_url, settings):
    uploads = Path(settings.uploads_url.removeprefix("file://"))
    uploads.mkdir(parents=True)
    (uploads / "numbers.txt").write_text("2 3 4")
    (uploads / "alias.txt").symlink_to(uploads / "numbers.txt")
    response = httpx.post(f"{api_url}/even-sum", json={"url": f"{settings.uploads_url}/alias.txt"})
    assert response.status_code == 201, response.text
