"""Chaos runs against a real ``dispatchsim serve``: kill -9 and SIGTERM cycles with activities
arriving, and a fuzz run of every API route. ``python -m chaos --help``; not installed, not imported
by the package (tests import it from the repository)."""
