from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest

import kiln
from tests.docs.conftest import example_config
from tests.resource.live_server import serve_in_thread
from tests.services import in_ci

#: What the test runs, and the Debian package that installs it.
PARTS = {"chromium": "chromium", "chromedriver": "chromium-driver"}
PACKAGES = tuple(PARTS.values())
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _browser() -> tuple[str, str] | None:
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def missing_parts_reason() -> str:
    missing = [name for name in PARTS if shutil.which(name) is None]
    packages = " ".join(PARTS[name] for name in missing)
    verb = "is" if len(missing) == 1 else "are"
    return f"{' and '.join(missing)} {verb} not installed (apt-get install {packages})"


@pytest.fixture(scope="session")
def browser() -> tuple[str, str]:
    """Paths of Chromium and its driver; installed with apt-get under CI when missing."""
    found = _browser()
    if found is None and in_ci() and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *PACKAGES], env=env, check=False, timeout=1200
        )
        found = _browser()
    if found is None:
        reason = missing_parts_reason()
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    return found


def test_the_skip_reason_names_the_missing_driver(tmp_path, monkeypatch):
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert missing_parts_reason() == (
        "chromedriver is not installed (apt-get install chromium-driver)"
    )
    fake.unlink()
    assert missing_parts_reason() == (
        "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    )


@pytest.mark.slow
def test_the_docs_page_renders_the_resources_in_chromium_without_console_errors(
    browser, tmp_path, monkeypatch
):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    chromium, driver_path = browser
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        # Any request leaving the machine fails, and so shows as a console error.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "driver.log"))
    app = kiln.create_app(example_config(tmp_path), configure_logging=False)
    screenshot = tmp_path / "docs.png"
    with serve_in_thread(app) as url:
        driver = webdriver.Chrome(options=options, service=service)
        try:
            driver.set_page_load_timeout(30)
            driver.get(f"{url}/docs")
            WebDriverWait(driver, 30).until(
                lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock-tag")) >= 2
            )
            tags = [
                e.get_attribute("data-tag")
                for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-tag")
            ]
            title = driver.find_element(By.CSS_SELECTOR, ".info .title").text
            operations = len(driver.find_elements(By.CSS_SELECTOR, ".opblock"))
            console = driver.get_log("browser")
            assert driver.save_screenshot(str(screenshot))
        finally:
            driver.quit()
    errors = [entry for entry in console if entry["level"] == "SEVERE"]
    assert errors == []
    assert title.startswith("mushrooms")
    assert {"mushroom", "sighting", "batch"} <= set(tags)
    assert operations >= 15
    data = screenshot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1000
    assert height >= 800
    assert len(data) > 30_000  # a rendered page, not a blank one
