"""What the web console reads: the calling client's account (``GET /me``) and the
operator's view of the whole service (``GET /overview``).

Routes only: the figures are read by backend/jobs/usage.py and backend/jobs/overview.py
from the counters the service runs on."""

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from backend.api.deps import CallerDep, OperatorDep, SettingsDep, StoreDep, SubmitterDep, is_operator
from backend.api.schemas import FORBIDDEN, AccountOut, OverviewOut
from backend.jobs import overview, usage

router = APIRouter()


@router.get("/me", name="me", response_model=AccountOut)
async def me(caller: CallerDep, store: StoreDep, settings: SettingsDep, submitter: SubmitterDep):
    """Who you are to this server, and what you take now of each of your bounds: the rate,
    the backlog quota, running jobs per lane, the bytes you hold in Redis, uploads in flight."""
    rate = await run_in_threadpool(submitter.limiter.usage, caller)
    quotas = await run_in_threadpool(usage.quotas, store.redis, settings, caller, rate)
    return AccountOut(client=caller.name, admin=is_operator(caller, settings), mode=settings.auth, quotas=quotas)


@router.get("/overview", name="overview", response_model=OverviewOut, responses=FORBIDDEN)
async def read_overview(operator: OperatorDep, store: StoreDep, settings: SettingsDep):
    """The whole service, for operators (in keys mode, keys made with `--admin`): each lane's
    clients (queued, running, their share of the cluster over the last `window_s`), the
    dispatchers, the last errored jobs, and each client's lead times over the last hour."""
    return await run_in_threadpool(overview.read_overview, store.redis, settings)
