"""The worklist web app: started as operators start it, signed in to in Debian's Chromium, attacked over HTTP."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from xray_spark.lake import Lake
from xray_spark.session import free_port

from .browser import browser, pictures_decoded
from .conftest import shifted_model
from .jobs import ROOT, job_env

SCRIPT = "<script>window.pwned = 1</script>"
IMG = '"><img src=x onerror="window.pwned=2">'
PASSWORD = "correct horse battery"


def _web(*args: str, state: Path, lake: Path, port: int, stdin: str = "", extra=()) -> subprocess.CompletedProcess:
    """``python -m xray_spark.web`` as an operator runs it, on ``lake`` and 127.0.0.1:``port``."""
    accounts = state.parent / "accounts.sqlite"
    sets = [f"web.accounts={accounts}", f"web.port={port}", "web.timezone=UTC", *extra]
    command = [sys.executable, "-m", "xray_spark.web", *args, "--lake", str(lake), "--state-dir", str(state)]
    for item in sets:
        command += ["--set", item]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, env=job_env(), cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def app(spark, prepared, small_model, tmp_path_factory):
    """A scored lake of its own (a hostile accession number planted), the app started on it, two readers."""
    from xray_spark.registry import register_model, set_alias
    from xray_spark.score.pipeline import run_scoring

    settings, base, _ = prepared
    root = tmp_path_factory.mktemp("web-lake")
    os.symlink(Path(base.root) / "petastorm", root / "petastorm")
    for table in ("studies", "display_pictures"):
        shutil.copytree(Path(base.root) / "tables" / table, root / "tables" / table)
    lake = Lake.at(str(root))
    # a champion that calls more than the run's quickly trained model (which some runs let call one film only)
    model, version = shifted_model(small_model["model_dir"], root.parent / f"{root.name}-keen-model", "keen", 1.5)
    register_model(spark, lake, model, dataset=settings.dataset)
    set_alias(spark, lake, version, reason="web tests")
    mine = dataclasses.replace(settings, lake=str(root), score=dataclasses.replace(settings.score, heatmaps="top:12"))
    run_scoring(spark, lake, mine, model_version=version)
    first = spark.table("xray.worklist").where("dataset = 'nih'").orderBy("risk_rank").first()
    top, date = first["image_id"], str(first["score_date"])
    studies = root / "tables" / "studies" / "dataset=nih"
    frame = pd.read_parquet(studies)  # as a DICOM header would carry them: an accession number, a study time
    frame["accession_number"] = np.where(frame["image_id"] == top, SCRIPT + IMG, "A123")
    frame["study_datetime"] = pd.NaT
    shutil.rmtree(studies)
    studies.mkdir()
    frame.to_parquet(studies / "part-0.parquet", coerce_timestamps="us", allow_truncated_timestamps=True)  # as Spark
    state, port = tmp_path_factory.mktemp("web-state") / "state", free_port()
    for reader in ("alice", "bob", "dora"):
        added = _web("add-user", reader, state=state, lake=root, port=port, stdin=PASSWORD + "\n")
        assert added.returncode == 0, added.stderr
    started = _web("start", state=state, lake=root, port=port)
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    assert url == f"http://127.0.0.1:{port}/"
    yield {"url": url, "lake": root, "state": state, "port": port, "top": top, "date": date}
    assert _web("stop", state=state, lake=root, port=port).returncode == 0
    assert _web("status", state=state, lake=root, port=port).returncode == 3


def _signed_in(url: str, name: str, password: str = PASSWORD) -> requests.Session:
    http = requests.Session()
    form = http.get(url + "signin").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    answer = http.post(url + "signin", data={"name": name, "password": password, "csrf": csrf}, allow_redirects=False)
    assert answer.status_code == 303, answer.text
    return http


def _store(app):
    from xray_spark.web.verdicts import VerdictStore

    return VerdictStore(str(Path(app["lake"]) / "verdicts" / "verdicts.sqlite"))


def test_a_reader_signs_in_gives_verdicts_that_stay_and_nothing_loads_after_sign_out(app, tmp_path):
    from selenium.webdriver.common.by import By

    url, worklist = app["url"], f"{app['url']}worklist/nih/{app['date']}"
    driver = browser()
    try:
        driver.get(worklist)
        assert "/signin" in driver.current_url and driver.find_elements(By.ID, "password"), "sign-in comes first"
        _sign_in(driver, "alice", worklist)
        assert driver.current_url == worklist and driver.find_element(By.ID, "reader").text == "alice"
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.film-row")
        assert len(rows) >= 20
        apart = pictures_decoded(driver)  # every thumbnail and overlay loads once signed in
        assert len(apart) == len(driver.find_elements(By.CSS_SELECTOR, "img.overlay")) >= 1, "a heatmap shows"
        # the hostile accession number is shown as text; nothing it holds became an element or ran
        assert SCRIPT in driver.find_element(By.CSS_SELECTOR, f"tr[id='film-{app['top']}'] .study").text
        assert not driver.find_elements(By.CSS_SELECTOR, "img[src='x']")
        called = [r for r in rows if r.find_elements(By.CSS_SELECTOR, "input[type=radio]")]
        assert len(called) >= 2, "two films with a call"
        ids = [r.get_attribute("id").removeprefix("film-") for r in called[:2]]
        film_id, other_id = ids
        one = called[0]
        radio = one.find_elements(By.CSS_SELECTOR, "input[type=radio]")
        first = radio[0].get_attribute("data-finding")
        radio[0].click()  # confirm the first film's first call
        one.find_element(By.TAG_NAME, "summary").click()
        box = one.find_element(By.CSS_SELECTOR, "input[name=missed]")
        missed = box.get_attribute("value")
        box.click()  # and add a finding the model missed
        one.find_element(By.TAG_NAME, "textarea").send_keys(SCRIPT + IMG)
        _save(driver, one)
        two = driver.find_element(By.CSS_SELECTOR, f"tr[id='film-{other_id}']")
        second = two.find_element(By.CSS_SELECTOR, "input[type=radio]").get_attribute("data-finding")
        two.find_element(By.CSS_SELECTOR, f"input[name='v:{second}'][value=reject]").click()  # reject another's
        _save(driver, two)
        driver.refresh()
        row = driver.find_element(By.CSS_SELECTOR, f"tr[id='film-{film_id}']")
        saved = row.find_element(By.CSS_SELECTOR, ".mine").text
        assert f"{first} confirm" in saved and f"{missed} missed" in saved
        assert row.find_element(By.CSS_SELECTOR, f"input[name='v:{first}'][value=confirm]").is_selected()
        assert row.find_element(By.CSS_SELECTOR, ".saved-note").text == SCRIPT + IMG
        other = driver.find_element(By.CSS_SELECTOR, f"tr[id='film-{other_id}']")
        assert f"{second} reject" in other.find_element(By.CSS_SELECTOR, ".mine").text
        assert not driver.find_elements(By.CSS_SELECTOR, "img[src='x']")
        assert driver.execute_script("return window.pwned") is None
        shot = tmp_path / "worklist.png"
        driver.save_screenshot(str(shot))
        _looks_like_a_worklist(shot, row.find_element(By.CSS_SELECTOR, ".film"), driver)
        picture = f"{url}picture?dataset=nih&id={film_id}"
        driver.find_element(By.ID, "signout").click()
        for page in (worklist, picture, f"{url}patient/nih/1"):
            driver.get(page)
            assert "/signin" in driver.current_url, f"{page} is served after sign-out"
        driver.delete_all_cookies()
        driver.get(worklist)
        _sign_in(driver, "bob", worklist)
        row = driver.find_element(By.CSS_SELECTOR, f"tr[id='film-{film_id}']")
        assert not row.find_elements(By.CSS_SELECTOR, ".mine"), "bob sees his own verdicts, not alice's"
        row.find_elements(By.CSS_SELECTOR, "input[type=radio]")[1].click()  # bob rejects the first call
        _save(driver, row)
    finally:
        driver.quit()
    current = {(s["reader"], s["image_id"]): s for s in _store(app).submissions(current_only=True)}
    assert current[("alice", film_id)]["findings"] == {first: "confirm", missed: "missed"}
    assert current[("alice", other_id)]["findings"] == {second: "reject"}
    assert current[("alice", film_id)]["note"] == SCRIPT + IMG
    assert current[("bob", film_id)]["findings"] == {first: "reject"}, "two readers disagreeing are both kept"


def _sign_in(driver, name: str, then: str) -> None:
    """Sign in on the page the browser shows, and wait for the page it leads to (scrypt takes its time on a
    busy machine: the click returns before the redirect arrives)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "signin").click()
    WebDriverWait(driver, 30).until(expected_conditions.url_to_be(then))


