"""Argument types for the command line: numbers that must be in range are refused by argparse, with the option's
name, before anything runs.

WHY: a ``--batch 0`` or ``--max-frames -2`` used to run and produce an empty or failed result (a benchmark table of
failures appended to docs/benchmarks.md, a replay of 0 frames reported as success).
"""

from __future__ import annotations

import argparse


def _number(text: str, kind: type, low: float, inclusive: bool) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
    if value < low or (not inclusive and value == low) or value != value:  # value != value: NaN
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        raise argparse.ArgumentTypeError(f"must be {bound}, not {text}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (counts of frames, batches, iterations, workers)."""
    return int(_number(text, int, 1, inclusive=True))


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (warm-up calls, episodes of a split that may be empty)."""
    return int(_number(text, int, 0, inclusive=True))


def positive_float(text: str) -> float:
    """A number > 0 (rates, timeouts)."""
    return float(_number(text, float, 0.0, inclusive=False))
