"""Three course widgets in a real browser: notebook 02's rho slider, notebook 01's
confounding-strength slider and notebook 08's comparison of round 0's, CONTA's and the
interventions' CAMs, in JupyterLab 4 in headless Debian chromium (Playwright).

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` pip package
(no ``playwright install``: the system browser is used); skipped with the reason when either is
missing. ``scripts/install_browser.sh`` installs both. Each pitfall of driving JupyterLab this way
is explained in a comment where the test works around it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "02_confounding_in_data.ipynb"
NOTEBOOK_01 = REPO / "notebooks" / "01_causal_graph.ipynb"
NOTEBOOK_08 = REPO / "notebooks" / "08_interventions.ipynb"
TOKEN = "causal-wsss-browser-test"
START_TIMEOUT_S = 60
KERNEL_TIMEOUT_MS = 90_000  # open the notebook and connect the kernel (cold start, busy CI)
WIDGET_TIMEOUT_MS = 120_000  # run all cells in smoke mode until the slider is drawn
UPDATE_TIMEOUT_MS = 60_000  # the redraw after the slider moves
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
# JupyterLab settings: no news / update toast over the page, no autosave of the notebook.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
}


def _requirements() -> tuple[object, str]:
    """Playwright's sync API and the chromium executable, or skip with the reason."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the 'playwright' pip package is not installed (pip install playwright; "
                    "no `playwright install` needed, see scripts/install_browser.sh)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium, see "
                    "scripts/install_browser.sh)")
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        pytest.skip("jupyterlab is not installed in this environment")
    return sync_playwright, chromium


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _log_tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else "(no log)"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """JupyterLab on a free 127.0.0.1 port with a token, private config/data/runtime folders, a
    ``python3`` kernel running this interpreter, smoke mode, and a copy of notebook 02 as root
    (so nothing the browser does can touch the repository)."""
    sync_playwright, chromium = _requirements()
    tmp = tmp_path_factory.mktemp("lab")
    cfg, data, runtime, root, work = (tmp / d for d in ("config", "data", "runtime", "root", "tmp"))
    for folder in (cfg / "labconfig", data / "kernels" / "python3", runtime, root, work):
        folder.mkdir(parents=True)
    (cfg / "labconfig" / "default_setting_overrides.json").write_text(json.dumps(LAB_SETTINGS))
    (data / "kernels" / "python3" / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    for notebook in (NOTEBOOK, NOTEBOOK_01, NOTEBOOK_08):
        shutil.copy(notebook, root / notebook.name)

    env = {k: v for k, v in os.environ.items()
           if k not in ("CAUSAL_WSSS_DATA", "MPLBACKEND", "JUPYTER_PATH")}
    env.update(CAUSAL_WSSS_SMOKE="1", TMPDIR=str(work), JUPYTER_CONFIG_DIR=str(cfg),
               JUPYTER_DATA_DIR=str(data), JUPYTER_RUNTIME_DIR=str(runtime),
               JUPYTER_PLATFORM_DIRS="1", PYTHONUNBUFFERED="1")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
           "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={TOKEN}",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with code {proc.returncode}:\n{_log_tail(log_path)}")
            try:
                _get(f"{base}/api/status?token={TOKEN}", timeout=2.0)
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab not ready on {base} after {START_TIMEOUT_S} s:\n"
                                f"{_log_tail(log_path)}")
                time.sleep(0.3)
        yield {"base": base, "notebook": NOTEBOOK.name, "log": log_path, "tmp": tmp,
               "sync_playwright": sync_playwright, "chromium": chromium}
    finally:
        _stop(proc, base)


def _stop(proc: subprocess.Popen, base: str) -> None:
    """Ask the server to shut down (it stops its kernels), then terminate our process group."""
    if proc.poll() is None:
        try:
            request = urllib.request.Request(f"{base}/api/shutdown?token={TOKEN}", method="POST")
            urllib.request.urlopen(request, timeout=5.0).close()
            proc.wait(timeout=15)
        except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
            pass
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_rho_slider_redraws_in_jupyterlab(lab: dict) -> None:
    """Open notebook 02, run all cells (smoke mode), move the rho slider one step left with the
    keyboard and wait for the widget's printed line to change from rho=0.90 to rho=0.80."""
    _slider_redraws(lab, lab["notebook"], "rho=0.90 P(", "rho=0.80 P(", "0.80", "rho")


