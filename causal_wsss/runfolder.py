"""The run folder of :func:`causal_wsss.pipeline.run_experiment`: a folder that cannot be wedged.

- :func:`check_out_folder` says, before anything is written, whether ``--out`` can be a folder;
- :class:`RunLock` is an exclusive lock on the folder (``run.lock``, an ``flock`` the kernel
  releases when the holder dies, so a killed run leaves no lock behind; the file names the
  holder for the refusal message);
- :func:`run_inputs` fingerprints what every stage depends on: the data (per split: the image
  names and the size and modification time of every image, mask, annotation, list and sidecar
  file) and the configuration (every key but ``rounds``). Each stage record
  ``round_k/<stage>.json`` carries it under ``"inputs"``;
- :func:`check_stages` runs before a resumed run: unreadable records and changed inputs are
  refused with one message; a finished stage whose files are missing or unreadable is redone,
  with every stage computed from it (:data:`STAGE_INPUTS`), by deleting their records and files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import IRN_ONLY_KEYS, ExperimentConfig, config_differences, describe_differences
from .errors import CausalWSSSError, ConfigError, DataError
from .io import check_folder_target, make_folder
from .methods import method_stages
from .runtime import barrier, setup_logging
from .stage_table import STAGE_ARTEFACTS, STAGE_INPUTS, STAGES
from .stages.datasets import names_of, query_datasets

LOCK_NAME = "run.lock"
CONFIG_NAME = "config.json"
REPORT_NAME = "report.json"


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

    def acquire(self) -> RunLock:
        try:
            import fcntl  # POSIX only: imported where the lock is taken
        except ImportError:  # not POSIX
            self.unsupported = "no fcntl on this platform"
            return self
        try:
            fh = open(self.path, "a+", encoding="utf-8")  # held until release()
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
    "cam_infer.work_long": 0,
    "cam_infer.amp": "same",
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


_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def read_record(path: Path) -> dict | None:
    """A stage record, ``None`` when absent; DataError naming the file when unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"stage record {path} is unreadable ({exc}); expected the JSON a finished "
                        "stage writes; delete it to redo that stage") from exc
    if not isinstance(data, dict):
        raise DataError(f"stage record {path} holds a {type(data).__name__}; expected the JSON "
                        "object a finished stage writes; delete it to redo that stage")
    return data


