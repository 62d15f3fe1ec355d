"""The report in a real headless Chromium: every image loads, no console errors, numbers shown."""

import shutil

import pytest

from deepnet.report import report
from deepnet.tune import load_search

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="Debian chromium and chromium-driver are not installed (make test installs them)",
)
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,900",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_the_search_report_loads_completely_in_chromium(browser, search_run, tmp_path):
    run_dir = shutil.copytree(search_run, tmp_path / "run")
    path = report(run_dir)
    browser.get(path.as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])"
    )
    assert len(images) >= 10
    broken = [alt for complete, width, alt in images if not (complete and width > 0)]
    assert broken == []
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    saved = load_search(run_dir)
    text = browser.find_element("id", "headline").text
    assert f"{saved.rows[0].score:.4f}" in text
    assert f"{saved.refit.metrics.accuracy:.4f}" in text
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1200, min(height + 50, 16000))
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
