"""The four AutoLab roles. Builtin ones are deterministic code (no LLM)."""
