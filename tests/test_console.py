"""The web console (/ui) in a real browser (Debian's Chromium, headless), against one
`spacetime up` in keys mode with two clients, alice and bob, and an operator.

Each test signs in through the page's own form, in a browser context of its own (its own
cookies), and every test checks that no request left the API's origin, that the key
never appeared in a URL, and that the pages it saw pass axe-core with no serious
violation.
"""

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from backend.api.direct_uploads import S3_MIN_PART_BYTES
from compute.defaults import MiB
from tests.moto_s3 import REGION, moto_server, new_bucket, s3_client
from tests.paths import FIXTURES, REPO
from tests.up import Up, read_banner, start_up, up_env
from tests.waiting import wait_status

CHROMIUM = shutil.which("chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
# axe-core impacts that fail a page.
SERIOUS = ("serious", "critical")
# The console's picture in the README, made by this test run.
SCREENSHOT = REPO / "docs" / "images" / "console.png"
# A job big enough to watch.
BIG_BYTES = 1024 * MiB

pytestmark = [
    pytest.mark.slow,  # a whole `spacetime up` and a browser
    pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (make test installs it)"),
]


@dataclass
class Console:
    up: Up
    keys: dict[str, str]  # client name -> API key

    @property
    def api(self) -> str:
        return self.up.api

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}

    inputs: Path  # files its jobs may name by URL


