#!/usr/bin/env python3
"""The campaign table of docs/security.md from run.sh's logs (fuzz/runs/*.log).

For each target: fuzzing time (libFuzzer's own "Done N runs in S second(s)";
for a run a crash ended, executions over the final average exec/s; for a
killed run, over the last status line's average),
executions, the corpus size now (fuzz/corpus/<target>), and the crashers
committed under testdata/fuzz-regressions/<target>/.

    python3 fuzz/summary.py
"""
import os
import re
import sys
from collections import defaultdict

here = os.path.dirname(os.path.abspath(__file__))
runs = os.path.join(here, "runs")
regress = os.path.join(here, "..", "testdata", "fuzz-regressions")

secs = defaultdict(float)
execs = defaultdict(int)
nruns = defaultdict(int)
for name in sorted(os.listdir(runs)):
    m = re.match(r"(.+)-\d{8}T\d{6}\.log$", name)
    if not m or name.startswith(("build-", "tmin-")):
        continue
    target = m.group(1)
    text = open(os.path.join(runs, name), "rb").read().decode("utf-8", "replace")
    done = re.findall(r"Done (\d+) runs in (\d+) second", text)
    units = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
    average = re.findall(r"stat::average_exec_per_sec:\s*(\d+)", text)
    status = re.findall(r"#(\d+)\s+\S+\s+cov:.*?exec/s: (\d+)", text)
    if done:
        # The run lasted its -max_total_time.
        n, s = int(done[-1][0]), int(done[-1][1])
    elif units and average:
        # A crash ended it; libFuzzer's final stats give the executions
        # and their rate since the process started (0: under a second).
        n, rate = int(units[-1]), int(average[-1])
        s = n / rate if rate else 0
    elif status:
        # Killed (no final stats): the last status line's rate, which is
        # also an average since the start.
        n, rate = int(status[-1][0]), int(status[-1][1])
        s = n / rate if rate else 0
    else:
        continue
    secs[target] += s
    execs[target] += n
    nruns[target] += 1

rows = []
for t in sorted(secs):
    corpus = os.path.join(here, "corpus", t)
    size = len(os.listdir(corpus)) if os.path.isdir(corpus) else 0
    rd = os.path.join(regress, t)
    found = sorted(os.listdir(rd)) if os.path.isdir(rd) else []
    rows.append((t, secs[t], execs[t], size, nruns[t], found))

print("| Target | Fuzzing time | Executions | Corpus (files) | Runs | Crashes found and fixed |")
print("|---|---:|---:|---:|---:|---|")
total_s = 0
total_n = 0
for t, s, n, size, r, found in rows:
    total_s += s
    total_n += n
    crashes = ", ".join(f"`{f}`" for f in found) if found else "none"
    shown = f"{s:.0f} s" if s < 60 else f"{s / 60:.0f} min"
    print(f"| `{t}` | {shown} | {n:,} | {size:,} | {r} | {crashes} |")
print(f"| **all** | **{total_s / 3600:.1f} h** | **{total_n:,}** | | | |")
sys.exit(0)
