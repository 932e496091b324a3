#!/usr/bin/env bash
# Everything a report needs, in one call: status, leaderboard, recent runs,
# failures, alerts, queue. usage: snapshot.sh [--json]  (from the lab root, or set LAB_ROOT)
set -euo pipefail
lab_cmd=(lab -C "${LAB_ROOT:-.}")
fmt=("${@:---max-width=0}")   # table mode: never cut a reason (--json: as given)
section() { echo; echo "## $1"; "${lab_cmd[@]}" query "$2" "${fmt[@]}"; }
echo "## status"
status=$("${lab_cmd[@]}" status --json)
echo "$status"
order=$(printf '%s' "$status" | python3 -c 'import json, sys; print("DESC" if json.load(sys.stdin)["direction"] == "maximize" else "ASC")')
section "leaderboard (best valid results: finished runs only)" "
SELECT id, value, delta, promoted, status, title FROM scores
WHERE value IS NOT NULL AND kind = 'experiment' AND status = 'finished' ORDER BY value $order LIMIT 10"
section "baselines (noise)" "
SELECT target, count(*) AS repeats, avg(value) AS mean, stddev_samp(value) AS seed_stdev
FROM scores WHERE kind = 'baseline' AND value IS NOT NULL GROUP BY target ORDER BY max(finished)"
section "last 10 finished" "
SELECT id, status, value, delta, promoted, round(duration_s) AS s, reason FROM scores
ORDER BY finished DESC LIMIT 10"
section "failures by hypothesis (repeated failures are anomalies)" "
SELECT hypothesis, count(*) AS failures, max(reason) AS last_reason FROM scores
WHERE status IN ('failed', 'timed_out') GROUP BY hypothesis ORDER BY failures DESC LIMIT 10"
section "warnings and errors (newest first)" "
SELECT \"at\", level, kind, experiment, message FROM events WHERE level <> 'info' ORDER BY \"at\" DESC LIMIT 15"
section "queue" "SELECT status, count(*) AS n FROM queue GROUP BY status ORDER BY status"
