"""GET /healthz and GET /metrics against real Redis and Dask."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import free_port, live_api, own_redis
from tests.waiting import wait_status, wait_until


def test_healthz_ok(api_url, settings):
    body = httpx.get(f"{api_url}/healthz").json()
    assert body == {"status": "ok", "redis": True, "dask": True, "dashboard_url": settings.dashboard_url}
    assert httpx.get(f"{api_url}/").json()["dashboard_url"] == settings.dashboard_url


def test_redis_down_is_503_not_a_traceback(settings, cat_png):
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with live_api(down) as url:
        health = httpx.get(f"{url}/healthz")
        assert health.status_code == 503
        assert health.json()["redis"] is False
        submit = httpx.post(f"{url}/randomize", content=cat_png)
        assert submit.status_code == 503
        assert "Redis" in submit.json()["error"]


def test_livez_is_the_process_only_and_readyz_follows_redis(make_settings, tmp_path):
    """The container check (/livez) stays 200 while Redis is away, so ECS does not replace
    the fleet in a Redis failover; the load balancer's (/readyz) is 503 until Redis is back."""
    with own_redis(tmp_path) as server, live_api(make_settings(redis_url=server.url)) as url:
        assert httpx.get(f"{url}/livez").json() == {"status": "ok"}
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "redis": True}

        server.stop()
        assert httpx.get(f"{url}/livez").status_code == 200
        down = httpx.get(f"{url}/readyz", timeout=10)
        assert down.status_code == 503 and down.json() == {"status": "unavailable", "redis": False}
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 503  # as before

        server.start()
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, timeout_s=10, what="/readyz back")
        assert httpx.get(f"{url}/livez").status_code == 200


def test_dask_down_is_reported(settings):
    down = settings.model_copy(update={"dask_scheduler_address": f"tcp://127.0.0.1:{free_port()}"})
    with live_api(down) as url:
        body = httpx.get(f"{url}/healthz").json()
    assert body["status"] == "degraded" and body["dask"] is False and body["redis"] is True


def samples(api_url: str) -> dict:
    text = httpx.get(f"{api_url}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def jobs_counted(metrics: dict, n: int) -> dict | None:
    total = sum(v for (name, _), v in metrics.items() if name == "spacetime_jobs_total")
    return metrics if total == n else None


def test_metrics_move_when_jobs_run(api_url, dispatcher, cat_png):
    before = samples(api_url)
    assert before[("spacetime_queue_length", ())] == 0
    tokens = [
        httpx.post(f"{api_url}/randomize", content=png).json()["token"] for png in (cat_png, cat_png, cat_png[:200])
    ]
    for token in tokens:
        wait_status(api_url, "randomize", token)
    # Counters are written just after the job's final state; give the last one a moment.
    after = wait_until(lambda: jobs_counted(samples(api_url), 3), what="3 jobs counted")
    series = (("client", "unregistered"), ("kind", "randomize"))
    assert after[("spacetime_jobs_total", (*series, ("status", "finished")))] == 2
    assert after[("spacetime_jobs_total", (*series, ("status", "errored")))] == 1
    records = [httpx.get(f"{api_url}/tasks/{token}").json() for token in tokens]
    for name in ("lead", "exec", "queue_wait"):
        assert after[(f"spacetime_{name}_seconds_count", series)] == 3
        assert after[(f"spacetime_{name}_seconds_bucket", (*series, ("le", "+Inf")))] == 3
        # The sum is the jobs' own figures added up: a counter that adds nothing fails here.
        expected = sum(record[f"{name}_s"] for record in records)
        assert after[(f"spacetime_{name}_seconds_sum", series)] == pytest.approx(expected, abs=1e-6)
    assert after[("spacetime_processed_bytes_total", series)] == 2 * len(cat_png)
