"""The value types of command-line options, shared by every command.

A duration, a count or a port given on the command line is checked by argparse itself, so a wrong
value is its usual one-line error (``dispatchsim demo: error: argument --outage: …``, exit 2) before
anything runs. ``float()`` alone accepts ``-5``, ``nan`` and ``inf``: a negative or infinite duration
means nothing, and NaN compares false with everything, so it slips past every later ``<`` check.

This module imports nothing of ours, so every command's module (mapping and providers included) may use it.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def number(kind: type[int] | type[float] = float, *, low: float = 0, above: bool = False,
           high: float | None = None) -> Callable[[str], float]:
    """An argparse ``type=``: a finite ``kind`` (int or float) of at least ``low`` (more than ``low``
    with ``above=True``) and at most ``high``; anything else is an ``ArgumentTypeError`` saying what fits."""
    noun = "a whole number" if kind is int else "a finite number"
    rule = f"more than {low:g}" if above else f"{low:g} or more"
    if high is not None:
        rule = f"from {low:g} to {high:g}" if not above else f"{rule} and at most {high:g}"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {noun} {rule}") from None
        if not math.isfinite(value) or value < low or (above and value == low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {noun} {rule}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some of its messages
    return parse


#: seconds or minutes: zero allowed, negative, NaN and infinite refused
duration = number(float)
#: a timeout or a budget: more than zero
positive_duration = number(float, above=True)
#: a TCP port; 0 lets the system pick a free one
port = number(int, high=65535)