def _save(driver, row) -> None:
    """Press the row's Save and wait for the page's script to say it was saved (no reload)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    before = driver.execute_script("return window.xrayTimings.length")
    row.find_element(By.CSS_SELECTOR, "button.save").click()
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return window.xrayTimings.length") > before)


def _looks_like_a_worklist(shot: Path, film, driver) -> None:
    """The screenshot shows the film's thumbnail (a gray picture, not a blank box) where the page put it."""
    import cv2

    picture = cv2.imread(str(shot))
    scale = picture.shape[1] / driver.execute_script("return window.innerWidth")
    driver.execute_script("arguments[0].scrollIntoView()", film)
    driver.save_screenshot(str(shot))
    picture = cv2.imread(str(shot))
    rect = driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()", film)
    x, y = int(rect["x"] * scale), int(rect["y"] * scale)
    tile = picture[y : y + int(150 * scale), x : x + int(150 * scale)]
    assert tile.size and tile.std() > 15, "the film's picture is drawn"
    assert (tile.mean(axis=2) < 250).mean() > 0.9, "and it fills its box"


def test_forms_without_their_csrf_token_are_refused(app):
    http = _signed_in(app["url"], "alice")
    before = len(_store(app).submissions())
    film = {"image_id": app["top"], "model_version": "x", "no_finding": "1", "form_id": "csrf-test"}
    for extra in ({}, {"csrf": "forged"}):
        answer = http.post(app["url"] + "verdict/nih", data=film | extra, allow_redirects=False)
        assert answer.status_code == 400 and "CSRF" in answer.text
    outsider = requests.post(app["url"] + "verdict/nih", data=film, allow_redirects=False)
    assert outsider.status_code in (400, 401)
    assert len(_store(app).submissions()) == before
    page = requests.get(app["url"] + f"picture?dataset=nih&id={app['top']}", allow_redirects=False)
    assert page.status_code == 303 and not page.content.startswith(b"\x89PNG"), "no picture without sign-in"
    mine = http.get(app["url"] + f"picture?dataset=nih&id={app['top']}")
    assert mine.content.startswith(b"\x89PNG")
    cookie = next(c for c in http.cookies if c.name == "xray_session")
    assert cookie.has_nonstandard_attr("HttpOnly") and not cookie.secure  # Secure only over HTTPS


