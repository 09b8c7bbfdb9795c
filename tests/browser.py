"""Debian's headless Chromium through selenium, as the page tests open pages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def browser():
    """A headless Chromium (1200 x 1600); skipped without one, a failure under CI (``.ci/run`` installs it)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is missing and CI=true: .ci/run installs Debian's chromium and chromium-driver")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


#: In the page: each picture that did not decode (its alt text), and per heatmap overlay how far its pixels are from
#: its film's (mean absolute difference of RGBA, 0-255, both drawn at 64 x 64 on a canvas).
PICTURES_SCRIPT = """
const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
const pixels = img => {
  const c = document.createElement('canvas'); c.width = 64; c.height = 64;
  const x = c.getContext('2d'); x.drawImage(img, 0, 0, 64, 64); return x.getImageData(0, 0, 64, 64).data;
};
const apart = [...document.querySelectorAll('img.overlay')].map(o => {
  const a = pixels(o.parentElement.querySelector('img.thumb')), b = pixels(o);
  let d = 0; for (let i = 0; i < a.length; i++) d += Math.abs(a[i] - b[i]); return d / a.length;
});
return [broken, apart];
"""


def pictures_decoded(driver) -> list[float]:
    """Every picture on the page decoded (``naturalWidth > 0``) and every heatmap overlay differs from its film;
    returns each overlay's distance from its film."""
    broken, apart = driver.execute_script(PICTURES_SCRIPT)
    assert broken == [], f"pictures the browser could not decode: {broken}"
    assert all(d > 5 for d in apart), f"an overlay is (nearly) its film: {apart}"
    return apart
