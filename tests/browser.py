"""A real headless Chromium (Debian's chromium and chromedriver, from ``make system-deps``) reading a page."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def _binary(names: tuple[str, ...]) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError(
        f"none of {', '.join(names)} is installed: run `make system-deps` (Debian chromium, chromium-driver)"
    )


def rendered_images(page: Path, timeout: float = 60.0) -> list[dict]:
    """Every ``<img>`` of ``page`` after Chromium scrolled each into view and loaded it:
    ``{"alt", "src", "width", "height", "visible"}``: ``src`` the loaded URL (``data:`` for embedded
    images), width and height in decoded pixels."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(_binary(("chromedriver",))), options=options)
    try:
        driver.get(page.resolve().as_uri())
        deadline = time.time() + timeout
        while True:
            pending = driver.execute_script(
                "let n = 0; for (const img of document.images) { img.scrollIntoView();"
                " if (!img.complete) n++; } return n;"
            )
            if not pending or time.time() > deadline:
                break
            time.sleep(0.1)
        return driver.execute_script(
            "return Array.from(document.images, img => { const r = img.getBoundingClientRect();"
            " return {alt: img.alt, src: img.currentSrc.startsWith('data:') ? 'data:' : img.currentSrc,"
            " width: img.naturalWidth,"
            " height: img.naturalHeight, visible: r.width > 0 && r.height > 0}; });"
        )
    finally:
        driver.quit()
