"""`kubectl mlrollout dashboard` in a real browser (Debian's headless Chromium, driven by Selenium) against
the real API server and the real operator: the list shows the rollout, the detail page plots the looks the
operator recorded, a button (after its confirmation) writes the command annotation and the page follows
the operator's answer live, and a user without RBAC sees a refusal. Screenshots of both pages are saved
under the test's artefacts directory (MLROLLOUT_DASHBOARD_SCREENSHOTS=DIR also copies them there).
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import shutil
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from tests.cluster.operator_support import write_recorded
from tests.cluster.test_kubectl_plugin import Plugin, _viewer_kubeconfig, command_annotation

# `env` (the operator under the chart's ServiceAccount) is the operator tests' fixture, imported to be used here
from tests.cluster.test_operator import CANARY_STEPS, Env, env, md_manifest, steps_policy, unique  # noqa: F401

pytestmark = pytest.mark.cluster

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1800"]  # fmt: skip
WAIT = 60.0


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium from Debian (scripts/system-deps installs it) with a fresh profile."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "chromium and chromium-driver are missing: run `make deps`"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    chrome.set_page_load_timeout(WAIT)
    yield chrome
    chrome.quit()


@pytest.fixture
def artefacts(tmp_path: Path) -> Path:
    path = tmp_path / "artefacts"
    path.mkdir()
    return path


class Dashboard:
    """`kubectl mlrollout dashboard --port 0` as a user runs it; the URL is the one it prints."""

    def __init__(self, plugin: Plugin, *args: str) -> None:
        self.proc = plugin.start("dashboard", "--port", "0", *args)
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        stdout = self.proc.stdout

        def pump() -> None:
            for x in stdout:
                lines.put(x)

        threading.Thread(target=pump, daemon=True).start()
        try:
            first = lines.get(timeout=WAIT)
        except queue.Empty:
            self.stop()
            raise AssertionError("the dashboard printed no URL") from None
        assert first.startswith("mlrollout dashboard on http://127.0.0.1:"), first
        self.url = first.split()[3].rstrip("/")

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
        return str(err)


@pytest.fixture
def dashboards() -> Iterator[list[Dashboard]]:
    started: list[Dashboard] = []
    yield started
    for d in started:
        d.stop()


def wait_text(browser: WebDriver, css: str, text: str, timeout: float = WAIT) -> str:
    """The text of the element once it contains `text` (the page changes under a live stream)."""

    def found(b: WebDriver) -> str | bool:
        try:
            shown = str(b.find_element(By.CSS_SELECTOR, css).text)
        except WebDriverException:
            return False
        return shown if text in shown else False

    try:
        return str(WebDriverWait(browser, timeout).until(found))
    except Exception:
        page = browser.find_element(By.TAG_NAME, "body").text[:2000]
        raise AssertionError(f"{css!r} never showed {text!r}; page: {page}") from None


def click(browser: WebDriver, css: str) -> None:
    """Click an element of a live page: an update may replace it between finding and clicking it."""
    for _ in range(20):
        try:
            browser.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{css!r} kept being replaced")


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """A raw request, as another program (or another site's page) could send it."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=WAIT)
    try:
        conn.request("POST", "/command", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def judgement(look: int) -> dict[str, Any]:
    """A recorded judgement whose evidence grows look by look (the operator's looks read it)."""
    return {
        "verdict": "continue", "reason": f"not enough requests yet (look {look})",
        "samples": {"stable": 400 + 40 * look, "candidate": 10 + 5 * look},
        "metrics": [
            {"name": "errorRate", "decision": "inconclusive", "test": "recorded",
             "estimate": {"stable": 0.010, "candidate": 0.010 + 0.001 * (look % 3)},
             "effect": 0.001 * (look % 3), "interval": [-0.02 / (1 + look), 0.02 / (1 + look)],
             "eValue": 1.3**look, "threshold": 0.01, "reason": "recorded"},
            {"name": "latencyP99", "decision": "inconclusive", "test": "recorded",
             "estimate": {"stable": 0.080, "candidate": 0.082 + 0.001 * look},
             "effect": 0.002 + 0.001 * look, "interval": [-0.03 / (1 + look), 0.03 / (1 + look) + 0.004],
             "eValue": 0.9 + 0.1 * look, "threshold": 0.02, "reason": "recorded"},
        ],
    }  # fmt: skip


def test_dashboard_in_a_real_browser(
    request: pytest.FixtureRequest, browser: WebDriver, artefacts: Path, dashboards: list[Dashboard], tmp_path: Path
) -> None:
    world: Env = request.getfixturevalue("env")
    ns = world.namespace
    policy = world.policy(steps_policy(unique("dash"), CANARY_STEPS))
    world.healthy_v1("wine", policy)
    write_recorded(world.verdicts, ns, "wine", judgement(0))
    world.apply(md_manifest("wine", "2", policy))
    world.step("wine", 0)
    for look in range(1, 12):  # one look a second (the policy's interval): each reads the next judgement
        world.wait_status("wine", f"look {look - 1}", lambda s, n=look - 1: f"(look {n})" in
                          ((s.get("lastAnalysis") or {}).get("reason") or ""))  # fmt: skip
        write_recorded(world.verdicts, ns, "wine", judgement(look))

    plugin = Plugin(world.kubectl)
    admin = Dashboard(plugin)
    dashboards.append(admin)

    # the list: the rollout, live
    browser.get(admin.url + "/")
    row = wait_text(browser, f"tr[id='{ns}/wine']", "Progressing")
    assert "1 (shadow)" in row and "continue" in row, row
    wait_text(browser, "#live", "live")
    browser.save_screenshot(str(artefacts / "dashboard-list.png"))

    # the detail page: steps, plots over the looks, history, the buttons
    browser.get(f"{admin.url}/md/{ns}/wine")
    wait_text(browser, "#live", "live")
    main = wait_text(browser, "#main", "Evidence over the looks")
    assert "errorRate: e-value (log scale)" in main and "latencyP99: estimate per track" in main, main
    assert len(browser.find_elements(By.CSS_SELECTOR, "figure.plot svg polyline")) >= 6
    browser.execute_script("window.notReloaded = true;")
    browser.save_screenshot(str(artefacts / "dashboard-detail.png"))

    # a button, its confirmation, the annotation, and the operator's answer arriving live on the same page
    click(browser, "button.command[data-verb='pause']")
    assert browser.find_element(By.ID, "confirm").get_attribute("open") is not None
    assert f"{ns}/wine" in browser.find_element(By.ID, "confirm-text").text
    browser.find_element(By.ID, "confirm-ok").click()
    wait_text(browser, "#command-result", "pause requested")
    command = command_annotation(world.kubectl, ns)
    assert command is not None and command["verb"] == "pause", command
    wait_text(browser, "#main", "pause accepted")
    wait_text(browser, "#main", "Paused")
    assert browser.execute_script("return window.notReloaded === true;")  # updated live, not reloaded

    # the list follows the change too (its own watch)
    browser.get(admin.url + "/")
    wait_text(browser, f"tr[id='{ns}/wine']", "Paused")
    world.command("wine", "resume")  # a change made elsewhere appears without a reload
    wait_text(browser, f"tr[id='{ns}/wine']", "Progressing")

    # requests that did not come from the dashboard's own pages change nothing
    token = browser.find_element(By.CSS_SELECTOR, "meta[name='mlrollout-token']").get_attribute("content") or ""
    abort = json.dumps({"namespace": ns, "name": "wine", "verb": "abort"}).encode()
    host = urllib.parse.urlsplit(admin.url).netloc
    cases = [
        ({"Host": host}, abort, 403, "X-Mlrollout-Token"),  # a cross-site form or script has no token
        ({"Host": "evil.example:80", "X-Mlrollout-Token": token}, abort, 421, "unknown Host"),  # DNS rebinding
        ({"Host": host, "X-Mlrollout-Token": token}, b"{not json", 400, "not JSON"),
        ({"Host": host, "X-Mlrollout-Token": token}, b" " * 5000, 413, "over 4096 bytes"),
        ({"Host": host, "X-Mlrollout-Token": token, "Content-Length": "-1"}, abort, 400, "Content-Length"),
        ({"Host": host, "X-Mlrollout-Token": token}, b'{"namespace": "x", "name": "y", "verb": "rm"}', 400, "verb"),
    ]
    before = command_annotation(world.kubectl, ns)
    for headers, body, status, said in cases:
        got, text = post(admin.url, body, headers)
        assert (got, said in text) == (status, True), (headers, got, text)
    assert command_annotation(world.kubectl, ns) == before

    # a user who may read this namespace only: refused elsewhere, and refused to command
    viewer = Dashboard(Plugin(world.kubectl, _viewer_kubeconfig(world.kubectl, ns, tmp_path / "viewer.kubeconfig")))
    dashboards.append(viewer)
    browser.get(viewer.url + "/")
    refused = wait_text(browser, ".refusal", "Not allowed")
    assert "forbidden" in refused and "list modeldeployments in all namespaces" in refused, refused
    browser.get(f"{viewer.url}/md/kube-system/wine")
    refused = wait_text(browser, ".refusal", "forbidden")
    assert "Not allowed: read modeldeployment kube-system/wine" in refused, refused
    assert "Traceback" not in browser.page_source
    browser.get(f"{viewer.url}/md/{ns}/wine")
    wait_text(browser, "#live", "live")
    before = command_annotation(world.kubectl, ns)
    click(browser, "button.command[data-verb='abort']")
    browser.find_element(By.ID, "confirm-ok").click()
    wait_text(browser, "#command-result", "forbidden")
    assert command_annotation(world.kubectl, ns) == before
    err = viewer.stop()
    assert "Traceback" not in err, err
    # with -n the same user gets the list of the namespace it may read
    scoped = Dashboard(Plugin(world.kubectl, tmp_path / "viewer.kubeconfig"), "-n", ns)
    dashboards.append(scoped)
    browser.get(scoped.url + "/")
    wait_text(browser, f"tr[id='{ns}/wine']", "wine")
    assert f"namespace {ns}" in browser.find_element(By.TAG_NAME, "h1").text

    copy_to = os.environ.get("MLROLLOUT_DASHBOARD_SCREENSHOTS")
    if copy_to:
        for png in artefacts.glob("*.png"):
            shutil.copy(png, Path(copy_to) / png.name)
    assert sorted(p.name for p in artefacts.glob("*.png")) == ["dashboard-detail.png", "dashboard-list.png"]
