"""The project's command line, behind the Makefile: list the catalogue, run a pattern.

python -m shared.cli list
python -m shared.cli run web-single          # Docker when an engine answers, else local mode
python -m shared.cli run web-single --local  # local mode even with Docker
python -m shared.cli run web-single --port-offset 100  # local mode on 8100, beside another run
"""

import argparse
import shutil
import signal
import subprocess
import sys
from types import FrameType

from shared.catalogue import Entry, entries, find
from shared.localmode import LocalModeError, LocalPattern


def print_list() -> None:
    rows = [(e.id, e.category, e.slug, e.status, e.summary) for e in entries()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  "
            + row[4]
        )


def docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def run(entry: Entry, local: bool, port_offset: int) -> int:
    compose = entry.path / "compose.yaml"
    if not local and docker_answers():
        print(f"Docker mode: docker compose -f {entry.folder}/compose.yaml up --build")
        return subprocess.call(["docker", "compose", "-f", str(compose), "up", "--build"])
    print(f"Local mode: {entry.name} from {entry.folder}/compose.yaml (Ctrl-C stops everything)")
    pattern = LocalPattern(entry.path, ports=port_offset or "fixed", echo=sys.stdout)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Explicitly: a shell starting us in the background would have us ignore SIGINT; SIGHUP is a
    # closed terminal or a lost SSH session.
    stopping_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in stopping_signals:
        signal.signal(sig, stop)
    try:
        pattern.start()
        urls = [
            f"{name} {pattern.url(name)}"
            for name, ports in pattern.addresses.ports.items()
            if ports
        ]
        # A pattern of jobs alone (training) publishes no port: say so, not "is up: ".
        print(f"{entry.name} is up: " + (", ".join(urls) or "no service publishes a port"))
        return pattern.wait()
    except KeyboardInterrupt:
        return 0
    except LocalModeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the graceful stop short (services would get SIGKILL).
        for sig in stopping_signals:
            signal.signal(sig, signal.SIG_IGN)
        pattern.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every catalogue entry with its folder and status")
    run_parser = commands.add_parser("run", help="start a pattern in the foreground")
    run_parser.add_argument("pattern")
    run_parser.add_argument("--local", action="store_true", help="local mode even with Docker")
    run_parser.add_argument(
        "--port-offset", type=int, default=0, help="local mode: add this to every port"
    )
    resolve = commands.add_parser("resolve", help="print the folder a PATTERN value names")
    resolve.add_argument("pattern")
    args = parser.parse_args()

    if args.command == "list":
        print_list()
        return 0
    entry = find(args.pattern)
    if entry is None or not entry.implemented:
        reason = "is planned, not implemented yet" if entry else "is not a pattern"
        print(f"error: PATTERN={args.pattern} {reason}. The catalogue:\n", file=sys.stderr)
        print_list()
        return 2
    if args.command == "resolve":
        print(entry.folder)
        return 0
    return run(entry, args.local or bool(args.port_offset), args.port_offset)


if __name__ == "__main__":
    sys.exit(main())
