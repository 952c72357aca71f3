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
