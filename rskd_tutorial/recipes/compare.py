"""Chapter 6's common ground: the chapters' results records side by side, read, never re-trained.

Every chapter writes ``book/results/<NN>_<name>.json`` (:mod:`rskd_tutorial.recipes.results`). This
module turns those records into

* :func:`record_files` / :func:`records_overview` / :func:`missing_chapters`: which records exist, from
  which profile and device, and which chapters have written none yet (every file is checked by
  :func:`check_record`: a malformed file, or one that mixes profiles, fails loudly);
* :func:`common_ground`: one table row per distilled row (role ``kd``), with the teacher and the
  student-alone rows of its (task, model) group for reference: the paired gain over the student alone
  (:func:`~rskd_tutorial.recipes.results.paired_gain`), the share of the teacher-student gap it closes,
  the verdict (:func:`~rskd_tutorial.recipes.results.verdict`) and the training time relative to the
  student alone;
* :func:`join_bench`: the ``rskd bench`` costs (:func:`rskd_tutorial.bench.bench_detection`) of each
  detection row, matched by detector family and method;
* :func:`guide`: one Markdown sentence per (task, model) group, computed from that table with a rule
  that respects the seeds' spread (only a row *above* the student beyond the spread is recommended);
* :func:`format_table` and :func:`gain_cost_points`: what chapter 6 displays and plots.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rskd_tutorial.recipes.results import ROLES, TASKS, mean_pm, paired_gain, read_results, results_path, verdict

__all__ = ["CHAPTERS", "ROW_KEYS", "check_record", "record_files", "records_overview", "missing_chapters",
           "family", "precision", "common_ground", "join_bench", "guide", "format_table", "gain_cost_points"]

# the chapters that write records, with the notebook to run for each
CHAPTERS: dict[str, str] = {
    "00": "00_distilling_a_detector.ipynb",
    "01": "01_spectral_analysis.ipynb",
    "02": "02_ds2d2.ipynb",
    "03": "03_dipkd.ipynb",
    "04": "04_freqkd_divergence.ipynb",
    "05": "05_scrkd_cascade.ipynb",
}
ROW_KEYS = ("task", "model", "role", "method", "metric", "split", "seeds", "values", "mean", "sd", "steps",
            "train_seconds", "loaded", "extra")
# metrics on a 0-1 scale are shown to 0.001, the detection metrics (x100) to 0.1
_UNIT_METRICS = ("S", "Sm", "maxF", "F", "MAE", "maxEm", "E")


def precision(metric: str) -> int:
    """Decimals a metric is shown with: 3 for 0-1 metrics (S, max F, MAE), 1 for AP-like metrics (x100)."""
    return 3 if metric in _UNIT_METRICS else 1


def family(model: str) -> str:
    """The detector (or network) family of a row's model string: its prefix before the first ``-``
    (``"faster_rcnn-regnetx_002"`` -> ``"faster_rcnn"``)."""
    return model.split("-", 1)[0]


# ---------------------------------------------------------------------------------------------------
# which records exist


def check_record(record: Mapping[str, Any], source: str = "record") -> None:
    """Assert that ``record`` is a well-formed results file of one chapter and one profile.

    Checks the top-level keys, that ``profile`` is one profile name (a file never mixes profiles: a row
    that states its own profile, at its top level or in ``extra``, must state the file's), and that every
    row has the keys of :func:`~rskd_tutorial.recipes.results.result_row`, a known task and role, one
    value per seed, and a mean that is the mean of its values."""
    assert isinstance(record, Mapping), f"{source}: not a JSON object"
    for key in ("chapter", "profile", "device", "rows"):
        assert key in record, f"{source}: malformed record, no {key!r}"
    chapter, profile = record["chapter"], record["profile"]
    assert isinstance(chapter, str) and len(chapter) == 2 and chapter.isdigit(), f"{source}: bad chapter {chapter!r}"
    assert isinstance(profile, str) and profile, (
        f"{source}: 'profile' must be one profile name, got {profile!r} (a file must not mix profiles)")
    rows = record["rows"]
    assert isinstance(rows, list) and rows, f"{source}: 'rows' must be a non-empty list"
    for i, row in enumerate(rows):
        where = f"{source}, row {i}"
        assert isinstance(row, Mapping), f"{where}: not a JSON object"
        missing = [k for k in ROW_KEYS if k not in row]
        assert not missing, f"{where}: malformed row, missing {missing}"
        assert row["task"] in TASKS, f"{where}: unknown task {row['task']!r}"
        assert row["role"] in ROLES, f"{where}: unknown role {row['role']!r}"
        values, seeds = row["values"], row["seeds"]
        assert isinstance(values, list) and values and len(values) == len(seeds), (
            f"{where}: needs one value per seed, got {values!r} for seeds {seeds!r}")
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in values), f"{where}: non-finite value"
        assert math.isclose(row["mean"], sum(values) / len(values), rel_tol=1e-6, abs_tol=1e-9), (
            f"{where}: mean {row['mean']} is not the mean of its values {values}")
        for stated in (row.get("profile"), (row.get("extra") or {}).get("profile")):
            assert stated is None or stated == profile, (
                f"{where}: the row says profile {stated!r} in a {profile!r} file (a file must not mix profiles)")


def record_files(root: str | os.PathLike | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every results file under ``root`` (default: as :func:`~rskd_tutorial.recipes.results.results_path`)
    with its record, read by :func:`~rskd_tutorial.recipes.results.read_results` and checked by
    :func:`check_record` (the chapter inside must match the file name's)."""
    folder = results_path("00", "x", root).parent
    paths = sorted(folder.glob("[0-9][0-9]_*.json"))      # the order read_results reads them in
    records = read_results(root)
    assert len(paths) == len(records), f"{folder}: the results files changed while being read"
    for path, record in zip(paths, records):
        check_record(record, path.name)
        assert record["chapter"] == path.name[:2], (
            f"{path.name}: says chapter {record['chapter']!r}, its name says {path.name[:2]!r}")
    return list(zip(paths, records))


def records_overview(files: Sequence[tuple[Path, Mapping[str, Any]]]) -> pd.DataFrame:
    """One line per results file: chapter, file, profile, device, number of rows, tasks."""
    return pd.DataFrame([{"chapter": rec["chapter"], "file": path.name, "profile": rec["profile"],
                          "device": rec["device"], "rows": len(rec["rows"]),
                          "tasks": ", ".join(sorted({r["task"] for r in rec["rows"]}))} for path, rec in files],
                        columns=["chapter", "file", "profile", "device", "rows", "tasks"])


def missing_chapters(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The chapters of :data:`CHAPTERS` that have written no record yet."""
    present = {r["chapter"] for r in records}
    return [c for c in CHAPTERS if c not in present]


# ---------------------------------------------------------------------------------------------------
# the common-ground table


def _pick_teacher(rows: Sequence[Mapping[str, Any]], student: Mapping[str, Any],
                  named: str | None = None) -> Mapping[str, Any] | None:
    """The teacher a row is measured against: the teacher row whose model a KD row names in
    ``extra["teacher"]`` (chapter 5's 2x rows learn from the 48 px net, its 4x rows from the 96 px one);
    else a teacher row of the same file, task and metric, of the student's family if there is one, and of
    several the strongest, the ceiling a distilled student could reach."""
    cands = [r for r in rows if r["role"] == "teacher" and r["task"] == student["task"]
             and r["metric"] == student["metric"]]
    chosen = [r for r in cands if named is not None and r["model"] == named]
    if chosen:
        return chosen[0]
    same = [r for r in cands if family(r["model"]) == family(student["model"])]
    cands = same or cands
    return max(cands, key=lambda r: r["mean"]) if cands else None


def _cost(row: Mapping[str, Any], base: Mapping[str, Any] | None) -> float | None:
    a = row.get("train_seconds")
    b = None if base is None else base.get("train_seconds")
    return a / b if a and b and a > 0 and b > 0 else None


def _line(rec: Mapping[str, Any], group: str, row: Mapping[str, Any], teacher: Mapping[str, Any] | None,
          base: Mapping[str, Any] | None) -> dict[str, Any]:
    """One table line: the row with its teacher and student alone and, for a KD row, the paired gain."""
    gap = None if teacher is None or base is None else teacher["mean"] - base["mean"]
    gain = gain_sd = None
    paired, call, closed = 0, None, None
    if row["role"] == "kd":
        if base is None:
            call = "no student-alone row"
        else:
            gain, gain_sd, paired = paired_gain(row, base)
            call = verdict(gain, gain_sd, paired)
            closed = gain / gap if gap is not None and gap > 0 else None
    return {"chapter": rec["chapter"], "profile": rec["profile"], "task": row["task"], "group": group,
            "model": row["model"], "role": row["role"], "method": row["method"], "metric": row["metric"],
            "teacher": None if teacher is None else teacher["mean"],
            "teacher model": None if teacher is None else teacher["model"],
            "student": None if base is None else base["mean"], "student sd": None if base is None else base["sd"],
            "student seeds": 0 if base is None else len(base["seeds"]),
            "mean": row["mean"], "sd": row["sd"], "gap": gap, "gain": gain, "gain sd": gain_sd, "paired": paired,
            "gap closed": closed, "verdict": call, "seeds": len(row["seeds"]), "cost": _cost(row, base),
            "train seconds": row.get("train_seconds"), "loaded": bool(row.get("loaded"))}


COLUMNS = ["chapter", "profile", "task", "group", "model", "role", "method", "metric", "teacher",
           "teacher model", "student", "student sd", "student seeds", "mean", "sd", "gap", "gain", "gain sd",
           "paired", "gap closed", "verdict", "seeds", "cost", "train seconds", "loaded"]
_FLOATS = ("teacher", "student", "student sd", "mean", "sd", "gap", "gain", "gain sd", "gap closed", "cost",
           "train seconds")


def common_ground(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The chapters' distilled rows on common ground, one line per (chapter, task, model, method).

    For each (task, model) group of a chapter's file that holds a ``kd`` row (``group`` = that model; the
    teacher line's ``model`` is the teacher's own): the teacher line, the student-alone line, then one line
    per ``kd`` row with ``gain`` / ``gain sd`` / ``paired`` (the mean and sd of the per-seed paired
    differences to the student alone, and how many seeds were paired), ``gap closed`` (gain / (teacher -
    student), NaN unless the teacher is ahead), ``verdict`` and ``cost`` (training seconds over the student
    alone's). A KD row is paired with the student-alone row of its own file, else with one of the same task,
    model, metric and profile from another chapter (and then with that file's teacher when its own file has
    none). Where several chapters report the same (task, model, method) they stay apart (``chapter``
    column). Numbers stay numbers (NaN where undefined); :func:`format_table` makes the display strings."""
    records = list(records)
    # (task, model, metric, profile) -> (student-alone row, the rows of its file)
    students_anywhere: dict[tuple, tuple[Mapping[str, Any], list]] = {}
    for rec in records:
        for r in rec["rows"]:
            if r["role"] == "student":
                key = (r["task"], r["model"], r["metric"], rec["profile"])
                students_anywhere.setdefault(key, (r, rec["rows"]))
    lines = []
    for rec in records:
        rows = rec["rows"]
        own = {(r["task"], r["model"], r["metric"]): r for r in rows if r["role"] == "student"}
        groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for r in rows:
            if r["role"] == "kd":
                groups.setdefault((r["task"], r["model"]), []).append(r)
        for (task, model), kd_rows in groups.items():
            done_ref: set[tuple] = set()
            for r in kd_rows:
                key = (task, model, r["metric"])
                base, home = own.get(key), rows
                if base is None:
                    base, home = students_anywhere.get((*key, rec["profile"]), (None, rows))
                named = (r.get("extra") or {}).get("teacher")
                teacher = _pick_teacher(rows, base or r, named) or _pick_teacher(home, base or r, named)
                if key not in done_ref:
                    done_ref.add(key)
                    if teacher is not None:
                        lines.append(_line(rec, model, teacher, teacher, base))
                    if base is not None:
                        lines.append(_line(rec, model, base, teacher, base))
                lines.append(_line(rec, model, r, teacher, base))
    table = pd.DataFrame(lines, columns=COLUMNS)
    for c in _FLOATS:      # numbers stay numbers, NaN where undefined (also in an empty table)
        table[c] = pd.to_numeric(table[c], errors="coerce").astype(float)
    for c in ("student seeds", "paired", "seeds"):
        table[c] = table[c].astype(int)
    table["loaded"] = table["loaded"].astype(bool)
    return table


def join_bench(table: pd.DataFrame, bench: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """``table`` with the ``rskd bench`` costs of each detection row: ``step x (bench)`` (the distillation
    step over the student's step), ``KD fwd share`` (time inside the KD terms over the step) and ``peak MB
    (bench)``, matched on the row's detector family (:func:`family`) and method; the student-alone row
    gets the bench's ``student`` record (step ratio 1). Rows with no bench record get NaN."""
    by_key = {(b["detector"], b["method"]): b for b in bench}
    out = table.copy()
    cols: dict[str, list[float]] = {"step x (bench)": [], "KD fwd share": [], "peak MB (bench)": []}
    for _, line in out.iterrows():
        b = None
        if str(line["task"]).endswith("-detection") and line["role"] in ("student", "kd"):
            b = by_key.get((family(line["model"]), "student" if line["role"] == "student" else line["method"]))
        cols["step x (bench)"].append(math.nan if b is None else float(b.get("slowdown", 1.0)))
        cols["KD fwd share"].append(math.nan if b is None else float(b.get("kd_forward_share", 0.0)))
        cols["peak MB (bench)"].append(math.nan if b is None else float(b["peak_mb"]))
    for k, v in cols.items():
        out[k] = v
    return out


# ---------------------------------------------------------------------------------------------------
# display


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """The display form of :func:`common_ground` (optionally after :func:`join_bench`): mean ± sd strings
    rounded per metric (AP50 to 0.1, S to 0.001), gap closed in %, cost to 0.01."""
    out = []
    for _, t in table.iterrows():
        d = precision(t["metric"])
        kd = t["role"] == "kd"
        line = {"chapter": t["chapter"], "profile": t["profile"], "model": t["model"],
                "row": t["role"] if t["role"] != "kd" else t["method"], "metric": t["metric"],
                "teacher": mean_pm(t["teacher"], None, d, 1),
                "student alone": mean_pm(t["student"], t["student sd"], d, t["student seeds"]),
                "row mean": mean_pm(t["mean"], t["sd"], d, t["seeds"]),
                "gain": mean_pm(t["gain"], t["gain sd"], d, t["paired"], sign=True) if kd else "",
                "gap closed": "" if pd.isna(t["gap closed"]) else f"{100 * t['gap closed']:.0f} %",
                "verdict": "" if pd.isna(t["verdict"]) else t["verdict"], "seeds": t["seeds"],
                "train time ×": "" if pd.isna(t["cost"]) else f"{t['cost']:.2f}"}
        if "step x (bench)" in table.columns:
            line["step × (bench)"] = "" if pd.isna(t["step x (bench)"]) else f"{t['step x (bench)']:.2f}"
            share = t["KD fwd share"]
            line["KD fwd share"] = "" if pd.isna(share) or not kd else f"{100 * share:.1f} %"
            line["peak MB (bench)"] = "" if pd.isna(t["peak MB (bench)"]) else f"{t['peak MB (bench)']:.0f}"
        out.append(line)
    return pd.DataFrame(out)


def gain_cost_points(table: pd.DataFrame, task: str) -> tuple[pd.DataFrame, str]:
    """The KD rows of ``task`` as points of a gain-vs-cost plot and the x axis' label: x is the bench's
    step ratio when every row of the task has one (after :func:`join_bench`), else the training time over
    the student alone's; y the paired gain, yerr its sd (0 with one seed); with each point's verdict and
    its group's teacher-student gap; the label is the method (with the detector family and the chapter when
    the task has several). Rows without a cost or a gain are left out."""
    kd = table[(table["task"] == task) & (table["role"] == "kd")].copy()
    use_bench = "step x (bench)" in kd.columns and len(kd) > 0 and kd["step x (bench)"].notna().all()
    kd["x"] = kd["step x (bench)"] if use_bench else kd["cost"]
    kd = kd[kd["x"].notna() & kd["gain"].notna()]
    kd["y"] = kd["gain"].astype(float)
    kd["yerr"] = [float(s) if n >= 2 else 0.0 for s, n in zip(kd["gain sd"], kd["paired"])]
    fams, chaps = kd["model"].map(family), kd["chapter"]
    def label(method: str, fam: str, chapter: str) -> str:
        more = ([fam] if fams.nunique() > 1 else []) + ([f"ch. {int(chapter)}"] if chaps.nunique() > 1 else [])
        return f"{method} ({', '.join(more)})" if more else method

    kd["label"] = [label(m, f, c) for m, f, c in zip(kd["method"], fams, chaps)]
    label = ("distillation step / student step (rskd bench)" if use_bench
             else "training time / student alone's")
    return kd[["x", "y", "yerr", "label", "verdict", "metric", "gap"]].reset_index(drop=True), label


# ---------------------------------------------------------------------------------------------------
# the guide


def _named(lines: pd.DataFrame, d: int, with_gap: bool = False) -> str:
    parts = []
    for _, t in lines.iterrows():
        s = f"{t['method']} ({mean_pm(t['gain'], t['gain sd'], d, t['paired'], sign=True)}"
        if with_gap and t["gap closed"] is not None and not pd.isna(t["gap closed"]):
            s += f", {100 * t['gap closed']:.0f} % of the gap"
        if t["cost"] is not None and not pd.isna(t["cost"]):
            s += f", {t['cost']:.2f}× the training time"
        parts.append(s + ")")
    return ", ".join(parts)


def _clause(g: pd.DataFrame) -> str:
    """The guide's verdict on one chapter's (task, model) group (see :func:`guide`)."""
    kd = g[g["role"] == "kd"]
    first = kd.iloc[0]
    metric, d = first["metric"], precision(first["metric"])
    head = f"chapter {int(first['chapter'])} ({first['profile']} profile)"
    if pd.isna(first["student"]):
        return f"{head}: no student-alone row to compare with, so no method is recommended"
    student = mean_pm(first["student"], first["student sd"], d, first["student seeds"])
    if pd.isna(first["teacher"]):
        ref = f"student alone {student} {metric}, no teacher row"
    else:
        ref = f"teacher {first['teacher']:.{d}f} vs student alone {student} {metric}"
    gap = first["gap"]
    if not pd.isna(gap) and gap <= 0:
        return (f"{head}: {ref} — the teacher is not ahead of the student, so there is **nothing to distil** "
                f"and no method is recommended (measured: {_named(kd, d)})")
    parts = [f"{head}: {ref}" + ("" if pd.isna(gap) else f" (gap {gap:.{d}f})")]
    one = kd[kd["verdict"] == "one seed"]
    above = kd[kd["verdict"] == "above"].sort_values("gain", ascending=False)
    tie = kd[kd["verdict"] == "within noise"]
    below = kd[kd["verdict"] == "below"]
    if len(above):
        parts.append(f"**recommended**: {_named(above, d, with_gap=True)}")
    elif len(one) < len(kd):
        parts.append("no method is above the student alone beyond the seeds' spread")
    if len(tie):
        parts.append(f"within noise: {_named(tie, d)}")
    if len(below):
        parts.append(f"below the student alone: {_named(below, d)}")
    if len(one):
        parts.append(f"one seed: {_named(one, d)} — a demo, not a result (a verdict needs ≥ 2 seeds)")
    return "; ".join(parts)


def guide(records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> list[str]:
    """One Markdown sentence per (task, model) group of :func:`common_ground` (records, or the table itself).

    The rule respects the spread: a method is *recommended* only if its verdict is ``"above"`` (its mean
    paired gain exceeds the sd of the per-seed differences); ``"within noise"`` rows are named as ties,
    ``"below"`` rows as losses; one-seed rows are a demo, not a result; and when the teacher is not ahead of
    the student alone (gap ≤ 0) there is nothing to distil and nothing is recommended. A group reported by
    several chapters gets one clause per chapter."""
    table = records if isinstance(records, pd.DataFrame) else common_ground(records)
    sentences = []
    for (task, model), g in table.groupby(["task", "group"], sort=False):
        if not (g["role"] == "kd").any():
            continue
        clauses = [_clause(c) for _, c in g.groupby("chapter", sort=False) if (c["role"] == "kd").any()]
        sentences.append(f"**{task}, {model}**: " + "; ".join(clauses) + ".")
    return sentences
