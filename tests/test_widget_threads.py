"""Widget callbacks on a kernel subshell's thread, while cells draw in the main thread.

JupyterLab (4.4 and later) sends widget messages over a kernel subshell, and ipykernel 7 runs
a widget's callback in that subshell's thread while queued cells run in the main thread. Before
the fix, ipywidgets' ``interactive_output`` flushed pyplot's figures from the callback (taking
the running cell's half-drawn figures into the widget as blank images) and the callback's own
pyplot figure could be drawn by the main thread's inline flush at the same time (a partly blank
image). Here a real kernel gets the same messages JupyterLab sends: the callback must run in the
subshell's thread, and every picture must arrive whole, once, where it belongs.
"""

from __future__ import annotations

import base64
import os
import threading
import time

import matplotlib.pyplot as plt
import pytest

from causal_wsss.viz import close_figure, new_figure, new_subplots

SETUP = """
import threading
import numpy as np
import matplotlib.pyplot as plt
import causal_wsss.widgets as cw
THREADS = []
_show = cw._show
def traced_show(fig, line):
    THREADS.append(threading.current_thread().name)
    return _show(fig, line)
cw._show = traced_show
cw.confounding_widget(value=1.0)
"""

DRAWING_CELL = """
from matplotlib.figure import Figure
fig = Figure(figsize=(4, 3))  # outside pyplot: ipykernel's own flush after a widget message
fig.subplots().imshow(np.random.default_rng(0).random((120, 160)))  # would take a pyplot one
display(fig)
"""
CELLS_PER_MOVE = 8  # short cells: the main thread's inline flush runs after each


def _collect(kc, wanted: set[str], timeout: float = 120.0) -> dict[str, list[int]]:
    """PNG sizes per parent message id until every id in ``wanted`` went idle."""
    pngs: dict[str, list[int]] = {m: [] for m in wanted}
    pending, deadline = set(wanted), time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=5)
        except Exception:  # queue.Empty
            continue
        parent = msg["parent_header"].get("msg_id")
        if parent in pngs and msg["msg_type"] == "display_data":
            png = msg["content"]["data"].get("image/png")
            if png:
                pngs[parent].append(len(base64.b64decode(png)))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            pending.discard(parent)
    assert not pending, f"no answer to {len(pending)} message(s) in {timeout} s"
    return pngs


def _move(kc, comm_id: str, value: float, subshell: str | None) -> str:
    msg = kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {
        "method": "update", "state": {"value": value}, "buffer_paths": []}})
    if subshell:
        msg["header"]["subshell_id"] = subshell
    kc.shell_channel.send(msg)
    return msg["header"]["msg_id"]


@pytest.mark.slow
def test_widget_moved_while_cells_draw(python3_kernel, tmp_path, monkeypatch):
    from jupyter_client.manager import start_new_kernel

    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    km, kc = start_new_kernel(kernel_name=python3_kernel, cwd=str(tmp_path),
                              env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        info = kc.kernel_info(reply=True, timeout=60)["content"]
        if "kernel subshells" not in info.get("supported_features", []):
            pytest.skip("this ipykernel has no subshells (JupyterLab then runs callbacks in "
                        "the main thread, where this race cannot happen)")
        slider = []

        def hook(msg):
            state = msg["content"].get("data", {}).get("state", {})
            if msg["msg_type"] == "comm_open" and state.get("_model_name") == "FloatSliderModel":
                slider.append(msg["content"]["comm_id"])

        reply = kc.execute_interactive(SETUP, timeout=120, output_hook=hook)
        assert reply["content"]["status"] == "ok", reply["content"]
        assert len(slider) == 1
        kc.control_channel.send(kc.session.msg("create_subshell_request", {}))
        subshell = kc.control_channel.get_msg(timeout=30)["content"]["subshell_id"]
        # the first move answers on the main thread, as JupyterLab's does; ipykernel then routes
        # the comm's messages to the subshell its reply came from
        first = _move(kc, slider[0], 0.5, subshell)
        whole = _collect(kc, {first})[first]
        assert len(whole) == 1 and whole[0] > 20_000, whole
        for k, value in enumerate((0.25, 0.75, 0.0, 1.0, 0.5, 0.25)):
            cells = [kc.execute(DRAWING_CELL) for _ in range(CELLS_PER_MOVE)]
            time.sleep(0.05 * k)
            move = _move(kc, slider[0], value, subshell)
            pngs = _collect(kc, {*cells, move})
            assert len(pngs[move]) == 1, f"move {k}: the widget got {len(pngs[move])} images"
            assert pngs[move][0] > 0.7 * whole[0], f"move {k}: a partly blank figure {pngs[move]}"
            shown = [len(pngs[c]) for c in cells]
            assert shown == [1] * CELLS_PER_MOVE, f"move {k}: images per cell {shown}"
        reply = kc.execute_interactive("print(sorted(set(THREADS)))", timeout=60,
                                       output_hook=lambda m: slider.append(m))
        printed = "".join(m["content"].get("text", "") for m in slider[1:]
                          if m["msg_type"] == "stream")
        assert "subshell-" in printed, f"no callback ran in a subshell's thread: {printed}"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_figures_off_the_main_thread_stay_out_of_pyplot():
    before = set(plt.get_fignums())
    made = {}

    def worker():
        made["fig"], made["axes"] = new_subplots(1, 2, figsize=(4, 2), squeeze=False)
        made["single"] = new_figure(figsize=(2, 2))
        close_figure(made["fig"])  # nothing to close: pyplot never had it

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert set(plt.get_fignums()) == before
    assert made["axes"].shape == (1, 2) and tuple(made["fig"].get_size_inches()) == (4, 2)
    assert tuple(made["single"].get_size_inches()) == (2, 2)
    fig, _ = new_subplots(figsize=(2, 2))  # on the main thread: pyplot's, as plt.subplots
    try:
        assert fig.number in plt.get_fignums()
    finally:
        close_figure(fig)
    assert fig.number not in plt.get_fignums()
