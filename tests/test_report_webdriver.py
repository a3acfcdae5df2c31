"""The report driven as a person drives it: Debian's chromium through its
WebDriver (chromium-driver, selenium), on a report of 100,000 generated
rows over real image files (``bench/report.py``'s findings, written by the
audit's own ``write_report``): page a list, filter it by class and split,
open a pair side by side, tick suggested actions and export the fix list,
which ``imagesieve fix`` then applies; no console error on the way."""
from __future__ import annotations

import csv
import importlib.util
import shutil
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

spec = importlib.util.spec_from_file_location("bench_report", Path(__file__).parent.parent / "bench" / "report.py")
bench_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_report)

N, PAIRS = 100_000, 50_000


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from imagesieve_server.audit.report import write_report
    tmp = tmp_path_factory.mktemp("report100k")
    paths = bench_report.make_files(tmp / "images", N)
    r = bench_report.findings(paths, PAIRS)
    write_report(r, tmp / "out", str(tmp / "images"))
    return tmp, r


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver_path = shutil.which("chromedriver")
    assert driver_path, "Debian's chromium-driver is needed (scripts/setup.sh --test installs it)"
    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--no-first-run", "--disable-component-update",
                f"--user-data-dir={tmp_path_factory.mktemp('profile')}", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=opts, service=Service(driver_path))
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


def wait_for(driver, what, timeout: float = 30):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: what())


def status(box) -> str:
    return box.find_element(By.CSS_SELECTOR, ".status").text


def test_a_person_pages_filters_opens_a_pair_and_exports_fixes(report, browser, tmp_path):
    tmp, r = report
    d = browser
    d.get((tmp / "out" / "report.html").as_uri())
    wait_for(d, lambda: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")

    # The label-noise estimate, split, on the first screen.
    assert "look wrong" in d.find_element(By.ID, "label-noise").text

    # Page the largest list: 50 rows a page, worst first, the next page a click away.
    near = r.checks["duplicates"].issues["near"]
    box = d.find_element(By.CSS_SELECTOR, '[data-list="duplicates.near"]')
    assert status(box).startswith(f"showing 1–50 of {near.count}")
    box.find_element(By.XPATH, ".//button[starts-with(text(), 'next')]").click()
    wait_for(d, lambda: status(box).startswith(f"showing 51–100 of {near.count}"))
    first = box.find_element(By.CSS_SELECTOR, ".pair figcaption div").text
    assert first == Path(r.paths[int(near.a[50])]).name

    # Filter the leakage pairs by class and split: every row shown has both.
    leak = r.checks["leakage"].issues["cross_split"]
    box = d.find_element(By.CSS_SELECTOR, '[data-list="leakage.cross_split"]')
    d.execute_script("arguments[0].scrollIntoView()", box)

    def wanted(label):
        return sum(1 for a, b in zip(leak.a, leak.b)
                   if any(r.labels[i] == label for i in (a, b)) and any(r.splits[i] == "test" for i in (a, b)))
    label = next(c for c in sorted(set(r.labels)) if 0 < wanted(c) < leak.count)
    want = wanted(label)
    Select(box.find_element(By.CSS_SELECTOR, 'select[data-filter="label"]')).select_by_value(label)
    Select(box.find_element(By.CSS_SELECTOR, 'select[data-filter="split"]')).select_by_value("test")
    wait_for(d, lambda: f"of {want} (filtered from {leak.count})" in status(box))
    rows = box.find_elements(By.CSS_SELECTOR, ".pair")
    assert len(rows) == min(50, want)
    for row in rows:
        badges = [b.text for b in row.find_elements(By.CSS_SELECTOR, ".badge")]
        assert label in badges and "test" in badges, badges

    # Open the first pair side by side: both original files, at full size, with the evidence.
    rows[0].find_element(By.CSS_SELECTOR, "button.open").click()
    viewer = d.find_element(By.ID, "viewer")
    wait_for(d, lambda: viewer.get_attribute("open") is not None)
    images = viewer.find_elements(By.TAG_NAME, "img")
    assert len(images) == 2
    shown = [im.get_attribute("title") for im in images]
    names = [div.text for div in rows[0].find_elements(By.CSS_SELECTOR, "figcaption > div:first-child")]
    assert [Path(p).name for p in shown] == names and all(Path(p).is_file() for p in shown)
    # The original files themselves (256 px), not the report's 112 px thumbnails.
    assert [im.get_attribute("src") for im in images] == [Path(p).as_uri() for p in shown]
    wait_for(d, lambda: [d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im)
                         for im in images] == [256, 256])
    assert viewer.find_element(By.ID, "viewer-why").text
    viewer.find_element(By.ID, "viewer-close").click()
    wait_for(d, lambda: viewer.get_attribute("open") is None)

    # Tick the suggested action of three rows, export, and apply the list.
    ticks = box.find_elements(By.CSS_SELECTOR, "input[data-fix]")[:3]
    for t in ticks:
        t.click()
    wait_for(d, lambda: d.find_element(By.TAG_NAME, "body").get_attribute("data-fixes") not in (None, "0"))
    d.find_element(By.ID, "fix-export").click()
    exported = browser.downloads / "fixes.csv"
    wait_for(d, lambda: exported.exists() and exported.stat().st_size > 0)
    time.sleep(0.2)                      # the download is renamed into place whole; let it settle
    plan = list(csv.DictReader(exported.open(newline="")))
    assert len(plan) == int(d.find_element(By.TAG_NAME, "body").get_attribute("data-fixes")) >= 3
    assert {row["action"] for row in plan} <= {"drop", "review", "relabel"}
    from imagesieve_server.commands import fix
    manifest = tmp_path / "manifest.csv"
    assert fix.main([str(exported), "--out", str(manifest)]) == 0
    kept = {row["path"] for row in csv.DictReader(manifest.open(newline=""))}
    dropped = {row["path"] for row in plan if row["action"] == "drop"}
    assert dropped and not dropped & kept and set(r.paths) - dropped <= kept

    severe = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == [] and d.find_element(By.TAG_NAME, "body").get_attribute("data-js-errors") == "0", severe