def test_a_verdict_on_a_rescored_film_or_a_contradiction_is_refused(app):
    url = app["url"]
    http = _signed_in(url, "alice")
    page = http.get(f"{url}worklist/nih/{app['date']}").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    image_id, version = re.findall(
        r'name="image_id" value="([^"]+)"><input type="hidden" name="model_version" value="([^"]+)"', page
    )[0]
    before = len(_store(app).submissions())
    form = {"csrf": csrf, "image_id": image_id, "form_id": "refused-1"}
    old = http.post(url + "verdict/nih", data=form | {"model_version": "an-older-model", "no_finding": "1"})
    assert old.status_code == 409 and "scored again" in old.text
    row = re.search(rf'id="film-{re.escape(image_id)}".*?</tr>', page, re.S).group(0)
    missed = re.search(r'name="missed" value="([^"]+)"', row).group(1)  # a finding the model did not call
    both = http.post(url + "verdict/nih", data=form | {"model_version": version, "no_finding": "1", "missed": missed})
    assert both.status_code == 400 and "contradict" in both.text
    assert len(_store(app).submissions()) == before
    # a reader changes their mind: the newest counts, the older stays as history
    for k, marks in enumerate(({"no_finding": "1"}, {"missed": missed})):
        answer = http.post(
            url + "verdict/nih", data=form | {"model_version": version, "form_id": f"change-{k}"} | marks
        )
        assert answer.status_code == 200 and f"film-{image_id}" in answer.url
    mine = [s for s in _store(app).submissions() if s["form_id"].startswith("change-")]
    assert [(s["no_finding"], s["findings"], s["current"]) for s in mine] == [
        (True, {}, False),
        (False, {missed: "missed"}, True),
    ]


