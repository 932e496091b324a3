"""The reporter's duties inside the runner, behind one hook: anomalies of each
finished run and of the live lab, the leaderboard, the Trackio mirror, the webhook.

An agent reporter (or none) takes the role's place: the builtin duties then stay
off, except the leaderboard, a view of the tables that the runner always regenerates.
"""
from __future__ import annotations

import time

from ..lab import Lab
from ..report import anomalies, trackio_mirror, webhook
from ..report.leaderboard import write_leaderboard

ANOMALY_SCAN_S = 10.0  # live streams grow: scanning them every tick costs a core


class Reporter:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.builtin = lab.config["roles"]["reporter"]["kind"] == "builtin"
        self._last_scan = -1e9

    def recorded(self, entry, outcome, log) -> None:
        """After a record: the leaderboard (a view regenerated from the tables, git-ignored so that
        labs merge without it) and, for the builtin reporter, the run's own anomalies."""
        write_leaderboard(self.lab)
        if self.builtin:
            window = self.lab.config["reporting"]["divergence_window"]
            anomalies.record_anomalies(self.lab, anomalies.stream_anomalies(
                entry.id, outcome.metric_rows, window, entry.hypothesis))

    def tick(self) -> None:
        """Every few seconds: lab-level anomalies (stalls, idle slots, live divergence), the mirror."""
        if not self.builtin or time.monotonic() - self._last_scan < ANOMALY_SCAN_S:
            return
        self._last_scan = time.monotonic()
        anomalies.record_anomalies(self.lab, anomalies.lab_anomalies(self.lab))
        trackio_mirror.sync(self.lab)

    def close(self) -> None:
        """Deliver what the webhook still holds before the runner exits."""
        sender = webhook.sender_for(self.lab)
        if sender:
            sender.flush(5)
