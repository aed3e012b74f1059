"""The run folder of :func:`causal_wsss.pipeline.run_experiment`: a folder that cannot be wedged.

- :func:`check_out_folder` says, before anything is written, whether ``--out`` can be a folder;
- :class:`RunLock` is an exclusive lock on the folder (``run.lock``, an ``flock`` the kernel
  releases when the holder dies, so a killed run leaves no lock behind; the file names the
  holder for the refusal message);
- :func:`run_inputs` fingerprints what every stage depends on: the data (per split: the image
  names and the size and modification time of every image, mask, annotation, list and sidecar
  file) and the configuration (every key but ``rounds``). Each stage record
  ``round_k/<stage>.json`` carries it under ``"inputs"``;
- :func:`check_stages` runs before a resumed run: changed inputs are refused with one message;
  a finished stage whose record is unreadable or invalid (:mod:`causal_wsss.records`) or whose
  files are missing, corrupt or of the wrong kind is redone, with every stage computed from it
  (:data:`STAGE_INPUTS`), by deleting their records and files; broken files of a stage still to
  run are deleted (the stage writes them again);
- :func:`remove_stale_temporaries` deletes the temporary files of :func:`causal_wsss.io.atomic_path`
  that a killed run left behind (under the lock only).

Every path a run writes in its folder is the run's own: a file where the run's folder belongs
(or a folder where its file belongs) is removed and what it held is redone, with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import struct
import sys
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import IRN_ONLY_KEYS, ExperimentConfig, config_differences, describe_differences
from .confounders import saved_dictionary_problem
from .errors import CausalWSSSError, ConfigError, DataError
from .interventions import intervention_stages
from .io import check_folder_target, make_folder
from .methods import method_stages
from .records import entry_problem, record_problem
from .runtime import barrier, setup_logging
from .stage_table import STAGE_ARTEFACTS, STAGE_INPUTS, STAGES, Artefact
from .stages.datasets import names_of, query_datasets

LOCK_NAME = "run.lock"
CONFIG_NAME = "config.json"
REPORT_NAME = "report.json"
LOG_NAME = "log.txt"  # written by causal_wsss.runtime.setup_logging


# --------------------------------------------------------------------------------------------
# the lock


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return (f"pid {info['pid']} on {info.get('host', '?')}, started {info.get('started', '?')}"
                f" ({info.get('command', '?')})")
    except (ValueError, TypeError, KeyError):
        return "another process"


class RunLock:
    """An exclusive, non-blocking lock on a run folder: ``with RunLock(out): ...``.

    The lock is ``flock`` on ``out/run.lock``: the kernel drops it when the holder exits, however
    it exits, so a lock file left by a killed run is simply taken over. The file records the
    holder (pid, host, start time, command line) for the message of a refused second run.
    """

    def __init__(self, folder: str | os.PathLike, option: str = "--out") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.option = option
        self._fh: Any = None
        self.previous_holder: str = ""
        self.unsupported: str = ""  # why the folder could not be locked (then it is not)
        self.repaired: str = ""  # what was removed to take the lock (for a warning)

    def acquire(self) -> RunLock:
        try:
            import fcntl  # POSIX only: imported where the lock is taken
        except ImportError:  # not POSIX
            self.unsupported = "no fcntl on this platform"
            return self
        if self.path.is_dir() and not self.path.is_symlink():
            # a folder where the lock file belongs: no run can hold it, so none is running
            _remove(self.path, error=ConfigError)
            self.repaired = f"removed the folder {self.path}, where the run's lock file belongs"
        try:
            # errors="replace": whatever bytes the file holds, the holder is only described
            fh = open(self.path, "a+", encoding="utf-8", errors="replace")  # held until release()
        except OSError as exc:
            raise ConfigError(f"cannot create the lock file {self.path}: {exc.strerror or exc}; "
                              f"expected a writable run folder (choose another "
                              f"{self.option})") from exc
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                fh.close()  # a file system without flock (some network or FUSE mounts)
                self.unsupported = f"{exc.strerror or exc}"
                return self
            fh.seek(0)
            holder = _describe_holder(fh.read())
            fh.close()
            raise ConfigError(f"run folder {self.folder} is in use: {holder} holds {self.path}; "
                              "wait for that run to finish (or stop it), or choose another "
                              f"{self.option}") from exc
        fh.seek(0)
        self.previous_holder = fh.read().strip()
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "command": " ".join(["causal-wsss", *sys.argv[1:]])
                             if sys.argv and sys.argv[0].endswith(("causal_wsss", "__main__.py",
                                                                   "causal-wsss"))
                             else " ".join(sys.argv)}) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is None:
            return
        import fcntl

        with contextlib.suppress(OSError):
            self._fh.seek(0)
            self._fh.truncate()  # an empty lock file: released cleanly, not left by a killed run
            self._fh.flush()
        with contextlib.suppress(OSError):
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()
        self._fh = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# --------------------------------------------------------------------------------------------
# fingerprints


def _dataset_files(ds) -> Iterator[Path]:
    """Every file whose content the data set's samples come from (images, masks, labels, lists)."""
    mask_path = getattr(ds, "mask_path", None)
    voc_root = getattr(ds, "voc_root", None)
    for i in range(len(ds)):
        yield Path(ds.image_path(i))
        if callable(mask_path):
            path = mask_path(i)
            if path is not None:
                yield Path(path)
        if voc_root is not None:
            yield Path(voc_root) / "Annotations" / f"{ds.names[i]}.xml"
    for attr in ("list_path", "annotation_path"):
        path = getattr(ds, attr, None)
        if path is not None:
            yield Path(path)
    if voc_root is not None:
        yield Path(voc_root) / "synthetic.json"


