"""Errors raised on workers. Their messages reach users verbatim, so they say what to fix."""


class InvalidInput(ValueError):
    """The input cannot be processed (not a PNG, a bad number...)."""


class InvalidImage(InvalidInput):
    """Not a decodable PNG, or over the pixel limit."""


class InvalidNumber(InvalidInput):
    """A token in an even-sum file that is not an integer."""

    def __init__(self, offset: int, text: str):
        self.offset = offset
        self.text = text
        super().__init__(self.describe())

    def describe(self) -> str:
        return f"invalid number at byte {self.offset}: {self.text!r}"

    def __reduce__(self):
        # Rebuilt from its fields, as it crosses from a worker process to the client.
        return type(self), (self.offset, self.text)


class NumberTooLong(InvalidNumber):
    """A token in an even-sum file longer than the limit (compute.defaults.MAX_TOKEN_BYTES):
    ``text`` is its start."""

    def __init__(self, offset: int, text: str, limit: int):
        self.limit = limit
        super().__init__(offset, text)

    def describe(self) -> str:
        return f"the number at byte {self.offset} is longer than {self.limit} bytes: {self.text!r}"

    def __reduce__(self):
        return type(self), (self.offset, self.text, self.limit)


class Cancelled(Exception):
    """The caller of a run asked it to stop (a job cancelled by its client): its tasks are
    cancelled on the cluster, and there is no result."""
