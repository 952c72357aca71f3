"""Nothing secret or internal reaches a client or a log: URLs redacted, records with API
URLs instead of server paths, worker errors mapped to messages a client can act on."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from backend.core.kinds import EVEN_SUM
from backend.core.redact import redact, redact_text
from backend.core.waiting import wait_for
from backend.jobs.store import JobStore, Submission
from tests.servers import free_port
from tests.waiting import wait_status, wait_until

SECRET = "s3cret-pw"


@pytest.mark.parametrize(
    "url, shown",
    [
        (f"redis://:{SECRET}@10.0.0.5:6379/0", "redis://:***@10.0.0.5:6379/0"),
        (f"rediss://app:{SECRET}@cache:6380/1?ssl_cert_reqs=none", "rediss://app:***@cache:6380/1?ssl_cert_reqs=none"),
        (f"redis://10.0.0.5:6379/0?password={SECRET}&db=2", "redis://10.0.0.5:6379/0?password=***&db=2"),
        (f"unix:///run/redis.sock?password={SECRET}", "unix:///run/redis.sock?password=***"),
        (f"https://b.s3.amazonaws.com/k?partNumber=1&X-Amz-Signature={SECRET}", None),
        ("s3://spacetime/uploads/a.txt", "s3://spacetime/uploads/a.txt"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_redact_masks_passwords_and_signatures(url, shown):
    assert SECRET not in redact(url)
    if shown is not None:
        assert redact(url) == shown
    assert redact_text(f"Redis at {url}: refused") == f"Redis at {redact(url)}: refused"


def test_a_timed_out_wait_names_redis_without_its_password():
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    with pytest.raises(TimeoutError) as caught:
        wait_for(lambda: httpx.get(f"http://{url.split('@')[1].split('/')[0]}"), "Redis", url, 0.2)
    assert SECRET not in str(caught.value) and ":***@127.0.0.1" in str(caught.value)


def test_a_dispatcher_that_cannot_reach_redis_logs_no_password(tmp_path):
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    env = {**os.environ, "REDIS_URL": url, "SPACETIME_DASK_TIMEOUT_S": "0.5", "SPACETIME_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "backend.run.cli", "dispatcher"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert "cannot start" in done.stderr and ":***@127.0.0.1" in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_the_log_formatter_redacts_urls_in_messages_and_tracebacks(capsys):
    from backend.core.redact import redact_logs

    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    root.addHandler(handler)
    try:
        redact_logs()
        log = logging.getLogger("tests.exposure")
        log.error("connecting to %s", f"redis://:{SECRET}@h:1/0")
        try:
            raise ConnectionError(f"redis://u:{SECRET}@h:1/0 refused")
        except ConnectionError:
            log.exception("failed")
    finally:
        root.removeHandler(handler)
    err = capsys.readouterr().err
    assert "connecting to redis://:***@h:1/0" in err and "redis://u:***@h:1/0 refused" in err
    assert SECRET not in err


def test_a_refused_url_does_not_list_the_allowed_prefixes(api_url, settings):
    response = httpx.post(f"{api_url}/even-sum", json={"url": "file:///etc/passwd"})
    assert response.status_code == 400
    assert "not allowed" in response.json()["error"]
    assert settings.uploads_url not in response.text and str(settings.data_dir) not in response.text


def test_the_record_shows_api_urls_not_server_paths(api_url, settings, dispatcher):
    kept = {"Content-Type": "text/plain"}
    token = httpx.post(f"{api_url}/even-sum?keep_input=true", content=b"2 4", headers=kept).json()["token"]
    wait_status(api_url, "even-sum", token)
    response = httpx.get(f"{api_url}/tasks/{token}")
    record = response.json()
    assert record["status"] == "finished" and record["report_url"] == f"/tasks/{token}/report"
    assert not {"dispatcher", "timing_url", "input_url", "last_error"} & set(record)
    assert str(settings.data_dir) not in response.text and "file://" not in response.text

    given = f"{settings.uploads_url}/{token}.txt"  # a client may name an upload's URL: it sees what it sent
    again = httpx.post(f"{api_url}/even-sum", json={"url": given}).json()["token"]
    wait_status(api_url, "even-sum", again)
    assert httpx.get(f"{api_url}/tasks/{again}").json()["input_url"] == given


def test_a_missing_upload_is_named_without_its_path(api_url, settings, start_dispatcher):
    token = httpx.post(f"{api_url}/even-sum", content=b"2 4", headers={"Content-Type": "text/plain"}).json()["token"]
    Path(settings.uploads_url.removeprefix("file://"), f"{token}.txt").unlink()
    start_dispatcher(settings)
    status = wait_status(api_url, "even-sum", token)[-1]
    assert status == {"status": "errored", "error": "input not found: the uploaded file"}


def test_a_missing_named_file_is_named_as_the_client_sent_it(api_url, settings, start_dispatcher):
    """A file present when its job was admitted (one missing then is a 400), gone when it runs."""
    path = Path(settings.uploads_url.removeprefix("file://"), "gone-by-then.txt")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"2 4")
    url = path.as_uri()
    token = httpx.post(f"{api_url}/even-sum", json={"url": url}).json()["token"]
    path.unlink()
    start_dispatcher(settings)
    assert wait_status(api_url, "even-sum", token)[-1] == {"status": "errored", "error": f"input not found: {url}"}


def test_an_unexpected_error_is_a_reference_for_the_client_and_in_full_in_the_log(
    api_url, redis, settings, dispatcher, caplog
):
    store = JobStore(redis, settings.result_ttl_s)
    url = "nosuchscheme:///srv/internal/numbers.txt"  # queued by hand: the API would refuse it
    token = store.submit(Submission(EVEN_SUM, input_url=url)).token
    status = wait_status(api_url, "even-sum", token)[-1]
    assert status == {"status": "errored", "error": f"internal error while running the job (reference {token})"}
    logged = wait_until(lambda: [r for r in caplog.records if token in r.getMessage() and r.exc_info], what="the log")
    assert "nosuchscheme" in logging.Formatter().formatException(logged[0].exc_info)
