"""Pages people look at, opened in a real browser (Debian's Chromium, headless) with no
way out to the internet: a job's performance report and /docs must draw from what the
API serves alone."""

import shutil

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from tests.waiting import wait_status, wait_until

CHROMIUM = shutil.which("chromium")
# Flags of a quiet, sandbox-less headless Chromium that does not phone home.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
# Counts the drawn (not blank) pixels of every canvas, shadow DOMs included (Bokeh's plots).
DRAWN_PIXELS = """() => {
  const counts = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) walk(el.shadowRoot);
      if (el.tagName !== 'CANVAS' || !el.width || !el.height) continue;
      const data = el.getContext('2d').getImageData(0, 0, el.width, el.height).data;
      let drawn = 0;
      for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3] > 0 && (data[i] < 250 || data[i + 1] < 250 || data[i + 2] < 250)) drawn++;
      }
      counts.push(drawn);
    }
  };
  walk(document);
  return counts;
}"""

pytestmark = [
    pytest.mark.slow,  # a browser process per test
    pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (make test installs it)"),
]


@pytest.fixture
def browser_page():
    """A page of a headless Chromium, and the list of every URL it requested."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        yield page, requested
        browser.close()


def assert_only_local(requested: list[str], base: str) -> None:
    outside = [url for url in requested if not url.startswith((base, "data:", "blob:", "about:"))]
    assert not outside, f"the page fetched from outside the API: {outside}"


def drawn_pixels(page: Page) -> list[int]:
    return page.evaluate(DRAWN_PIXELS)


@pytest.fixture
def settings(make_settings):
    """Every report with its profile: these jobs compute for milliseconds."""
    return make_settings(report_profile_min_s=0)


def test_a_report_draws_its_task_stream_and_profile_with_no_network(api_url, dispatcher, browser_page):
    page, requested = browser_page
    numbers = b"\n".join(b"%d" % i for i in range(30_000))  # ~170 KB: many 1 KiB blocks
    token = httpx.post(f"{api_url}/even-sum", content=numbers, headers={"Content-Type": "text/plain"}).json()["token"]
    wait_status(api_url, "even-sum", token)
    wait_until(lambda: "task_compute_s" in httpx.get(f"{api_url}/tasks/{token}").json(), what="the trace")

    page.goto(f"{api_url}/tasks/{token}/report")
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length && Object.keys(Bokeh.index).length")
    names = page.evaluate("() => ['task-stream', 'profile'].filter(n => Bokeh.documents[0].get_model_by_name(n))")
    assert names == ["task-stream", "profile"]
    wait_until(lambda: sum(count > 500 for count in drawn_pixels(page)) >= 2, what="both plots drawn")
    assert token in page.content()  # the title and timing record
    assert_only_local(requested, api_url)


def test_docs_draw_every_operation_with_no_network(api_url, browser_page):
    page, requested = browser_page
    operations = sum(len(methods) for methods in httpx.get(f"{api_url}/openapi.json").json()["paths"].values())
    page.goto(f"{api_url}/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    assert page.locator(".swagger-ui .opblock").count() == operations
    assert page.locator(".swagger-ui .info .title").inner_text().startswith("SpaceTime Analytics")
    assert page.locator(".swagger-ui .btn.authorize").count() == 1  # for keys mode
    assert_only_local(requested, api_url)
