#!/usr/bin/env python3
"""digest.py MARKER - the failed tests of every meson test run that wrote
its log after the file MARKER: each one's name, result and the last lines
of its output. CI prints this last, so that its tail says what failed."""
import glob
import json
import os
import sys

TAIL = 40
since = os.path.getmtime(sys.argv[1])
for log in sorted(glob.glob("build*/meson-logs/testlog*.json")):
    if os.path.getmtime(log) < since:
        continue
    with open(log) as f:
        for line in f:
            t = json.loads(line)
            if t.get("result") in ("OK", "SKIP", "EXPECTEDFAIL"):
                continue
            print("--- %s: %s (%s, exit %s, %.0f s)" % (
                log.split("/")[0], t["name"], t["result"],
                t.get("returncode"), t.get("duration", 0)))
            out = (t.get("stdout") or "").rstrip().splitlines()
            for ln in out[-TAIL:]:
                print("    " + ln[:300])
