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
        super().__init__(f"invalid number at byte {offset}: {text!r}")


class Cancelled(Exception):
    """The caller of a run asked it to stop (a job cancelled by its client): its tasks are
    cancelled on the cluster, and there is no result."""