def dataset_fingerprint(ds) -> dict[str, Any]:
    """``{"split", "images", "sha256"}``: the names and every file's size and modification time."""
    h = hashlib.sha256()
    h.update(f"{type(ds).__name__}\0{ds.split}\0".encode())
    h.update("\n".join(ds.names).encode())
    root = Path(ds.root)
    for path in _dataset_files(ds):
        try:
            st = path.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "-"
        h.update(f"\0{os.path.relpath(path, root)}\0{stamp}".encode())
    return {"split": ds.split, "images": len(ds), "sha256": h.hexdigest()[:20]}


LATER_KEYS: dict[str, Any] = {
    "cam.checkpoint": "",
    "context.adjustment": "nwgm",
    "context.optimizer": "same",
    "context.lr": 0.0,
    "pseudo.walk_reach": 0.0,
    "pseudo.irn_steps": 0,
    "esol.sampler": "deformable",
    "context.intervention": "conta",
    "cam_infer.work_long": 0,
    "cam_infer.amp": "same",
    "seg.last_round": True,
    "negatives.margin": 0.0,
    "negatives.folder": "",
}
"""Keys added after run folders began to carry config fingerprints, each with the value that
does what the code did before the key existed. At that value a key is left out of the
fingerprint, so a folder written before the key existed still resumes. Add every new config key
here with its neutral value (tests/test_runfolder.py checks that the defaults are neutral)."""

IRN_ONLY: tuple[str, ...] = IRN_ONLY_KEYS
"""Keys read only by IRN refinement: left out of the fingerprint unless ``pseudo.refine=irn``
(so a preset whose IRN settings change keeps the other runs' folders resumable)."""


def _drop(data: dict, dotted: str) -> None:
    section, key = dotted.split(".", 1)
    if isinstance(data.get(section), dict):
        data[section].pop(key, None)


def _hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]


def _fingerprint_data(cfg, *, drop_irn: bool) -> dict:
    """The config as a dict without ``rounds``, the neutral :data:`LATER_KEYS`, the ESOL keys of
    an IRN run and (``drop_irn``) the :data:`IRN_ONLY` keys of a run without IRN."""
    data = cfg.to_dict()
    data.pop("rounds", None)
    for dotted, neutral in LATER_KEYS.items():
        section, key = dotted.split(".", 1)
        if data.get(section, {}).get(key, neutral) == neutral:
            _drop(data, dotted)
    if drop_irn and data.get("pseudo", {}).get("refine") != "irn":
        for dotted in IRN_ONLY:
            _drop(data, dotted)
    _drop_esol(data)
    _drop_interventions(data)
    return data


def config_fingerprint(cfg) -> str:
    """A hash of the configuration: every key but ``rounds``, the :data:`LATER_KEYS` at their
    neutral values, and the :data:`IRN_ONLY` keys when the run does not refine with IRN."""
    return _hash(_fingerprint_data(cfg, drop_irn=True))


def legacy_config_fingerprint(cfg) -> str:
    """The fingerprint of folders written before :data:`IRN_ONLY` was left out (every key but
    ``rounds`` and the neutral :data:`LATER_KEYS`): still accepted when a folder resumes."""
    return _hash(_fingerprint_data(cfg, drop_irn=False))