def add_client(up: Up, name: str, *flags: str) -> str:
    command = [sys.executable, "-m", "backend.run.cli", "clients", "add", name, *flags]
    done = subprocess.run(command, env=up.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return re.search(r"st_[A-Za-z0-9_-]+", done.stdout).group(0)


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    # One running bulk job per client: a second one waits in the queue, to be cancelled there.
    tmp_path = tmp_path_factory.mktemp("console")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    settings = {
        "SPACETIME_AUTH": "keys",
        "SPACETIME_DEFAULT_MAX_RUNNING_BULK": "1",
        # 256 blocks for a 1 GiB job: its progress moves in small steps.
        "SPACETIME_EVEN_SUM_BLOCK_BYTES": str(4 * MiB),
        "SPACETIME_ALLOWED_URL_PREFIXES": json.dumps([f"{inputs.as_uri()}/"]),
    }
    up = start_up(tmp_path, env=up_env(tmp_path, **settings))
    try:
        read_banner(up)
        keys = {name: add_client(up, name, *flags) for name, *flags in (("alice",), ("bob",), ("ops", "--admin"))}
        yield Console(up, keys, inputs)
    finally:
        up.process.terminate()
        up.process.wait(60)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@dataclass
class Visit:
    """A browser context of one client: its page, and every URL it requested."""

    context: BrowserContext
    page: Page
    requested: list[str]


@pytest.fixture
def visit(browser: Browser, console: Console):
    """Sign ``name`` in through the console's form; afterwards, check what its pages did."""
    visits: list[tuple[str, Visit]] = []

    def sign_in(name: str) -> Visit:
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(f"{console.api}/ui")
        assert_accessible(page)
        page.get_by_label("API key").fill(console.keys[name])
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#client-name")).to_have_text(name)
        visits.append((name, Visit(context, page, requested)))
        return visits[-1][1]

    yield sign_in
    for name, seen in visits:
        outside = [url for url in seen.requested if not url.startswith((console.api, "data:", "blob:"))]
        assert not outside, f"the console fetched from outside the API: {outside}"
        assert not any(console.keys[name] in url for url in seen.requested), "the key went into a URL"
        seen.context.close()
    assert not any(key in console.up.log_text() for key in console.keys.values()), "a key reached the logs"


def assert_accessible(page: Page) -> None:
    results = Axe().run(page)
    serious = [v for v in results.response["violations"] if v["impact"] in SERIOUS]
    assert not serious, results.generate_report()


def submit_png(console: Console, name: str) -> str:
    png = (FIXTURES / "cat.png").read_bytes()
    answer = httpx.post(f"{console.api}/randomize", content=png, headers=console.headers(name))
    assert answer.status_code == 201, answer.text
    return answer.json()["token"]


def submit_url(console: Console, name: str, path: Path) -> str:
    body = {"url": path.as_uri()}
    answer = httpx.post(f"{console.api}/even-sum", json=body, headers=console.headers(name))
    assert answer.status_code == 201, answer.text
    return answer.json()["token"]


# Records every value the progress bar of one job's row shows, rows redrawn included.
RECORD_PROGRESS = """token => {
  window.progressSeen = [];
  const record = (node) => {
    if (node.id === `job-${token}` && node.dataset.progress !== undefined) {
      const value = Number(node.dataset.progress);
      if (window.progressSeen.at(-1) !== value) window.progressSeen.push(value);
    }
  };
  new MutationObserver((changes) => {
    for (const change of changes) {
      record(change.target);
      for (const node of change.addedNodes) if (node.nodeType === 1) record(node);
    }
  }).observe(document.querySelector("#jobs tbody"), {subtree: true, childList: true, attributes: true});
}"""


def row(page: Page, token: str):
    return page.locator(f"#job-{token}")


def test_the_key_is_kept_in_a_strict_http_only_cookie(visit):
    alice = visit("alice")
    cookies = {cookie["name"]: cookie for cookie in alice.context.cookies()}
    for name in ("spacetime_session", "spacetime_csrf"):
        assert cookies[name]["httpOnly"] and cookies[name]["sameSite"] == "Strict"
    # A write sent with the cookie but without the page's CSRF token is refused.
    refused = alice.page.evaluate("fetch('/tasks/x', {method: 'DELETE'}).then(r => r.status)")
    assert refused == 403


def test_a_client_sees_only_its_own_jobs(console, visit):
    mine, theirs = submit_png(console, "alice"), submit_png(console, "bob")
    for name, token in (("alice", mine), ("bob", theirs)):
        wait_status(console.api, "randomize", token, headers=console.headers(name))
    alice = visit("alice")
    expect(row(alice.page, mine)).to_have_attribute("data-status", "finished")
    assert row(alice.page, theirs).count() == 0
    assert_accessible(alice.page)
    # Bob's token typed into the URL: the same 404 page as a token that never existed.
    answer = alice.page.goto(f"{console.api}/ui/jobs/{theirs}")
    assert answer.status == 404
    expect(alice.page.get_by_role("heading", level=1)).to_have_text("Not found")
    # Her own: timings in human units and local time, the result, the report.
    alice.page.goto(f"{console.api}/ui/jobs/{mine}")
    expect(alice.page.locator("#result img")).to_be_visible()
    assert alice.page.locator("#result img").evaluate("img => img.naturalWidth") > 0
    expect(alice.page.locator('[data-field="lead_s"]')).to_have_text(re.compile(r"^\d+(\.\d+)? (ms|s)$"))
    expect(alice.page.locator('[data-field="requested_at"]')).not_to_have_text(re.compile(r"^\d+\.\d+$"))
    expect(alice.page.locator("#report")).to_be_visible()
    assert_accessible(alice.page)


def test_progress_advances_live_and_a_queued_job_is_cancelled_from_the_page(console, visit):
    big = console.inputs / "big.txt"
    with open(big, "wb") as file:
        for _ in range(BIG_BYTES // (64 * MiB)):
            file.write(b"2 " * (32 * MiB))
    alice = visit("alice")
    page = alice.page
    # Bob's job shares the cluster with hers all along: hers lasts long enough to watch.
    bobs = submit_url(console, "bob", big)
    running, queued = submit_url(console, "alice", big), submit_url(console, "alice", big)
    page.goto(f"{console.api}/ui")
    page.evaluate(RECORD_PROGRESS, running)  # also a mark that goes if the page reloads
    # alice runs one bulk job at a time: the second waits in her queue, and ends at a click.
    page.get_by_role("button", name=f"Cancel job {queued[:12]}").click()
    expect(row(page, queued)).to_have_attribute("data-status", "errored")
    expect(row(page, queued).locator(".status")).to_contain_text("cancelled by the client")
    # The first one's bar moves as its blocks finish, then its row turns finished.
    expect(row(page, running)).to_have_attribute("data-status", "finished", timeout=60_000)
    seen = page.evaluate("window.progressSeen")
    assert len([value for value in seen if 0 < value < 1]) >= 2 and seen == sorted(seen) and seen[-1] == 1, seen
    wait_status(console.api, "even-sum", bobs, headers=console.headers("bob"), timeout_s=60)
    sum_ = httpx.get(f"{console.api}/even-sum/{running}/result", headers=console.headers("alice")).json()["sum"]
    assert sum_ == str(BIG_BYTES) or sum_ == BIG_BYTES


def test_uploads_from_the_page_finish_with_the_right_result(console, visit, tmp_path):
    alice = visit("alice")
    page = alice.page
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("1 2 3 4 5 6 -8 10000000000000000000000\n")
    submitted = []  # each job's row, found by the token the page said it got
    for path in (numbers, FIXTURES / "cat.png"):
        page.locator("#file").set_input_files(path)
        page.get_by_role("button", name="Upload and run").click()
        state = page.locator("#upload-state")
        expect(state).to_contain_text(f"Submitted {path.name} as job")
        prefix = re.search(r"as job (\w+)\.", state.inner_text()).group(1)
        submitted.append(page.locator(f'#jobs tbody tr[id^="job-{prefix}"]'))
    for job_row in submitted:
        expect(job_row).to_have_attribute("data-status", "finished", timeout=60_000)
    page.screenshot(path=str(SCREENSHOT))
    even_sum = submitted[0].get_attribute("id").removeprefix("job-")
    page.goto(f"{console.api}/ui/jobs/{even_sum}")
    expect(page.locator("#result-value")).to_contain_text(str(2 + 4 + 6 - 8 + 10**22))
    # Her quotas: what she uses of each, beside its limit.
    page.goto(f"{console.api}/ui")
    expect(page.locator('#quotas [data-quota="backlog_bytes"]')).to_be_visible()
    assert_accessible(page)


def test_the_operator_sees_every_clients_share_and_a_client_does_not(console, visit, tmp_path):
    numbers = console.inputs / "small.txt"
    numbers.write_text("2 4 6\n" * 100_000)
    for name in ("alice", "bob"):
        token = submit_url(console, name, numbers)
        wait_status(console.api, "even-sum", token, headers=console.headers(name), timeout_s=60)
    ops = visit("ops")
    ops.page.goto(f"{console.api}/ui/operator")
    bulk = ops.page.locator('[data-lane="bulk"]')
    for name in ("alice", "bob"):
        expect(bulk.get_by_role("row", name=re.compile(f"^{name} "))).to_be_visible()
    expect(ops.page.locator("#dispatchers tbody")).to_contain_text("yes")
    expect(ops.page.locator("#lead-chart svg rect").first).to_be_visible()
    expect(ops.page.get_by_role("link", name="the Dask dashboard")).to_have_attribute(
        "href", console.up.env["SPACETIME_DASHBOARD_URL"]
    )
    assert_accessible(ops.page)
    alice = visit("alice")
    assert alice.page.goto(f"{console.api}/ui/operator").status == 403
    assert httpx.get(f"{console.api}/overview", headers=console.headers("alice")).status_code == 403


def test_in_open_mode_a_new_user_submits_cat_png_and_watches_it_finish(browser, api_url, dispatcher):
    """`make run`'s first minute: no key, no sign-in; the browser is `anonymous`, as curl is."""
    context = browser.new_context()
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{api_url}/ui")
    expect(page.locator("#client-name")).to_have_text("anonymous")
    page.locator("#file").set_input_files(FIXTURES / "cat.png")
    page.get_by_role("button", name="Upload and run").click()
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    expect(page.locator("#jobs tbody tr")).to_have_attribute("data-status", "finished", timeout=60_000)
    # Another name is another client's list (open mode names are trusted, not proven).
    page.get_by_role("link", name="Switch client").click()
    page.get_by_label("Client name").fill("carol")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#client-name")).to_have_text("carol")
    expect(page.locator("#jobs-empty")).to_be_visible()
    assert all(url.startswith((api_url, "data:", "blob:")) for url in requested), requested
    context.close()


@pytest.fixture
def s3_system(make_settings, start_api, start_dispatcher, monkeypatch):
    """An API and a dispatcher whose uploads store is a bucket on a moto server, with the
    CORS rule of infra/spacetime_infra/storage.py (the browser PUTs parts there)."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with moto_server() as endpoint:
        bucket = new_bucket(endpoint)
        rule = {"AllowedMethods": ["PUT"], "AllowedOrigins": ["*"], "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"]}
        s3_client(endpoint).put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule]})
        settings = make_settings(
            uploads_url=f"s3://{bucket}/uploads",
            s3_endpoint_url=endpoint,
            direct_upload_part_bytes=S3_MIN_PART_BYTES,
            even_sum_block_bytes=4 * MiB,  # the tests' default blocks are tiny: thousands here
        )
        start_dispatcher(settings)
        yield start_api(settings), endpoint


def test_a_text_file_goes_from_the_page_straight_to_s3_where_offered(browser, s3_system, tmp_path):
    api_url, endpoint = s3_system
    numbers = tmp_path / "numbers.txt"
    numbers.write_bytes(b"2 " * (3 * S3_MIN_PART_BYTES // 4))  # two parts, the second short
    context = browser.new_context()
    page = context.new_page()
    requested: list[tuple[str, str]] = []
    page.on("request", lambda request: requested.append((request.method, request.url)))
    page.goto(f"{api_url}/ui")
    page.locator("#file").set_input_files(numbers)
    page.get_by_role("button", name="Upload and run").click()
    expect(page.locator("#upload-state")).to_contain_text("Submitted numbers.txt as job", timeout=30_000)
    token = page.locator("#jobs tbody tr").first.get_attribute("id").removeprefix("job-")
    expect(row(page, token)).to_have_attribute("data-status", "finished", timeout=60_000)
    assert httpx.get(f"{api_url}/even-sum/{token}/result").json()["sum"] == 2 * (3 * S3_MIN_PART_BYTES // 4)
    # The body never went through the API: two PUTs to S3, and nothing posted to /even-sum itself.
    assert [method for method, url in requested if url.startswith(endpoint)] == ["PUT", "PUT"]
    assert ("POST", f"{api_url}/even-sum?keep_input=false") not in requested
    assert all(url.startswith((api_url, endpoint)) for _, url in requested), requested
    context.close()


def test_signing_in_behind_a_tls_load_balancer_makes_secure_cookies_and_other_sites_cannot(api_url):
    """The ALB ends TLS: the page is https, the API sees http with X-Forwarded-Proto."""
    host = api_url.removeprefix("http://")
    behind = {"X-Forwarded-Proto": "https", "Origin": f"https://{host}"}
    answer = httpx.post(f"{api_url}/ui/session", json={"client": "carol"}, headers=behind)
    assert answer.status_code == 200 and answer.json() == {"client": "carol"}
    cookies = answer.headers.get_list("set-cookie")
    assert len(cookies) == 2 and all("Secure" in c and "HttpOnly" in c and "SameSite=strict" in c for c in cookies)
    elsewhere = httpx.post(f"{api_url}/ui/session", json={"client": "carol"}, headers={"Origin": "https://127.0.0.1:9"})
    assert elsewhere.status_code == 403 and "own page" in elsewhere.json()["error"]
    assert "set-cookie" not in elsewhere.headers
