"""Summarise the skipped and expected-to-fail tests of a pytest log (run with -rsx).

    python inst/scripts/skip_summary.py pytest.log

pytest lists each skip as ``SKIPPED [n] file:line: reason`` and each expected failure as
``XFAIL test - reason``; this prints them grouped by reason with their counts, so that a run
says how many tests did not run and why.
"""
import re
import sys
from collections import Counter


def summarise(lines):
    skips, xfails = Counter(), Counter()
    for line in lines:
        m = re.match(r"SKIPPED \[(\d+)\] [^:]+:\d+: (.*)", line.strip())
        if m:
            skips[m.group(2)] += int(m.group(1))
            continue
        m = re.match(r"XFAIL (\S+)(?: - (.*))?", line.strip())
        if m:
            xfails[m.group(2) or m.group(1)] += 1
    return skips, xfails


def main(path):
    with open(path, errors="replace") as fh:
        skips, xfails = summarise(fh)
    print(f"== skip summary: {sum(skips.values())} skipped, {sum(xfails.values())} expected failures (xfail)")
    for title, counts in (("skipped", skips), ("xfail (known weaknesses, strict)", xfails)):
        if counts:
            print(f"{title}:")
            for reason, n in counts.most_common():
                print(f"  {n:4d}  {reason}")


if __name__ == "__main__":
    main(sys.argv[1])
