"""A job's input file, once the job has ended: the one rule for deleting it, shared by the
dispatcher (after a job's final write) and the API (after a cancel, since no dispatcher
ever ends a job cancelled while queued)."""

import logging

from backend.core.job import Job
from backend.core.settings import Settings
from compute.files import delete_file

log = logging.getLogger(__name__)


def drop_input(job: Job, settings: Settings) -> bool:
    """Delete the input file the service stored for ``job`` (an upload the client did not
    ask to keep); files named by URL are never deleted. True when no such file is left.
    A failure is logged, not raised: the job has ended whatever the store says, and a
    running job's workers may still be reading the file (its result is dropped anyway);
    the file stays listed for a later try (JobStore.drop_input)."""
    if not (job.delete_input and job.input_url):
        return True
    try:
        delete_file(job.input_url, settings.storage_options(job.input_url))
    except OSError as exc:
        log.warning("job %s: could not delete its input: %s", job.token, exc)
        return False
    return True
