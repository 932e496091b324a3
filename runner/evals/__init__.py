"""`lab skills eval`: what a skill is worth to an agent, measured with and without it.

cases.py (evals/evals.json), workspace.py (a fresh lab per run), launch.py (the agent
command, confined and timed), guard.py (nothing outside its lab changed), sanitize.py
(what the agent left that the checks must not trust), checks.py and verdict.py (the
assertions; tokens, turns and cost come from runner/files/agent_usage.py), results.py
(results/<batch>.parquet and the summary), run.py (the loop over skills, cases, variants, runs).
"""
