#!/usr/bin/env python3
"""Sums the calls into functions whose name matches a regex in callgrind out
files: `benches/callgrind_calls.py '^(malloc|calloc|realloc)$' FILE...`.
benches/instructions.sh uses it to count heap allocations per round trip on
io_uring, where DHAT (benches/allocations.sh), which reports only when the
relay exits, cannot be used (see that script)."""
import re
import sys


def calls(pattern, path):
    """Total calls into functions matching `pattern` in one out file. callgrind
    compresses names: "cfn=(id) name" defines an id, "cfn=(id)" reuses it."""
    names, total, callee = {}, 0, None
    for line in open(path, errors="replace"):
        if line.startswith(("fn=", "cfn=")):
            key, rest = line.rstrip("\n").split("=", 1)
            m = re.match(r"\((\d+)\)(?: (.*))?$", rest)
            name = rest
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                name = names.get(m.group(1), "")
            callee = name if key == "cfn" else None
        elif line.startswith("calls=") and callee is not None:
            if pattern.search(callee):
                total += int(line[6:].split()[0])
            callee = None
    return total


if __name__ == "__main__":
    pat = re.compile(sys.argv[1])
    for path in sys.argv[2:]:
        print(calls(pat, path))
