"""The Python client (``SpaceTime``) and ``spacetime jobs`` against a live API and dispatcher."""

import subprocess
import sys

import pytest

from backend.run.http_client import ApiError, SpaceTime
from tests.paths import FIXTURES
from tests.test_cancel import MANY_BLOCKS


def test_submit_wait_result_list_cancel(api_url, dispatcher, tmp_path):
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("2 4 5 -8")
    with SpaceTime(api_url, client_id="nb") as st:
        token = st.submit("even-sum", str(numbers))
        assert st.wait(token, timeout_s=30)["status"] == "finished"
        assert st.result(token) == {"sum": -2, "even_count": 3, "count": 4, "bytes": 8}
        image = st.submit("randomize", str(FIXTURES / "cat.png"))
        st.wait(image, timeout_s=30)
        assert st.result(image)[:4] == b"\x89PNG"  # type: ignore[index]
        assert [job["token"] for job in st.jobs(page=1)] == [image, token]
        with pytest.raises(ApiError) as ended:
            st.cancel(token)
        assert ended.value.status == 409
    with SpaceTime(api_url, client_id="someone-else") as other:
        assert list(other.jobs()) == []


def test_watch_follows_the_event_stream(api_url, dispatcher, tmp_path):
    numbers = tmp_path / "numbers.txt"
    numbers.write_bytes(MANY_BLOCKS[: 512 * 1024])  # ~500 blocks: it runs long enough to watch
    seen: list[tuple[int, int]] = []
    with SpaceTime(api_url) as st:
        token = st.submit("even-sum", str(numbers))
        assert st.watch(token, on_progress=lambda done, total: seen.append((done, total))) == {"status": "finished"}
        events = list(st.events(token))
    assert seen == sorted(seen) and seen[-1][0] > 0
    assert [e["event"] for e in events] == ["finished"]


@pytest.mark.slow
def test_jobs_list_cancel_and_watch_from_the_command_line(api_url):
    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "backend.run.cli", "jobs", *args, "--api", api_url, "--client-id", "cli"]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    with SpaceTime(api_url, client_id="cli") as st:  # no dispatcher: they stay queued
        tokens = [st.submit("randomize", str(FIXTURES / "cat.png")) for _ in range(2)]
    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == tokens[::-1]
    cancelled = cli("cancel", tokens[0])
    assert cancelled.returncode == 0 and "errored" in cancelled.stdout and "cancelled by the client" in cancelled.stdout
    assert cli("list", "--status", "errored").stdout.split()[0] == tokens[0]
    watched = cli("watch", tokens[0])
    assert watched.returncode == 1 and "errored cancelled by the client" in watched.stdout
    missing = cli("cancel", "0" * 32)
    assert missing.returncode == 1 and "error 404" in missing.stderr
