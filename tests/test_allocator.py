"""tcmalloc for the command line: when the program re-executes itself with it preloaded, that the
re-executed run says so and computes the same numbers, and that ``CAUSAL_WSSS_TCMALLOC`` is
honoured and checked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from causal_wsss import runtime
from causal_wsss.errors import ConfigError
from causal_wsss.runtime import REEXEC_ENV, TCMALLOC_ENV, tcmalloc_reexec_env, tcmalloc_wanted

LIB = "/opt/lib/libtcmalloc_minimal.so.4"


@pytest.fixture
def installed(monkeypatch):
    monkeypatch.setattr(runtime, "tcmalloc_path", lambda: LIB)


def test_reexec_env_preloads_tcmalloc_once_and_only_where_it_applies(installed, monkeypatch):
    env = tcmalloc_reexec_env({"PATH": "/bin"}, cuda=False)
    assert env["LD_PRELOAD"] == LIB and env[REEXEC_ENV] == "1" and env["PATH"] == "/bin"
    assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 40  # no stderr reports
    kept = tcmalloc_reexec_env({"LD_PRELOAD": "/x/libfoo.so"}, cuda=False)
    assert kept["LD_PRELOAD"] == f"{LIB}:/x/libfoo.so"  # the user's preload kept, after it
    for environ, cuda in (({TCMALLOC_ENV: "0"}, False),  # asked not to
                          ({}, True),  # a CUDA machine: not measured there
                          ({REEXEC_ENV: "1"}, False),  # the re-executed process itself
                          ({"LD_PRELOAD": "/usr/lib/libtcmalloc.so.4"}, False),  # loaded
                          ({"LD_PRELOAD": "libjemalloc.so.2"}, False)):  # the user's choice
        assert tcmalloc_reexec_env(environ, cuda=cuda) is None, environ
    monkeypatch.setattr(runtime, "tcmalloc_path", lambda: None)  # not installed
    assert tcmalloc_reexec_env({}, cuda=False) is None


def test_the_variable_takes_1_or_0_only():
    assert tcmalloc_wanted({}) and tcmalloc_wanted({TCMALLOC_ENV: "1"})
    assert not tcmalloc_wanted({TCMALLOC_ENV: "0"})
    with pytest.raises(ConfigError, match=TCMALLOC_ENV):
        tcmalloc_wanted({TCMALLOC_ENV: "fast"})


def _cli(args: list[str], **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in (REEXEC_ENV, "LD_PRELOAD")}
    environ.update(OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, "-m", "causal_wsss", *args], env=environ,
                          capture_output=True, text=True, timeout=600)


def test_a_bad_value_is_one_line_from_the_program(tmp_path):
    done = _cli(["run", "--preset", "smoke", "--root", str(tmp_path / "none"), "--out",
                 str(tmp_path / "run")], CAUSAL_WSSS_TCMALLOC="fast")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert TCMALLOC_ENV in done.stderr and "'fast'" in done.stderr
    assert not (tmp_path / "run").exists()


def test_the_program_runs_on_tcmalloc_where_installed_with_the_same_numbers(tmp_path):
    from causal_wsss.data.synthetic import generate_synthetic

    generate_synthetic(tmp_path / "data", n_train=8, n_val=4, seed=0, size=64)
    runs = {}
    for name, value in (("default", "1"), ("malloc", "0")):
        out = tmp_path / name
        done = _cli(["run", "--preset", "smoke", "--root", str(tmp_path / "data"), "--rounds",
                     "0", "--out", str(out), "--no-progress", "seg.iterations=2"],
                    CAUSAL_WSSS_TCMALLOC=value)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "tcmalloc: large alloc" not in done.stderr
        runs[name] = out
    expect = "tcmalloc" if runtime.tcmalloc_path() and sys.platform.startswith("linux") else "malloc"
    assert f"allocator {expect}" in (runs["default"] / "log.txt").read_text()
    assert "allocator malloc" in (runs["malloc"] / "log.txt").read_text()
    assert (runs["default"] / "report.json").read_bytes() == \
        (runs["malloc"] / "report.json").read_bytes()


def test_bench_allocator_runs_on_the_allocator_it_was_started_with():
    """bench/bench_allocator.py: a small step on the allocator it was started with, named in its
    line (no time or count asserted: how many faults glibc's adaptive threshold and the
    kernel's huge pages leave varies from run to run at small sizes)."""
    script = Path(__file__).resolve().parents[1] / "bench" / "bench_allocator.py"
    counts = {}
    for name, preload in (("malloc", ""), ("tcmalloc", runtime.tcmalloc_path() or "")):
        if name == "tcmalloc" and not preload:
            continue
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        env.update(OMP_NUM_THREADS="1", **({"LD_PRELOAD": preload} if preload else {}))
        done = subprocess.run([sys.executable, str(script), "--steps", "2", "--batch", "4",
                               "--crop", "128"], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.startswith(f"allocator {name}:"), done.stdout
        counts[name] = float(done.stdout.split(", ")[1].split()[0])
    assert all(count >= 0 for count in counts.values()), counts
