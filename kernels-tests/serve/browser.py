#!/usr/bin/env python3
"""Drive the `wgmoe serve` chat page (GET /) in headless Chromium.

usage: browser.py BASE_URL SCREENSHOT_PATH
  BASE_URL         e.g. http://127.0.0.1:8080
  SCREENSHOT_PATH  PNG written after the reply
env: WGMOE_API_KEY        typed into the page's API key field when set
     WGMOE_BROWSER_TIMEOUT seconds to wait for the reply (default 240)

Needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)
and selenium (scripts/python_test_deps.sh). Asks "What is the capital of France?",
waits until the stats line shows tok/s, checks the assistant reply is non-empty,
saves a screenshot and prints the answer. Exits 0 on success, 1 with a message otherwise.
"""
import os
import shutil
import sys
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
QUESTION = "What is the capital of France?"


def fail(msg, driver=None, shot=None):
    print(f"browser.py: FAIL: {msg}", file=sys.stderr)
    if driver is not None:
        try:
            stats = driver.find_element(By.ID, "stats").text
            msgs = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".msg")]
            print(f"  stats: {stats!r}\n  messages: {msgs!r}", file=sys.stderr)
            for entry in driver.get_log("browser"):
                print(f"  console: {entry.get('level')} {entry.get('message')}", file=sys.stderr)
        except Exception:  # noqa: BLE001
            pass
        if shot:
            try:
                driver.save_screenshot(shot)
                print(f"  screenshot of the failure: {shot}", file=sys.stderr)
            except Exception:  # noqa: BLE001
                pass
    sys.exit(1)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    base, shot = sys.argv[1].rstrip("/"), sys.argv[2]
    timeout = float(os.environ.get("WGMOE_BROWSER_TIMEOUT", "240"))
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            fail(f"{path} missing: apt-get install -y chromium chromium-driver")

    profile = tempfile.mkdtemp(prefix="wgmoe-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1100,800", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = None
    try:
        try:
            # An explicit driver path: Selenium Manager never tries to download one.
            driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        except WebDriverException as e:
            fail(f"could not start chromium via chromedriver: {e.msg}")
        driver.set_page_load_timeout(60)
        try:
            driver.get(base + "/")
        except WebDriverException as e:
            fail(f"could not load {base}/: {e.msg}", driver)
        if not driver.find_elements(By.ID, "prompt"):
            fail(f"{base}/ has no #prompt: is it the chat page? title {driver.title!r}", driver, shot)

        key = os.environ.get("WGMOE_API_KEY")
        if key:
            field = driver.find_element(By.ID, "apikey")
            field.clear()
            field.send_keys(key)
            driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", field)

        # The header shows the model id from /v1/models once it has loaded.
        try:
            WebDriverWait(driver, 30).until(
                lambda d: d.find_element(By.ID, "model").text not in ("", "loading model…"))
        except TimeoutException:
            fail("the header never showed the model name", driver, shot)
        model = driver.find_element(By.ID, "model").text
        if model.startswith("model unavailable"):
            fail(f"header: {model}", driver, shot)

        driver.find_element(By.ID, "prompt").send_keys(QUESTION)
        driver.find_element(By.ID, "send").click()
        t0 = time.monotonic()
        try:
            WebDriverWait(driver, timeout, poll_frequency=0.5).until(
                lambda d: "tok/s" in d.find_element(By.ID, "stats").text
                or d.find_elements(By.CSS_SELECTOR, ".assistant.error"))
        except TimeoutException:
            fail(f"no reply with tok/s within {timeout:.0f} s", driver, shot)
        errors = driver.find_elements(By.CSS_SELECTOR, ".assistant.error")
        if errors:
            fail(f"the page shows an error: {errors[-1].text!r}", driver, shot)

        stats = driver.find_element(By.ID, "stats").text
        users = driver.find_elements(By.CSS_SELECTOR, ".user")
        answers = driver.find_elements(By.CSS_SELECTOR, ".assistant")
        if not users or users[-1].text.strip() != QUESTION:
            fail(f"the question is not shown as a .user message: {[u.text for u in users]!r}", driver, shot)
        if not answers or not answers[-1].text.strip():
            fail("the last .assistant message is empty", driver, shot)
        if "tok/s" not in stats:
            fail(f"stats line has no tok/s: {stats!r}", driver, shot)
        if not driver.find_element(By.ID, "stop").get_attribute("disabled"):
            fail("#stop is still enabled after the reply", driver, shot)
        if not driver.save_screenshot(shot):
            fail(f"could not save the screenshot to {shot}", driver)
        print(f"model: {model}")
        print(f"stats: {stats}  ({time.monotonic() - t0:.1f} s)")
        print(f"answer: {answers[-1].text.strip()}")
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
