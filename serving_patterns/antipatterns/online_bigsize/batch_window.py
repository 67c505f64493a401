"""The batch version of the antipattern, as arithmetic: n items x latency against the window.

A model too slow for the real-time path is often moved to a nightly batch instead; it still has
to finish in its window. n items at L seconds an item take n x L seconds on one process, and
ceil(n x L / window) processes to fit (if the work splits evenly and nothing else is slow).

    .venv/bin/python -m serving_patterns.antipatterns.online_bigsize.batch_window \
        --items 10000000 --window-hours 6 big=150 small=1.2      # milliseconds an item
"""

import argparse
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    hours: float  # on one process
    fits: bool
    processes: int  # the fewest that fit the window


def batch_verdict(items: int, seconds_per_item: float, window_seconds: float) -> Verdict:
    """Whether `items` at `seconds_per_item` on one process fit in the window, and how many
    processes would."""
    total = items * seconds_per_item
    return Verdict(total / 3600, total <= window_seconds, max(1, math.ceil(total / window_seconds)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--window-hours", type=float, required=True)
    parser.add_argument("latencies", nargs="+", metavar="name=ms", help="milliseconds an item")
    args = parser.parse_args(argv)
    window = args.window_hours * 3600
    print(f"{args.items:,} items in a {args.window_hours:g} h window:")  # noqa: T201
    for pair in args.latencies:
        name, _, ms = pair.partition("=")
        verdict = batch_verdict(args.items, float(ms) / 1000, window)
        outcome = "fits" if verdict.fits else "misses it"
        print(  # noqa: T201
            f"  {name}: {args.items:,} x {float(ms):g} ms = {verdict.hours:,.1f} h on one "
            f"process, {outcome}; {verdict.processes} process(es) to fit"
        )


if __name__ == "__main__":
    main()
