"""Optional Trackio mirror of the lab (lab.yaml `reporting.trackio: true` or `{project, dir}`).

Each experiment becomes a Trackio run (name = experiment id, group = hypothesis, config = change,
base, kind): step metrics are logged as they stream (from the live job's metrics.jsonl), the rest
and the summary lines (`val_bpb`, ...) when it is recorded; anomaly events become alerts on their
run; a `reporter` run logs lab counters once per sync. Everything stays local (Trackio's SQLite
under TRACKIO_DIR, or `dir` from lab.yaml); nothing here contacts the network.

`TrackioMirror(lab).sync()` is incremental and idempotent: what was mirrored is remembered in
.lab/trackio/state.json, so calling it every pass logs each step, summary and alert once.
Needs `pip install benchlab[trackio]`; `enabled(lab)` is False without it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys

import pyarrow.compute as pc

from ..files.tables import METRICS, read_table
from ..files.yamlio import atomic_write
from ..lab import Lab
from ..state.events import read_events
from ..state.scores import scores as read_scores
from .anomalies import job_dir, live_entries, read_jsonl

REPORTER_RUN = "reporter"


def installed() -> bool:
    return importlib.util.find_spec("trackio") is not None


def settings(lab: Lab) -> dict | None:
    """None when the mirror is off; else {project, dir}."""
    value = (lab.config.get("reporting") or {}).get("trackio")
    if not value:
        return None
    value = value if isinstance(value, dict) else {}
    directory = value.get("dir")
    return {"project": str(value.get("project") or lab.config["lab"]),
            "dir": str((lab.root / directory).resolve()) if directory else None}


def enabled(lab: Lab) -> bool:
    return settings(lab) is not None and installed()


@contextlib.contextmanager
def hub_offline():
    """huggingface_hub offline for the mirror's own calls only, then as it was: the runner's other
    Hub calls (Hugging Face Jobs) in the same process must keep working."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    was = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:
            constants.HF_HUB_OFFLINE = bool(was) if was is not None else _truthy(before)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _import_trackio(directory: str | None):
    """Trackio reads TRACKIO_DIR when first imported, so set it before."""
    if directory:
        os.environ["TRACKIO_DIR"] = directory
    with contextlib.redirect_stdout(None), hub_offline():
        import trackio
    return trackio