def test_strength_slider_redraws_in_jupyterlab(lab: dict) -> None:
    """Open notebook 01, run all cells (smoke mode), move the confounding-strength slider one
    step (0.05) left and wait for the printed line to change from strength=1.00 to 0.95."""
    _slider_redraws(lab, NOTEBOOK_01.name, "strength=1.00 naive=", "strength=0.95 naive=", "0.95",
                    "strength")


def test_intervention_cams_redraw_in_jupyterlab(lab: dict) -> None:
    """Open notebook 08, run all cells (smoke mode: three intervention rounds on tiny data),
    pick the second (image, class) in the dropdown and wait for the CAMs of round 0, CONTA and
    every intervention to be redrawn for it."""
    shot = lab["tmp"] / "browser_interventions_widget.png"
    with _notebook_page(lab, NOTEBOOK_08.name, "interventions") as page:
        outputs = page.locator(".widget-output")
        outputs.filter(has_text="leakage: round 0=").first.wait_for(
            timeout=3 * WIDGET_TIMEOUT_MS)  # three rounds 1 run first
        _wait_all_cells_done(page)
        errors = page.locator("[data-mime-type='application/vnd.jupyter.error']")
        assert errors.count() == 0, f"a cell raised:\n{errors.first.inner_text()}"
        select = page.locator(".widget-dropdown select").first
        second = select.evaluate("s => s.options[1].text").strip()  # innerText of an option is empty
        select.select_option(index=1)
        line = outputs.filter(has_text=f"pick={second} leakage: round 0=")
        line.first.wait_for(timeout=UPDATE_TIMEOUT_MS)
        text = line.first.text_content() or ""
        for source in ("CONTA=", "paste=", "context_negatives=", "conta_appearance="):
            assert source in text, text
        image = line.first.locator("img").first
        image.wait_for(timeout=UPDATE_TIMEOUT_MS)
        image.evaluate("img => img.decode()")
        assert image.evaluate("img => img.naturalWidth") > 400
        # whole: a 111 kB data URL here; the half-blank ones of a widget moved on a subshell's
        # thread beside running cells were 13-26 kB
        assert image.evaluate("img => img.src.length") > 60_000
        line.first.evaluate("el => el.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(500)
        line.first.screenshot(path=str(shot))
    assert shot.is_file() and shot.stat().st_size > 10_000, shot


@contextlib.contextmanager
def _notebook_page(lab: dict, notebook: str, name: str) -> Iterator[Any]:
    """A headless chromium page on ``notebook`` in the lab, all its cells started; on a failure
    inside the block, a screenshot of the page (``browser_<name>_page.png``) and the lab's log
    tail are printed before the error goes on; the browser is closed in any case."""
    page_shot = lab["tmp"] / f"browser_{name}_page.png"
    with lab["sync_playwright"]() as p:
        ctx = p.chromium.launch_persistent_context(
            str(lab["tmp"] / f"profile_{name}"), executable_path=lab["chromium"], headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 1000})
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        try:
            _open_and_run_all(page, lab, notebook)
            yield page
        except Exception:
            page.screenshot(path=str(page_shot))
            print(f"page at the failure: {page_shot}\njupyter lab log ({lab['log']}):\n"
                  f"{_log_tail(lab['log'])}")
            raise
        finally:
            ctx.close()


