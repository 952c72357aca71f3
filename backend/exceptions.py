"""Domain errors. Raised anywhere in the backend; only backend.api maps them to HTTP.

Bad input is ``compute.errors.InvalidInput`` everywhere, one class for both sides: the
API raises it for a bad request, workers raise it (and its subclasses) for a bad file.
"""


class SpacetimeError(Exception):
    """Base class of the errors below."""


class JobNotFound(SpacetimeError):
    """No record for the token: never created, or expired (TTL)."""


class InputTooLarge(SpacetimeError):
    """The request body is over the configured limit."""


class UnknownTaskKind(SpacetimeError):
    """A queued record names a kind no dispatcher knows."""


class BodyTooSlow(SpacetimeError):
    """The client stalled or dripped its request body (slowloris); the request is cut."""


class StorageFull(SpacetimeError):
    """The uploads store has no room (a full disk or quota): the client may retry later."""


class StorageUnavailable(SpacetimeError):
    """The uploads store refused the write (read-only, missing, unreachable): the operator's problem."""
