"""The HTML leaderboard in headless Chromium: sorting, filtering, escaping, no console errors.

Skipped (with the reason) when /usr/bin/chromium or Playwright is missing; ``make test``
installs Chromium through ``make system-deps`` so that CI runs it. The screenshot is saved
in pytest's tmp dir and copied to ``artifacts/`` (git-ignored) for CI to upload.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from _records import full_run
from robustbench_pp import results
from robustbench_pp.names import CORRUPTIONS

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
XSS = "<script>alert(1)</script>"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium not installed at /usr/bin/chromium "
                       "(apt-get install chromium, or `make system-deps` as root)"),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from robustbench_pp.report import load_reported, render_report, write_report

    tables = []
    for model, scale, clean in (("alexnet_cifar", 0.3, 0.2), ("resnet18", 0.12, 0.08), (XSS, 0.1, 0.09)):
        error_of = lambda c, s, k=scale, e=clean: min(0.95, e + k * s * (1 + CORRUPTIONS.index(c) % 3) / 10)
        tables.append(results.run_table(full_run(error_of=error_of, clean_error=clean, model=model)))
    reported = load_reported(Path(__file__).resolve().parents[1] / "results" / "reported" / "pushpull-net-imagenet.json")
    _, files = render_report(tables, {"fashion-mnist-c": results.reference_from_run(tables[0])}, "resnet18", reported)
    out = tmp_path_factory.mktemp("browser") / "reports"
    return write_report(files, out)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def _column(page, index: int) -> list[str]:
    return page.eval_on_selector_all(
        "#leaderboard tbody tr:not([hidden])", f"rows => rows.map(r => r.cells[{index}].getAttribute('data-value') ?? r.cells[{index}].textContent.trim())"
    )


def test_leaderboard_sorts_filters_and_escapes(site, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    problems, dialogs = [], []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(site.as_uri())

    headers = page.locator("#leaderboard thead th")
    names = [text.strip().rstrip(" ↕▲▼") for text in headers.all_inner_texts()]
    error_column = next(i for i, name in enumerate(names) if name.startswith("unnorm"))
    headers.nth(error_column).click()
    assert headers.nth(error_column).get_attribute("aria-sort") == "ascending"
    values = [float(v) for v in _column(page, error_column)]
    assert values == sorted(values) and len(values) == 3 + 9
    headers.nth(error_column).click()
    assert headers.nth(error_column).get_attribute("aria-sort") == "descending"
    values = [float(v) for v in _column(page, error_column)]
    assert values == sorted(values, reverse=True)

    mce_column = names.index("mCE")  # reported rows have no normalised mCE: empty cells sort last both ways
    headers.nth(mce_column).click()
    mce = _column(page, mce_column)
    assert mce[3:] == [""] * 9 and [float(v) for v in mce[:3]] == sorted(float(v) for v in mce[:3])

    page.select_option("#dataset-filter", "imagenet-c")
    datasets = page.eval_on_selector_all("#leaderboard tbody tr:not([hidden])", "rows => rows.map(r => r.cells[1].textContent)")
    assert datasets == ["imagenet-c"] * 9

    page.select_option("#dataset-filter", "")
    labels = page.eval_on_selector_all("#leaderboard tbody tr", "rows => rows.map(r => r.cells[0].textContent.trim())")
    assert XSS in labels  # shown as text, not run as a script
    page.screenshot(path=str(tmp_path / "leaderboard.png"), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(tmp_path / "leaderboard.png", ARTIFACTS / "leaderboard.png")

    page.get_by_role("link", name=XSS).click()  # the model page of the hostile name
    page.wait_for_load_state("load")
    assert page.locator("h1").inner_text().startswith(XSS)
    assert page.eval_on_selector_all("img", "images => images.every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(tmp_path / "model.png"), full_page=True)
    shutil.copy(tmp_path / "model.png", ARTIFACTS / "model.png")
    assert dialogs == [] and problems == []
    page.close()
