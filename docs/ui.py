"""What a user sees in the Prefect UI, read in headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium), with a screenshot of each page.

The UI checks (tests/integration/test_loop.py) and the README's pictures (`python -m
docs.screenshots`) go through these functions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def browser(width: int = 1400, height: int = 1000) -> Iterator[WebDriver]:
    """Headless Chromium; always quit (its processes stopped) on the way out."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def open_page(
    driver: WebDriver, url: str, expect: list[str], shot: Path | None, timeout: float = 60
) -> str:
    """Load `url`, wait until the page shows every text in `expect`, save a screenshot of the
    whole page; the page's text."""
    driver.set_window_size(driver.get_window_size()["width"], 1000)
    driver.get(url)
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = driver.find_element(By.TAG_NAME, "body").text
        if all(e in text for e in expect):
            break
        time.sleep(0.5)
    else:
        missing = [e for e in expect if e not in text]
        raise AssertionError(f"{url}: {missing} not shown after {timeout:.0f}s; page:\n{text}")
    time.sleep(1.0)  # let images and charts settle
    if shot is not None:
        full(driver, shot)
    return text


def full(driver: WebDriver, shot: Path, max_height: int = 2400) -> None:
    """A screenshot as tall as the page's content (up to `max_height` px)."""
    height = driver.execute_script(
        "return Math.max(...Array.from(document.querySelectorAll('*'), e => e.scrollHeight))"
    )
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, min(max(int(height) + 120, 800), max_height))
    time.sleep(0.5)
    shot.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(shot))


def shot_from(driver: WebDriver, heading: str, shot: Path, height: int = 1300) -> None:
    """A screenshot of the page from the heading that reads `heading` down."""
    driver.set_window_size(driver.get_window_size()["width"], height)
    found = driver.execute_script(
        "const h = Array.from(document.querySelectorAll('h1,h2,h3'))"
        ".find(e => e.textContent.trim() === arguments[0]);"
        "if (h) { h.scrollIntoView({block: 'start'}); } return !!h;",
        heading,
    )
    if not found:
        raise AssertionError(f"no heading {heading!r} on {driver.current_url}")
    time.sleep(1.0)
    shot.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(shot))


@dataclass
class ArtifactView:
    text: str
    images: list[dict[str, Any]] = field(default_factory=list)  # src kind and natural size
    tables: int = 0
    links: list[str] = field(default_factory=list)


def artifact_page(
    driver: WebDriver, ui: str, artifact_id: str, expect: list[str], shot: Path | None
) -> ArtifactView:
    """An artifact's page: its images as the browser decoded them, its tables and links."""
    text = open_page(driver, f"{ui}/artifacts/artifact/{artifact_id}", expect, shot)
    images = driver.execute_script(
        "return Array.from(document.querySelectorAll('main img, .artifact img, img'), i => "
        "({src: i.src.slice(0, 30), width: i.naturalWidth, height: i.naturalHeight, "
        "complete: i.complete}))"
    )
    tables = driver.execute_script("return document.querySelectorAll('table').length")
    links = driver.execute_script("return Array.from(document.querySelectorAll('a'), a => a.href)")
    return ArtifactView(text=text, images=list(images), tables=int(tables), links=list(links))


def run_form(driver: WebDriver, ui: str, deployment_id: str, shot: Path | None) -> dict[str, Any]:
    """A deployment's Run form: its field labels, their descriptions and its drop-downs."""
    text = open_page(
        driver, f"{ui}/deployments/deployment/{deployment_id}/run", ["Parameters", "Submit"], shot
    )
    selects = driver.execute_script(
        "return Array.from(document.querySelectorAll('select'), s => "
        "Array.from(s.options, o => o.text))"
    )
    return {"text": text, "selects": [list(s) for s in selects]}


def api_json(api: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """GET (or POST `body` to) the Prefect API."""
    url = f"{api}/{path.lstrip('/')}"
    answer = httpx.post(url, json=body, timeout=10) if body is not None else httpx.get(url)
    answer.raise_for_status()
    return answer.json()


def run_artifacts(api: str, flow_run_id: str) -> list[dict[str, Any]]:
    """The artifacts a flow run made (its tasks' included), oldest first."""
    body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "CREATED_DESC"}
    return list(reversed(api_json(api, "artifacts/filter", body)))
