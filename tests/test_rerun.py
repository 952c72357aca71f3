"""Running a job again (POST /tasks/{token}/rerun) with a live API, dispatcher and Dask: the
same input as a new job while the input is kept, safe to retry with an Idempotency-Key."""

import httpx
import pytest

from backend.jobs.store import JobStore
from backend.run.http_client import ApiError, SpaceTime
from tests.held_bytes import held_for
from tests.paths import FIXTURES


def test_an_even_sum_runs_again_from_its_file(api_url, dispatcher, tmp_path, redis):
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("2 4 5")
    with SpaceTime(api_url, client_id="lab") as st:
        first = st.submit("even-sum", str(numbers), keep_input=True)  # a rerun needs its file
        st.wait(first, timeout_s=30)
        again = st.rerun(first, idempotency_key="rerun-1")
        assert again != first and st.rerun(first, idempotency_key="rerun-1") == again
        assert st.wait(again, timeout_s=30)["status"] == "finished"
        assert st.result(again) == st.result(first)
        # The same file (clients are not shown the server path of an upload: read Redis).
        store = JobStore(redis, 60)
        assert store.get(again).input_url == store.get(first).input_url
    assert httpx.post(f"{api_url}/tasks/{'0' * 32}/rerun").status_code == 404


def test_an_image_runs_again_only_while_its_bytes_are_kept(api_url, start_dispatcher, settings):
    with SpaceTime(api_url) as st:
        queued = st.submit("randomize", str(FIXTURES / "cat.png"))
        again = st.rerun(queued)  # not ended: its bytes are in Redis
        start_dispatcher(settings)
        assert st.wait(again, timeout_s=30)["status"] == "finished"
        st.wait(queued, timeout_s=30)
        with pytest.raises(ApiError) as gone:
            st.rerun(queued)
    assert gone.value.status == 409 and "no longer kept" in gone.value.response.json()["error"]


def test_an_image_rerun_is_refused_before_its_input_is_read_when_it_has_no_room(
    make_settings, start_api, redis, cat_png
):
    """A rerun of an image reads its bytes from Redis into the API: its room is reserved
    first (from the input's head field), as at the door, so that a client at its bound
    costs no 20 MiB read a rerun, and its concurrent reruns never pass its bound."""
    api = start_api(make_settings(default_max_held_bytes=int(1.5 * held_for(redis, cat_png))))  # no dispatcher
    first = httpx.post(f"{api}/randomize", content=cat_png, headers={"X-Client-Id": "a"})
    assert first.status_code == 201
    sent = redis.info("stats")["total_net_output_bytes"]
    again = httpx.post(f"{api}/tasks/{first.json()['token']}/rerun", headers={"X-Client-Id": "a"})
    assert again.status_code == 429 and "holds" in again.json()["error"]
    assert redis.info("stats")["total_net_output_bytes"] - sent < len(cat_png) // 2
    assert redis.keys("uploads:*") == []