def file_problem(path: Path, kind: str) -> str | None:
    """Why ``path`` is not a complete file of ``kind`` (cheap checks), or None when it looks whole."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if not path.is_file():
        return "not a file"
    if st.st_size == 0:
        return "empty (0 bytes)"
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as archive:
                archive.namelist()
        elif kind == "npy":
            array = np.load(path, mmap_mode="r")  # reads the header, checks the size
            del array
        elif kind == "json":
            json.loads(path.read_text(encoding="utf-8"))
        elif kind == "png":
            with open(path, "rb") as fh:
                fh.seek(max(0, st.st_size - len(_PNG_END)))
                if fh.read() != _PNG_END:
                    return "truncated (no PNG end chunk)"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
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

    def record_path(self, r: int, stage: str) -> Path:
        return self.out / f"round_{r}" / f"{stage}.json"

    def applies(self, r: int, stage: str) -> bool:
        if r < 0:
            return False
        if stage == "confounders":
            return r > 0
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

    def problem(self, r: int, stage: str, deep: bool = True) -> tuple[Path, str] | None:
        """The first missing or unreadable file of stage ``stage`` of round ``r``.

        Single files (checkpoints, the confounder dictionary) are always opened; per-image
        folders are listed, and their files opened only with ``deep`` (thousands of files: only
        when a stage that reads them is still to run).
        """
        round_dir = self.out / f"round_{r}"
        for art in STAGE_ARTEFACTS.get(stage, ()):
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
        return None

    def delete(self, r: int, stage: str) -> None:
        """Remove the record and the files of a stage (it is then redone)."""
        round_dir = self.out / f"round_{r}"
        self.record_path(r, stage).unlink(missing_ok=True)
        for art in STAGE_ARTEFACTS.get(stage, ()):
            if art.folder:
                shutil.rmtree(round_dir / art.folder, ignore_errors=True)
            else:
                (round_dir / art.path).unlink(missing_ok=True)


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
    """Check every stage record of ``out`` before a (resumed) run; returns the stages redone.

    1. An unreadable record is refused (DataError naming it: delete it to redo the stage).
    2. A record whose data or config fingerprint differs from ``inputs`` is refused: the data
       under ``data.root`` changed since that stage ran (ConfigError saying what and how to go on).
    3. A finished stage whose files are missing or unreadable is redone: its record and files
       are deleted, and so are those of every stage computed from it (in later rounds too).

    ``names``: ``{"train": train names, "cams": + extra eval names, "query": + twins}``.
    """
    logger = logger or logging.getLogger("causal_wsss")
    folder = RunFolder(out, cfg, names)
    rounds = folder.rounds()
    records: dict[tuple[int, str], dict] = {}
    data_changed = config_changed = ""
    legacy = legacy_config_fingerprint(cfg)
    for r in rounds:
        for stage in STAGES:
            path = folder.record_path(r, stage)
            record = read_record(path)
            if record is None:
                continue
            records[(r, stage)] = record
            recorded = record.get("inputs")
            if not isinstance(recorded, dict):
                continue  # written before records carried their inputs
            if recorded.get("data") != inputs["data"] and not data_changed:
                data_changed = (f"the data under {cfg.data.root} changed since {path} was "
                                "written: "
                                + _describe_data_change(recorded.get("data"), inputs["data"]))
            if recorded.get("config") not in (inputs["config"], legacy) and not config_changed:
                config_changed = (f"{path} was computed with a different configuration than "
                                  f"this one ({out / CONFIG_NAME} was edited or replaced)")
    if data_changed or config_changed:
        raise ConfigError("; ".join(filter(None, (data_changed, config_changed)))
                          + ". Its results would mix the old inputs with the new: run into a new "
                          f"folder (another --out), or delete {out} to start afresh, or restore "
                          "the data")

    redo: dict[tuple[int, str], str] = {}
    for r in rounds:
        for stage in STAGES:
            if (r, stage) not in records:
                continue
            # per-image files are opened only if a stage that reads them is still to run
            readers = [(r - offset, reader) for reader, deps in STAGE_INPUTS.items()
                       for offset, dep in deps if dep == stage]
            pending = any(r2 <= cfg.rounds and folder.applies(r2, s2) and (r2, s2) not in records
                          and (r, stage) in folder.inputs_of(r2, s2) for r2, s2 in readers)
            found = folder.problem(r, stage, deep=pending)
            if found is not None:
                path, reason = found
                why = f"{path} is {reason}"
            else:
                why = ""
                for dep in folder.inputs_of(r, stage):
                    if dep in redo:
                        why = f"it is computed from round {dep[0]} {dep[1]}, which is redone"
                        break
                    if dep not in records and folder.problem(*dep, deep=False) is not None:
                        why = f"its input, round {dep[0]} {dep[1]}, is gone"
                        break
            if why:
                redo[(r, stage)] = why
                if found is not None:
                    logger.warning("%s: redoing round %d %s and every stage computed from it",
                                   why, r, stage)
    for r, stage in redo:
        folder.delete(r, stage)
    if redo:
        logger.warning("stages to redo: %s", ", ".join(f"round {r} {s}" for r, s in redo))
    return [f"round_{r}/{s}" for r, s in redo]


def round_is_finished(out: Path, r: int) -> bool:
    """Whether round ``r`` has the records its report entry is made of."""
    return all((out / f"round_{r}" / f"{s}.json").is_file()
               for s in ("cam_train", "cam_eval", "pseudo_eval", "seg_eval"))


def later_rounds(out: Path, rounds: int) -> list[dict]:
    """Report entries of finished rounds beyond ``rounds`` (a rerun with fewer rounds keeps them)."""
    try:
        old = json.loads((out / REPORT_NAME).read_text(encoding="utf-8"))
        entries = [e for e in old["rounds"] if isinstance(e, dict) and e["round"] > rounds]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    kept = []
    for r, entry in enumerate(sorted(entries, key=lambda e: e["round"]), start=rounds + 1):
        if entry["round"] != r or not round_is_finished(out, r):
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


def check_config_file(out: Path, cfg) -> int:
    """Compare ``out/config.json`` with ``cfg``; returns the rounds it records (0 when none).

    A folder without results takes any configuration (a first attempt that failed early must not
    lock it). With results, a different configuration is refused, naming each key with both
    values; ``rounds`` may differ.
    """
    path = out / CONFIG_NAME
    if not path.is_file() or not has_results(out):
        return 0
    try:
        old = ExperimentConfig.load(path)
    except CausalWSSSError as exc:
        raise ConfigError(f"{exc}; {out} holds results, so its configuration must be known: "
                          f"restore {path}, or run into a new folder (another --out)") from exc
    diffs = config_differences(old, cfg)
    if diffs:
        raise ConfigError(f"run folder {out} holds results of a different configuration: "
                          f"{describe_differences(diffs)}. To resume it, rerun with the values "
                          f"of {path}; to run this configuration, choose another --out (or "
                          f"delete {out})")
    return old.rounds


def names_by_role(sets: dict) -> dict[str, list[str]]:
    """``{"train": train names, "cams": + eval names not in train, "query": + twins names}``
    (the images of each per-image artefact; :func:`causal_wsss.stages.datasets.query_datasets`)."""
    cam_sets, query_sets = query_datasets(sets)
    return {"train": list(sets["train"].names), "cams": names_of(cam_sets),
            "query": names_of(query_sets)}



def check_out_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` if it is, or can become, a writable run folder (ConfigError naming it); writes nothing."""
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
    (and in ``config.json``'s ``rounds``).
    """
    inputs = run_inputs(cfg, sets)
    lock = RunLock(out)
    if is_main:
        make_folder(out)
        lock.acquire()
    try:
        redone: list[str] = []
        if is_main:
            check_config_file(out, cfg)
        logger = setup_logging(out if is_main else None)
        if is_main:
            if lock.unsupported:
                logger.warning("cannot lock %s (%s): make sure no other run writes into it",
                               lock.path, lock.unsupported)
            if lock.previous_holder:
                logger.warning("took over the lock of a run that did not end cleanly (%s)",
                               _describe_holder(lock.previous_holder))
            redone = check_stages(out, cfg, inputs, names_by_role(sets), logger=logger)
            later = later_rounds(out, cfg.rounds)
            rounds = max(cfg.rounds, later[-1]["round"] if later else 0)
            replace(cfg, rounds=rounds).save(out / CONFIG_NAME)
        barrier()
        if not is_main:
            later = later_rounds(out, cfg.rounds)
        yield OpenRunFolder(out, logger, inputs, later, redone)
    finally:
        lock.release()
