"""Atomic file writing: everything the project saves goes to a temporary name, then is renamed.

A write that fails because the disk (or the quota) is full raises
:class:`~causal_wsss.errors.DiskFullError` naming the file, and leaves neither a partial file
nor a temporary one: the old file, if any, is intact.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import CausalWSSSError, ConfigError, DiskFullError

_DISK_FULL = frozenset(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None))
                       if code is not None)

# torch's zip writer reports a failed write to a file it opened itself this way (its C++
# stream error, not errno); :func:`torch_save` writes through a Python file instead, where a
# full disk is an OSError with errno ENOSPC, so this is only a fallback.
_TORCH_WRITE_FAILED = "PytorchStreamWriter failed writing file"


def _disk_full_error(path: Path, cause: str) -> DiskFullError:
    return DiskFullError(errno.ENOSPC, f"cannot write {path}: {cause}; free some space and rerun "
                         f"the same command to resume (the files already written are kept)",
                         str(path))


def _is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``suffix`` is kept on the temporary name so that writers choosing a format from the
    extension (PIL, numpy) still see it. An ``OSError`` with errno ENOSPC or EDQUOT (disk or
    quota full) becomes :class:`~causal_wsss.errors.DiskFullError` naming ``path``; the
    temporary file is removed whatever the error.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix + ".tmp",
                                   dir=path.parent)
    except OSError as exc:
        if _is_disk_full(exc):
            raise _disk_full_error(path, "no space left on device") from exc
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if _is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise _disk_full_error(path, "no space left on device") from exc
        raise


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block: processes that
    share a folder (e.g. the shards of the evidence protocol) take turns at what they both write.

    ``fcntl.flock``: advisory, released when the block ends or the process dies; on a system
    without ``fcntl`` (Windows) the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - POSIX only
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


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
    """``torch.save`` atomically (checkpoints, caches).

    The file is written through a Python file object, so a full disk surfaces as an OSError
    with its errno: :class:`~causal_wsss.errors.DiskFullError` (one line naming ``path``,
    saying to free space and rerun to resume), with no partial or temporary file left. torch's
    own "PytorchStreamWriter failed writing file" error, should it come, is reported the same way.
    """
    import torch

    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as fh:
                torch.save(obj, fh)
        except RuntimeError as exc:
            if _TORCH_WRITE_FAILED not in str(exc):
                raise
            raise _disk_full_error(Path(path), f"torch could not write the file "
                                   f"({_TORCH_WRITE_FAILED}), most likely because the disk "
                                   f"is full") from exc


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
