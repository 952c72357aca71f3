"""Domain errors. Raised anywhere in the backend; only backend/api/errors.py maps them to HTTP.

Bad input is ``compute.errors.InvalidInput`` everywhere, one class for both sides: the
API raises it for a bad request, workers raise it (and its subclasses) for a bad file.
"""


class SpacetimeError(Exception):
    """Base class of the errors below."""


class JobNotFound(SpacetimeError):
    """No record for the token: never created, expired (TTL), or another client's."""


class JobEnded(SpacetimeError):
    """The job ended on its own before its client could cancel it: nothing to cancel."""


class Replayed(SpacetimeError):
    """A retried request (its Idempotency-Key seen before, with the same request): ``answer``
    is the first one's (a submission's: the token of the job it made)."""

    def __init__(self, answer: dict):
        super().__init__(answer)
        self.answer = answer


class IdempotencyKeyReused(SpacetimeError):
    """An Idempotency-Key seen before with a different request: nothing is made."""


class InputGone(SpacetimeError):
    """A job cannot run again: its input is no longer kept (an image's ends with its job)."""


class InputTooLarge(SpacetimeError):
    """The request body is over the configured limit."""


class NotAuthenticated(SpacetimeError):
    """No API key, or one that no client holds (keys mode)."""


class Forbidden(SpacetimeError):
    """The caller is known but may not do this: an operator's route or page asked by a
    client that is not one (keys mode), a console write without its CSRF token."""


class OverQuota(SpacetimeError):
    """The client is over its rate or backlog quota; it may try again after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int | None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReplicated(SpacetimeError):
    """Redis stored the job but fewer replicas than required confirmed it in time: a
    failover now could lose it, so it is not acknowledged (the job may still run)."""


class UnknownJobKind(SpacetimeError):
    """A queued record names a kind no dispatcher knows."""


class AttemptLost(SpacetimeError):
    """The attempt cannot go on through no fault of the job (the scheduler went away, no
    worker is left): the job goes back to its queue and another attempt runs it."""


class BodyTooSlow(SpacetimeError):
    """The client stalled or dripped its request body (slowloris); the request is cut."""


class StorageFull(SpacetimeError):
    """The uploads store has no room (a full disk or quota): the client may retry later."""


class StorageUnavailable(SpacetimeError):
    """The uploads store refused the write (read-only, missing, unreachable): the operator's problem."""


class DirectUploadsUnavailable(SpacetimeError):
    """Direct uploads need the S3 uploads store; this server keeps uploads in a local folder."""


class UploadNotFound(SpacetimeError):
    """No pending direct upload by that id: never started, completed, expired, or another client's."""


class UploadBusy(SpacetimeError):
    """Another complete call of the same upload is running."""


def problems(errors: list, whole: str, first_only: bool = False) -> str:
    """Pydantic's (or FastAPI's) validation errors as one line a person can act on:
    ``where: what`` for each, ``whole`` naming the value itself when the path is empty."""
    shown = errors[:1] if first_only else errors
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or whole}: {e['msg']}" for e in shown)
