#!/usr/bin/env python3
"""bench/callsites.py: the call sites of one function in a callgrind profile, by one event.

Inclusive cost of each call, summed per calling function and source line (inlined code shows its own
file and line), divided by the number of requests. Made for the simulated cache of bench/profile.sh:
which `memcpy` writes into cold memory, which drop reads it back.

    CONC=256 UNIQUE=1 VALGRIND_ARGS="--cache-sim=yes --LL=1048576,16,64" bash bench/profile.sh all-on.yaml
    python3 bench/callsites.py bench/out/profile/callgrind.out.*.1 __memcpy_avx_unaligned_erms DLmw 2000

Arguments: profile, callee (a substring of its name), event (Ir, DLmr, DLmw, ...; default DLmw),
requests (default 2000, profile.sh's REQUESTS), rows (default 25).
"""
import collections
import re
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, callee = sys.argv[1], sys.argv[2]
    event = sys.argv[3] if len(sys.argv) > 3 else "DLmw"
    requests = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
    rows = int(sys.argv[5]) if len(sys.argv) > 5 else 25

    names = {"fn": {}, "fl": {}}
    column = None
    caller = file = inlined = None
    target = None
    in_call = False
    line = 0
    cost = collections.Counter()
    count = collections.Counter()

    def name(table, text):
        # Compressed names: "(id) name" defines, "(id)" refers.
        found = re.match(r"\((\d+)\)(?: (.*))?", text)
        if not found:
            return text
        if found.group(2) is not None:
            names[table][found.group(1)] = found.group(2)
        return names[table].get(found.group(1), "?")

    with open(path, errors="replace") as profile:
        for raw in profile:
            text = raw.rstrip("\n")
            if text.startswith("events:"):
                events = text.split()[1:]
                if event not in events:
                    sys.exit(f"callsites: no event {event} in {path} ({' '.join(events)})")
                column = events.index(event)
            elif text.startswith("fl="):
                file = inlined = name("fl", text[3:])
            elif text.startswith(("fi=", "fe=")):
                inlined = name("fl", text[3:])
            elif text.startswith("fn="):
                caller, inlined = name("fn", text[3:]), file
            elif text.startswith("cfn="):
                target = name("fn", text[4:])
            elif text.startswith(("cfl=", "cfi=")):
                name("fl", text[4:])
            elif text.startswith("calls="):
                calls, in_call = int(text[6:].split()[0]), True
            elif text and (text[0].isdigit() or text[0] in "+-*"):
                fields = text.split()
                position = fields[0]
                if position[0] in "+-":
                    line += int(position)
                elif position != "*":
                    line = int(position)
                if in_call:
                    if target and callee in target and column is not None:
                        key = (caller, f"{inlined.rsplit('/', 1)[-1]}:{line}")
                        # Trailing zero costs are left out of a line.
                        if len(fields) > column + 1:
                            cost[key] += int(fields[column + 1])
                        count[key] += calls
                    in_call = False
    total = sum(cost.values())
    print(f"{callee}: {event} per request {total / requests:.1f}, by call site")
    for (site_caller, site), value in cost.most_common(rows):
        print(f"{value / requests:7.2f} {count[(site_caller, site)] / requests:5.1f}x  {site:40} {site_caller[:100]}")


main()
