#!/usr/bin/env python3
"""Progress of a transfer in the testbed (issue 14): sample a growing file, then
measure the trace against what the links could give.

  progress.py sample TRACE FILE [FILE...]
      every 20 ms, appends "seconds bytes" to TRACE: the size of the first FILE
      that exists (p2pd get's .part file, then the file it is renamed to); runs
      until killed.
  progress.py analyse TRACE --total BYTES --before BPS [--event SECS --after BPS]
      prints one line of key=value: took (first sample to the last byte), ideal
      (both links full all along: BEFORE bytes/s, AFTER from EVENT on), ratio
      (ideal/took), gap (the longest time no byte arrived, first byte to last),
      gap_after (the same from EVENT on), back (seconds from EVENT until a 0.5 s
      window starting at or after EVENT first carried 80% of AFTER; at least 0.5),
      rate_after (the mean rate from EVENT + 1 s to the end, bytes/s).
"""
import os
import signal
import sys
import time


def sample(trace, files):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    t0 = time.monotonic()
    with open(trace, "w") as out:
        while not stop:
            size = 0
            for f in files:
                try:
                    size = os.stat(f).st_size
                    break
                except OSError:
                    continue
            out.write(f"{time.monotonic() - t0:.3f} {size}\n")
            out.flush()
            time.sleep(0.02)


def arg(name, default=None):
    if name in sys.argv:
        return float(sys.argv[sys.argv.index(name) + 1])
    return default


def analyse(trace):
    pts = []
    with open(trace) as f:
        for line in f:
            t, b = line.split()
            pts.append((float(t), int(b)))
    total = arg("--total")
    before = arg("--before")
    event = arg("--event")
    after = arg("--after", before)
    if not pts or total is None or before is None:
        sys.exit("analyse needs a trace, --total and --before")
    # The transfer ends at the first sample holding every byte.
    end = next((t for t, b in pts if b >= total), pts[-1][0])
    first = next((t for t, b in pts if b > 0), end)
    took = end
    if event is None:
        ideal = total / before
    else:
        pre = before * event
        ideal = total / before if pre >= total else event + (total - pre) / after

    def gap(since):
        longest, last_t, last_b = 0.0, None, None
        for t, b in pts:
            if t < since or t > end:
                continue
            if last_b is None or b > last_b:
                if last_t is not None:
                    longest = max(longest, t - last_t)
                last_t, last_b = t, b
        return longest

    def at(t):
        size = 0
        for x, b in pts:
            if x > t:
                break
            size = b
        return size

    fields = {
        "took": f"{took:.2f}",
        "ideal": f"{ideal:.2f}",
        "ratio": f"{ideal / took:.3f}" if took > 0 else "0",
        "gap": f"{gap(first):.2f}",
    }
    if event is not None:
        fields["gap_after"] = f"{gap(event):.2f}"
        back = None
        t = event
        while t + 0.5 <= end:
            if at(t + 0.5) - at(t) >= 0.8 * after * 0.5:
                back = t + 0.5 - event
                break
            t += 0.02
        fields["back"] = f"{back:.2f}" if back is not None else "never"
        if end > event + 1.0:
            fields["rate_after"] = f"{(total - at(event + 1.0)) / (end - event - 1.0):.0f}"
    print(" ".join(f"{k}={v}" for k, v in fields.items()))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "sample":
        sample(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "analyse":
        analyse(sys.argv[2])
    else:
        sys.exit(__doc__)