def test_a_pair_in_a_format_browsers_cannot_show_opens_as_its_thumbnails(browser, photos, tmp_path):
    """The audit reads TIFF (scans, microscopy), browsers do not: opened
    side by side, a TIFF pair shows the report's thumbnails (titled so)
    rather than grey tiles, and no image counts as broken."""
    import io
    import subprocess
    import sys

    from PIL import Image
    folder = tmp_path / "scans"
    folder.mkdir()
    for k, (data, _, _) in enumerate(photos[:4]):
        im = Image.open(io.BytesIO(data)).convert("RGB").resize((320, 240))
        im.save(folder / f"scan_{k}.tif")
        im.resize((160, 120)).save(folder / f"scan_{k}_small.tif")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "imagesieve.cli", "audit", str(folder), "--out", str(out), "--no-sweep"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    d = browser
    d.get((out / "report.html").as_uri())
    wait_for(d, lambda: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    box = d.find_element(By.CSS_SELECTOR, '[data-list="duplicates.near"]')
    box.find_element(By.CSS_SELECTOR, "button.open").click()
    viewer = d.find_element(By.ID, "viewer")
    wait_for(d, lambda: viewer.get_attribute("open") is not None)
    images = viewer.find_elements(By.TAG_NAME, "img")
    assert len(images) == 2
    wait_for(d, lambda: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 50", im)
                            for im in images))
    assert all("/thumbs/" in im.get_attribute("src") for im in images)
    assert all("cannot show the file" in im.get_attribute("title") for im in images)
    assert d.find_element(By.TAG_NAME, "body").get_attribute("data-broken-images") == "0"
