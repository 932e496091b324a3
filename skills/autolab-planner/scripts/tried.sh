#!/usr/bin/env bash
# Every value of one parameter ever proposed, queued or run, with status and score.
# usage: tried.sh PARAM [--json]      (run from the lab root, or set LAB_ROOT)
set -euo pipefail
param="${1:-}"
if [[ ! "$param" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
  echo "usage: tried.sh PARAM [--json]   (PARAM: a constant name such as LEARNING_RATE)" >&2
  exit 2
fi
shift
exec lab -C "${LAB_ROOT:-.}" query "
SELECT 'hypothesis' AS stage, id, status, params->>'$param' AS value, NULL::DOUBLE AS score, NULL AS delta
FROM hypotheses WHERE params->>'$param' IS NOT NULL
UNION ALL
SELECT 'queue', id, status, params->>'$param', NULL, NULL
FROM queue WHERE params->>'$param' IS NOT NULL
UNION ALL
SELECT 'experiment', id, status, params->>'$param', value, delta
FROM experiments WHERE params->>'$param' IS NOT NULL
ORDER BY stage, value" "$@"
