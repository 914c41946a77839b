"""Every report kind in headless Chromium: the page loads with no console errors, failed loads or
blocked network requests, every plot is present and drawn at a real size, and a screenshot is
taken and checked.  Skips with a reason when Chromium is not installed (Debian: apt-get install
chromium; .ci/run installs it)."""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from test_report import PLOTS, make_plans, make_reports
from test_sweep import make_results

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="Chromium not installed (apt-get install chromium)")

WIDTH, HEIGHT = 1280, 2400
#: injected at the top of <head> of a test copy of each report: a policy that blocks any network
#: request (so a report needing one fails), and a probe that records errors and measures the plots
PROBE = """<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline';
script-src 'unsafe-inline'; img-src data:; font-src data:">
<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push('error: ' + (e.message || (e.target && (e.target.src || e.target.href)))), true);
document.addEventListener('securitypolicyviolation', e => window.__errors.push('blocked: ' + e.blockedURI));
for (const level of ['error', 'warn']) {
  const orig = console[level];
  console[level] = (...args) => { window.__errors.push(level + ': ' + args.join(' ')); orig.apply(console, args); };
}
window.addEventListener('load', () => {
  const plots = [...document.querySelectorAll('figure.plot')].map(f => {
    const svg = f.querySelector('svg');
    const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    return {id: f.dataset.plot, width: box.width, height: box.height,
            shapes: svg ? svg.querySelectorAll('path, rect, use, text, line, polyline').length : 0};
  });
  const out = document.createElement('pre');
  out.id = '__probe';
  out.textContent = JSON.stringify({plots, errors: window.__errors, title: document.title});
  document.body.appendChild(out);
});
</script>"""


def _render(kind: str, html: str, folder: Path) -> dict:
    page = folder / f"{kind}.html"
    page.write_text(html.replace("<head>", "<head>" + PROBE, 1))
    shot = folder / f"{kind}.png"
    profile = folder / f"profile-{kind}"
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
           "--enable-logging=stderr", "--v=0", f"--window-size={WIDTH},{HEIGHT}",
           f"--screenshot={shot}", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    m = re.search(r'<pre id="__probe">(.*?)</pre>', proc.stdout, re.S)
    probe = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                       .replace("&gt;", ">")) if m else None
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return {"rc": proc.returncode, "probe": probe, "console": console, "shot": shot,
            "stderr": proc.stderr[-2000:]}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, dict]:
    from planner.report import report_file
    pages = make_reports(make_plans(tmp_path_factory.mktemp("plans")))
    pages["sweep"] = report_file(make_results(tmp_path_factory.mktemp("sweep")))
    folder = tmp_path_factory.mktemp("browser")
    with ThreadPoolExecutor(max_workers=3) as pool:  # Chromium mostly waits; overlap the launches
        futures = {k: pool.submit(_render, k, html, folder) for k, html in pages.items()}
        return {k: f.result() for k, f in futures.items()}


EXPECTED = dict(PLOTS, sweep=["sweep-cost-rate", "sweep-break-even"])


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_report_loads_cleanly_in_chromium(rendered, kind):
    r = rendered[kind]
    assert r["rc"] == 0, r["stderr"]
    assert r["probe"] is not None, "the page did not finish loading: " + r["stderr"]
    assert r["probe"]["errors"] == [], r["probe"]["errors"]
    assert r["console"] == [], r["console"]
    plots = {p["id"]: p for p in r["probe"]["plots"]}
    for name in EXPECTED[kind]:
        assert name in plots, (kind, sorted(plots))
    for name, p in plots.items():  # every plot on the page is drawn at a real size
        assert p["width"] > 300 and p["height"] > 100, (name, p)
        assert p["shapes"] > 10, (name, p)
    width, height = _png_size(r["shot"])
    assert (width, height) == (WIDTH, HEIGHT)
    # a blank page compresses to a few kB; plots and tables make it far larger
    assert r["shot"].stat().st_size > 60_000, r["shot"].stat().st_size
