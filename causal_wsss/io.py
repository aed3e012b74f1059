"""Atomic file writing: everything the project saves goes to a temporary name, then is renamed."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import CausalWSSSError, ConfigError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``suffix`` is kept on the temporary name so that writers choosing a format from the
    extension (PIL, numpy) still see it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix + ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def save_image(path: str | os.PathLike, image: Any, **kwargs: Any) -> None:
    """Save a PIL image atomically; the format follows the extension of ``path``."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(path.suffix.lower())
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **kwargs)


def torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` atomically (checkpoints, caches)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# --------------------------------------------------------------------------------------------
# folders that files go to


def check_folder_target(path: str | os.PathLike, option: str,
                        error: type[CausalWSSSError]) -> Path:
    """``path`` if it is, or can become, a writable folder; otherwise ``error`` naming the culprit.

    Writes nothing. A path under a file, an existing file and a folder (or first existing
    ancestor) that is not writable are refused.
    """
    path = Path(path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise error(f"{option} {path} exists and is not a folder; expected a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise error(f"{option} {path} is not writable; expected a folder this user can "
                        f"write (choose another {option})")
        return path
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise error(f"{option} {path} cannot be created: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise error(f"{option} {path} cannot be created: {ancestor} is not writable; expected "
                    f"a writable place (choose another {option})")
    return path


def make_folder(path: Path, option: str = "--out",
                error: type[CausalWSSSError] | None = None) -> Path:
    """``mkdir -p path``; an OSError (read-only file system, permissions) becomes ``error``."""
    error = error or ConfigError
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"{option} {path} cannot be created: {exc.strerror or exc}"
                    + (f" ({exc.filename})" if exc.filename else "")
                    + f"; expected a writable place (choose another {option})") from exc
    return path
