"""The service's own routes: where to go (``/``), health, Prometheus metrics."""

import asyncio
from urllib.parse import urlsplit

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from backend.api.deps import SettingsDep, StoreDep
from backend.api.schemas import HealthOut
from backend.jobs.store import JobStore

router = APIRouter()


@router.get(
    "/healthz",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "Redis is down"}},
)
async def healthz(store: StoreDep, settings: SettingsDep):
    redis_ok, dask_ok = await asyncio.gather(
        run_in_threadpool(redis_reachable, store), tcp_reachable(settings.dask_scheduler_address)
    )
    body = HealthOut(
        status="ok" if redis_ok and dask_ok else "degraded",
        redis=redis_ok,
        dask=dask_ok,
        dashboard_url=settings.dashboard_url,
    )
    return JSONResponse(body.model_dump(), status_code=200 if redis_ok else 503)


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
def metrics(request: Request):
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


@router.get("/", summary="Where to go from here")
def index(settings: SettingsDep):
    return {
        "name": "SpaceTime Analytics",
        "docs": "/docs",
        "openapi": "/openapi.json",
        "dashboard_url": settings.dashboard_url,
    }


def redis_reachable(store: JobStore) -> bool:
    try:
        return bool(store.redis.ping())
    except redis.RedisError:
        return False


async def tcp_reachable(address: str, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``tcp://host:port``."""
    parts = urlsplit(address)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), timeout_s)
    except (TimeoutError, OSError, ValueError):
        return False
    writer.close()
    return True
