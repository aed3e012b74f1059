"""Atomic writes leave either the old file or the new one, never half of either."""

from __future__ import annotations

import errno
import os
import tempfile

import pytest

from causal_wsss.io import atomic_path, write_json, write_text


def test_atomic_write_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    write_text(target, "one")
    write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert target.read_text().strip() == '{\n  "v": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_written_files_get_ordinary_permissions(tmp_path):
    import os

    target = tmp_path / "p.txt"
    write_text(target, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


# --- a full disk: one line naming the file, nothing partial left --------------------------------

TORCH_DISK_FULL = ("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed "
                   "writing file data/0: file write failed")


def _checkpoint_folder(tmp_path):
    import torch

    from causal_wsss.checkpoint import save_checkpoint

    path = tmp_path / "run" / "cam_net.pt"
    save_checkpoint(path, model=torch.nn.Linear(2, 2), epoch=1)
    return path


def _assert_disk_full(exc, path):
    from causal_wsss.errors import CausalWSSSError

    message = str(exc.value)
    assert isinstance(exc.value, CausalWSSSError) and isinstance(exc.value, OSError)
    assert "\n" not in message and str(path) in message and "rerun" in message
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(path)


def _assert_old_checkpoint_intact(path):
    from causal_wsss.checkpoint import load_checkpoint

    assert [p.name for p in path.parent.iterdir()] == ["cam_net.pt"]  # no partial, no temp file
    assert load_checkpoint(path)["epoch"] == 1


@pytest.mark.parametrize("error", [RuntimeError(TORCH_DISK_FULL),
                                   OSError(errno.ENOSPC, "No space left on device")])
def test_checkpoint_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, error):
    import torch

    from causal_wsss.checkpoint import save_checkpoint
    from causal_wsss.errors import DiskFullError

    path = _checkpoint_folder(tmp_path)

    def full_disk_save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):  # torch opens the file itself
            with open(f, "ab") as fh:
                fh.write(b"PK\x03\x04 partial")
        else:
            f.write(b"PK\x03\x04 partial")  # torch has written part of the archive
        raise error

    monkeypatch.setattr(torch, "save", full_disk_save)
    with pytest.raises(DiskFullError) as exc:  # the RuntimeError was raw
        save_checkpoint(path, model=torch.nn.Linear(2, 2), epoch=2)
    _assert_disk_full(exc, path)
    _assert_old_checkpoint_intact(path)
    with pytest.raises(DiskFullError):
        save_checkpoint(path.with_name("new.pt"), model=torch.nn.Linear(2, 2))
    _assert_old_checkpoint_intact(path)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_torch_save_onto_a_really_full_device(tmp_path, monkeypatch):
    """torch itself writes to /dev/full, which fails every write with ENOSPC."""
    import builtins

    import torch

    from causal_wsss import io as io_mod
    from causal_wsss.errors import DiskFullError
    from causal_wsss.io import torch_save

    path = _checkpoint_folder(tmp_path)
    monkeypatch.setattr(io_mod, "open", lambda _tmp, mode: builtins.open("/dev/full", mode),
                        raising=False)
    with pytest.raises(DiskFullError) as exc:
        torch_save(path, {"model": torch.zeros(100_000)})
    _assert_disk_full(exc, path)
    _assert_old_checkpoint_intact(path)


def test_other_save_errors_are_not_called_disk_full(tmp_path, monkeypatch):
    import torch

    from causal_wsss.errors import DiskFullError
    from causal_wsss.io import torch_save

    def broken(obj, f, *args, **kwargs):
        raise RuntimeError("cannot pickle this")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="cannot pickle this") as exc:
        torch_save(tmp_path / "x.pt", {})
    assert not isinstance(exc.value, DiskFullError)
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "y.bin"):
            raise PermissionError(errno.EACCES, "denied")
    assert list(tmp_path.iterdir()) == []


def test_any_atomic_write_on_a_full_disk_names_its_file(tmp_path, monkeypatch):
    from causal_wsss.errors import DiskFullError

    target = tmp_path / "cams" / "img.npz"
    with pytest.raises(DiskFullError, match="cannot write .*img.npz: no space left on device"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(target.parent.iterdir()) == []

    def no_inode(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", no_inode)
    with pytest.raises(DiskFullError, match="a.json"):
        write_json(tmp_path / "a.json", {"v": 1})
