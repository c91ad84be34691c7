"""
Summarise a py-spy profile: the functions with the most samples, on their
own (self) and with what they call (total).

    py-spy record -f raw -o node.txt --pid <server pid> -d 20
    python bench/pyspytop.py node.txt [--top 25]

C{-f raw} writes collapsed stacks: one line per distinct stack,
C{frame;frame;...;frame count}, outermost frame first.
"""

import argparse
from collections import Counter


def summarise(lines):
    """
    @param lines: collapsed stacks.
    @return: C{(selfCounts, totalCounts, samples)}: L{Counter}s of samples
        by frame, and the number of samples.
    """
    own = Counter()
    total = Counter()
    samples = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        count = int(count)
        samples += count
        frames = [_short(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    return own, total, samples


def _short(frame):
    """
    C{"sendData (autobahn/websocket/protocol.py:1234)"} without the line.
    """
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    with open(args.profile) as f:
        own, total, samples = summarise(f)
    print(f"{samples} samples")
    for title, counts in (("self", own), ("total (with callees)", total)):
        print(f"\n{title}:")
        for frame, count in counts.most_common(args.top):
            print(f"  {100 * count / samples:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