def _drop_esol(data: dict) -> None:
    """With ``cam.method=irn`` the keys that cannot change an IRN run (``cam.method`` itself and
    the ``esol`` section) are left out, so folders written before CAM methods existed resume."""
    if data.get("cam", {}).get("method", "irn") == "irn":
        data["cam"].pop("method", None)
        data.pop("esol", None)


def _drop_interventions(data: dict) -> None:
    """The sections of the interventions a run does not use (``paste``, ``negatives``) are left
    out, so folders written before interventions existed resume."""
    chosen = data.get("context", {}).get("intervention", "conta")
    if chosen != "paste":
        data.pop("paste", None)
    if chosen not in ("context_negatives", "oracle_context_negatives"):
        data.pop("negatives", None)


def run_inputs(cfg, sets: dict) -> dict[str, Any]:
    """What every stage record stores under ``"inputs"``: the data and config fingerprints."""
    seen: dict[int, dict] = {}
    data = {}
    for role in ("train", "eval", "val", "twins"):
        if role not in sets:
            continue
        ds = sets[role]
        if id(ds) not in seen:
            seen[id(ds)] = dataset_fingerprint(ds)
        data[role] = seen[id(ds)]
    return {"data": data, "config": config_fingerprint(cfg)}


# --------------------------------------------------------------------------------------------
# stage records and their files


CACHE_FOLDERS = ("twin_cams", "esol_cams")
"""Folders of ``round_k/`` that a stage deletes and fills again whenever it runs (the twins' CAMs of
``twin_eval``, ESOL's ``esol_eval`` CAMs): only a file in their place is removed."""


# --------------------------------------------------------------------------------------------
# removing what is in the way


