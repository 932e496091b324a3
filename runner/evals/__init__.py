"""`lab skills eval`: what a skill is worth to an agent, measured with and without it.

cases.py (evals/evals.json), workspace.py (a fresh lab per run), launch.py (the agent
command, confined and timed), guard.py (nothing outside its lab changed), usage.py
(tokens, turns, cost from the agent's JSON), checks.py (the assertions), results.py
(results.parquet and the summary), run.py (the loop over skills, cases, variants, runs).
"""
