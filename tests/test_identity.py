"""Identity by registration, not by name: a key belongs to one registration, and removing
and re-adding a name makes a new identity with no access to the old one's jobs and
pending uploads. Reserved names (`anonymous`, what records without a client read as)
cannot be registered."""

import os
import subprocess
import sys

import httpx
import pytest

from backend.jobs import keys
from backend.jobs.clients import ClientRegistry, key_hash
from compute.errors import InvalidInput
from tests.test_clients import bearer, keys_api  # noqa: F401  # the fixture, shared
from tests.test_direct_uploads import SMALL, complete, endpoint, put, s3_settings, start  # noqa: F401


def test_a_re_added_name_has_no_access_to_the_old_jobs(keys_api, cat_png):  # noqa: F811
    api, registry = keys_api
    old = registry.add("alice")
    token = httpx.post(f"{api}/randomize", content=cat_png, headers=bearer(old)).json()["token"]
    assert httpx.get(f"{api}/tasks/{token}", headers=bearer(old)).status_code == 200

    assert registry.remove("alice")
    new = registry.add("alice")
    assert httpx.get(f"{api}/tasks/{token}", headers=bearer(old)).status_code == 401
    for route in (f"/randomize/{token}/status", f"/randomize/{token}/result", f"/tasks/{token}"):
        response = httpx.get(f"{api}{route}", headers=bearer(new))
        assert (response.status_code, response.json()) == (404, {"message": "not found"}), route
    mine = httpx.post(f"{api}/randomize", content=cat_png, headers=bearer(new)).json()["token"]
    assert httpx.get(f"{api}/tasks/{mine}", headers=bearer(new)).json()["client"] == "alice"


def test_a_re_added_name_cannot_complete_the_old_pending_upload(s3_settings, start_api, redis):  # noqa: F811
    settings = s3_settings(auth="keys")
    api = start_api(settings)
    registry = ClientRegistry(redis, settings)
    old = bearer(registry.add("alice"))
    upload = start(api, len(SMALL), headers=old)
    etag = put(upload["parts"][0], SMALL)
    registry.remove("alice")
    new = bearer(registry.add("alice"))
    taken = complete(api, upload["upload_id"], {1: etag}, headers=new)
    assert taken.status_code == 404 and "no pending upload" in taken.json()["error"]


@pytest.mark.parametrize("name", ["anonymous", "unregistered"])
def test_reserved_names_cannot_be_registered(redis, settings, name):
    with pytest.raises(InvalidInput, match=f"{name!r} is reserved"):
        ClientRegistry(redis, settings).add(name)
    env = {**os.environ, "REDIS_URL": settings.redis_url}
    command = [sys.executable, "-m", "backend.run.cli", "clients", "add", name]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and f"{name!r} is reserved" in done.stderr and not done.stdout


def test_a_key_made_before_registration_ids_still_works_by_name(keys_api, redis, cat_png):  # noqa: F811
    api, registry = keys_api
    key = "st_" + "k" * 43
    redis.set(keys.api_key(key_hash(key)), "old")  # as `clients add` stored it before ids
    token = httpx.post(f"{api}/randomize", content=cat_png, headers=bearer(key)).json()["token"]
    assert httpx.get(f"{api}/tasks/{token}", headers=bearer(key)).json()["client"] == "old"
    other = registry.add("old-2")
    assert httpx.get(f"{api}/tasks/{token}", headers=bearer(other)).status_code == 404


def test_a_key_left_for_a_reserved_name_is_refused(keys_api, redis, cat_png):  # noqa: F811
    api, _ = keys_api
    key = "st_" + "a" * 43
    redis.set(keys.api_key(key_hash(key)), "anonymous")  # registered before the name was reserved
    assert httpx.post(f"{api}/randomize", content=cat_png, headers=bearer(key)).status_code == 401
