"""benchlab's thin runner: validates, dispatches, records and promotes lab state."""

__version__ = "0.1.0"
