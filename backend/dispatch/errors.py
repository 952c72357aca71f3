"""What a client reads when its job fails: a message it can act on, never an internal
path or a library's words. The full error stays in the dispatcher's log."""

import logging

from distributed import KilledWorker

from backend.core.exceptions import UnknownJobKind
from backend.core.job import Job
from compute.errors import InvalidInput

log = logging.getLogger(__name__)

# Written for the client already (compute/errors.py, the kind declarations): shown as they are.
CLIENT_ERRORS = (InvalidInput, UnknownJobKind)
# The input cannot be read: the client is told which input, in the words it used.
INPUT_ERRORS = {
    FileNotFoundError: "input not found: {input}",
    IsADirectoryError: "input is a directory, not a file: {input}",
    PermissionError: "the service is not allowed to read the input: {input}",
}
# The job's task took down every worker that ran it (Dask gave up on it): the client can act
# on that (a smaller input), and no trace of ours would help it.
KILLED_WORKER = (
    "the job's task ended the worker that ran it each time it was tried (KilledWorker): "
    "its input may need more memory than a worker has"
)
# Errors whose message is for the client, once mapped: they fail the job with no traceback.
USER_ERRORS: tuple[type[Exception], ...] = (*CLIENT_ERRORS, *INPUT_ERRORS, KilledWorker)


def client_message(exc: Exception, job: Job, uploads_url: str) -> str:
    """The job's error as its client sees it; anything unexpected is logged in full here
    and named to the client only by the job's token."""
    if isinstance(exc, CLIENT_ERRORS):
        return str(exc)
    for kind, message in INPUT_ERRORS.items():
        if isinstance(exc, kind):
            log.info("job %s: %s", job.token, exc)
            return message.format(input=job.given_input_url(uploads_url) or "the uploaded file")
    if isinstance(exc, KilledWorker):
        log.warning("job %s: %s", job.token, exc)
        return KILLED_WORKER
    log.error("job %s failed", job.token, exc_info=exc)
    return f"internal error while running the job (reference {job.token})"