def test_twenty_concurrent_writers_each_verdict_stored_once(app):
    from xray_spark.web.accounts import Accounts

    accounts = Accounts(str(app["state"].parent / "accounts.sqlite"))
    readers = [f"reader{i:02d}" for i in range(20)]
    for name in readers:
        accounts.add_user(name, PASSWORD)
    url = app["url"]
    page = _signed_in(url, "alice").get(f"{url}worklist/nih/{app['date']}").text
    films = re.findall(
        r'name="image_id" value="([^"]+)"><input type="hidden" name="model_version" value="([^"]+)"', page
    )
    assert len(films) >= 10
    errors: list[str] = []

    def write(name: str) -> None:
        http = _signed_in(url, name)
        csrf = re.search(r'name="csrf" value="([^"]+)"', http.get(url).text).group(1)
        for k, (image_id, version) in enumerate(films[:10]):
            form = {"csrf": csrf, "image_id": image_id, "model_version": version, "no_finding": "1"}
            form |= {"form_id": f"{name}-{k}", "note": f"{name} {k}"}
            for _ in range(2 if k == 0 else 1):  # the first form posted twice, as a retried request would be
                answer = http.post(url + "verdict/nih", data=form, allow_redirects=False)
                if answer.status_code != 303:
                    errors.append(f"{name} {k}: {answer.status_code}")

    threads = [threading.Thread(target=write, args=(name,)) for name in readers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    stored = [s for s in _store(app).submissions() if s["reader"] in readers]
    assert len(stored) == 200 and len({s["form_id"] for s in stored}) == 200
    assert all(s["note"] == f"{s['reader']} {s['form_id'].split('-')[1]}" for s in stored)


def test_the_wrong_password_five_times_is_slowed_down(app):
    url = app["url"]
    http = requests.Session()
    csrf = re.search(r'name="csrf" value="([^"]+)"', http.get(url + "signin").text).group(1)

    def attempt(password: str) -> requests.Response:
        return http.post(
            url + "signin", data={"name": "bob", "password": password, "csrf": csrf}, allow_redirects=False
        )

    codes = [attempt(f"wrong {k}").status_code for k in range(5)]
    assert codes == [401, 401, 401, 429, 429], codes
    refused = attempt(PASSWORD)
    assert refused.status_code == 429, "even the right password waits its turn"
    time.sleep(int(refused.headers["Retry-After"]) + 0.2)
    assert attempt(PASSWORD).status_code == 303
    assert http.get(url + f"film/nih/{app['top']}").status_code == 200
    # the audit trail (docs/services.md#the-audit-trail): each refusal and the sign-in, then the film bob opened
    from xray_spark import audit
    from xray_spark.config import places

    trail = [e for e in audit.read(str(Path(os.environ[places.HOME_ENV]) / "audit" / "audit.log")) if "bob" in e.users]
    signins = [e for e in trail if e.event == "User Authentication"]
    assert sum(e.outcome == "4" for e in signins) >= 6 and signins[-1].outcome == "0", signins
    assert trail[-1].event == "DICOM Instances Accessed" and trail[-1].patients[0].startswith("nih/"), trail[-1]


def test_a_wider_bind_needs_tls_and_accounts_stay_outside_the_lake(app, tmp_path):
    lake, port = app["lake"], free_port()
    wide = _web("start", "--host", "0.0.0.0", state=tmp_path / "s1", lake=lake, port=port)
    assert wide.returncode != 0 and "without TLS" in wide.stderr
    inside = _web("start", state=tmp_path / "s2", lake=lake, port=port, extra=[f"web.accounts={lake}/a.sqlite"])
    assert inside.returncode != 0 and "inside the lake" in inside.stderr
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    tls = [f"web.tls_cert={cert}", f"web.tls_key={key}"]
    state = tmp_path / "s3"
    started = _web("start", state=state, lake=lake, port=port, extra=tls)
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"https://127.0.0.1:{port}/"
        http = requests.Session()
        form = http.get(started.stdout.strip() + "signin", verify=str(cert)).text
        assert "Sign in" in form
        cookie = next(c for c in http.cookies if c.name == "xray_session")
        assert cookie.secure, "over HTTPS the session cookie is Secure"
    finally:
        _web("stop", state=state, lake=lake, port=port)


def test_a_reader_sees_a_film_large_and_answers_twenty_by_keyboard_alone(app, tmp_path):
    """In Chromium, as dora: o opens the first film large (its display picture, the heatmap over it), a drag changes
    the window and so the pixels shown, h hides the heatmap; then a, x and n answer twenty films in turn, each saved
    without a reload; the unanswered filter then leaves them out."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.wait import WebDriverWait

    worklist = f"{app['url']}worklist/nih/{app['date']}"
    driver = browser()
    try:
        driver.get(worklist)
        _sign_in(driver, "dora", worklist)
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.film-row")
        films = [r.get_attribute("data-id") for r in rows]
        calls = {
            r.get_attribute("data-id"): sorted(
                {i.get_attribute("data-finding") for i in r.find_elements(By.CSS_SELECTOR, "input[type=radio]")}
            )
            for r in rows[:20]
        }
        first = driver.execute_script(HOTTEST_OVERLAY)  # a film with a heatmap, its map's hottest (some maps are cold)
        ActionChains(driver).send_keys("j" * first + "o").perform()
        WebDriverWait(driver, 20).until(
            lambda d: d.find_element(By.ID, "viewer").get_attribute("data-loaded") == films[first]
        )
        canvas = driver.find_element(By.ID, "viewer-canvas")
        driver.save_screenshot(str(tmp_path / "large-view-page.png"))  # the page as a reader sees it (the docs')
        shots = {}
        for name, act in (
            ("large", None),
            ("no-heatmap", lambda: ActionChains(driver).send_keys("h")),
            ("windowed", lambda: ActionChains(driver).click_and_hold(canvas).move_by_offset(-120, 60).release()),
            ("zoomed", lambda: ActionChains(driver).send_keys("++")),
        ):
            if act is not None:
                act().perform()
            shots[name] = tmp_path / f"film-{name}.png"
            canvas.screenshot(str(shots[name]))
        window = driver.find_element(By.ID, "viewer-wl").text
        ActionChains(driver).send_keys(Keys.ESCAPE + "k" * first).perform()  # back to the list's first film
        assert not driver.find_element(By.ID, "viewer").is_displayed()
        for k in range(20):
            ActionChains(driver).send_keys("axn"[k % 3]).perform()
            WebDriverWait(driver, 20).until(lambda d, k=k: d.execute_script("return window.xrayTimings.length") > k)
        pace = driver.find_element(By.ID, "pace").text
        driver.get(worklist + "?unanswered=1")
        left = [r.get_attribute("data-id") for r in driver.find_elements(By.CSS_SELECTOR, "tr.film-row")]
        pictures_decoded(driver)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
    finally:
        driver.quit()
    _large_view_shows_the_film(shots)
    assert window != "W 256 L 128", "the drag moved the window"
    assert pace.startswith("20 saved here")
    current = {s["image_id"]: s for s in _store(app).submissions(current_only=True) if s["reader"] == "dora"}
    assert set(current) == set(films[:20])
    for k, image_id in enumerate(films[:20]):
        s, called = current[image_id], calls[image_id]
        expected = (
            ({f: "confirm" for f in called}, not called),  # a: one confirm per call; no call: no finding
            ({f: "reject" for f in called}, False),
            ({f: "reject" for f in called}, True),
        )[k % 3]
        assert (s["findings"], s["no_finding"]) == expected, (k, image_id, s)
    assert left and not set(left) & set(films[:20]), "the unanswered filter hides the answered films"
    assert len(left) == min(len(films), 160 - 20)


#: The index of the row whose overlay is the most opaque (its alpha summed at 32 x 32).
HOTTEST_OVERLAY = """
let best = -1, most = -1;
[...document.querySelectorAll('tr.film-row')].forEach((row, i) => {
  const overlay = row.querySelector('img.overlay');
  if (!overlay) return;
  const c = document.createElement('canvas'); c.width = 32; c.height = 32;
  const x = c.getContext('2d'); x.drawImage(overlay, 0, 0, 32, 32);
  const d = x.getImageData(0, 0, 32, 32).data; let alpha = 0;
  for (let k = 3; k < d.length; k += 4) alpha += d[k];
  if (alpha > most) { most = alpha; best = i; }
});
return best;
"""


def _large_view_shows_the_film(shots: dict[str, Path]) -> None:
    """The large view is a film (gray, textured), with the heatmap's colour over it until h hides it; then the drag's
    new window changes the film's pixels, and + zooms in."""
    import cv2

    large, plain, windowed, zoomed = (
        cv2.imread(str(shots[n])).astype(int) for n in ("large", "no-heatmap", "windowed", "zoomed")
    )
    assert large.shape[0] >= 400 and large.std() > 15, "a large picture is drawn"

    def coloured(picture) -> int:
        return int((picture.max(axis=2) - picture.min(axis=2) > 40).sum())

    assert coloured(large) > 500, "the heatmap lies over the film"
    assert coloured(plain) < 50, "h hides it: the film alone is gray"
    assert np.abs(plain - windowed).mean() > 8, "the drag changed the window: the film's pixels changed"
    assert coloured(windowed) < 50, "and it stays a gray film"
    side = windowed.shape[0]
    half = round(side / 1.25**2 / 2)  # + twice: 1.25 x 1.25 about the centre
    centre = windowed[side // 2 - half : side // 2 + half, side // 2 - half : side // 2 + half].astype(np.uint8)
    expected = cv2.resize(centre, zoomed.shape[1::-1], interpolation=cv2.INTER_LINEAR).astype(int)
    assert np.abs(zoomed - expected).mean() < 0.5 * np.abs(zoomed - windowed).mean(), "+ zooms in about the centre"


def test_the_verdicts_job_publishes_every_submission_without_its_note(spark, app):
    from .jobs import checked, run_in_process

    store = _store(app).submissions()
    assert len(store) >= 223, "the browser's, the twenty writers', bob's and dora's keyboard"
    result = checked(run_in_process("verdicts", ["--lake", str(app["lake"]), "--set", "spark.driver_memory=1g"]))
    summary = __import__("json").loads(result.stdout)
    assert summary["submissions"] == len(store) and summary["readers"] == 23
    table = spark.read.parquet(str(Path(app["lake"]) / "tables" / "verdicts"))
    assert "note" not in table.columns
    rows = {r["submission_id"]: r for r in table.collect()}
    assert set(rows) == {s["id"] for s in store}
    for s in store:
        row = rows[s["id"]]
        assert (row["reader"], row["image_id"], row["current"]) == (s["reader"], s["image_id"], s["current"])
        assert sorted(row["confirmed"] + row["rejected"] + row["missed"]) == sorted(s["findings"])
    by_keyboard = [r for r in rows.values() if r["reader"] == "dora" and r["current"]]
    assert len(by_keyboard) == 20, "the twenty verdicts given by keyboard reach xray.verdicts with the reader's name"
    for path in (Path(app["lake"]) / "tables" / "verdicts").rglob("*.parquet"):
        assert SCRIPT.encode() not in path.read_bytes(), "a note never reaches the table"


def _all_at_once(target, n: int) -> None:
    """``target(k)`` for k in 0..n-1, each in a thread of its own, all released together."""
    start = threading.Barrier(n)

    def run(k: int) -> None:
        start.wait()
        target(k)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)


def test_forty_simultaneous_guesses_get_three_checked_and_one_per_wait_and_a_ward_signs_in_at_once(app, tmp_path):
    """Counting and checking are one step: simultaneous wrong guesses for one name cannot share the free failures."""
    from xray_spark.web.accounts import Accounts

    accounts = Accounts(str(tmp_path / "accounts.sqlite"))
    accounts.add_user("carol", PASSWORD)
    checked: list[float] = []

    def guess(_k: int) -> None:
        if accounts.attempt("carol", "a wrong guess", "10.0.0.9") is None:  # None: checked and wrong; a float: wait
            checked.append(time.monotonic())

    _all_at_once(guess, 40)
    assert len(checked) == 3
    time.sleep(1.1)  # the first wait (1 s) is over: of 10 more at once, exactly one is checked
    _all_at_once(guess, 10)
    assert len(checked) == 4
    assert accounts.attempt("carol", PASSWORD, "10.0.0.9") > 1  # even the right password waits 2 s now
    # twenty readers signing in at once from one address (a ward behind one proxy): none is refused
    for k in range(20):
        accounts.add_user(f"ward{k:02d}", PASSWORD)
    sessions: list[object] = []
    _all_at_once(lambda k: sessions.append(accounts.attempt(f"ward{k:02d}", PASSWORD, "10.0.0.10")), 20)
    assert len(sessions) == 20 and all(not isinstance(x, float) and x is not None for x in sessions)


def test_a_picture_request_never_reads_beyond_the_lakes_own_datasets(app, tmp_path):
    """``dataset=../..`` or an absolute path: no dataset of the lake, so no folder is read; a real one still works."""
    url = app["url"]
    http = _signed_in(url, "alice")
    good = http.get(f"{url}picture", params={"dataset": "nih", "id": app["top"]})
    assert good.status_code == 200 and good.content[:8] == b"\x89PNG\r\n\x1a\n"
    # a stored heatmap, read from the table's own partitions (score_date=/run_id=), is drawn over its film
    maps = pd.read_parquet(Path(app["lake"]) / "tables" / "heatmaps", columns=["image_id", "finding", "model_version"])
    first = maps.iloc[0]
    drawn = http.get(
        f"{url}overlay",
        params={"dataset": "nih", "id": first["image_id"], "finding": first["finding"], "v": first["model_version"]},
    )
    assert drawn.status_code == 200 and drawn.content[:8] == b"\x89PNG\r\n\x1a\n"
    elsewhere = tmp_path / "other-lake"
    shutil.copytree(Path(app["lake"]) / "petastorm", elsewhere / "petastorm", symlinks=False)
    for name in ("../..", "../../" * 12, str(elsewhere / "petastorm" / "nih"), "nih/../nih", "nih/."):
        t0 = time.monotonic()
        answer = http.get(f"{url}picture", params={"dataset": name, "id": app["top"]})
        assert answer.status_code == 404 and time.monotonic() - t0 < 5, name
        overlay = http.get(f"{url}overlay", params={"dataset": name, "id": app["top"], "finding": "Mass", "v": "x"})
        assert overlay.status_code == 404, name
    log = (app["state"] / "server.log").read_text(errors="replace")
    assert "Traceback" not in log


def _verdict_form(http: requests.Session, url: str, date: str) -> tuple[str, list[tuple[str, str]]]:
    page = http.get(f"{url}worklist/nih/{date}").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    films = re.findall(
        r'name="image_id" value="([^"]+)"><input type="hidden" name="model_version" value="([^"]+)"', page
    )
    return csrf, films


def test_fifty_posts_at_once_are_all_answered_and_a_held_file_says_not_saved_within_seconds(app):
    import sqlite3

    url = app["url"]
    http = _signed_in(url, "alice")
    csrf, films = _verdict_form(http, url, app["date"])
    answers: list[int | str] = []

    def post(k: int) -> None:
        image_id, version = films[k % len(films)]
        form = {"csrf": csrf, "image_id": image_id, "model_version": version, "no_finding": "1", "form_id": f"f50-{k}"}
        try:
            answers.append(http.post(url + "verdict/nih", data=form, allow_redirects=False, timeout=60).status_code)
        except requests.RequestException as exc:
            answers.append(type(exc).__name__)

    _all_at_once(post, 50)
    assert answers.count(303) == 50, answers
    assert len({s["form_id"] for s in _store(app).submissions() if s["form_id"].startswith("f50-")}) == 50
    # Another program holds the verdicts file: the reader is told at once that nothing was saved
    holder = sqlite3.connect(str(Path(app["lake"]) / "verdicts" / "verdicts.sqlite"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    image_id, version = films[0]
    form = {"csrf": csrf, "image_id": image_id, "model_version": version, "no_finding": "1", "form_id": "held-1"}
    try:
        t0 = time.monotonic()
        refused = http.post(url + "verdict/nih", data=form, allow_redirects=False, timeout=60)
        waited = time.monotonic() - t0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert refused.status_code == 503 and "NOT saved" in refused.text and refused.headers["Retry-After"] == "5"
    assert waited < 15, waited
    assert not [s for s in _store(app).submissions() if s["form_id"] == "held-1"]
    again = http.post(url + "verdict/nih", data=form, allow_redirects=False, timeout=60)
    assert again.status_code == 303 and [s for s in _store(app).submissions() if s["form_id"] == "held-1"]


def test_a_damaged_verdicts_file_stops_the_start_with_its_repair_in_one_line(app, tmp_path):
    damaged = tmp_path / "verdicts.sqlite"
    damaged.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    state = tmp_path / "state"
    started = _web("start", state=state, lake=app["lake"], port=free_port(), extra=[f"web.verdicts={damaged}"])
    lines = started.stderr.strip().splitlines()
    assert started.returncode == 2 and len(lines) == 1, started.stderr
    assert "is damaged" in lines[0] and ".recover" in lines[0]
    assert not (state / "server.pid").exists()
