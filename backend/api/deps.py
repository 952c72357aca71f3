"""What routes get injected: the app's parts, the calling client, a status request's wait."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backend.api import session
from backend.api.auth import holder_of, identify
from backend.api.cooldowns import Cooldowns
from backend.api.submission import Submitter
from backend.core.exceptions import Forbidden, OverQuota
from backend.core.settings import Settings
from backend.jobs.clients import NAME, ClientSettings
from backend.jobs.store import JobStore
from compute.errors import InvalidInput

# In keys mode, `Authorization: Bearer <key>`; in open mode optional (and ignored).
BEARER = HTTPBearer(auto_error=False, description="An API key from `spacetime clients add` (keys mode)")

WAIT_TEXT = (
    "Seconds to wait for the job to end: the answer comes as soon as it is `finished` or `errored`, "
    "or after this long, with what there is then (a result: 404 unless `finished`). 0 (the default) "
    "answers at once. At most the server's "
    "`SPACETIME_MAX_STATUS_WAIT_S` (the maximum here); over it, or not a number: 400."
)


# The app's parts are async dependencies: FastAPI runs a sync one in the thread pool, and
# a thread hop costs more CPU than the attribute read it would wrap.
async def get_store(request: Request) -> JobStore:
    return request.app.state.store


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_submitter(request: Request) -> Submitter:
    return request.app.state.submitter


async def get_credential(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
    x_client_id: Annotated[str | None, Header(alias="X-Client-Id", pattern=f"^{NAME.pattern}$")] = None,
) -> session.Credential:
    """What the request says it is, not yet checked: headers first; a browser signed in to
    the console sends its cookie instead (backend.api.session)."""
    authorization = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    if authorization is None and x_client_id is None:
        return session.signed_in(request, request.app.state.settings.auth) or session.Credential(None, None)
    return session.Credential(authorization, x_client_id)


CredentialDep = Annotated[session.Credential, Depends(get_credential)]


def get_caller(request: Request, credential: CredentialDep) -> ClientSettings:
    """The client the request comes from (backend.api.auth), with its settings."""
    return identify(request.app.state.registry, request.app.state.settings.auth, *credential)


async def cooldown(request: Request, credential: CredentialDep) -> AsyncIterator[None]:
    """A submission route's guard (backend.api.cooldowns): a caller just told to retry later
    waits out a moment first; a refusal with Retry-After starts one."""
    cooldowns: Cooldowns = request.app.state.cooldowns
    route, holder = request.url.path, holder_of(credential, request.app.state.settings.auth)
    await cooldowns.wait_out(route, holder)
    try:
        yield
    except OverQuota as refused:
        cooldowns.start(route, holder, refused)
        raise


StoreDep = Annotated[JobStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SubmitterDep = Annotated[Submitter, Depends(get_submitter)]
CallerDep = Annotated[ClientSettings, Depends(get_caller)]


def is_operator(caller: ClientSettings, settings: Settings) -> bool:
    """Whether ``caller`` may read every client's state: an admin key's holder in keys mode;
    anyone in open mode, where a name is not proven and jobs are not hidden between clients."""
    return settings.auth == "open" or caller.admin


async def get_operator(caller: CallerDep, settings: SettingsDep) -> ClientSettings:
    """The caller, if an operator; Forbidden (403) for any other client."""
    if not is_operator(caller, settings):
        raise Forbidden(f"client {caller.name!r} is not an operator (`spacetime clients add NAME --admin`)")
    return caller


OperatorDep = Annotated[ClientSettings, Depends(get_operator)]


async def get_wait(  # async: a sync dependency would cost every status request a thread hop
    settings: SettingsDep,
    wait: Annotated[float, Query(ge=0, allow_inf_nan=False, description=WAIT_TEXT)] = 0.0,
) -> float:
    """The ``wait`` of a status request, in seconds; InvalidInput (400) past the server's cap."""
    if wait > settings.max_status_wait_s:
        raise InvalidInput(f"query.wait: at most {settings.max_status_wait_s:g} seconds on this server, not {wait:g}")
    return wait


WaitDep = Annotated[float, Depends(get_wait)]

IDEMPOTENCY_TEXT = (
    "Any string of yours, new for each job (a UUID): the first request with it makes the job; "
    "a retry within 24 h (the same request again, e.g. after a dropped connection) answers the "
    "same job, with `Idempotent-Replayed: true`, and makes no other. The key with a different "
    "request: 422."
)
# Printable ASCII without spaces, as HTTP header values go; long enough for any UUID or hash.
IdempotencyKeyDep = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[!-~]+$", description=IDEMPOTENCY_TEXT),
]
