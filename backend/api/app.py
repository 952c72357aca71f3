"""The HTTP API's app: its parts, its routes (built from the job kinds), its errors.

Kept from the original Flask service, byte for byte where clients can see it:
``POST /randomize`` -> 201 {"token"}, 400 {"error"} for a non-PNG body, status and
result routes with {"status"} and {"message": "not found"}. Routes live in
``backend/api/routes/``, one module per resource; this module wires them together.
"""

import asyncio
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry, Gauge
from starlette.concurrency import run_in_threadpool

from backend.api.admission import RateLimiter
from backend.api.cooldowns import Cooldowns
from backend.api.endings import Endings
from backend.api.errors import add_handlers
from backend.api.holds import Holds
from backend.api.routes import account, console, control, service, tasks
from backend.api.routes.files import add_file_doors
from backend.api.routes.kinds import add_body_door, add_status_and_result
from backend.api.schemas import NOT_AUTHENTICATED, operation_id
from backend.api.submission import Submitter
from backend.api.sweeps import sweep_direct_uploads, sweep_uploads
from backend.core.kinds import KINDS, Body
from backend.core.settings import Settings, get_settings
from backend.jobs.clients import ClientRegistry
from backend.jobs.connection import connect
from backend.jobs.store import JobStore
from backend.telemetry.metrics import RedisMetrics
from backend.telemetry.reports import ReportWriter

DESCRIPTION = """Submit jobs, poll their status, fetch their results. Jobs run on a Dask cluster.

Instead of polling, ask `GET /randomize/{token}/status?wait=30` (the same on every status
route and on `GET /tasks/{token}`): the answer comes as soon as the job ends, or after 30 s
with the status then. A result route waits the same way (`GET /randomize/{token}/result?wait=30`):
the result, or a 404 if the job did not finish.

Who you are: in `open` mode (the local default) the `X-Client-Id` header names you (no
header: `anonymous`); in `keys` mode send `Authorization: Bearer <key>` (a key from
`spacetime clients add`), and another client's token is a 404 on every route.
Over your rate or backlog quota: 429 with `Retry-After`.
"""


def routes() -> APIRouter:
    """Every route: each declared kind's, then the records, reports and the service's own."""
    router = APIRouter(responses={**NOT_AUTHENTICATED})
    for kind in KINDS.values():
        if isinstance(kind.input, Body):
            add_body_door(router, kind, kind.input)
        else:
            add_file_doors(router, kind, kind.input)
        add_status_and_result(router, kind)
    router.include_router(tasks.router)
    router.include_router(control.router)
    router.include_router(account.router)
    router.include_router(service.router)
    router.include_router(console.router)
    return router


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app; ``settings`` default to the environment's."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        client = connect(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        store = JobStore(client, settings.result_ttl_s, settings.redis_min_replicas)
        app.state.settings = settings
        app.state.store = store
        app.state.registry = ClientRegistry(client, settings)
        submitter = Submitter(settings, store, RateLimiter(client.connection_pool))
        app.state.submitter = submitter
        cooldowns = Cooldowns(settings.refusal_cooldown_s)
        app.state.cooldowns = cooldowns
        app.state.reports = ReportWriter(settings)
        app.state.metrics = CollectorRegistry(auto_describe=False)
        app.state.metrics.register(RedisMetrics(client))
        endings = Endings(settings.redis_url, settings.max_status_waiters, settings.max_status_waiters_per_client)
        app.state.endings = endings
        app.state.event_streams = Holds(settings.max_event_streams, settings.max_event_streams_per_client)
        waiters = Gauge(
            "spacetime_status_waiters",
            "Status requests of this API process waiting for their job to end (?wait=)",
            registry=app.state.metrics,
        )
        waiters.set_function(lambda: endings.waiting)
        held = Gauge(
            "spacetime_submissions_held",
            "Submissions this API process holds for a moment after their caller's 429 (a flood at its bound)",
            registry=app.state.metrics,
        )
        held.set_function(lambda: cooldowns.held)
        endings.start()
        await run_in_threadpool(sweep_uploads, settings, submitter.direct)
        sweeper = None
        if submitter.direct is not None:
            sweeper = asyncio.create_task(sweep_direct_uploads(submitter.direct, settings.direct_upload_sweep_s))
        yield
        if sweeper is not None:
            sweeper.cancel()
        await endings.stop()
        client.close()

    # Swagger UI and ReDoc from the fastapi-offline package: /docs works with no internet.
    app = FastAPIOffline(
        title="SpaceTime Analytics",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    app.include_router(routes())
    app.mount("/ui/static", console.static, name="console_static")
    app.openapi = lambda: openapi(app, settings)  # type: ignore[method-assign]
    add_handlers(app)
    return app


def openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's document, saying what the API key is in this mode (required in keys mode,
    optional: ``{}``, no security, is an alternative, in open mode) and the longest
    ``wait`` this server takes (a setting, so not in the route's declaration)."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for operations in schema["paths"].values():
            for operation in operations.values():
                if settings.auth == "open" and "security" in operation:
                    operation["security"] = [{}, *operation["security"]]
                for parameter in operation.get("parameters", []):
                    if (parameter["in"], parameter["name"]) == ("query", "wait"):
                        parameter["schema"]["maximum"] = settings.max_status_wait_s
        app.openapi_schema = schema
    return app.openapi_schema
