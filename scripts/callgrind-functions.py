#!/usr/bin/env python3
"""Prints the functions of one object that ran in a callgrind profile, by self cost, highest first.

Usage: callgrind-functions.py <callgrind.out> <object path>   (used by scripts/hot-symbols.sh)

callgrind names objects and functions once as "ob=(N) name" / "fn=(N) name" and later by number
alone; cost lines follow their fn= line, and the line after "calls=" is a callee's inclusive cost,
not the caller's own.
"""
import collections
import re
import sys

names = {"ob": {}, "fn": {}}
cur_ob = cur_fn = None
after_call = False
cost = collections.Counter()
with open(sys.argv[1], errors="replace") as profile:
    for line in profile:
        m = re.match(r"^(c?)(ob|fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if m:
            callee, kind, num, name = m.groups()
            if name:
                names[kind][num] = name
            if not callee:
                if kind == "ob":
                    cur_ob = names["ob"].get(num)
                else:
                    cur_fn = (cur_ob, names["fn"].get(num))
            continue
        if line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if after_call:
                after_call = False
            elif cur_fn:
                parts = line.split()
                cost[cur_fn] += int(parts[1]) if len(parts) > 1 else 0

seen = set()
for (ob, fn), _ in sorted(cost.items(), key=lambda kv: -kv[1]):
    fn = re.sub(r"'\d+$", "", fn or "")  # callgrind's suffix for a recursion level
    if ob == sys.argv[2] and fn and fn not in seen:
        seen.add(fn)
        print(fn)
