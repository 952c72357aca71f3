"""Who a request comes from (settings.auth).

- ``open`` (the local default): the ``X-Client-Id`` header names the client, trusted as
  sent; no header is the client ``anonymous``. For one person's machine, where the
  seed's plain curl flow must work unchanged. Names are not proven, so jobs are not
  hidden between clients: a job's token is what lets one see it.
- ``keys`` (docker-compose, AWS): ``Authorization: Bearer <key>`` is required, and the
  client is whoever holds the key (``spacetime clients add``). ``X-Client-Id`` is ignored,
  so a client can neither pose as another nor split itself into many names, and another
  client's token is a 404 on every route.

Either way the names are checked (backend.jobs.clients.NAME) before they reach a Redis key,
a log line or a metric label.
"""

from dataclasses import replace

from backend.api.session import Credential
from backend.core.exceptions import NotAuthenticated
from backend.jobs.clients import ANONYMOUS, ClientRegistry, ClientSettings, check_name


def identify(registry: ClientRegistry, mode: str, authorization: str | None, client_id: str | None) -> ClientSettings:
    """The client a request comes from, with the settings that apply to it."""
    if mode == "keys":
        name, client_id = _key_holder(registry, authorization)
        # The key's registration, not the name's current one: a key is one identity.
        return replace(registry.get(name), authenticated=True, client_id=client_id)
    return registry.get(check_name(client_id) if client_id else ANONYMOUS)


def holder_of(credential: Credential, mode: str) -> str | None:
    """What names the caller in ``mode``, as sent (not checked): the API key, or the name.
    Only that part: a header that ``identify`` ignores must not make another caller."""
    if mode == "keys":
        return (credential.authorization or "").partition(" ")[2].strip() or None
    return credential.client_id


def _key_holder(registry: ClientRegistry, authorization: str | None) -> tuple[str, str | None]:
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise NotAuthenticated("send your API key as `Authorization: Bearer <key>`")
    holder = registry.authenticate(key.strip())
    if holder is None:
        raise NotAuthenticated("unknown API key")
    return holder
