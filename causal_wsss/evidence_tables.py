"""The evidence protocol's results: the finished runs (run folders and the archive) collected into
paired statistics per arm and rho, and the markdown tables of docs/tables/evidence.md.

The protocol itself (arms, jobs, running, the archive) is :mod:`causal_wsss.evidence`; the
statistics are :mod:`causal_wsss.stats`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError
from .evidence import (
    ARM_BY_NAME,
    ARMS,
    ENDPOINTS,
    ESOL_ABLATIONS,
    ESOL_CAM_KEYS,
    ESOL_CONTROLS,
    ESOL_KEYS,
    ESOL_STAGES,
    INTERVENTION_NAMES,
    LABELS,
    MAIN_RHO,
    PER_CLASS_PREFIXES,
    POST_HOC,
    POST_HOC_RHOS,
    PRIMARY,
    VARIANTS,
    Protocol,
    load_archive,
    machine_id,
    read_reports,
    record_numerics,
    value_of,
)
from .stats import interval, ratio_interval


def _paired(a: dict[int, dict], ra: int, b: dict[int, dict], rb: int, key: str
            ) -> tuple[list[int], list[float]]:
    seeds, diffs = [], []
    for seed in sorted(set(a) & set(b)):
        x, y = value_of(a[seed].get(ra), key), value_of(b[seed].get(rb), key)
        if x is not None and y is not None:
            seeds.append(seed)
            diffs.append(x - y)
    return seeds, diffs


def _merge_archive(proto: Protocol, reports: dict, superseded: dict | None = None
                   ) -> list[dict[str, Any]]:
    """Put the archive's runs into ``reports`` (in place), one source per run so that its
    rounds come from one machine: the archived record, unless the run folder here holds rounds
    the record lacks, or all of them on newer numerics (then the run folder's). Rounds held by
    both are returned as pairs (the reproduction check). A record superseded by one on newer
    numerics goes to ``superseded`` ({(arm, rho): {seed: {round: entry}}}), so that a
    difference of levels can pair runs of one numerics (:func:`_matched`). Tables of one's own
    runs only: ``Protocol(archive=None)``."""
    checks = []
    superseded = {} if superseded is None else superseded

    def entries_of(rec: dict) -> dict[int, dict]:
        return {int(r): {**{k: v for k, v in values.items() if k != "torch"}, "archived": True}
                for r, values in sorted(rec["rounds"].items())}

    session = machine_id()["session"]
    for key, rec in load_archive(proto.archive).items():
        arm, _, name = key.partition("/")
        if arm not in ARM_BY_NAME or not name.startswith("rho") or "_seed" not in name:
            continue
        rho_s, seed_s = name[3:].split("_seed")
        runs = reports.setdefault((arm, float(rho_s)), {})
        have = runs.get(int(seed_s), {})
        for r_s, values in rec["rounds"].items():
            if int(r_s) in have and rec.get("machine", {}).get("session") != session:
                old, new = values.get(PRIMARY), value_of(have[int(r_s)], PRIMARY)
                if old is not None and new is not None:
                    checks.append({"run": key, "round": int(r_s), "archived": old, "rerun": new,
                                   "torch_archived": values.get("torch"),
                                   "cpu_archived": rec.get("machine", {}).get("cpu")})
        # a record replaced by a rerun elsewhere (archive_runs keeps it under "previous"): the
        # rounds both made, so the reproduction check survives the replacement
        for prev in rec.get("previous", []):
            if record_numerics(prev) < record_numerics(rec):
                superseded.setdefault((arm, float(rho_s)), {})[int(seed_s)] = entries_of(prev)
            for r_s, values in prev.get("rounds", {}).items():
                old, new = values.get(PRIMARY), rec["rounds"].get(r_s, {}).get(PRIMARY)
                if old is not None and new is not None:
                    checks.append({"run": key, "round": int(r_s), "archived": old, "rerun": new,
                                   "torch_archived": values.get("torch"),
                                   "cpu_archived": prev.get("machine", {}).get("cpu"),
                                   "rerun_on": rec.get("machine")})
        if set(have) - {int(r) for r in rec["rounds"]}:
            continue  # the run folder has more: it is the run (one machine)
        if have and set(rec["rounds"]) <= {str(r) for r in have} and \
                record_numerics({"rounds": {str(r): e for r, e in have.items()}}) > \
                record_numerics(rec):
            superseded.setdefault((arm, float(rho_s)), {})[int(seed_s)] = entries_of(rec)
            continue  # the run folder is made on newer numerics: it supersedes the record
        entries = {}
        for r_s, values in rec["rounds"].items():
            entry = {k: v for k, v in values.items() if k != "torch"}
            if r_s == "1" and rec.get("epoch_history"):
                entry["epoch_history"] = rec["epoch_history"]
            entry["archived"] = True
            entries[int(r_s)] = entry
        runs[int(seed_s)] = dict(sorted(entries.items()))
    for runs in reports.values():  # keep seeds in order (the tables list values by seed)
        items = sorted(runs.items())
        runs.clear()
        runs.update(items)
    return checks


def _matched(runs: dict[int, dict], older: dict[int, dict], base: dict[int, dict]
             ) -> dict[int, dict]:
    """Per seed, the version of ``runs`` (today's record or the one it superseded, ``older``)
    whose round 0 was made on the numerics of ``base``'s round 0: a difference of levels
    (interventional − confounded round 0) then never mixes numerics. Today's record where
    neither matches."""
    out = {}
    for seed, rounds in runs.items():
        want = int((base.get(seed, {}).get(0) or {}).get("numerics") or 1)
        have = int((rounds.get(0) or {}).get("numerics") or 1)
        alt = older.get(seed)
        out[seed] = alt if have != want and alt is not None and \
            int((alt.get(0) or {}).get("numerics") or 1) == want else rounds
    return out


def _diff_in_diff(a: dict[int, dict], b: dict[int, dict], key: str
                  ) -> tuple[list[int], list[float]]:
    """Per seed, (a's round 1 − its round 0) − (b's round 1 − its round 0): a variant against
    CONTA, each paired with its own round 0, so that the comparison holds even when the two
    runs were made on different machines (round 0 is the same run within one machine)."""
    sa, da = _paired(a, 1, a, 0, key)
    sb, db = _paired(b, 1, b, 0, key)
    both = sorted(set(sa) & set(sb))
    return both, [da[sa.index(s)] - db[sb.index(s)] for s in both]


def collect(proto: Protocol) -> dict[str, Any]:
    """Every table's numbers from the finished runs and the archive (JSON-ready)."""
    reports = read_reports(proto)
    superseded: dict = {}
    reproduced = _merge_archive(proto, reports, superseded)
    conta = reports.get(("conta", MAIN_RHO), {})
    result: dict[str, Any] = {"primary": None, "rounds": {}, "paired": {}, "vs_conta": {},
                              "sweep": {}, "monitor": {}, "endpoints": list(ENDPOINTS),
                              "reproduced": reproduced}
    # primary: conta round 1 - round 0, pseudo mIoU, rho 0.9
    seeds, diffs = _paired(conta, 1, conta, 0, PRIMARY)
    result["primary"] = {**interval(diffs), "seeds": seeds}
    for (arm, rho), runs in sorted(reports.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        tag = f"{arm}@{rho}"
        rounds = sorted({r for entries in runs.values() for r in entries})
        result["rounds"][tag] = {str(r): _levels(runs, r, ENDPOINTS) for r in rounds}
        base = reports.get(("conta", rho), {})
        if arm == "interventional":  # interventional round 0 - confounded round 0, by seed
            runs = _matched(runs, superseded.get((arm, rho), {}), base)
            result["paired"][tag] = {"0": {k: _with_seeds(*_paired(runs, 0, base, 0, k))
                                           for k in ENDPOINTS}}
            continue
        # round t - round 0 (variants share conta's round 0: their own copy of it)
        result["paired"][tag] = {str(r): {k: _with_seeds(*_paired(runs, r, runs, 0, k))
                                          for k in ENDPOINTS} for r in rounds if r > 0}
        if arm != "conta":
            result["vs_conta"][tag] = {k: _with_seeds(*_diff_in_diff(runs, base, k))
                                       for k in ENDPOINTS}
        result["monitor"][tag] = _monitor(runs)
    for (arm, rho), runs in reports.items():
        if arm != "conta":
            continue
        inter = _matched(reports.get(("interventional", rho), {}),
                         superseded.get(("interventional", rho), {}), runs)
        row: dict[str, Any] = {}
        for k in (PRIMARY, "cam_miou_best", "context_effect"):
            s1, d_conta = _paired(runs, 1, runs, 0, k)
            s2, d_int = _paired(inter, 0, runs, 0, k)
            both = sorted(set(s1) & set(s2))
            num = [d_conta[s1.index(s)] for s in both]
            den = [d_int[s2.index(s)] for s in both]
            row[k] = {"conta": _with_seeds(s1, d_conta), "interventional": _with_seeds(s2, d_int),
                      "gap_closed": ratio_interval(num, den)}
        result["sweep"][str(rho)] = row
    result["esol"] = _esol(reports)
    result["interventions"] = _interventions(reports, superseded)
    result["cost"] = _cost(proto, reports)
    return result


GAP_KEYS = (PRIMARY, "context_effect", "fp_rate_preferred")
"""The figures whose interventional gap the interventions' tables split into a share closed."""
INTERVENTION_SECONDARY = (*ENDPOINTS, "partner_effect", "cam_miou_in_context")


def _interventions(reports: dict, superseded: dict | None = None) -> dict[str, Any]:
    """Per intervention arm and rho (docs/results.md section 7): round 1 − round 0 of every
    endpoint, the arm against CONTA (difference of paired differences), and the share of the
    interventional gap it closes (:func:`causal_wsss.stats.ratio_interval`: unresolved where
    the gap's own interval contains 0), with the seeds behind each figure."""
    out: dict[str, Any] = {}
    for (arm, rho), runs in sorted(reports.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if arm not in INTERVENTION_NAMES:
            continue
        conta = reports.get(("conta", rho), {})
        inter = _matched(reports.get(("interventional", rho), {}),
                         (superseded or {}).get(("interventional", rho), {}), runs)
        row: dict[str, Any] = {
            "arm": arm, "rho": rho, "oracle": arm.startswith("oracle_"),
            "paired": {k: _with_seeds(*_paired(runs, 1, runs, 0, k))
                       for k in INTERVENTION_SECONDARY},
            "vs_conta": {k: _with_seeds(*_diff_in_diff(runs, conta, k)) for k in ENDPOINTS},
            "levels": {str(r): _levels(runs, r, ("fp_rate_preferred", PRIMARY)) for r in (0, 1)},
            "vs_arms": {other: {k: _with_seeds(*_diff_in_diff(runs, reports[(other, rho)], k))
                                for k in (PRIMARY, "fp_rate_preferred")}
                        for other in INTERVENTION_NAMES
                        if other != arm and reports.get((other, rho))},
            "per_class": {k: _with_seeds(*_paired(runs, 1, runs, 0, k)) for k in sorted(
                {k for e in runs.values() for k in e.get(1, {}) if k.startswith(PER_CLASS_PREFIXES)})},
            "gap": {}}
        for k in GAP_KEYS:
            s1, d_arm = _paired(runs, 1, runs, 0, k)
            s2, d_gap = _paired(inter, 0, runs, 0, k)
            both = sorted(set(s1) & set(s2))
            num = [d_arm[s1.index(s)] for s in both]
            den = [d_gap[s2.index(s)] for s in both]
            row["gap"][k] = {"interventional": _with_seeds(s2, d_gap),
                             "closed": {**ratio_interval(num, den), "seeds": both,
                                        "per_seed": [a / b if abs(b) > 1e-12 else None
                                                     for a, b in zip(num, den)]}}
        out[f"{arm}@{rho}"] = row
    return out


TARGET_SHARE, TARGET_FP_FACTOR, TARGET_COST = 0.5, 0.5, -1.0
"""The interventions issue's target (docs/results.md section 7): close at least half of the gap
at the strongest rho with the interval above 0, halve the false positives on the preferred
context alone there, and cost at most one point of pseudo-mask mIoU at rho 0.5."""


CONTROL_OF = {"negatives": "control_steps", "negatives_margin": "control_steps"}
"""Each arm's control (docs/results.md section 7.1): what the arm changes besides its mechanism."""


def beyond_control(row: dict[str, Any]) -> str:
    """What an arm's row gains beyond its control, paired by seed: the share of the gap that
    (arm − control) closes (ratio of means, 95% bootstrap) and the change of the false positives
    on the preferred context; "" when the arm has no control or the control has no runs."""
    control = CONTROL_OF.get(row["arm"])
    vs = (row.get("vs_arms") or {}).get(control)
    if not vs or not vs[PRIMARY].get("values"):
        return ""
    diff, gap = vs[PRIMARY], row["gap"][PRIMARY]["interventional"]
    both = [s for s in diff["seeds"] if s in gap.get("seeds", [])]
    num = [diff["values"][diff["seeds"].index(s)] for s in both]
    den = [gap["values"][gap["seeds"].index(s)] for s in both]
    share = ratio_interval(num, den)
    text = f"pseudo-mask mIoU {_fmt(diff, 2)}; "
    text += ("share of the gap unresolved" if share.get("ratio") is None else
             f"closes {share['ratio']:.2f} [{share['lo']:.2f}, {share['hi']:.2f}] of the gap")
    fp = vs["fp_rate_preferred"]
    if fp.get("mean") is not None:
        text += (f"; false positives on the preferred context {100 * fp['mean']:+.0f} points"
                 + (f" [{100 * fp['lo']:+.0f}, {100 * fp['hi']:+.0f}]" if fp.get("lo") is not None
                    else ""))
    return text


def intervention_verdict(res: dict[str, Any], *, main: float = 0.97, harm: float = 0.5
                         ) -> list[str]:
    """One line per arm that reads no ground truth (diagnostics and controls are left out)
    against the pre-registered target at ``main`` and ``harm``, then which arm is best (the
    largest share of the gap closed at ``main``) and whether it meets all three. Post hoc arms
    (:data:`~causal_wsss.evidence.POST_HOC`) get their lines, marked, but are not candidates
    for the best pre-registered arm; a last line says whether one of them meets the target."""
    rows = res.get("interventions") or {}
    arms = [a for a in INTERVENTION_NAMES if not a.startswith(("oracle_", "control_"))
            and f"{a}@{main}" in rows]
    lines, met, shares = [], {}, {}
    for arm in arms:
        row = rows[f"{arm}@{main}"]
        closed = row["gap"][PRIMARY]["closed"]
        if closed.get("ratio") is None:
            share_ok, share = False, f"share of the gap unresolved ({closed.get('unresolved') or 'too few seeds'})"
        else:
            share_ok = closed["ratio"] >= TARGET_SHARE and (closed["lo"] or 0) > 0
            shares[arm] = closed["ratio"]
            share = (f"closes {closed['ratio']:.2f} [{closed['lo']:.2f}, {closed['hi']:.2f}] of "
                     f"the gap (target >= {TARGET_SHARE}, interval above 0: {'met' if share_ok else 'not met'})")
        fp0, fp1 = (row["levels"][r]["fp_rate_preferred"]["mean"] for r in ("0", "1"))
        fp_ok = fp0 is not None and fp1 is not None and fp1 <= TARGET_FP_FACTOR * fp0
        fp = ("false positives on the preferred context pending" if fp0 is None or fp1 is None
              else f"false positives on the preferred context {100 * fp0:.0f}% -> {100 * fp1:.0f}%"
                   f" (target halved: {'met' if fp_ok else 'not met'})")
        low = rows.get(f"{arm}@{harm}")
        cost_stat = low["paired"][PRIMARY] if low else None
        if arm in POST_HOC and harm not in POST_HOC_RHOS:
            cost_ok, cost = None, f"rho {harm} not run (section 7.3 registers rho {main} only)"
        elif not cost_stat or cost_stat.get("mean") is None:
            cost_ok, cost = False, f"rho {harm} pending"
        else:
            cost_ok = cost_stat["mean"] >= TARGET_COST
            cost = (f"at rho {harm} {cost_stat['mean']:+.2f} points (n={cost_stat['n']}; "
                    f"target >= {TARGET_COST:+.0f}: {'met' if cost_ok else 'not met'})")
        met[arm] = share_ok and fp_ok and cost_ok is not False
        lines.append(f"{'section 7.3: ' if arm in POST_HOC else ''}"
                     f"{ARM_BY_NAME[arm].label} at rho {main}, n={row['paired'][PRIMARY]['n']}: "
                     f"{share}; {fp}; {cost}")
        control = beyond_control(row)
        if control:
            lines.append(f"  beyond its control ({ARM_BY_NAME[CONTROL_OF[arm]].label}): {control}")
    planned = {a: v for a, v in shares.items() if a not in POST_HOC}
    if planned:
        best = max(planned, key=planned.get)
        lines.append(f"best arm without ground truth: {ARM_BY_NAME[best].label}; the target is "
                     f"{'met' if met[best] else 'not met'}")
    elif arms:
        lines.append("no arm's share of the gap is resolved yet")
    for arm in (a for a in arms if a in POST_HOC and a in shares):
        lines.append(f"post hoc: {ARM_BY_NAME[arm].label}: the target at rho {main} is "
                     f"{'met' if met[arm] else 'not met'} (an arm chosen after seeing results: "
                     f"a lead to confirm, not a claim)")
    return lines


def markdown_intervention_details(res: dict[str, Any], *, rho: float = 0.97) -> str:
    """The arms against each other at each rho (differences of paired differences) and, at
    ``rho``, each arm's per-class change of pseudo-mask IoU and of the false positives on the
    class's preferred context (round 1 − round 0, mean over seeds)."""
    rows = res.get("interventions") or {}
    if not rows:
        return ""
    lines = ["**Interventions against each other** (row arm's round 1 − round 0 minus the "
             "column arm's, paired by seed: pseudo-mask mIoU; false positives on the preferred "
             "context in points of percentage)", "",
             "| rho | arm | − arm | pseudo | FP preferred |", "|---|---|---|---|---|"]
    for _, row in sorted(rows.items(), key=lambda kv: (-kv[1]["rho"], kv[0])):
        for other, stat in sorted(row.get("vs_arms", {}).items()):
            if INTERVENTION_NAMES.index(other) < INTERVENTION_NAMES.index(row["arm"]):
                continue  # each pair once
            fp = stat["fp_rate_preferred"]
            fp = {**fp, **{k: 100 * fp[k] for k in ("mean", "sd", "lo", "hi")
                           if fp.get(k) is not None}}
            lines.append(f"| {row['rho']} | {ARM_BY_NAME[row['arm']].label} | "
                         f"{ARM_BY_NAME[other].label} | {_fmt(stat[PRIMARY], 2)} | {_fmt(fp, 1)} |")
    at = [r for r in rows.values() if r["rho"] == rho and r.get("per_class")]
    classes = sorted({k.split("/", 1)[1] for r in at for k in r["per_class"]})
    if at and classes:
        lines += ["", f"**Per class at rho {rho}** (round 1 − round 0, mean over seeds: "
                      "pseudo-mask IoU in points / false positives on the class's preferred "
                      "context in points of percentage)", "",
                  "| class | " + " | ".join(ARM_BY_NAME[r["arm"]].label for r in at) + " |",
                  "|---|" + "---|" * len(at)]
        for c in classes:
            cells = []
            for r in at:
                iou = r["per_class"].get(f"pseudo_iou/{c}", {}).get("mean")
                fp = r["per_class"].get(f"fp_preferred/{c}", {}).get("mean")
                cells.append(("–" if iou is None else f"{iou:+.1f}") + " / "
                             + ("–" if fp is None else f"{100 * fp:+.0f}"))
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _share(stat: dict | None) -> str:
    """A share of the gap closed, ``ratio [lo, hi]``, or why it has none."""
    if not stat:
        return "pending"
    if stat.get("ratio") is None:
        return "unresolved" if "contains 0" in (stat.get("unresolved") or "") else "–"
    return f"{stat['ratio']:+.2f} [{stat['lo']:+.2f}, {stat['hi']:+.2f}]"


def intervention_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The interventions' short table (notebook 11), one dict per arm and rho, strongest rho
    first: the arm's label, rho, pseudo-mask mIoU round 1 − round 0 (mean [95% interval]), the
    share of the interventional gap it closes ('unresolved' where the gap's interval contains
    0) and the number of seeds. Empty before any intervention run."""
    rows = res.get("interventions") or {}
    out = []
    for _, row in sorted(rows.items(), key=lambda kv: (-kv[1]["rho"], kv[0])):
        p = row["paired"][PRIMARY]
        diff = ("pending" if p.get("mean") is None else f"{p['mean']:+.2f}" if p.get("lo") is None
                else f"{p['mean']:+.2f} [{p['lo']:+.2f}, {p['hi']:+.2f}]")
        out.append({"arm": ARM_BY_NAME[row["arm"]].label, "rho": row["rho"],
                    "pseudo r1 − r0": diff,
                    "gap closed": _share(row["gap"][PRIMARY]["closed"]), "n": p.get("n")})
    return out


def findings(res: dict[str, Any]) -> list[str]:
    """The course's findings read from the protocol's tables, one line each (notebook 11):
    CONTA's primary endpoint, the interventional gap and the share of it CONTA closes at the
    main rho, the confounded and interventional round 0's context reliance, CONTA's context
    channel after round 1, and the sweep over rho. "pending" where a table lacks the entry."""
    main = f"{MAIN_RHO}"
    paired, rounds = res.get("paired", {}), res.get("rounds", {})
    gap = paired.get(f"interventional@{main}", {}).get("0", {}).get(PRIMARY)
    closed = res.get("sweep", {}).get(main, {}).get(PRIMARY, {}).get("gap_closed")
    lines = [f"CONTA, round 1 − round 0, pseudo-mask mIoU at rho {main}: "
             f"{_fmt(res.get('primary'), 2)}",
             f"interventional − confounded round 0, pseudo-mask mIoU at rho {main}: "
             f"{_fmt(gap, 2)}",
             f"share of that gap CONTA closes: {_share(closed)}"]
    levels = [rounds.get(f"{arm}@{main}", {}).get("0", {})
              for arm in ("conta", "interventional")]

    def level(key: str, scale: float, fmt: str) -> str:
        means = [lv.get(key, {}).get("mean") for lv in levels]
        if None in means:
            return "pending"
        return " → ".join(f"{scale * m:{fmt}}" for m in means)

    lines += [f"round 0's context effect (logits), confounded → interventional: "
              f"{level('context_effect', 1.0, '.2f')}",
              f"round 0's false positives on the preferred context alone, confounded → "
              f"interventional: {level('fp_rate_preferred', 100.0, '.0f')} (%)"]
    mon = res.get("monitor", {}).get(f"conta@{main}", {})
    if mon:
        mean = {k: (mon.get(k) or {}).get("mean") for k in
                ("w_m_abs_last", "alpha_max_mean_last", "alpha_uniform_last", "context_share")}
        if None not in mean.values():
            lines.append(f"CONTA's context channel after round 1: mean |w_M| "
                         f"{mean['w_m_abs_last']:.4f}, mean largest alpha "
                         f"{mean['alpha_max_mean_last']:.3f} (uniform: "
                         f"{mean['alpha_uniform_last']:.3f}), context term "
                         f"{mean['context_share']:.1e} of the CAMs")
    for rho, row in sorted(res.get("sweep", {}).items(), key=lambda kv: float(kv[0])):
        p = row.get(PRIMARY, {})
        lines.append(f"rho {rho}: interventional gap {_fmt(p.get('interventional'), 2)}; "
                     f"CONTA r1 − r0 {_fmt(p.get('conta'), 2)}; share closed "
                     f"{_share(p.get('gap_closed'))}")
    return lines


def markdown_interventions(res: dict[str, Any]) -> str:
    """The interventions' table (empty before any intervention run)."""
    rows = res.get("interventions") or {}
    if not rows:
        return ""
    share = _share

    lines = ["**Interventions** (docs/results.md section 7; `oracle_*` rows read the generator "
             "and are diagnostics): round 1 − round 0 (paired by seed), against CONTA (difference "
             "of paired differences), the interventional gap and the share of it closed (ratio "
             "of means, 95% bootstrap over seeds; unresolved where the gap's interval contains 0),"
             " false positives on the preferred context alone round 0 → round 1", "",
             "| arm | rho | pseudo r1 − r0 | per seed | − CONTA's | gap | gap closed | "
             "FP preferred r0 → r1 | context effect r1 − r0 | n |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for _, row in sorted(rows.items(), key=lambda kv: (-kv[1]["rho"], kv[0])):
        arm = ARM_BY_NAME[row["arm"]]
        p = row["paired"][PRIMARY]
        fp = row["levels"]
        fp0, fp1 = (fp[r]["fp_rate_preferred"]["mean"] for r in ("0", "1"))
        fps = "–" if fp0 is None or fp1 is None else f"{100 * fp0:.0f}% → {100 * fp1:.0f}%"
        lines.append(
            f"| {arm.label} | {row['rho']} | {_fmt(p, 2)} | {_per_seed(p, 2)} | "
            f"{_fmt(row['vs_conta'][PRIMARY], 2)} | "
            f"{_fmt(row['gap'][PRIMARY]['interventional'], 2)} | "
            f"{share(row['gap'][PRIMARY]['closed'])} | {fps} | "
            f"{_fmt(row['paired']['context_effect'], 2)} | {p['n']} |")
    return "\n".join(lines)


def _esol(reports: dict) -> dict[str, Any]:
    """The ESOL extension's comparisons at the main rho, each paired by seed: ESOL's round 0
    against IRN's (the ``conta`` arm's round 0), CONTA's gain on ESOL against its gain on IRN,
    each ablation's round 0 against ESOL's; and the levels of ESOL's stages."""
    esol = reports.get(("esol", MAIN_RHO), {})
    irn = reports.get(("conta", MAIN_RHO), {})
    if not esol and not any(reports.get((a, MAIN_RHO)) for a in ESOL_ABLATIONS):
        return {}
    out: dict[str, Any] = {
        "vs_irn": {k: _with_seeds(*_paired(esol, 0, irn, 0, k)) for k in ENDPOINTS},
        "conta_gain": {k: _with_seeds(*_paired(esol, 1, esol, 0, k)) for k in ENDPOINTS},
        "conta_gain_vs_irn": {k: _with_seeds(*_diff_in_diff(esol, irn, k)) for k in ENDPOINTS},
        "ablations": {}, "stages": {}}
    for name in ESOL_ABLATIONS:
        runs = reports.get((name, MAIN_RHO), {})
        if runs:
            out["ablations"][name] = {k: _with_seeds(*_paired(runs, 0, esol, 0, k))
                                      for k in ENDPOINTS}
    out["controls"] = {}
    for name, ref in ESOL_CONTROLS.items():
        runs, controlled = reports.get((name, MAIN_RHO), {}), reports.get((ref, MAIN_RHO), {})
        if runs:
            out["controls"][name] = {
                "of": ref,
                "controlled_minus_control": {k: _with_seeds(*_paired(controlled, 0, runs, 0, k))
                                             for k in ENDPOINTS},
                "control_minus_irn": {k: _with_seeds(*_paired(runs, 0, irn, 0, k))
                                      for k in ENDPOINTS}}
    for name in ("esol", *ESOL_ABLATIONS):
        runs = reports.get((name, MAIN_RHO), {})
        if runs:
            out["stages"][name] = _levels(runs, 0, ESOL_KEYS)
    return out


def _levels(runs: dict[int, dict], r: int, keys: Sequence[str]) -> dict[str, Any]:
    """Round ``r``'s level of each key over the seeds (not a difference), with those seeds."""
    return {k: {**interval([value_of(e.get(r), k) for e in runs.values()]),
                "seeds": sorted(s for s, e in runs.items() if value_of(e.get(r), k) is not None)}
            for k in keys}


COST_KINDS = ("round 0", "round 1 or 2", "interventional transfer", "ESOL round 0",
              "ESOL round 1", "ESOL ablation round 0")


def _cost(proto: Protocol, reports: dict) -> dict[str, Any]:
    """Median wall minutes per kind of round over every timed round (archived or here; rounds
    timed on a loaded machine included: the median resists them), and the whole protocol at
    those medians: each job counted by the rounds it adds (a variant adds round 1 on conta's
    shared round 0; the interventional CAM training runs only the training, its transfer to
    each rho the rest of a round 0, so a training costs a round 0 less a transfer)."""
    times: dict[str, list[float]] = {k: [] for k in COST_KINDS}
    for (arm, _), runs in reports.items():
        for rounds in runs.values():
            for r, entry in rounds.items():
                seconds = value_of(entry, "seconds")
                if seconds is not None:
                    times[_cost_kind(arm, r)].append(seconds / 60.0)
    count = dict.fromkeys(COST_KINDS, 0)
    done: dict[tuple[str, float | None, int], int] = {}
    interventions = 0  # later rounds of the interventions' extension (round 0 is conta's)
    trainings = 0  # interventional CAM trainings (pipeline.train_cam_network)
    for job in proto.jobs():
        if job.arm in INTERVENTION_NAMES:
            interventions += 1
        elif job.rho is None:
            trainings += 1
        elif job.arm in VARIANTS:
            count[COST_KINDS[1]] += 1
        else:
            first = done.get((job.arm, job.rho, job.seed), -1) + 1
            for r in range(first, job.rounds + 1):
                count[_cost_kind(job.arm, r)] += 1
            done[(job.arm, job.rho, job.seed)] = job.rounds
    median = {k: float(np.median(v)) if v else None for k, v in times.items()}

    first, transfer = median[COST_KINDS[0]], median[COST_KINDS[2]]
    training = None if first is None or transfer is None else max(first - transfer, 0.0)

    def hours(kinds: Sequence[str], extra: float | None = 0.0) -> float | None:
        if extra is None or any(count[k] and median[k] is None for k in kinds):
            return None
        return (sum(count[k] * median[k] for k in kinds if count[k]) + extra) / 60.0

    later = median[COST_KINDS[1]]
    return {"median_minutes": median, "timed": {k: len(v) for k, v in times.items()},
            "rounds": count, "trainings": trainings, "training_minutes": training,
            "protocol_hours": hours(COST_KINDS[:3],
                                    None if trainings and training is None
                                    else trainings * (training or 0.0)),
            "esol_hours": hours(COST_KINDS[3:]), "intervention_rounds": interventions,
            "intervention_hours": None if later is None else interventions * later / 60.0}


def _cost_kind(arm: str, r: int) -> str:
    if arm in ESOL_ABLATIONS:
        return COST_KINDS[5]
    if arm.startswith("esol"):
        return COST_KINDS[3] if r == 0 else COST_KINDS[4]
    if arm == "interventional":
        return COST_KINDS[2]
    return COST_KINDS[0] if r == 0 else COST_KINDS[1]


def _with_seeds(seeds: list[int], diffs: list[float]) -> dict[str, Any]:
    return {**interval(diffs), "seeds": seeds}


def _monitor(runs: dict[int, dict]) -> dict[str, Any]:
    """The last epoch's context figures of round 1 (and the first, to see them move)."""
    out: dict[str, Any] = {}
    for key in ("w_m_abs", "alpha_max_mean", "attention_logit_std", "alpha_uniform"):
        for which, pos in (("first", 0), ("last", -1)):
            vals = []
            for entries in runs.values():
                hist = (entries.get(1) or {}).get("epoch_history") or []
                if hist and key in hist[pos]:
                    vals.append(float(hist[pos][key]))
            if vals:
                out[f"{key}_{which}"] = interval(vals)
    for key in ("context_share",):
        out[key] = interval([value_of(e.get(1), key) for e in runs.values()])
    return out


# --------------------------------------------------------------------------------------------
# tables


def _fmt(stat: dict | None, digits: int = 1, signed: bool = True) -> str:
    if not stat or stat.get("mean") is None:
        return "pending"
    sign = "+" if signed else ""
    text = f"{stat['mean']:{sign}.{digits}f}"
    if stat.get("sd") is not None:
        text += f" ± {stat['sd']:.{digits}f} [{stat['lo']:{sign}.{digits}f}, {stat['hi']:{sign}.{digits}f}]"
    return text + f" (n={stat['n']})"


def _digits(key: str) -> int:
    return 2 if "miou" in key else 3 if key in ("context_effect", "contrast_context") else 3


def _per_seed(stat: dict | None, digits: int) -> str:
    if not stat or not stat.get("values"):
        return ""
    return ", ".join(f"{s}: {v:+.{digits}f}" for s, v in zip(stat.get("seeds", []), stat["values"]))


def cost_line(res: dict[str, Any]) -> str:
    """One sentence: minutes per round and the whole protocol's hours at those medians."""
    cost = res.get("cost")
    if not cost or not any(cost["timed"].values()):
        return ""
    parts = [f"{k} {cost['median_minutes'][k]:.1f} min (n={cost['timed'][k]})"
             for k in COST_KINDS if cost["timed"][k]]
    n = cost["rounds"]
    line = ("**Cost** (median wall time per round on 2 CPU cores, over the timed runs): "
            + ", ".join(parts) + f". The protocol is {n[COST_KINDS[0]]} rounds 0, "
            f"{cost['trainings']} interventional CAM trainings (nothing else of a round runs on "
            "the interventional set: a round 0 less a transfer"
            + (f", {cost['training_minutes']:.1f} min" if cost["training_minutes"] is not None
               else "") + f"), {n[COST_KINDS[1]]} later rounds and "
            f"{n[COST_KINDS[2]]} interventional transfers")
    if cost["protocol_hours"] is not None:
        line += f": about {cost['protocol_hours']:.1f} hours at these medians"
    if n[COST_KINDS[3]] or n[COST_KINDS[4]] or n[COST_KINDS[5]]:
        line += (f"; the ESOL extension adds {n[COST_KINDS[3]]} ESOL rounds 0, "
                 f"{n[COST_KINDS[4]]} ESOL rounds 1 and {n[COST_KINDS[5]]} ablation rounds 0 "
                 "(which share ESOL's stage 0, and for the area weight its expansion)")
        line += (f", about {cost['esol_hours']:.1f} hours" if cost.get("esol_hours") is not None
                 else " (not yet timed)")
    if cost.get("intervention_rounds"):
        line += (f"; the interventions (section 7) add {cost['intervention_rounds']} rounds 1 on "
                 "conta's rounds 0")
        if cost.get("intervention_hours") is not None:
            line += f", about {cost['intervention_hours']:.1f} hours at the later rounds' median"
    return line + "."


def markdown_tables(res: dict[str, Any]) -> str:
    """The tables of docs/results.md section 0 (mean ± sample SD [95% t interval] (n))."""
    lines = ["Mean ± sample SD [95% t interval] (n seeds); differences are paired by training "
             "seed on fixed data.", ""]
    p = res["primary"]
    lines += ["**Primary endpoint** (pre-registered): pseudo-mask mIoU, CONTA round 1 − round 0, "
              f"rho {MAIN_RHO}: {_fmt(p, _digits(PRIMARY))}", "",
              f"per seed: {_per_seed(p, _digits(PRIMARY))}", ""]
    # per arm at the main rho: paired differences
    lines += [f"**Paired differences at rho {MAIN_RHO}** (round t − round 0; interventional: "
              "its round 0 − the confounded round 0)", "",
              "| arm | diff | " + " | ".join(LABELS[k] for k in ENDPOINTS) + " |",
              "|---|---|" + "---|" * len(ENDPOINTS)]
    for arm in ARMS:
        cell = res["paired"].get(f"{arm.name}@{MAIN_RHO}")
        if not cell:
            lines.append(f"| {arm.label} | | " + " | ".join("pending" for _ in ENDPOINTS) + " |")
            continue
        for r, stats in sorted(cell.items()):
            diff = "int. − conf." if arm.name == "interventional" else f"round {r} − 0"
            lines.append(f"| {arm.label} | {diff} | "
                         + " | ".join(_fmt(stats[k], _digits(k)) for k in ENDPOINTS) + " |")
    lines += ["", f"**Each variant against CONTA (Eq. 3)**: (its round 1 − round 0) − (CONTA's "
              f"round 1 − round 0), rho {MAIN_RHO}", "",
              "| variant | " + " | ".join(LABELS[k] for k in ENDPOINTS) + " |",
              "|---|" + "---|" * len(ENDPOINTS)]
    for name in VARIANTS:
        stats = res["vs_conta"].get(f"{name}@{MAIN_RHO}")
        cells = [_fmt(stats[k], _digits(k)) if stats else "pending" for k in ENDPOINTS]
        lines.append(f"| {ARM_BY_NAME[name].label} | " + " | ".join(cells) + " |")
    lines += ["", f"**Levels at rho {MAIN_RHO}** (not differences)", "",
              "| arm | round | " + " | ".join(LABELS[k] for k in ENDPOINTS) + " |",
              "|---|---|" + "---|" * len(ENDPOINTS)]
    for arm in ARMS:
        cell = res["rounds"].get(f"{arm.name}@{MAIN_RHO}", {})
        for r, stats in sorted(cell.items()):
            if arm.name in VARIANTS and r == "0":
                continue  # the shared round 0 is conta's
            lines.append(f"| {arm.label} | {r} | "
                         + " | ".join(_fmt(stats[k], _digits(k), signed=False) for k in ENDPOINTS)
                         + " |")
    lines += ["", "**What the context parameters learned** (round 1, rho 0.9; first → last epoch)",
              "", "| arm | mean abs w_M | mean largest alpha (uniform) | attention logit SD | "
              "context share of CAM magnitude |", "|---|---|---|---|---|"]
    for arm in ARMS:
        m = res["monitor"].get(f"{arm.name}@{MAIN_RHO}")
        if not m:
            continue

        def fl(key: str, digits: int = 4, m: dict = m) -> str:
            a, b = m.get(f"{key}_first"), m.get(f"{key}_last")
            if not a or not b or a["mean"] is None:
                return "–"
            return f"{a['mean']:.{digits}g} → {b['mean']:.{digits}g}"
        uni = m.get("alpha_uniform_last")
        share = m.get("context_share") or {}
        lines.append(f"| {arm.label} | {fl('w_m_abs')} | {fl('alpha_max_mean', 3)}"
                     + (f" ({uni['mean']:.3f})" if uni and uni['mean'] is not None else "")
                     + f" | {fl('attention_logit_std', 3)} | "
                     + (f"{share['mean']:.2g}" if share.get("mean") is not None else "–") + " |")
    lines += ["", "**Sweep over rho**: CONTA round 1 − round 0, interventional − confounded "
              "round 0, and the share of that gap CONTA closes (ratio of means, 95% bootstrap "
              "over seeds)", "",
              "| rho | endpoint | CONTA r1 − r0 | interventional − r0 | gap closed |",
              "|---|---|---|---|---|"]
    for rho in sorted(res["sweep"], key=float):
        for k, row in res["sweep"][rho].items():
            g = row["gap_closed"]
            gap = ("unresolved" if "contains 0" in (g.get("unresolved") or "") else "–") \
                if g["ratio"] is None else f"{g['ratio']:+.2f} [{g['lo']:+.2f}, {g['hi']:+.2f}]"
            lines.append(f"| {rho} | {LABELS[k]} | {_fmt(row['conta'], _digits(k))} | "
                         f"{_fmt(row['interventional'], _digits(k))} | {gap} |")
    esol = markdown_esol(res)
    if esol:
        lines += ["", esol]
    interventions = markdown_interventions(res)
    if interventions:
        lines += ["", interventions, "", markdown_intervention_details(res)]
        verdict = intervention_verdict(res)
        if verdict:
            lines += ["", "**Against the target** (docs/results.md section 7):", "",
                      *(f"- {v}" for v in verdict)]
    cost = cost_line(res)
    if cost:
        lines += ["", cost]
    return "\n".join(lines) + "\n"


def markdown_esol(res: dict[str, Any]) -> str:
    """The ESOL extension's tables (empty before any ESOL run)."""
    e = res.get("esol") or {}
    if not e:
        return ""
    head = "| comparison | " + " | ".join(LABELS[k] for k in ENDPOINTS) + " |"
    lines = ["**A second CAM method: ESOL** (`cam.method=esol`, re-implemented from the abstract "
             "and the official figure, not a reproduction; an extension of the protocol made "
             f"after it, `docs/results.md` section 6), rho {MAIN_RHO}, paired by training seed",
             "", head, "|---|" + "---|" * len(ENDPOINTS)]
    rows = [("ESOL round 0 − IRN round 0", e.get("vs_irn")),
            ("ESOL + CONTA: round 1 − round 0", e.get("conta_gain")),
            ("CONTA's gain on ESOL − its gain on IRN", e.get("conta_gain_vs_irn"))]
    rows += [(f"{ARM_BY_NAME[n].label} − ESOL (round 0)", st)
             for n, st in (e.get("ablations") or {}).items()]
    for name, c in (e.get("controls") or {}).items():
        rows += [(f"{ARM_BY_NAME[c['of']].label} − {ARM_BY_NAME[name].label}: what the samplers "
                  "add (round 0)", c["controlled_minus_control"]),
                 (f"{ARM_BY_NAME[name].label} − IRN round 0: what two more head trainings add",
                  c["control_minus_irn"])]
    for label, stats in rows:
        if stats and stats[PRIMARY]["n"]:
            lines.append(f"| {label} | " + " | ".join(_fmt(stats[k], _digits(k))
                                                      for k in ENDPOINTS) + " |")
    lines += _esol_levels(res)
    lines += ["", "**ESOL's stages** (round 0 levels; precision and recall of the thresholded "
              "CAMs at each network's best threshold, averaged over the foreground classes)", "",
              "| run | network | CAM mIoU (best thr.) | precision | recall | contrast "
              "(object/context) |", "|---|---|---|---|---|---|"]
    for name, stages in (e.get("stages") or {}).items():
        for prefix, network in ESOL_STAGES:
            stats = [stages.get(prefix + k) for k in ESOL_CAM_KEYS]
            if not stats[0] or not stats[0]["n"]:
                continue
            cells = [_fmt(st, 1 if k == "cam_miou_best" else 2, signed=False)
                     for st, k in zip(stats, ESOL_CAM_KEYS)]
            lines.append(f"| {_esol_label(name)} | {network} | " + " | ".join(cells) + " |")
        offsets = [stages.get(f"esol_{s}_mean_abs_offset") for s in ("expand", "shrink")]
        if all(o and o["n"] for o in offsets):
            lines.append(f"| {_esol_label(name)} | mean abs offset, expansion / shrinkage "
                         f"(feature cells) | {_fmt(offsets[0], 2, signed=False)} / "
                         f"{_fmt(offsets[1], 2, signed=False)} | | | |")
    return "\n".join(lines)


def _esol_label(name: str) -> str:
    """An ESOL arm's name in the round-0 tables (the ``esol`` arm's round 0 has no CONTA yet)."""
    return "ESOL (re-implemented)" if name == "esol" else ARM_BY_NAME[name].label


def _esol_levels(res: dict[str, Any]) -> list[str]:
    """Levels (not differences) of ESOL's rounds and ablations beside IRN's rounds on the
    same training seeds (the ``conta`` arm, restricted to ESOL's seeds)."""
    levels = res.get("rounds") or {}
    esol = levels.get(f"esol@{MAIN_RHO}") or {}
    seeds = set(((esol.get("0") or {}).get(PRIMARY) or {}).get("seeds") or [])
    if not seeds:
        return []
    keys = (PRIMARY, "cam_miou_best", "seg_miou", "context_effect")

    def on_seeds(stat: dict | None) -> dict | None:
        if not stat or not stat.get("values"):
            return None
        pairs = [(sd, v) for sd, v in zip(stat["seeds"], stat["values"]) if sd in seeds]
        return _with_seeds([sd for sd, _ in pairs], [v for _, v in pairs]) if pairs else None

    rows = [(f"IRN (IRNet's CAM), round {r}{' + CONTA' if r else ''}",
             (levels.get(f"conta@{MAIN_RHO}") or {}).get(str(r)), True) for r in (0, 1)]
    rows += [(f"ESOL (re-implemented), round {r}{' + CONTA' if r else ''}", esol.get(str(r)),
              False) for r in (0, 1)]
    rows += [(f"{ARM_BY_NAME[n].label}, round 0",
              (levels.get(f"{n}@{MAIN_RHO}") or {}).get("0"), False) for n in ESOL_ABLATIONS]
    lines = ["", f"**Levels** (rho {MAIN_RHO}; IRN on ESOL's training seeds "
             f"{', '.join(map(str, sorted(seeds)))}; CAM mIoU is the round's CAMs: ESOL's come "
             "from the shrinkage network)", "",
             "| run | " + " | ".join(LABELS[k] for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for label, entry, restrict in rows:
        if not entry or not (entry.get(PRIMARY) or {}).get("n"):
            continue
        stats = [on_seeds(entry.get(k)) if restrict else entry.get(k) for k in keys]
        lines.append(f"| {label} | " + " | ".join(_fmt(st, _digits(k), signed=False)
                                                   for st, k in zip(stats, keys)) + " |")
    return lines


def reproduction_table(res: dict[str, Any]) -> str:
    """Runs that are both archived and rerun here: the primary endpoint's level both times."""
    rows = res.get("reproduced") or []  # reruns on another machine than the archived run's
    if not rows:
        return ""
    here = machine_id()
    lines = ["| run | round | first run | rerun | difference | first run on | rerun on |",
             "|---|---|---|---|---|---|---|"]
    for c in sorted(rows, key=lambda c: (c["run"], c["round"])):
        on = c.get("rerun_on") or here
        lines.append(f"| {c['run']} | {c['round']} | {c['archived']:.2f} | {c['rerun']:.2f} | "
                     f"{c['rerun'] - c['archived']:+.2f} | torch {c.get('torch_archived') or '?'}"
                     f", {c.get('cpu_archived') or 'CPU not recorded'} | torch "
                     f"{on.get('torch') or '?'}, {on.get('cpu') or 'CPU not recorded'}"
                     + (" (the record now)" if c.get("rerun_on") else " (here)") + " |")
    return "\n".join(lines) + "\n"


def per_seed_table(res: dict[str, Any]) -> str:
    """The primary endpoint's paired differences per seed for every arm at rho 0.9."""
    lines = ["| arm | " + " | ".join(f"seed {s}" for s in range(8)) + " |", "|---|" + "---|" * 8]
    for arm in ARMS:
        cell = res["paired"].get(f"{arm.name}@{MAIN_RHO}", {})
        stats = cell.get("0" if arm.name == "interventional" else "1", {}).get(PRIMARY)
        if not stats:
            continue
        by_seed = dict(zip(stats["seeds"], stats["values"]))
        lines.append(f"| {arm.label} | " + " | ".join(
            f"{by_seed[s]:+.1f}" if s in by_seed else "" for s in range(8)) + " |")
    return "\n".join(lines) + "\n"


TABLES_DIR = Path(__file__).resolve().parents[1] / "docs" / "tables"
"""The committed tables of a source checkout (absent from an installed package)."""


def published(path: str | Path | None = None) -> dict[str, Any] | None:
    """The committed tables of the protocol (``docs/tables/evidence.json`` of a source checkout,
    written by ``scripts/conta_evidence.py --protocol --publish``), or None when absent (e.g. an
    installed package without the repository)."""
    path = Path(path) if path is not None else TABLES_DIR / "evidence.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); rewrite it with "
                        "scripts/conta_evidence.py --protocol --tables-only --publish") from exc


def markdown_negatives_audit(result: dict[str, Any]) -> str:
    """The tables of ``scripts/negatives_audit.py`` (what each negatives bank held, per context,
    against the ground truth; docs/results.md section 7.3): one table per rho, the contexts'
    images, the images that gave a crop, the crops, and the crops that hold a pixel of a true
    object, with the classes found."""
    lines: list[str] = []
    for rho, entry in sorted(result.items(), key=lambda kv: -float(kv[0])):
        seeds = ", ".join(str(s) for s in sorted(entry["seeds"]))
        margin = f", margin {entry['margin']:g} of the long side" if entry.get("margin") else ""
        lines += [f"**rho {rho}** (seeds {seeds}{margin})", "",
                  "| context | preferred by | training images | images giving a crop | crops "
                  "| crops per image | with an object | objects found in crops |",
                  "|---|---|---|---|---|---|---|---|"]
        owners: dict[str, list[str]] = {}
        for cls, ctx in entry["preferred_by"].items():
            owners.setdefault(ctx, []).append(cls)
        for ctx, r in entry["contexts"].items():
            share = f"{100 * r['images_with_crops'] / r['images']:.0f}%" if r["images"] else "-"
            per = f"{r['crops'] / r['images']:.2f}" if r["images"] else "-"
            dirty = f"{100 * r['crops_with_object'] / r['crops']:.0f}%" if r["crops"] else "-"
            found = ", ".join(f"{c} {n}" for c, n in sorted(r["by_class"].items(),
                                                            key=lambda kv: -kv[1])) or "none"
            lines.append(f"| {ctx} | {', '.join(owners.get(ctx, [])) or '-'} | {r['images']} | "
                         f"{r['images_with_crops']} ({share}) | {r['crops']} | {per} | "
                         f"{r['crops_with_object']} ({dirty}) | {found} |")
        lines.append("")
    return "\n".join(lines)
