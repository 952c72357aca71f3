"""Secrets out of what is shown: URLs with their password (or signature) masked, in
error messages and in every log line.

A Redis URL carries its password (``redis://:secret@host``, ``?password=``) and a
presigned S3 URL its signature; either one in a log line is a leaked credential, since
logs are read by more people and tools than Redis is. ``redact`` masks one URL where it
is formatted; ``RedactingFormatter`` masks any URL left in a log line or traceback.
"""

import logging
import re
from urllib.parse import parse_qsl, urlsplit

MASK = "***"
# Query parameters whose value is a credential (Redis' password, S3 presigning).
SECRET_PARAMETER = re.compile(r"password|secret|token|signature|credential|key", re.IGNORECASE)
# A URL inside free text: a scheme, "://", and everything up to a space or a quote, but
# not the punctuation that ends a sentence or a clause ("at redis://h:1/0: refused").
URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>.,:;)]")


def redact(url: str) -> str:
    """``url`` with the password of its user info and its secret query values masked;
    a URL with neither is returned as it is."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL we can read (e.g. a bad port): show none of it
        return MASK
    query = parse_qsl(parts.query, keep_blank_values=True)
    if password is None and not any(SECRET_PARAMETER.search(name) for name, _ in query):
        return url
    netloc = parts.netloc
    if password is not None:
        netloc = f"{parts.username or ''}:{MASK}@{netloc.rpartition('@')[2]}"
    shown = "&".join(f"{name}={MASK if SECRET_PARAMETER.search(name) else value}" for name, value in query)
    # Built by hand: urlunsplit drops the "//" of unix:///path.
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{shown}" if shown else "")


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted."""
    return URL_IN_TEXT.sub(lambda match: redact(match.group(0)), text)


class RedactingFormatter(logging.Formatter):
    """Wraps a handler's formatter: its lines, tracebacks included, with their URLs
    redacted, since a library's exception message can quote a URL we never formatted."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(self.inner.format(record))


def redact_logs(*loggers: str) -> None:
    """Redact every line of the handlers of the root logger and of ``loggers`` (those
    that do not propagate, e.g. uvicorn's), keeping each handler's format."""
    for name in ("", *loggers):
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler.formatter, RedactingFormatter):
                handler.setFormatter(RedactingFormatter(handler.formatter))