def _remove(path: Path, error: type[CausalWSSSError] = DataError) -> None:
    """Remove whatever is at ``path`` (a file, a link, a folder tree); ``error`` naming it if it
    cannot be removed (nothing there is fine)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise error(f"cannot remove {path} ({exc.strerror or exc}); it is in the way of the run: "
                    "remove it by hand and rerun") from exc


def _in_the_way(folder: Path) -> bool:
    """Whether something that is not a folder (a file, a dangling link) is at ``folder``."""
    return (folder.is_symlink() or folder.exists()) and not folder.is_dir()


def _kind_of(path: Path) -> str:
    if path.is_symlink() and not path.exists():
        return "a dangling link"
    return "a folder" if path.is_dir() else "a file" if path.is_file() else "a special file"


_TEMP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")  # tempfile's random names


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is a temporary name of :func:`causal_wsss.io.atomic_path`:
    ``.<target>.<8 random characters><suffix>``, the suffix being the target's extension plus
    ``.tmp`` (the default) or the target's extension itself (an explicit ``suffix=``)."""
    if not name.startswith("."):
        return False
    for i in range(2, len(name) - 8):
        if name[i] != "." or not _TEMP_CHARS.issuperset(name[i + 1:i + 9]):
            continue
        ext, suffix = Path(name[1:i]).suffix, name[i + 9:]
        if suffix == ext + ".tmp" or (ext and suffix == ext):
            return True
    return False


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the temporary files :func:`causal_wsss.io.atomic_path` left in ``out`` (beside
    ``config.json`` and ``report.json``) and under its ``round_k/`` folders when a run was killed
    while writing. Call it only while holding the folder's :class:`RunLock`: a running writer's
    temporary file looks the same. Returns the files removed."""
    removed: list[Path] = []
    tops = [out]
    with contextlib.suppress(OSError):
        tops += [p for p in out.iterdir() if _ROUND_NAME.match(p.name) and p.is_dir()
                 and not p.is_symlink()]
    for top in tops:
        for folder, dirs, files in os.walk(top):
            if top == out:
                dirs.clear()  # only the round folders are walked
            for name in files:
                path = Path(folder) / name
                if is_temporary_name(name) and path.is_file():
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed.append(path)
    return removed


_ROUND_NAME = re.compile(r"^round_\d+$")


# --------------------------------------------------------------------------------------------
# stage records


def load_record(path: Path) -> tuple[dict | None, str | None]:
    """``(record, None)``; ``(None, None)`` when absent; ``(None, why)`` when the file is not a
    valid record of its stage (unreadable JSON, another kind of path, or not what the stage writes:
    :func:`causal_wsss.records.record_problem`)."""
    if not path.exists() and not path.is_symlink():
        return None, None
    if not path.is_file():
        return None, f"{_kind_of(path)}, not a stage record"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    problem = record_problem(path.stem, data)
    if problem:
        return None, f"invalid ({problem})"
    return data, None


def read_record(path: Path) -> dict | None:
    """A stage record, validated against its stage's schema (:mod:`causal_wsss.records`); ``None``
    when absent; DataError naming the file when it is unreadable or invalid."""
    record, problem = load_record(path)
    if problem:
        raise DataError(f"stage record {path} is {problem}; expected the JSON a finished stage "
                        "writes: rerun, and the run redoes that stage and the stages computed "
                        "from it")
    return record


# --------------------------------------------------------------------------------------------
# the files of a stage

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _png_problem(data: bytes) -> str | None:
    """Why ``data`` is not a whole PNG: the chunks' CRCs, IHDR first, IEND last, and the image data
    inflating to the size the header gives (with valid row filters). No pixel is unfiltered."""
    if not data.startswith(_PNG_SIGNATURE):
        return "not a PNG (no PNG signature)"
    pos, header, idat = len(_PNG_SIGNATURE), None, []
    while True:
        if pos + 12 > len(data):
            return "truncated (no PNG end chunk)"
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            return f"truncated (PNG chunk {kind!r} cut short)"
        if zlib.crc32(data[pos + 4:pos + 8 + length]) != struct.unpack(">I", data[end - 4:end])[0]:
            return f"corrupt (the CRC of PNG chunk {kind!r} does not match)"
        body = data[pos + 8:pos + 8 + length]
        if header is None:
            if kind != b"IHDR" or length != 13:
                return "corrupt (no PNG header chunk)"
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            if end != len(data):
                return "corrupt (bytes after the PNG end chunk)"
            break
        pos = end
    width, height, depth, color, _, _, interlace = header
    if color not in _PNG_CHANNELS or not idat:
        return "corrupt (no PNG image data)"
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        return f"corrupt (PNG image data: {exc})"
    if interlace == 0:
        row = 1 + math.ceil(width * _PNG_CHANNELS[color] * depth / 8)
        if len(raw) != height * row:
            return f"corrupt (PNG image data of {len(raw)} bytes, expected {height * row})"
        if raw[::row] and max(raw[::row]) > 4:
            return "corrupt (PNG row filter out of range)"
    return None


def file_problem(path: Path, kind: str) -> str | None:
    """Why ``path`` is not a complete file of ``kind``, or None when it looks whole.

    The checks read the file but decode nothing: zip (checkpoints, .npz) every member's CRC;
    png every chunk's CRC and the inflated size of the image data; npy the header and the size;
    json that it parses.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if not path.is_file():
        return f"{_kind_of(path)}, not a file"
    if st.st_size == 0:
        return "empty (0 bytes)"
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()  # reads every member, checks its CRC
            if bad is not None:
                return f"corrupt (member {bad} fails its CRC check)"
        elif kind == "npy":
            array = np.load(path, mmap_mode="r")  # reads the header, checks the size
            del array
        elif kind == "json":
            json.loads(path.read_text(encoding="utf-8"))
        elif kind == "png":
            return _png_problem(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - whatever a broken file raises, it is broken
        return f"truncated or corrupt ({type(exc).__name__}: {exc})"
    return None


class RunFolder:
    """The stage records and files of a run folder, for :func:`check_stages`."""

    def __init__(self, out: Path, cfg, names: dict[str, list[str]]) -> None:
        self.out, self.cfg, self.names = out, cfg, names

    def rounds(self) -> list[int]:
        found = []
        for path in self.out.glob("round_*"):
            suffix = path.name[len("round_"):]
            if path.is_dir() and suffix.isdigit():
                found.append(int(suffix))
        return sorted(found)

    def repair_paths(self) -> list[str]:
        """Remove a ``round_k`` that is not a folder, and a file where a round's cache folder
        (:data:`CACHE_FOLDERS`) belongs; returns what was removed, for a warning."""
        notes = []
        for path in sorted(self.out.glob("round_*")):
            if _ROUND_NAME.match(path.name) and not path.is_dir():
                notes.append(f"{path} was {_kind_of(path)} where the run's round folder belongs")
                _remove(path)
        for r in self.rounds():
            for name in CACHE_FOLDERS:
                path = self.out / f"round_{r}" / name
                if _in_the_way(path):
                    notes.append(f"{path} was {_kind_of(path)} where the run's folder belongs")
                    _remove(path)
        return notes

    def record_path(self, r: int, stage: str) -> Path:
        return self.out / f"round_{r}" / f"{stage}.json"

    def applies(self, r: int, stage: str) -> bool:
        if r < 0:
            return False
        own = intervention_stages().get(stage)
        if own is not None:  # an intervention's stage runs in rounds >= 1, for it only
            return r > 0 and own.method == self.cfg.context.intervention and (
                own.enabled is None or bool(own.enabled(self.cfg)))
        if stage in ("ir_labels", "irn_train"):
            return self.cfg.pseudo.refine == "irn"
        spec = method_stages().get(stage)
        if spec is not None:  # a CAM method's own stage runs for that method only
            return spec.method == self.cfg.cam.method and (spec.enabled is None
                                                           or bool(spec.enabled(self.cfg)))
        return True

    def inputs_of(self, r: int, stage: str) -> list[tuple[int, str]]:
        deps = []
        for offset, dep in STAGE_INPUTS.get(stage, ()):
            if stage == "confounders" and self.cfg.context.source == "gt":
                continue  # built from the ground truth, not from the last round's predictions
            if self.applies(r + offset, dep):
                deps.append((r + offset, dep))
        return deps

    def _wrong_folder(self, round_dir: Path, art: Artefact) -> Path | None:
        """The artefact's folder when something other than a folder is in its place."""
        if art.folder is None:
            return None
        folder = round_dir / art.folder
        return folder if _in_the_way(folder) else None

    def problem(self, r: int, stage: str, deep: bool = True) -> tuple[Path, str] | None:
        """The first missing, corrupt or misplaced file of stage ``stage`` of round ``r``.

        Every file is read (:func:`file_problem`); with ``deep=False`` the files of per-image
        folders are only listed. The confounder dictionary is also checked for values a
        dictionary can hold (:func:`causal_wsss.confounders.saved_dictionary_problem`).
        """
        round_dir = self.out / f"round_{r}"
        for art in STAGE_ARTEFACTS.get(stage, ()):
            wrong = self._wrong_folder(round_dir, art)
            if wrong is not None:
                return wrong, f"{_kind_of(wrong)} where the run's folder belongs"
            if not art.images:
                reason = file_problem(round_dir / art.path, art.kind)
                if reason:
                    return round_dir / art.path, reason
                continue
            folder = round_dir / art.folder
            names = self.names[art.images]
            present = set(os.listdir(folder)) if folder.is_dir() else set()
            suffix = art.path.split("{}")[1]
            missing = [n for n in names if f"{n}{suffix}" not in present]
            if missing:
                return (folder / f"{missing[0]}{suffix}",
                        f"missing ({len(missing)} of the {len(names)} files of {folder})")
            for name in names if deep else ():
                path = round_dir / art.path.format(name)
                reason = file_problem(path, art.kind)
                if reason:
                    return path, reason
        if stage == "confounders":

            found = saved_dictionary_problem(round_dir / "confounders",
                                             rows=len(self.names["query"]))
            if found is not None:
                return found
        return None

    def delete(self, r: int, stage: str) -> None:
        """Remove the record and the files of a stage, whatever kind of path holds them (it is
        then redone); DataError naming a path that cannot be removed."""
        round_dir = self.out / f"round_{r}"
        _remove(self.record_path(r, stage))
        for art in STAGE_ARTEFACTS.get(stage, ()):
            _remove(round_dir / (art.folder or art.path))

    def drop_broken_files(self, r: int, stage: str) -> list[str]:
        """Delete the broken files of a stage still to run, which would reuse them (per-image
        files are skipped when present, a checkpoint resumes training); returns what was removed."""
        round_dir = self.out / f"round_{r}"
        notes = []
        for art in STAGE_ARTEFACTS.get(stage, ()):
            wrong = self._wrong_folder(round_dir, art)
            if wrong is not None:
                notes.append(f"{wrong} was {_kind_of(wrong)} where the run's folder belongs")
                _remove(wrong)
                continue
            if not art.images:
                path = round_dir / art.path
                reason = file_problem(path, art.kind)
                if reason and reason != "missing":
                    notes.append(f"{path} was {reason}")
                    _remove(path)
                continue
            folder = round_dir / art.folder
            suffix = art.path.split("{}")[1]
            for name in sorted(os.listdir(folder)) if folder.is_dir() else ():
                path = folder / name
                if not name.endswith(suffix) or is_temporary_name(name):
                    continue
                reason = file_problem(path, art.kind)
                if reason and reason != "missing":
                    notes.append(f"{path} was {reason}")
                    _remove(path)
        return notes


def _describe_data_change(old: Any, new: dict) -> str:
    """``split 'train' (16 images, files changed), split 'val' (4 images, was 8)``."""
    if not isinstance(old, dict):
        return "the data set changed"
    parts: dict[str, str] = {}
    for role, now in new.items():
        then = old.get(role)
        if isinstance(then, dict) and then.get("sha256") == now["sha256"]:
            continue
        was = then.get("images") if isinstance(then, dict) else "?"
        what = (f"{now['images']} images, was {was}" if was != now["images"]
                else f"{now['images']} images, files changed")
        parts.setdefault(now["split"], f"split '{now['split']}' ({what})")
    return ", ".join(parts.values()) or "the data set changed"


def check_stages(out: Path, cfg, inputs: dict, names: dict[str, list[str]], *,
                 logger: logging.Logger | None = None) -> list[str]:
    """Check every stage record and file of ``out`` before a (resumed) run; returns the stages
    redone.

    1. A valid record whose data or config fingerprint differs from ``inputs`` is refused, before
       anything is deleted: the data under ``data.root`` changed since that stage ran
       (ConfigError saying what and how to go on).
    2. A finished stage is redone when its record is unreadable or invalid
       (:func:`load_record`) or one of its files is missing, corrupt or of the wrong kind
       (:meth:`RunFolder.problem`, every file read): its record and files are deleted, and so
       are those of every stage computed from it (in later rounds too); a warning names the file.
    3. Broken files of stages still to run are deleted (those stages skip or resume from the
       files they find), as are a ``round_k`` that is not a folder and files where a round's
       cache folder belongs.

    ``names``: ``{"train": train names, "cams": + extra eval names, "query": + twins}``.
    """
    logger = logger or logging.getLogger("causal_wsss")
    folder = RunFolder(out, cfg, names)
    rounds = folder.rounds()
    records: dict[tuple[int, str], dict] = {}
    broken: dict[tuple[int, str], str] = {}
    data_changed = config_changed = ""
    legacy = legacy_config_fingerprint(cfg)
    for r in rounds:
        for stage in STAGES:
            path = folder.record_path(r, stage)
            record, problem = load_record(path)
            if problem:
                broken[(r, stage)] = f"the stage record {path} is {problem}"
                continue
            if record is None:
                continue
            records[(r, stage)] = record
            recorded = record.get("inputs")
            if recorded is None:
                continue  # written before records carried their inputs
            if recorded["data"] != inputs["data"] and not data_changed:
                data_changed = (f"the data under {cfg.data.root} changed since {path} was "
                                "written: "
                                + _describe_data_change(recorded["data"], inputs["data"]))
            if recorded["config"] not in (inputs["config"], legacy) and not config_changed:
                config_changed = (f"{path} was computed with a different configuration than "
                                  f"this one ({out / CONFIG_NAME} was edited or replaced)")
    if data_changed or config_changed:
        raise ConfigError("; ".join(filter(None, (data_changed, config_changed)))
                          + ". Its results would mix the old inputs with the new: run into a new "
                          f"folder (another --out), or delete {out} to start afresh, or restore "
                          "the data")

    notes = folder.repair_paths()  # nothing is removed before a refusal
    redo: dict[tuple[int, str], str] = {}
    for r in rounds:
        for stage in STAGES:
            key = (r, stage)
            direct = broken.get(key, "")
            if not direct and key in records:
                found = folder.problem(r, stage)
                if found is not None:
                    direct = f"{found[0]} is {found[1]}"
            elif not direct:
                continue
            why = direct
            for dep in folder.inputs_of(r, stage) if not why else ():
                if dep in redo:
                    why = f"it is computed from round {dep[0]} {dep[1]}, which is redone"
                    break
                if dep not in records and folder.problem(*dep, deep=False) is not None:
                    why = f"its input, round {dep[0]} {dep[1]}, is gone"
                    break
            if why:
                redo[key] = why
                if direct:
                    logger.warning("%s: redoing round %d %s and every stage computed from it",
                                   why, r, stage)
    for r, stage in redo:
        folder.delete(r, stage)
    for r in rounds:
        for stage in STAGES:
            if (r, stage) not in records and folder.applies(r, stage):
                notes += folder.drop_broken_files(r, stage)
    for note in notes:
        logger.warning("%s: removed it (the stage that writes there does so again)", note)
    if redo:
        logger.warning("stages to redo: %s", ", ".join(f"round {r} {s}" for r, s in redo))
    return [f"round_{r}/{s}" for r, s in redo]


def round_is_finished(out: Path, r: int) -> bool:
    """Whether round ``r`` has the records its report entry is made of."""
    return all((out / f"round_{r}" / f"{s}.json").is_file()
               for s in ("cam_train", "cam_eval", "pseudo_eval", "seg_eval"))


def later_rounds(out: Path, rounds: int, logger: logging.Logger | None = None) -> list[dict]:
    """Report entries of finished rounds beyond ``rounds`` (a rerun with fewer rounds keeps them).

    Only entries that are valid (:func:`causal_wsss.records.entry_problem`) and whose round is
    finished are kept, in order from ``rounds + 1``; the first invalid one is named in a warning
    (with ``logger``), and it and those after it are left out.
    """

    path = out / REPORT_NAME
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        entries = [e for e in old["rounds"] if isinstance(e, dict)
                   and isinstance(e.get("round"), int) and e["round"] > rounds]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return []
    kept = []
    for r, entry in enumerate(sorted(entries, key=lambda e: e["round"]), start=rounds + 1):
        if entry["round"] != r or not round_is_finished(out, r):
            break
        problem = entry_problem(entry)
        if problem:
            if logger is not None:
                logger.warning("%s: the entry of round %d is invalid (%s); leaving rounds %d and "
                               "later out of the report (rerun with --rounds %d to redo them "
                               "into it)", path, r, problem, r, max(e["round"] for e in entries))
            break
        kept.append(entry)
    return kept



def has_results(out: Path) -> bool:
    """Whether any round folder of ``out`` holds a file (a record, a checkpoint, a cache)."""
    for round_dir in out.glob("round_*"):
        for _, _, files in os.walk(round_dir):
            if files:
                return True
    return False


def check_config_file(out: Path, cfg, notes: list[str] | None = None) -> int:
    """Compare ``out/config.json`` with ``cfg``; returns the rounds it records (0 when none).

    A folder without results takes any configuration (a first attempt that failed early must not
    lock it). With results, a different configuration is refused, naming each key with both
    values; ``rounds`` may differ. An unreadable ``config.json`` is refused too, unless the stage
    records vouch for ``cfg`` (:func:`records_vouch_for`): then it is written again (a line for
    ``notes`` says so).
    """
    path = out / CONFIG_NAME
    if not path.is_file() or not has_results(out):
        return 0
    try:
        old = ExperimentConfig.load(path)
    except Exception as exc:  # noqa: BLE001 - binary garbage, a list, a truncated file...
        reason = str(exc) if isinstance(exc, CausalWSSSError) else (
            f"cannot read config file {path}: {type(exc).__name__}: {exc}")
        if records_vouch_for(out, cfg):
            if notes is not None:
                notes.append(f"{reason}; every stage record was computed with this "
                             "configuration, so it is written again")
            return 0
        raise ConfigError(f"{reason}; {out} holds results, so its configuration must be known: "
                          f"restore {path}, or run into a new folder (another --out)") from exc
    diffs = config_differences(old, cfg)
    if diffs:
        raise ConfigError(f"run folder {out} holds results of a different configuration: "
                          f"{describe_differences(diffs)}. To resume it, rerun with the values "
                          f"of {path}; to run this configuration, choose another --out (or "
                          f"delete {out})")
    return old.rounds


def records_vouch_for(out: Path, cfg) -> bool:
    """Whether the valid stage records of ``out`` show that they were computed with ``cfg``:
    there is one, and every one carries the fingerprint of ``cfg`` (:func:`config_fingerprint`,
    or the legacy one). Records without fingerprints (older folders) vouch for nothing."""
    accepted = {config_fingerprint(cfg), legacy_config_fingerprint(cfg)}
    seen = False
    for round_dir in sorted(out.glob("round_*")):
        if not (_ROUND_NAME.match(round_dir.name) and round_dir.is_dir()):
            continue
        for path in sorted(round_dir.glob("*.json")):
            if path.stem not in STAGE_ARTEFACTS:
                continue
            record, problem = load_record(path)
            if record is None:
                continue  # an invalid record is redone anyway
            if record.get("inputs", {}).get("config") not in accepted:
                return False
            seen = True
    return seen


def names_by_role(sets: dict) -> dict[str, list[str]]:
    """``{"train": train names, "cams": + eval names not in train, "query": + twins names}``
    (the images of each per-image artefact; :func:`causal_wsss.stages.datasets.query_datasets`)."""
    cam_sets, query_sets = query_datasets(sets)
    return {"train": list(sets["train"].names), "cams": names_of(cam_sets),
            "query": names_of(query_sets)}



def check_out_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` if it is, or can become, a writable run folder (ConfigError naming it); writes nothing.

    An empty path is refused: ``Path("")`` is the current folder, which would receive
    ``config.json``, ``round_0/`` and ``run.lock``."""
    if not str(path).strip():
        raise ConfigError(f"{option} is empty; expected the path of a run folder (e.g. "
                          f"{option} runs/voc)")
    return check_folder_target(path, option, ConfigError)


@dataclass
class OpenRunFolder:
    """What :func:`open_run_folder` yields: the logger, the stage inputs, finished later rounds."""

    out: Path
    logger: logging.Logger
    inputs: dict
    later: list[dict]
    redone: list[str]

    def report(self, report: dict) -> dict:
        """``report`` with the entries of finished rounds beyond this run's ``rounds`` appended."""
        return {**report, "rounds": [*report["rounds"], *self.later]}


@contextlib.contextmanager
def open_run_folder(out: Path, cfg, sets: dict, *, is_main: bool = True) -> Iterator[OpenRunFolder]:
    """Create and lock ``out``, check it against ``cfg`` and the data, save ``config.json``.

    Everything that can be checked without writing (the config values, the data sets, ``out``
    itself) is checked by the caller first. Here, under the lock (main process only; the other
    torch.distributed ranks wait at a barrier): the saved configuration, the stage records
    (:func:`check_stages`) and finished rounds beyond ``cfg.rounds``, which stay in the report
    (and in ``config.json``'s ``rounds``). What stands where the run's own files belong (a folder
    at ``run.lock``, ``log.txt``, ``config.json`` or ``report.json``) and the temporary files of
    a killed run (:func:`remove_stale_temporaries`) are removed, with a warning, after the checks
    that may refuse the folder (except the lock's and the log's, needed to get that far).
    """
    inputs = run_inputs(cfg, sets)
    lock = RunLock(out)
    if is_main:
        make_folder(out)
        lock.acquire()
    try:
        redone: list[str] = []
        repaired: list[str] = [lock.repaired] if lock.repaired else []
        if is_main:
            check_config_file(out, cfg, repaired)
            log_path = out / LOG_NAME
            if log_path.is_dir() and not log_path.is_symlink():  # the log cannot be opened
                _remove(log_path, error=ConfigError)
                repaired.append(f"removed the folder {log_path}, where the run's log belongs")
        logger = setup_logging(out if is_main else None)
        if is_main:
            if lock.unsupported:
                logger.warning("cannot lock %s (%s): make sure no other run writes into it",
                               lock.path, lock.unsupported)
            if lock.previous_holder:
                logger.warning("took over the lock of a run that did not end cleanly (%s)",
                               _describe_holder(lock.previous_holder))
            for note in repaired:
                logger.warning("%s", note)
            # it refuses changed inputs before deleting anything: the repairs come after it
            redone = check_stages(out, cfg, inputs, names_by_role(sets), logger=logger)
            for name in (CONFIG_NAME, REPORT_NAME):  # the run's own files
                path = out / name
                if path.is_dir() and not path.is_symlink():
                    _remove(path, error=ConfigError)
                    logger.warning("removed the folder %s, where the run's file belongs", path)
            if not lock.unsupported:  # a running writer's temporary files look the same
                stale = remove_stale_temporaries(out)
                if stale:
                    logger.info("removed %d temporary file(s) of an interrupted run (%s%s)",
                                len(stale), stale[0], ", ..." if len(stale) > 1 else "")
            later = later_rounds(out, cfg.rounds, logger)
            rounds = max(cfg.rounds, later[-1]["round"] if later else 0)
            replace(cfg, rounds=rounds).save(out / CONFIG_NAME)
        barrier()
        if not is_main:
            later = later_rounds(out, cfg.rounds)
        yield OpenRunFolder(out, logger, inputs, later, redone)
    finally:
        lock.release()
