"""The seed loop the probe drivers share: ``python <driver> START STOP`` runs ``run_seed`` over the
seeds and prints each problem it returns (a string) and a count; a problem that starts with
``KNOWN:`` is counted apart, by its text after the colon."""
from __future__ import annotations

import collections
import sys
import traceback
from typing import Callable


def run(run_seed: Callable[[int], str | None], describe: Callable[[int], str] = lambda seed: "") -> None:
    start, stop = int(sys.argv[1]), int(sys.argv[2])
    failing = 0
    known: collections.Counter[str] = collections.Counter()
    for seed in range(start, stop):
        try:
            problem = run_seed(seed)
        except Exception:  # noqa: BLE001 - a raise is a finding too
            problem = "raised " + traceback.format_exc()[-600:]
        if problem and problem.startswith("KNOWN:"):
            known[problem[len("KNOWN:"):]] += 1
        elif problem:
            failing += 1
            print(f"seed {seed}: {describe(seed)}{problem}", flush=True)
    counted = "".join(f", {n} {what}" for what, n in known.items())
    print(f"seeds {start}-{stop}: {failing} failing{counted}", flush=True)
