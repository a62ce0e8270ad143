#!/usr/bin/env python3
"""The code a request runs, from a callgrind profile made with instruction positions:

    CALLGRIND_ARGS=--dump-instr=yes KEEP_PROFILE=/tmp/cg bench/instructions.sh accounts
    bench/footprint.py /tmp/cg [REQUESTS] [TOP]

It prints the distinct 64-byte lines of code executed over the counted requests, and the
4 KiB pages they lie on. Then it lists the functions with the most lines, each with its
instructions per request.

Instructions say what a request costs with warm caches. Lines say what a request after a
pause has to fetch again. A function with many lines and few instructions is straight-line
code run once, which costs little warm and a lot cold. Background tasks that ran in the window
count too: the key directory's sync and the ledger's writes.
"""
import collections
import re
import sys

POSITION = re.compile(r"^(0x[0-9a-f]+|[+-](?:0x)?[0-9a-f]+|\*)\s")
NAME = re.compile(r"^(c?fn)=\((\d+)\)(?: (.*))?")


def footprint(path):
    """Lines and instructions of each function: {name: set of line numbers}, {name: Ir}."""
    names, lines, instructions = {}, collections.defaultdict(set), collections.Counter()
    function, address, after_calls = None, 0, False
    with open(path) as profile:
        for line in profile:
            name = NAME.match(line)
            if name:
                kind, index, text = name.groups()
                if text:
                    names[index] = text
                if kind == "fn":
                    function = names.get(index)
                continue
            if line.startswith("calls="):
                # The next cost line is the call's inclusive cost, not its own instructions.
                after_calls = True
                continue
            position = POSITION.match(line)
            if not position:
                continue
            address = step(address, position.group(1))
            fields = line.split()
            if after_calls:
                after_calls = False
                continue
            if function and len(fields) > 1 and fields[1].isdigit() and int(fields[1]) > 0:
                lines[function].add(address >> 6)
                instructions[function] += int(fields[1])
    return lines, instructions


def step(address, position):
    """The address a position names: absolute (`0x...`), relative (`+n`, `-n`) or the same (`*`)."""
    if position == "*":
        return address
    if position.startswith(("+", "-")):
        delta = int(position[1:], 0) if position[1:].startswith("0x") else int(position[1:])
        return address + delta if position[0] == "+" else address - delta
    return int(position, 16)


def main():
    path = sys.argv[1]
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    lines, instructions = footprint(path)
    every = set().union(*lines.values()) if lines else set()
    pages = {line >> 6 for line in every}
    print(f"{len(every)} distinct 64-byte lines of code ({len(every) * 64 // 1024} KiB) on {len(pages)} pages of 4 KiB")
    ranked = sorted(lines.items(), key=lambda item: len(item[1]), reverse=True)
    for function, its_lines in ranked[:top]:
        print(f"{len(its_lines) * 64 / 1024:7.1f} KiB {instructions[function] / requests:9.0f} Ir/request  {function[:130]}")


if __name__ == "__main__":
    main()
