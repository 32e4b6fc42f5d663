"""Workstation benchmark: the page in Debian's chromium (Playwright), the server as `make run` starts it.

Prints:
  * login → worklist rows on screen (target ≤ 2 s), over --logins fresh browser contexts;
  * slice change in the viewer on the 24-slice 512×512 demo CT (target ≤ 150 ms): key press →
    new slice painted, for cached neighbours (prefetched) and for slices never fetched before
    (right after a window change, every URL is new);
  * the server's own render time of one 512×512 slice (window + PNG);
  * dictation: end of an utterance in the microphone audio → its text in the report (target
    ≤ 1.5 s), with a WAV played as the microphone.

    .venv/bin/python bench/workstation.py [--logins 5] [--no-dictation]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream"]
UTTERANCES = ["Findings. There is an acute subdural hematoma along the left convexity.",
              "No midline shift.",
              "The ventricles and sulci are normal in size for age.",
              "No hydrocephalus.",
              "The basal cisterns are patent.",
              "No acute territorial infarct.",
              "The calvarium is intact.",
              "The visualized paranasal sinuses and mastoid air cells are clear.",
              "Go to impression.",
              "Acute left subdural hematoma.",
              "No midline shift or herniation.",
              "Findings discussed with the emergency physician."]
PAUSE_S = 2.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def triage_done(env: dict[str, str]) -> bool:
    """Steady state: every demo study has been through the triage models (none pending)."""
    out = subprocess.run([sys.executable, "-m", "app", "worklist", "--json"], env=env, cwd=ROOT,
                         capture_output=True, text=True)
    try:
        rows = json.loads(out.stdout)
    except json.JSONDecodeError:
        return False
    return len(rows) >= 10 and all(r["ai_status"] != "pending" for r in rows)


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    from tests.integration.helpers import visible_studies   # logs in as the demo radiologist

    web = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("READINGROOM_")}
    env.update(READINGROOM_HOME=str(home), PYTHONUNBUFFERED="1")
    log = open(home.parent / "run.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "app", "run", "--demo", "--port", str(free_port()),
                             "--web-port", str(web)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{web}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if visible_studies(url) >= 10 and triage_done(env):
                return proc, url
        except OSError:
            pass
        time.sleep(1)
    proc.kill()
    raise SystemExit("the server did not start; see " + str(home.parent / "run.log"))


def stats(values: list[float]) -> str:
    v = sorted(values)
    p95 = v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]
    return f"median {statistics.median(v):.0f} ms, p95 {p95:.0f} ms, max {v[-1]:.0f} ms (n={len(v)})"


def login(page, url: str) -> float:
    page.goto(url + "/login")
    page.fill("#username", "demo")
    page.fill("#password", "demo")
    t0 = time.perf_counter()
    page.click("#login-button")
    page.locator("#worklist").get_by_text("DOE^JOHN", exact=True).filter(visible=True).first.wait_for(timeout=60000)
    return (time.perf_counter() - t0) * 1000


STEP_JS = """async (n) => {
  const out = [];
  for (let i = 0; i < n; i++) {
    const target = String(window.rrViewer.index + 1);
    const t0 = performance.now();
    document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown', bubbles: true}));
    await new Promise((done) => {
      const img = document.querySelector('#rr-image');
      const check = () => (img.dataset.index === target && img.complete)
        ? requestAnimationFrame(() => done()) : requestAnimationFrame(check);
      check();
    });
    out.push(performance.now() - t0);
  }
  return out;
}"""


def bench_viewer(page) -> dict[str, list[float]]:
    page.get_by_role("tab", name="Worklist").click()
    page.locator("#worklist").get_by_text("SYNTHETIC^HEAD^TWO", exact=True).filter(visible=True).first.click()
    page.wait_for_function("window.rrViewer.info && window.rrViewer.info.slices === 24 && "
                           "document.querySelector('#rr-image').dataset.index !== undefined", timeout=60000)
    page.keyboard.press("Home")
    page.wait_for_function("document.querySelector('#rr-image').dataset.index === '0'")
    time.sleep(1.0)                                     # let the prefetch of the neighbours finish
    cached = page.evaluate(STEP_JS, 6)
    uncached = []
    for center in range(100, 100 + 10 * 12, 12):       # a new window: every slice URL is new
        page.evaluate(f"document.querySelector('#rr-wc').value = {center}; "
                      "document.querySelector('#rr-apply-wl').click()")
        page.wait_for_function(f"document.querySelector('#rr-status').dataset.window.startsWith('{center}/')")
        time.sleep(0.05)
        if page.evaluate("window.rrViewer.index") >= 22:
            page.keyboard.press("Home")
        uncached.append(page.evaluate("""async () => {
            // a slice not prefetched: jump 8 ahead (prefetch covers 6)
            const target = String(Math.min(window.rrViewer.index + 8, window.rrViewer.info.slices - 1));
            const t0 = performance.now();
            for (let i = 0; i < 8; i++) document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown'}));
            await new Promise((done) => { const img = document.querySelector('#rr-image');
              const check = () => (img.dataset.index === target && img.complete)
                ? requestAnimationFrame(() => done()) : requestAnimationFrame(check); check(); });
            return performance.now() - t0; }"""))
    return {"cached": cached, "uncached": uncached}


def server_render_ms(home: Path) -> list[float]:
    from readingroom.settings import load_settings
    from workstation.viewer import load_volume, render_slice
    from readingroom.db import Database
    from readingroom.schema import Instance, Series, Study
    from sqlalchemy import select

    settings = load_settings(environ={"READINGROOM_HOME": str(home)})
    db = Database(settings)
    with db.reader() as s:
        sid = s.scalar(select(Study.id).where(Study.patient_name == "SYNTHETIC^HEAD^TWO"))
        series = s.scalar(select(Series).where(Series.study_id == sid))
        paths = [home / p for p in s.scalars(select(Instance.path).where(Instance.series_id == series.id))]
    vol = load_volume("bench", paths)
    times = []
    for i in range(vol.slices):
        t0 = time.perf_counter()
        render_slice(vol, i, 40, 80)
        times.append((time.perf_counter() - t0) * 1000)
    db.dispose()
    return times


def dictation_wav(folder: Path) -> tuple[Path, list[float], list[float]]:
    parts, starts, ends, t = [np.zeros(48000, np.int16)], [], [], 1.0
    for i, text in enumerate(UTTERANCES):
        raw = folder / f"u{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
        with wave.open(str(raw)) as w:
            rate, data = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)
        n = int(len(data) * 48000 / rate)
        parts.append(np.interp(np.linspace(0, len(data) - 1, n), np.arange(len(data)), data).astype(np.int16))
        starts.append(t)
        t += n / 48000
        ends.append(t)
        parts.append(np.zeros(int(48000 * PAUSE_S), np.int16))
        t += PAUSE_S
    parts.append(np.zeros(48000 * 4, np.int16))
    path = folder / "dictation.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(48000)
        w.writeframes(np.concatenate(parts).tobytes())
    return path, starts, ends


WATCH_JS = """() => {
  window.rrTextTimes = [];
  const seen = new Map();
  const tick = () => {
    const boxes = document.querySelectorAll('[id^=rr-section-] textarea');
    let total = ''; boxes.forEach((b) => total += '|' + b.value);
    if (!seen.has(total)) { seen.set(total, 1); window.rrTextTimes.push([performance.now(), total]); }
    requestAnimationFrame(tick);
  };
  tick();
}"""


def bench_dictation(browser_factory, url: str, folder: Path) -> list[float]:
    wav, starts, ends = dictation_wav(folder)
    browser = browser_factory([f"--use-file-for-fake-audio-capture={wav}%noloop"])
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, permissions=["microphone"])
    page = context.new_page()
    login(page, url)
    page.locator("#worklist").get_by_text("DOE^JOHN", exact=True).filter(visible=True).first.click()
    page.wait_for_function("window.rrViewer.info && document.querySelector('#rr-opened').innerText.includes('DOE^JOHN')")
    page.evaluate(WATCH_JS)
    page.evaluate("window.rrDictation.toggle()")
    page.wait_for_function("typeof window.rrDictation.firstSoundAt === 'number'", timeout=30000)
    onset = page.evaluate("window.rrDictation.firstSoundAt")   # the first utterance starts at 1.0 s in the file
    time.sleep(ends[-1] + PAUSE_S + 8)
    page.evaluate("window.rrDictation.toggle()")
    time.sleep(3)
    changes = page.evaluate("window.rrTextTimes")
    browser.close()
    # Text utterances only (a command changes no text). An utterance is on screen when its last
    # word of 5 letters or more ("convexity", "shift") is in the report boxes more often than
    # before the utterance began: the live partial text while speaking, the provisional text at
    # the endpoint, or the final text, whichever comes first. The latency is from the end of the
    # utterance's audio (espeak's own trailing silence included) to that moment; a word the
    # recognizer never gets right is "not seen".
    latencies = []
    for i, end in enumerate(ends):
        if UTTERANCES[i].lower().startswith("go to"):
            continue
        word = [w for w in re.findall(r"[a-z]+", UTTERANCES[i].lower()) if len(w) >= 5][-1]
        start_ms, end_ms = onset + (starts[i] - 1.0) * 1000, onset + (end - 1.0) * 1000
        before = [text for t, text in changes if t < start_ms]
        base = before[-1].lower().count(word) if before else 0
        seen = [t for t, text in changes if t >= start_ms and text.lower().count(word) > base]
        if os.environ.get("RR_BENCH_TRACE"):   # the text changes during and after the utterance
            for t, text in changes:
                if start_ms <= t <= end_ms + 15000:
                    print(f"      {t - end_ms:7.0f} ms  …{text[-90:]!r}")
        if seen:
            latencies.append(seen[0] - end_ms)
            print(f"  {seen[0] - end_ms:6.0f} ms  {UTTERANCES[i]!r} ({word!r})")
        else:
            print(f"  not seen on screen: {UTTERANCES[i]!r} ({word!r})")
    final = changes[-1][1] if changes else ""
    print(f"  report text: {final!r}")
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logins", type=int, default=5)
    parser.add_argument("--no-dictation", action="store_true")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="rr-bench-ws-"))
    home = tmp / "home"
    home.mkdir()
    print(f"Workstation benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    proc, url = start_server(home)
    try:
        with sync_playwright() as p:
            def factory(extra: list[str]):
                return p.chromium.launch(executable_path=CHROMIUM, args=FLAGS + extra)

            browser = factory([])
            logins = []
            for _ in range(args.logins):
                context = browser.new_context(viewport={"width": 1600, "height": 1000})
                page = context.new_page()
                logins.append(login(page, url))
                if _ < args.logins - 1:
                    context.close()
            print(f"login → worklist on screen: {stats(logins)}   (target ≤ 2000 ms)")
            viewer = bench_viewer(page)
            print(f"slice change, prefetched neighbour: {stats(viewer['cached'])}   (target ≤ 150 ms)")
            print(f"slice change, never fetched (new window, 8 ahead): {stats(viewer['uncached'])}")
            browser.close()
            print(f"server render of one 512×512 slice (window + PNG): {stats(server_render_ms(home))}")
            if not args.no_dictation:
                latencies = bench_dictation(factory, url, tmp)
                if latencies:
                    print(f"dictation, end of utterance → text on screen: {stats(latencies)}   (target ≤ 1500 ms)")
                else:
                    print("dictation: no text arrived (see the server log)")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
