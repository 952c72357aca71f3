"""Domain errors. Raised anywhere in the backend; only backend.api maps them to HTTP."""


class SpacetimeError(Exception):
    """Base class of the errors below."""


class JobNotFound(SpacetimeError):
    """No record for the token: never created, or expired (TTL)."""


class InvalidInput(SpacetimeError):
    """The client sent something the job cannot take; the message says what."""


class InputTooLarge(SpacetimeError):
    """The request body is over the configured limit."""


class UnknownTaskKind(SpacetimeError):
    """A queued record names a kind no dispatcher knows."""
