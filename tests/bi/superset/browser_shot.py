"""Log in to a local Superset in headless Chromium and screenshot one chart (runs in .venv-superset).

    .venv-superset/bin/python tests/bi/superset/browser_shot.py URL USER PASSWORD CHART_ID OUT.png

Called by tests/bi/superset/screenshot.py, which builds the warehouse, starts Superset and makes the
chart. Uses selenium (a Superset dependency) with the system's chromium and chromedriver
(`apt-get install chromium chromium-driver`), a fresh empty profile, and no background networking.
"""

from __future__ import annotations

import sys
import tempfile
import time

import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1100,620",
)


def main() -> None:
    url, user, password, chart_id, out = sys.argv[1:6]
    # A session cookie from the login form (CSRF is off in this throw-away Superset's config).
    session = requests.Session()
    reply = session.post(f"{url}/login/", data={"username": user, "password": password}, timeout=60)
    reply.raise_for_status()
    cookie = session.cookies.get("session")
    if not cookie:
        raise SystemExit(f"no session cookie after logging in to {url}")

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="superset-shot-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(f"{url}/health")
            driver.add_cookie({"name": "session", "value": cookie, "path": "/"})
            driver.get(f"{url}/explore/?slice_id={chart_id}&standalone=1")
            WebDriverWait(driver, 120).until(
                ec.presence_of_element_located((By.CSS_SELECTOR, ".chart-container canvas, .chart-container svg"))
            )
            time.sleep(4)  # let ECharts finish its entry animation
            if not driver.save_screenshot(out):
                raise SystemExit(f"could not write {out}")
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
