"""Fixtures shared by several test files."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(scope="session")
def python3_kernel(tmp_path_factory) -> str:
    """A kernelspec ``python3`` running this interpreter, ahead of any user-level ``python3``
    (JUPYTER_PATH beats the user and system folders)."""
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager

    prefix = tmp_path_factory.mktemp("jupyter")
    install(kernel_name="python3", prefix=str(prefix))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
        spec = KernelSpecManager().get_kernel_spec("python3")
        assert spec.argv[0] == sys.executable, spec.argv
        yield "python3"
