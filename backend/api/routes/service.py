"""The service's own routes: where to go (``/``), health, Prometheus metrics.

Three health checks, each for its caller: ``/livez`` for the container's check (the process
serves; a restart would help), ``/readyz`` for the load balancer's (Redis answers too; take
the task out of rotation, not restart it: a Redis failover must not replace the fleet),
``/healthz`` for people and compose (Redis and Dask, with the dashboard's address)."""

import asyncio
from urllib.parse import urlsplit

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from backend.api.deps import SettingsDep, StoreDep
from backend.api.schemas import HealthOut, LiveOut, ReadyOut
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


@router.get("/livez", response_model=LiveOut, summary="Liveness: the process serves (touches no dependency)")
async def livez():
    # On the event loop, not in the thread pool: requests stuck on an unreachable Redis
    # can fill the pool, and that is not a reason to restart the process.
    return LiveOut(status="ok")


@router.get(
    "/readyz",
    response_model=ReadyOut,
    summary="Readiness: the process serves and Redis answers a PING",
    responses={503: {"model": ReadyOut, "description": "Redis does not answer: take this process out of rotation"}},
)
async def readyz(store: StoreDep):
    redis_ok = await run_in_threadpool(redis_reachable, store)
    body = ReadyOut(status="ready" if redis_ok else "unavailable", redis=redis_ok)
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
