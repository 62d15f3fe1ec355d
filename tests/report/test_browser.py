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
    "--window-size=1280,900",
]
# The page's horizontal extent, and every element that reaches past the window other than
# inside a box that scrolls (or clips) on its own.
OVERFLOW_JS = """
const width = window.innerWidth;
const boxed = e => {
  for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
    if (["auto", "scroll", "hidden"].includes(getComputedStyle(a).overflowX)) return true;
  }
  return false;
};
const past = Array.from(document.body.querySelectorAll("*"))
  .filter(e => !boxed(e) && e.getBoundingClientRect().right > width + 0.5)
  .map(e => `${e.tagName}.${e.className} right=${Math.round(e.getBoundingClientRect().right)}`);
const scrolls = Array.from(document.querySelectorAll(".scroll"))
  .map(e => [e.scrollWidth, e.clientWidth]);
return [document.documentElement.scrollWidth, width, past, scrolls];
"""


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


def open_report(browser, run_dir, tmp_path, width=1280):
    """Write the report of a copy of ``run_dir``, open it, and check every image loaded."""
    path = report(shutil.copytree(run_dir, tmp_path / "run"))
    browser.set_window_size(width, 900)
    browser.get(path.as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])"
    )
    broken = [alt for complete, natural, alt in images if not (complete and natural > 0)]
    assert broken == []
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    return images


def test_the_search_report_loads_completely_in_chromium(browser, search_run, tmp_path):
    images = open_report(browser, search_run, tmp_path)
    assert len(images) >= 10
    run_dir = tmp_path / "run"
    saved = load_search(run_dir)
    text = browser.find_element("id", "headline").text
    assert f"{saved.rows[0].score:.4f}" in text
    assert f"{saved.refit.metrics.accuracy:.4f}" in text
    page, window, past, _ = browser.execute_script(OVERFLOW_JS)
    assert past == [] and page <= window
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1280, min(height + 50, 16000))
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


@pytest.mark.parametrize("width", [1280, 800])
def test_a_wide_results_table_scrolls_inside_the_page(browser, wide_search, tmp_path, width):
    images = open_report(browser, wide_search, tmp_path, width)
    assert any(alt.startswith("parameter importance") for _, _, alt in images)
    page, window, past, scrolls = browser.execute_script(OVERFLOW_JS)
    assert past == []
    assert page <= window
    [(table, box)] = scrolls
    assert table > box  # the table is wider than the page, and scrolls in its own box
    assert box <= window


def test_a_killed_search_report_opens_in_chromium(browser, killed_search, tmp_path):
    open_report(browser, killed_search, tmp_path)
    assert "running" in browser.find_element("id", "headline").text
    assert "Not shown" in browser.find_element("id", "missing").text
    page, window, past, _ = browser.execute_script(OVERFLOW_JS)
    assert past == [] and page <= window


def test_a_colour_report_of_non_square_images_fits_the_page(browser, rgb_run, tmp_path):
    images = open_report(browser, rgb_run, tmp_path)
    assert any(alt.startswith("test images per class (28x36 RGB") for _, _, alt in images)
    page, window, past, _ = browser.execute_script(OVERFLOW_JS)
    assert past == [] and page <= window
