"""The web console's sign-in: who a browser is, kept in cookies, and what guards its writes.

A browser cannot be given an ``Authorization`` header to send with an ``<img>`` or an
``EventSource``, so the console keeps what a script would send in a cookie instead: the
API key in keys mode, the client name (``X-Client-Id``) in open mode. The cookie is
HttpOnly (no script, and so no injected script, reads it), SameSite=Strict (no other
site's page sends it) and Secure when the console is served over TLS. The key never
appears in a URL, so it never reaches an access log either.

Writes sent with the cookie (cancel, re-run, submit) must also carry the page's CSRF token
in ``X-CSRF-Token``, equal to a second cookie set at sign-in (the double-submit pattern):
another site can make a browser send cookies in some cases SameSite does not cover (an
old browser, a sibling subdomain), but it can never read the token to send it back.
Signing in is checked by its ``Origin`` instead, so no other site can sign a browser in
as someone else (login CSRF).
"""

import secrets
from typing import NamedTuple
from urllib.parse import urlsplit

from fastapi import Request, Response

from backend.core.exceptions import Forbidden

# The cookie holding the caller's credential, and the one holding its CSRF token.
CREDENTIAL_COOKIE = "spacetime_session"
CSRF_COOKIE = "spacetime_csrf"
CSRF_HEADER = "X-CSRF-Token"
# A sign-in lasts a working day; the browser forgets it then, or at sign-out.
SESSION_S = 12 * 3600
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class Credential(NamedTuple):
    """What a signed-in browser sends in place of headers: one of the two is set."""

    authorization: str | None  # "Bearer <key>" (keys mode)
    client_id: str | None  # the X-Client-Id (open mode)


def signed_in(request: Request, mode: str) -> Credential | None:
    """The credential of the browser's cookie, if it has one; a write must carry its CSRF token."""
    value = request.cookies.get(CREDENTIAL_COOKIE)
    if not value:
        return None
    if request.method not in SAFE_METHODS:
        check_csrf(request)
    return credential(value, mode)


def credential(value: str, mode: str) -> Credential:
    """What the cookie's ``value`` stands for: an API key in keys mode, a name in open mode."""
    return Credential(f"Bearer {value}", None) if mode == "keys" else Credential(None, value)


def check_csrf(request: Request) -> None:
    expected = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get(CSRF_HEADER, "")
    if not expected or not secrets.compare_digest(expected.encode(), sent.encode()):
        raise Forbidden(f"a write from the console must carry its {CSRF_HEADER}; reload the page")


def check_same_origin(request: Request) -> None:
    """A sign-in must come from the console's own page: a browser names the page's origin
    in ``Origin`` on every POST (a script like curl sends none, and needs no cookie)."""
    origin = request.headers.get("origin")
    # The host alone: behind a load balancer that ends TLS the page is https and we are http.
    if origin is not None and urlsplit(origin).netloc != request.url.netloc:
        raise Forbidden("sign in from the console's own page")


def csrf_token(request: Request) -> str:
    """The page's CSRF token, for its ``<meta>``; empty before sign-in."""
    return request.cookies.get(CSRF_COOKIE, "")


def start(response: Response, request: Request, credential: str) -> None:
    """Sign the browser in: the credential and a fresh CSRF token, both in cookies."""
    # Behind a load balancer that ends TLS, its X-Forwarded-Proto says what the browser used.
    # Trusting it is safe here: a wrong "https" only keeps the cookie off plain HTTP.
    secure = "https" in (request.url.scheme, request.headers.get("x-forwarded-proto"))
    for name, value in ((CREDENTIAL_COOKIE, credential), (CSRF_COOKIE, secrets.token_urlsafe(32))):
        response.set_cookie(name, value, max_age=SESSION_S, httponly=True, samesite="strict", secure=secure)


def end(response: Response) -> None:
    for name in (CREDENTIAL_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, httponly=True, samesite="strict")