class TrackioMirror:
    def __init__(self, lab: Lab, project: str | None = None):
        conf = settings(lab) or {"project": lab.config["lab"], "dir": None}
        self.lab, self.project = lab, project or conf["project"]
        self.trackio = _import_trackio(conf["dir"])
        self.state_path = lab.runtime / "trackio" / "state.json"
        self.state = self._load_state()
        self.log_path = lab.logs / "trackio.log"

    # -- state ----------------------------------------------------------------------------
    def _load_state(self) -> dict:
        try:
            state = json.loads(self.state_path.read_text())
            if state.get("project") == self.project:
                return state
        except (OSError, ValueError):
            pass
        return {"project": self.project, "runs": {}, "events": 0, "reporter_step": 0}

    def _save_state(self) -> None:
        atomic_write(self.state_path, json.dumps(self.state, indent=1, sort_keys=True))

    @contextlib.contextmanager
    def _quiet(self):
        """Trackio prints to stdout; keep that out of the runner's terminal, in a log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            yield

    # -- one run ---------------------------------------------------------------------------
    def _open(self, exp_id: str, group: str | None, config: dict):
        return self.trackio.init(project=self.project, name=exp_id, group=group, config=config,
                                 resume="allow", embed=False, auto_log_cpu=False, auto_log_gpu=False)

    def _close(self) -> None:
        """trackio.finish(), not run.finish(): it also clears Trackio's current run, so nothing is
        finished a second time (and printed) at interpreter exit."""
        self.trackio.finish()

    def _log_steps(self, run, exp_id: str, rows: list[dict]) -> int:
        """Log step rows newer than what this run already has; returns how many."""
        record = self.state["runs"].setdefault(exp_id, {"step": -1, "done": False})
        fresh = [r for r in rows if isinstance(r.get("step"), int) and r["step"] > record["step"]]
        for row in fresh:
            metrics = {k: v for k, v in row.items() if k not in ("step",) and isinstance(v, (int, float))}
            run.log(metrics, step=row["step"])
            record["step"] = row["step"]
        return len(fresh)

    def _mirror_live(self, entry: dict) -> int:
        rows = read_jsonl(job_dir(self.lab, entry) / "metrics.jsonl")
        record = self.state["runs"].get(entry["id"], {"step": -1})
        if not any(isinstance(r.get("step"), int) and r["step"] > record["step"] for r in rows):
            return 0
        config = {"change": entry.get("change") or {}, "base": entry.get("base"),
                  "kind": entry.get("kind", "experiment")}
        run = self._open(entry["id"], entry.get("hypothesis"), config)
        try:
            return self._log_steps(run, entry["id"], rows)
        finally:
            self._close()

    def _mirror_finished(self, row: dict) -> int:
        table = read_table(self.lab.experiments / row["id"] / "metrics.parquet", METRICS)
        steps = _wide(table.filter(pc.invert(table["summary"])).to_pylist())
        summary = {r["name"]: r["value"] for r in table.filter(table["summary"]).to_pylist()
                   if r["value"] is not None}
        summary.update({"status": row["status"], "promoted": row["promoted"]})
        if row["value"] is not None:
            summary[row["metric"] or self.lab.metric] = row["value"]
        if row["delta"] is not None:
            summary["delta"] = row["delta"]
        config = {"change": json.loads(row["change"]) if row["change"] else {}, "base": row["base"],
                  "kind": row["kind"], "title": row["title"]}
        run = self._open(row["id"], row["hypothesis"], config)
        try:
            logged = self._log_steps(run, row["id"], steps)
            record = self.state["runs"][row["id"]]
            final_step = max(record["step"], 0) + 1
            run.log({f"summary/{k}": v for k, v in summary.items() if isinstance(v, (int, float, bool))},
                    step=final_step)
            record.update(step=final_step, done=True)
            return logged + 1
        finally:
            self._close()

    def _mirror_alerts(self) -> int:
        table = read_events(self.lab)
        start = int(self.state.get("events", 0))
        if table.num_rows <= start:
            return 0
        sent = 0
        level = self.trackio.AlertLevel
        for event in table.slice(start).to_pylist():
            if event["level"] not in ("warn", "error"):
                continue
            run = self._open(event["experiment"] or REPORTER_RUN, event["hypothesis"], {})
            try:
                run.alert(title=f"{event['kind']}: {event.get('experiment') or event.get('hypothesis') or ''}",
                          text=event["message"], level=level.ERROR if event["level"] == "error" else level.WARN)
                sent += 1
            finally:
                self._close()
        self.state["events"] = table.num_rows
        return sent

    def _mirror_counters(self, scores, live: list[dict]) -> None:
        statuses = scores["status"].to_pylist()
        values = [v for v, ok in zip(scores["value"].to_pylist(), statuses) if ok == "finished" and v is not None]
        counters = {"experiments": len(statuses), "finished": statuses.count("finished"),
                    "failed": statuses.count("failed"), "timed_out": statuses.count("timed_out"),
                    "promoted": sum(1 for p in scores["promoted"].to_pylist() if p),
                    "running": sum(1 for e in live if e.get("status") == "running"),
                    "queued": sum(1 for e in live if e.get("status") == "queued")}
        if values:
            counters[f"best_{self.lab.metric}"] = min(values) if self.lab.minimize else max(values)
        run = self._open(REPORTER_RUN, None, {"lab": self.lab.config["lab"], "metric": self.lab.metric})
        try:
            step = int(self.state.get("reporter_step", 0))
            run.log(counters, step=step)
            self.state["reporter_step"] = step + 1
        finally:
            self._close()

    # -- the pass ------------------------------------------------------------------------
    def sync(self) -> dict:
        """Mirror what is new since the last sync; returns counts of what was logged."""
        scores = read_scores(self.lab)
        live = live_entries(self.lab)
        done = {k for k, v in self.state["runs"].items() if v.get("done")}
        counts = {"steps": 0, "finished": 0, "alerts": 0}
        with self._quiet(), hub_offline():
            for entry in live:
                if entry.get("status") == "running" and entry["id"] not in done:
                    counts["steps"] += self._mirror_live(entry)
            for row in scores.to_pylist():
                if row["id"] not in done:
                    counts["steps"] += self._mirror_finished(row) - 1
                    counts["finished"] += 1
            counts["alerts"] = self._mirror_alerts()
            self._mirror_counters(scores, live)
        self._save_state()
        return counts


def _wide(rows: list[dict]) -> list[dict]:
    """Long metric rows (step, name, value) -> one dict per step."""
    by_step: dict[int, dict] = {}
    for row in rows:
        if row["step"] is not None and row["value"] is not None:
            by_step.setdefault(row["step"], {"step": row["step"]})[row["name"]] = row["value"]
    return [by_step[s] for s in sorted(by_step)]


def sync(lab: Lab) -> dict | None:
    """One mirror pass if reporting.trackio is on and trackio is installed; never raises."""
    if not enabled(lab):
        return None
    try:
        return TrackioMirror(lab).sync()
    except Exception as exc:  # the mirror is optional: it must never stop the runner
        try:
            lab.logs.mkdir(parents=True, exist_ok=True)
            with open(lab.logs / "trackio.log", "a", encoding="utf-8") as log:
                log.write(f"sync failed: {exc!r}\n")
        except OSError:
            pass
        return {"error": str(exc)}
