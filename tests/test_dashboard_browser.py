"""The dashboard in a real browser: headless Chromium loads it without console errors,
its tables sort, its figures decode; a screenshot lands in the test's temporary folder.

Chromium and its driver are the Debian packages ``chromium`` and ``chromium-driver``; the
session fixture installs them when missing (as root, with apt-get). Outside CI a failed
installation skips with the reason; under ``CI=true`` it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fear_mlflow.cli import main
from tests.report_fixtures import (  # noqa: F401  (fixtures)
    EXPERIMENT,
    SWEEP_EXPERIMENT,
    ReportStore,
    report_store_fixture,
    report_template_fixture,
)

PACKAGES = ("chromium", "chromium-driver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
INSTALL_TIMEOUT_S = 1200


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and headless Chromium is unavailable: {reason}")
    pytest.skip(reason)


def _binaries() -> tuple[str | None, str | None]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    return browser, shutil.which("chromedriver")


def _install() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        unavailable(f"{' and '.join(PACKAGES)} are missing and cannot be installed (not root/apt)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", *PACKAGES]):
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            unavailable(f"`{' '.join(command)}` took over {INSTALL_TIMEOUT_S} s")
        if done.returncode != 0:
            unavailable(f"`{' '.join(command)}` failed: {done.stderr.strip()[-600:]}")


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Paths of the Chromium browser and its driver, installed when missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        unavailable("selenium is not installed (pip install selenium)")
    browser, driver = _binaries()
    if not (browser and driver):
        _install()
        browser, driver = _binaries()
    if not (browser and driver):
        unavailable(f"installed {' '.join(PACKAGES)} but found no chromium/chromedriver")
    return browser, driver  # type: ignore[return-value]


@pytest.fixture()
def browser(chromium: tuple[str, str], tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium
    options = Options()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except Exception as exc:  # a browser that will not start is an environment problem
        unavailable(f"headless Chromium did not start: {str(exc).splitlines()[0]}")
    try:
        yield driver
    finally:
        driver.quit()


def test_dashboard_in_headless_chromium(
    report_store: ReportStore, browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    page = tmp_path / "dashboard.html"
    main(
        ["dashboard", "--experiment", EXPERIMENT, "--experiment", SWEEP_EXPERIMENT]
        + ["--storage", report_store.optuna_url, "--out", str(page), "--no-log"]
        + ["--resamples", "100"]
    )
    driver = browser
    driver.get(page.as_uri())  # type: ignore[attr-defined]

    errors = [
        entry
        for entry in driver.get_log("browser")  # type: ignore[attr-defined]
        if entry["level"] in ("SEVERE", "ERROR")
    ]
    assert errors == []

    tables = {
        t.get_attribute("id") for t in driver.find_elements(By.CSS_SELECTOR, "table.sortable")
    }  # type: ignore[attr-defined]
    assert {"sweeps", "shards", "ranking-1", "study-1"} <= tables
    images = driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);"
    )
    assert len(images) == 5
    assert all(complete and width > 300 for _, complete, width in images), images

    # Clicking "Spearman ρ" sorts the ranking table by it, ascending then descending.
    ranking = driver.find_element(By.ID, "ranking-1")  # type: ignore[attr-defined]
    header = next(
        th for th in ranking.find_elements(By.TAG_NAME, "th") if th.text.startswith("Spearman")
    )
    column = [th.text for th in ranking.find_elements(By.TAG_NAME, "th")].index(header.text)

    def values() -> list[float]:
        cells = [
            row.find_elements(By.TAG_NAME, "td")[column].get_attribute("data-sort")
            for row in ranking.find_elements(By.CSS_SELECTOR, "tbody tr")
        ]
        return [float(c) for c in cells if c]

    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    assert values() == sorted(values()) and len(values()) >= 5
    header.click()
    assert values() == sorted(values(), reverse=True)

    shot = tmp_path / "dashboard.png"
    assert driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.stat().st_size > 10_000
    assert driver.get_log("browser") == []  # type: ignore[attr-defined]  # nothing new after clicks