def _open_and_run_all(page, lab: dict, notebook: str) -> None:
    """Open ``notebook`` in JupyterLab, wait for its kernel and run all its cells."""
    page.goto(f"{lab['base']}/lab/tree/{notebook}?reset&token={TOKEN}", timeout=KERNEL_TIMEOUT_MS)
    # A cold start shows an idle indicator before the kernel is connected, and "Run All" sent
    # then does nothing: wait for the session itself, then for the kernel's info reply.
    page.wait_for_function(
        "() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel",
        timeout=KERNEL_TIMEOUT_MS)
    path = page.evaluate("() => window.jupyterapp.shell.currentWidget.context.path")
    assert path == notebook, f"JupyterLab opened {path!r}, not {notebook!r}"
    page.evaluate("async () => { const sc = window.jupyterapp.shell.currentWidget"
                  ".sessionContext; await sc.ready; await sc.session.kernel.info; }")
    # Fire and forget: a returned command promise can deadlock evaluate (a command that opens a
    # dialog resolves only once the dialog is answered).
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def _wait_all_cells_done(page) -> None:
    """Wait until every cell of the notebook has run (no "[*]" prompt left, kernel idle).

    A widget moved while the cells after it were still queued got its figure drawn half blank
    (notebook 08): JupyterLab sent the message over a kernel subshell, whose thread drew the
    callback's figure beside the main thread's cells. The environment's lab settings now keep
    widget messages on the main shell (test_widget_messages_stay_on_the_main_shell below; with
    them, 4 of 4 picks made with 2-4 cells still queued were whole, without them 0 of 5); the
    test still moves a widget after Run All has finished, as a reader does, so that its time
    limits do not depend on the cells'.
    """
    page.wait_for_function(
        "() => { const w = window.jupyterapp.shell.currentWidget;"
        " return w.sessionContext.session.kernel.status === 'idle' && !w.content.widgets.some("
        "c => c.model.type === 'code' && (c.promptNode?.textContent || '').includes('*')); }",
        timeout=3 * WIDGET_TIMEOUT_MS, polling=500)


def _slider_redraws(lab: dict, notebook: str, before: str, after: str, readout_after: str,
                    name: str) -> None:
    """Open ``notebook``, run all its cells, wait for a widget output holding ``before``, press
    ArrowLeft on the first slider and wait for ``after`` and the slider's readout."""
    shot, page_shot = (lab["tmp"] / f"browser_{name}_widget.png",
                       lab["tmp"] / f"browser_{name}_page.png")
    t0 = time.perf_counter()
    with _notebook_page(lab, notebook, name) as page:
        outputs = page.locator(".widget-output")
        outputs.filter(has_text=before).first.wait_for(timeout=WIDGET_TIMEOUT_MS)
        _wait_all_cells_done(page)
        errors = page.locator("[data-mime-type='application/vnd.jupyter.error']")
        assert errors.count() == 0, f"a cell raised:\n{errors.first.inner_text()}"

        handle = page.locator(".widget-slider .noUi-handle").first
        handle.focus()
        page.keyboard.press("ArrowLeft")
        # Wait for the printed line, not for the image: each key press sends its own update,
        # so an image that just changed may still show an intermediate value.
        outputs.filter(has_text=after).first.wait_for(timeout=UPDATE_TIMEOUT_MS)
        readout = page.locator(".widget-slider .widget-readout").first.inner_text()
        assert readout.strip() == readout_after, readout
        image = outputs.filter(has_text=after).first.locator("img").first
        image.wait_for(timeout=UPDATE_TIMEOUT_MS)
        cell = page.locator(".jp-Cell").filter(has=page.locator(".widget-slider")).first
        cell.evaluate("el => el.scrollIntoView({block: 'start'})")
        image.evaluate("img => img.decode()")  # the PNG is painted before the screenshot
        width = image.evaluate("img => img.naturalWidth")
        assert width > 200, f"the redrawn figure is {width} px wide"
        page.wait_for_timeout(500)
        cell.screenshot(path=str(shot))
        page.screenshot(path=str(page_shot))
    assert shot.is_file() and shot.stat().st_size > 10_000, shot
    print(f"browser test ({notebook}): slider moved and redrawn in {time.perf_counter() - t0:.1f} s; "
          f"screenshots: {shot} (the widget cell), {page_shot} (the page)")


def test_widget_messages_stay_on_the_main_shell(lab: dict) -> None:
    """The environment's JupyterLab (``make venv`` copies notebooks/lab-settings/ into its
    settings folder) sends widget messages on the main shell, not over a kernel subshell whose
    thread would run a callback beside the running cell (notebooks/README.md)."""
    name = "@jupyterlab/apputils-extension:kernels-settings"
    shipped = json.loads((REPO / "notebooks" / "lab-settings" / "causal-wsss.json").read_text())
    assert shipped[name] == {"commsOverSubshells": "disabled"}
    reply = json.loads(_get(f"{lab['base']}/lab/api/settings/{name}?token={TOKEN}"))
    composite = reply["settings"].get("commsOverSubshells",
                                      reply["schema"]["properties"]["commsOverSubshells"]["default"])
    assert composite == "disabled", (
        f"JupyterLab uses commsOverSubshells={composite!r}: run `make venv` (it installs "
        f"{sys.prefix}/share/jupyter/lab/settings/overrides.d/causal-wsss.json)")
