"""Run every benchmark (or the one a pattern names) and print its figures.

python -m benchmarks              # all
python -m benchmarks web-single   # one
"""

import importlib
import os
import pkgutil
import platform
import sys
from pathlib import Path

import benchmarks
from shared.catalogue import find


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"
    )


def main() -> int:
    wanted = None
    if len(sys.argv) > 1:  # a PATTERN= value, as make run takes it (aliases too)
        entry = find(sys.argv[1])
        wanted = entry.folder.rsplit("/", 1)[-1] if entry else sys.argv[1].replace("-", "_")
    # Modules with a main() are benchmarks; the rest (wrk helpers, baseline apps) serve them.
    every = [
        m.name
        for m in pkgutil.iter_modules(benchmarks.__path__)
        if not m.name.startswith("_")
        and hasattr(importlib.import_module(f"benchmarks.{m.name}"), "main")
    ]
    names = [n for n in every if wanted is None or n == wanted]
    if not names:
        print(f"no benchmark named {wanted}; there are: {', '.join(every)}")
        return 2
    print(f"machine: {machine()}")
    failed = 0
    for name in sorted(names):
        print(f"\n== {name}")
        module = importlib.import_module(f"benchmarks.{name}")
        failed += 0 if module.main() else 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
