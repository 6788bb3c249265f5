"""The Airflow UI in a real browser: log in, see the five DAGs and their docs, trigger a day by the form,
read its task logs, open its validation's Data Docs page, and test every connection.

Headless Chromium (Debian's ``chromium`` and ``chromium-driver``, installed here
when missing and the machine allows it) drives the api-server over the sandbox,
with the scheduler, dag-processor and triggerer running the triggered DAG for real.
Screenshots go to ``test-output/ui/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from sandbox.debian import apt_install
from tests.support.sandbox import DAG_IDS, REPO

pytestmark = pytest.mark.integration
AIRFLOW = str(Path(sys.executable).parent / "airflow")
OUTPUT = REPO / "test-output" / "ui"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-dev-shm-usage", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--window-size=1400,1000")


@pytest.fixture(scope="module")
def browser():
    reason = apt_install(["chromium", "chromium-driver"], needed=[CHROMIUM, CHROMEDRIVER])
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    # the network closed: the browser resolves no host but this machine's, and logs every request it sends
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _first_doc_line(airflow, dag_id: str) -> str:
    with psycopg.connect(airflow.metadata_dsn) as conn:
        doc = conn.execute("SELECT s.data -> 'dag' ->> 'doc_md' FROM serialized_dag s JOIN dag_version v "
                           "ON v.id = s.dag_version_id WHERE v.dag_id = %s ORDER BY v.version_number DESC "
                           "LIMIT 1", (dag_id,)).fetchone()[0]
    assert doc, f"{dag_id} has no doc_md"
    return next(line.strip("# ").strip() for line in doc.splitlines() if line.strip())


def test_operator_logs_in_reads_docs_and_triggers_a_day(sandbox, airflow, airflow_services, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    services, driver, day = airflow_services, browser, sandbox.days[1]
    wait = WebDriverWait(driver, 60)
    user, password = next(iter(services.users.items()))

    driver.get(services.url + "/")
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "/auth/login" not in d.current_url)

    def all_listed(d) -> bool:
        return {a.text for a in d.find_elements(By.CSS_SELECTOR, "a[href*='/dags/']")} >= set(DAG_IDS)

    driver.get(services.url + "/dags")
    wait.until(all_listed)
    driver.save_screenshot(str(OUTPUT / "dags.png"))

    for dag_id in DAG_IDS:
        driver.get(f"{services.url}/dags/{dag_id}")
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[aria-label='Dag Docs']"))).click()
        heading = _first_doc_line(airflow, dag_id)
        wait.until(lambda d, heading=heading: any(heading in dialog.text
                                                  for dialog in d.find_elements(By.CSS_SELECTOR, "[role=dialog]")))
        driver.save_screenshot(str(OUTPUT / f"docs-{dag_id}.png"))

    # Earlier suites (the secrets audit) trigger this DAG for the same day: only a run created after this
    # point is the form's.
    with psycopg.connect(airflow.metadata_dsn) as conn:
        (runs_before,) = conn.execute("SELECT coalesce(max(id), 0) FROM dag_run").fetchone()
    driver.get(f"{services.url}/dags/botslovers_ingest")
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[aria-label='Trigger Dag']"))).click()
    date_field = wait.until(ec.element_to_be_clickable((By.NAME, "element_date")))
    date_field.send_keys(day.strftime("%m%d%Y"))
    assert date_field.get_attribute("value") == day.isoformat()
    driver.save_screenshot(str(OUTPUT / "trigger-form.png"))
    dialog = driver.find_elements(By.CSS_SELECTOR, "[role=dialog]")[-1]
    next(b for b in dialog.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Trigger").click()

    try:
        deadline = time.monotonic() + 600
        while True:
            with psycopg.connect(airflow.metadata_dsn) as conn:
                run = conn.execute("SELECT run_id, state FROM dag_run WHERE dag_id = 'botslovers_ingest' "
                                   "AND run_type = 'manual' AND conf ->> 'date' = %s AND id > %s "
                                   "ORDER BY id DESC LIMIT 1",
                                   (day.isoformat(), runs_before)).fetchone()
            if run and run[1] in ("success", "failed"):
                break
            assert time.monotonic() < deadline, f"run {run} not finished"
            time.sleep(3)
    finally:
        subprocess.run([AIRFLOW, "dags", "pause", "botslovers_ingest"], env=services.env, capture_output=True,
                       timeout=120)
    run_id, state = run
    assert state == "success", (services.logs / "scheduler.log").read_text(errors="replace")[-3000:]

    driver.get(f"{services.url}/dags/botslovers_ingest/runs/{run_id}")
    wait.until(lambda d: "success" in d.find_element(By.TAG_NAME, "body").text.lower())
    driver.save_screenshot(str(OUTPUT / "run-succeeded.png"))
    with sandbox.warehouse() as conn:
        windows = {w for (w,) in conn.execute("SELECT DISTINCT window_start::date FROM audit.load_log "
                                              "WHERE run_id = %s", (run_id,))}
    assert windows == {day}  # the form's date, exactly

    # The run's task logs, a mapped load labelled by its company, and the validate task's Data Docs page.
    company = sandbox.manifest["botslovers"]["companies"][0]
    driver.get(f"{services.url}/dags/botslovers_ingest/runs/{run_id}/tasks/load_messages/mapped/0")
    wait.until(lambda d: f"staging.botslovers_messages [{company}]" in d.find_element(By.TAG_NAME, "body").text)
    assert "rows/s" in driver.find_element(By.TAG_NAME, "body").text
    driver.save_screenshot(str(OUTPUT / "task-log.png"))
    driver.get(f"{services.url}/dags/botslovers_ingest/runs/{run_id}/tasks/load_messages/mapped")
    wait.until(lambda d: company in d.find_element(By.TAG_NAME, "body").text)  # map_index_template
    driver.get(f"{services.url}/dags/botslovers_ingest/runs/{run_id}/tasks/validate_messages/details")
    link = wait.until(ec.element_to_be_clickable((By.LINK_TEXT, "GX Data Docs")))
    assert link.get_attribute("href").startswith(f"{services.url}/chat-ingest/data-docs/validations/"
                                                 "botslovers_messages_suite/")
    link.click()
    wait.until(lambda d: "/chat-ingest/data-docs/" in d.current_url
               and "botslovers_messages" in d.find_element(By.TAG_NAME, "body").text)
    driver.save_screenshot(str(OUTPUT / "data-docs.png"))

    # The site's index with the network closed: styled by the Bootstrap the plugin serves (its reboot
    # sets the body's margin to 0), its table (drawn by bootstrap-table's script) listing the
    # validations, and not one request beyond 127.0.0.1.  GX's pages load their styles and scripts
    # from CDNs: before, the index was unstyled and listed no validation here.
    driver.get_log("performance")  # the requests of what came before
    driver.get(f"{services.url}/chat-ingest/data-docs/index.html")
    listed = "return [...document.querySelectorAll('table tbody tr')].map(r => r.innerText).join('\\n')"
    wait.until(lambda d: "botslovers_messages" in d.execute_script(listed))
    assert driver.execute_script("return getComputedStyle(document.body).marginTop") == "0px"
    driver.save_screenshot(str(OUTPUT / "data-docs-index.png"))
    events = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    requested = {event["params"]["request"]["url"] for event in events
                 if event["method"] == "Network.requestWillBeSent"}
    assert any("/chat-ingest/data-docs/_offline/" in url for url in requested), sorted(requested)
    beyond = sorted(url for url in requested if urlsplit(url).scheme in ("http", "https")
                    and urlsplit(url).hostname not in ("127.0.0.1", "localhost"))
    assert not beyond, beyond

    # Admin → Connections lists every sandbox connection; Test turns each icon green.
    driver.get(f"{services.url}/connections")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "button[aria-label='Test Connection']")) >= 6)

    def icon_colours(d) -> dict[str, str]:
        """Each row's Test icon colour, read in one go (the table re-renders as results come in)."""
        return dict(d.execute_script(
            "return [...document.querySelectorAll('tbody tr')].map(r => [r.cells[1].innerText.trim(), "
            "r.querySelector(\"button[aria-label='Test Connection'] svg\")?.getAttribute('color')])"))

    names = list(icon_colours(driver))
    assert set(names) >= {"chat_warehouse", "a8_timescale", "botslovers_clickhouse", "ultimate_export", "unless_s3",
                          "reporting_pii"}
    # every Test button, clicked in one go (a tooltip may cover the next one; the rows re-render)
    driver.execute_script("document.querySelectorAll(\"button[aria-label='Test Connection']\").forEach(b => b.click())")
    try:
        wait.until(lambda d: all(colour in ("green", "red") for colour in icon_colours(d).values()))
    finally:
        driver.save_screenshot(str(OUTPUT / "connections-tested.png"))
    assert icon_colours(driver) == {name: "green" for name in names}
