"""Run every benchmark script in tests/bench/ and print one table (``make bench``).

    .venv/bin/python tests/bench/run_all.py [--only NAME ...] [--skip NAME ...] [--json FILE]

Scripts are the ``*.py`` files here except this runner, ``common.py`` and helpers whose name
starts with ``_``; ``floors.py`` runs first, the others in name order, each with this
interpreter, one after the other (they would disturb each other's timings). Each prints human
lines and ``BENCH {json}`` lines (tests/bench/common.py); a script that prints none is listed
with its last lines. The table has: workload, figure, value, the floor it is compared with
(measured by floors.py in this run, or by the script itself), the floor's value and the ratio
value / floor. Exit status 1 if any script failed; the table is printed anyway.

Environment: KEZEK_BENCH_SKIP / KEZEK_BENCH_ONLY (comma-separated names) as --skip / --only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PREFIX = "BENCH "
NOT_SCRIPTS = {"run_all.py", "common.py", "__init__.py"}


def scripts() -> list[Path]:
    found = sorted(p for p in HERE.glob("*.py")
                   if p.name not in NOT_SCRIPTS and not p.name.startswith("_"))
    return sorted(found, key=lambda p: (p.name != "floors.py", p.name))


def legacy_figures(name: str, lines: list[str]) -> list[dict]:
    """Figures of a script that prints no BENCH lines, read from its human lines where the
    format is known (tests/bench/audit_ingest.py), so the table still shows them."""
    figures = []
    if name == "audit_ingest":
        raw = stored = None
        for line in lines:
            m = re.search(r"raw pika.*?:\s*([\d.]+) msg/s", line)
            if m:
                raw = float(m.group(1))
            m = re.search(r"audit service.*stored:\s*([\d.]+) records/s", line)
            if m:
                stored = float(m.group(1))
        if stored is not None:
            figures.append({"workload": "audit_ingest", "figure": "records_stored_per_s",
                            "value": stored, "unit": "records/s",
                            "floor": "raw pika confirmed publish (its own)",
                            "floor_value": raw, "note": "read from its output"})
    return figures


def run(script: Path) -> tuple[int, list[dict], list[str], float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-u", str(script)], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    figures, lines = [], []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        if line.startswith(PREFIX):
            try:
                figures.append(json.loads(line[len(PREFIX):]))
            except ValueError:
                print(f"  ! unreadable figure line: {line[:200]}", flush=True)
            continue
        lines.append(line)
        print(f"  {line}", flush=True)
    rc = proc.wait()
    if not figures:
        figures = legacy_figures(script.stem, lines)
    return rc, figures, lines, time.monotonic() - started


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:,.2f}"
        return f"{value:.3f}"
    return str(value)


def table(rows: list[dict], floors: dict[str, dict]) -> str:
    header = ["workload", "figure", "value", "unit", "floor", "floor value", "ratio"]
    body = []
    for r in rows:
        floor_name = r.get("floor")
        floor_value = r.get("floor_value")
        if floor_value is None and floor_name in floors:
            floor_value = floors[floor_name]["value"]
        ratio = (r["value"] / floor_value) if floor_value and r.get("value") is not None \
            else None
        body.append([r["workload"], r["figure"], fmt(r.get("value")), r.get("unit", ""),
                     floor_name or "-", fmt(floor_value), f"{ratio:.2f}" if ratio else "-"])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    out = [line(header), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="script names (no .py)")
    parser.add_argument("--skip", nargs="*", default=None, help="script names (no .py)")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    only = set(args.only or [n for n in os.environ.get("KEZEK_BENCH_ONLY", "").split(",") if n])
    skip = set(args.skip or [n for n in os.environ.get("KEZEK_BENCH_SKIP", "").split(",") if n])

    chosen = [s for s in scripts() if (not only or s.stem in only) and s.stem not in skip]
    if not chosen:
        print("make bench: no benchmark scripts chosen")
        return 0
    started = dt.datetime.now(dt.timezone.utc)
    results, failed, silent = [], [], []
    for script in chosen:
        print(f"== {script.relative_to(ROOT)}", flush=True)
        rc, figures, lines, seconds = run(script)
        print(f"== {script.name}: exit {rc}, {len(figures)} figure(s), {seconds:.0f} s",
              flush=True)
        if rc != 0:
            failed.append(script.name)
        if not figures:
            silent.append((script.name, lines[-5:]))
        results.extend(figures)
    floors = {r["figure"]: r for r in results if r["workload"] == "floor"}

    load = os.getloadavg()
    print()
    print(f"Kezek benchmarks, {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPU(s), "
          f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(table(results, floors))
    for name, tail in silent:
        print(f"\n{name} printed no figures; its last lines:")
        for line in tail:
            print(f"  {line}")
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"started": started.isoformat(),
                                               "figures": results, "failed": failed},
                                              ensure_ascii=False, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
