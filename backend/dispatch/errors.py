"""What a client reads when its job fails: a message it can act on, never an internal
path or a library's words. The full error stays in the dispatcher's log."""

import logging

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
# Errors whose message is for the client, once mapped: they fail the job with no traceback.
USER_ERRORS = (*CLIENT_ERRORS, *INPUT_ERRORS)


def client_message(exc: Exception, job: Job, uploads_url: str) -> str:
    """The job's error as its client sees it; anything unexpected is logged in full here
    and named to the client only by the job's token."""
    if isinstance(exc, CLIENT_ERRORS):
        return str(exc)
    for kind, message in INPUT_ERRORS.items():
        if isinstance(exc, kind):
            log.info("job %s: %s", job.token, exc)
            return message.format(input=job.given_input_url(uploads_url) or "the uploaded file")
    log.error("job %s failed", job.token, exc_info=exc)
    return f"internal error while running the job (reference {job.token})"
