"""Run the course's notebooks at full size, in order, and time them: this is what redraws the
course's figures in ``figures/`` (each notebook saves its own there when not in smoke mode).

    python scripts/run_course.py                 # 01 .. 08, the ones that run on a CPU
    python scripts/run_course.py 03 05           # only these (their inputs are made by earlier
                                                 # notebooks or `make demo`: run in order once)
    python scripts/run_course.py --list

Each executed copy goes to ``--out`` (default ``runs/course``), never over the committed
notebook, and one line per notebook gives its wall time; ``--times FILE`` also records them in
that JSON file (``{"notebooks": {name: seconds}, "machine": ..., "torch": ..., "date": ...}``,
entries of notebooks not run kept): ``docs/tables/course_times.json`` is the file the README's
course table is checked against (tests/test_readme.py). Time on idle cores, in order. Notebooks 09-11 read finished GPU runs or the committed tables and take seconds; they are
included when named. A notebook that fails stops the run with its cell's error and the path of
the executed copy, which holds the outputs up to that cell.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from causal_wsss.course import short_poll_client
from causal_wsss.io import write_json

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
DEFAULT = ("01", "02", "03", "04", "05", "06", "07", "08")


def notebooks(prefixes: list[str]) -> list[Path]:
    """The notebooks whose names start with the given two-digit prefixes, in course order."""
    found = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
    known = {p.name[:2]: p for p in found}
    missing = [p for p in prefixes if p not in known]
    if missing:
        raise SystemExit(f"run_course: no notebook {', '.join(missing)} in {NB_DIR}; "
                         f"known: {', '.join(sorted(known))}")
    return [known[p] for p in sorted(prefixes)]


def run_one(path: Path, out_dir: Path, timeout: int) -> float:
    """Execute ``path`` with its folder as working directory; the executed copy goes to
    ``out_dir``. Returns the wall time in seconds."""
    import nbformat
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    target = out_dir / path.name
    t0 = time.perf_counter()
    try:
        short_poll_client()(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NB_DIR)}}).execute()
    except CellExecutionError as exc:
        nbformat.write(nb, target)
        raise SystemExit(f"run_course: {path.name} failed; outputs up to the failing cell in "
                         f"{target}\n{exc}") from None
    nbformat.write(nb, target)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", default=list(DEFAULT), metavar="NN",
                        help="two-digit prefixes of the notebooks to run (default 01-08)")
    parser.add_argument("--out", default="runs/course", help="folder for the executed copies")
    parser.add_argument("--times", default="", help="also write the wall times as JSON here")
    parser.add_argument("--timeout", type=int, default=3600,
                        help="seconds one cell may take (default 3600)")
    parser.add_argument("--list", action="store_true", help="print the notebooks and stop")
    args = parser.parse_args(argv)
    paths = notebooks(args.which)
    if args.list:
        print("\n".join(p.name for p in paths))
        return 0
    if os.environ.get("CAUSAL_WSSS_SMOKE") == "1":
        raise SystemExit("run_course: CAUSAL_WSSS_SMOKE=1 is set; the course's figures come from "
                         "full-size runs (unset it)")
    out_dir = (REPO / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = _read_times(args.times) if args.times else {"notebooks": {}}
    for path in paths:
        print(f"{path.name} ...", flush=True)
        seconds = round(run_one(path, out_dir, args.timeout), 1)
        print(f"{path.name}: {seconds:.0f} s ({seconds / 60:.1f} min)", flush=True)
        if args.times:
            record["notebooks"][path.name] = seconds
            record.update(_machine())
            write_json(args.times, record, indent=1)  # atomic
    return 0


def _read_times(path: str) -> dict:
    try:
        record = json.loads(Path(path).read_text())
        if isinstance(record.get("notebooks"), dict):
            return record
    except (OSError, ValueError, AttributeError):
        pass
    return {"notebooks": {}}


def _machine() -> dict:
    import datetime

    import torch

    from causal_wsss.runtime import cpu_model

    return {"machine": f"{cpu_model()}, {os.cpu_count()} cores", "torch": torch.__version__,
            "date": datetime.date.today().isoformat()}


if __name__ == "__main__":
    sys.exit(main())
