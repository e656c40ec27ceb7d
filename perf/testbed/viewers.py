#!/usr/bin/env python3
"""Figures of a testbed viewer run (issue 14), from each viewer's p2pd-bench JSON
report and each node's metrics scrape.

  viewers.py DIR UPLINK_BPS
      DIR holds viewer-*.json (one p2pd-bench report per viewer host) and
      metrics-<role>-<name>.txt (role origin, site or lhc). UPLINK_BPS is the viewers'
      uplink (bit/s), for the bound on the peer share. Prints one line of key=value.

Figures: viewers, completed, cut_off (viewers whose stream failed: the client cache
closed it), stalls (after startup) and stall_s, startup p50/p99 (ms, the worst of
each viewer's), delivered (bytes the players got), origin_out and site_out (bytes
sent over SPP by origins and site caches), peer_share (bytes the client caches got
from peers over all they fetched), peer_bound (what the viewers' uplinks could carry
while they held something, over all they fetched), wasted (bytes the client caches
uploaded that no one kept: sent minus received from peers, over sent).
"""
import glob
import json
import os
import sys


def metric(text, name, label=None):
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        key, _, value = line.rpartition(" ")
        if key != name and not key.startswith(name + "{"):
            continue
        if label and label not in key:
            continue
        total += float(value)
    return total


def main():
    d, uplink = sys.argv[1], float(sys.argv[2])
    reports = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(d, "viewer-*.json")))]
    metrics = {}
    for f in glob.glob(os.path.join(d, "metrics-*.txt")):
        role = os.path.basename(f).split("-")[1]
        metrics.setdefault(role, []).append(open(f).read())
    v = lambda k: sum(r["viewers"][k] for r in reports)
    startups = sorted(r["startup_ms"]["max"] for r in reports if r["startup_ms"]["count"])
    pct = lambda p: startups[min(len(startups) - 1, int(p * len(startups)))] if startups else 0
    lhcs = metrics.get("lhc", [])
    peer = sum(metric(t, "p2pd_fetched_bytes_total", 'source="peer"') for t in lhcs)
    server = sum(metric(t, "p2pd_fetched_bytes_total", 'source="server"') for t in lhcs)
    sent = sum(metric(t, "p2pd_bytes_sent_total", 'proto="spp"') for t in lhcs)
    fetched = peer + server
    # Each viewer could upload from its arrival on, for as long as the run lasted
    # after it; the first viewer's bytes can only come from a server.
    held = sum(max(0.0, r["duration_s"]) for r in reports[1:])
    bound = min(1.0, uplink / 8 * held / fetched) if fetched else 0.0
    if reports:
        bound = min(bound, 1.0 - 1.0 / len(reports))
    spp = 'proto="spp"'
    origin_out = sum(metric(t, "p2pd_bytes_sent_total", spp) for t in metrics.get("origin", []))
    site_out = sum(metric(t, "p2pd_bytes_sent_total", spp) for t in metrics.get("site", []))
    fig = {
        "viewers": v("started"),
        "completed": v("completed"),
        "cut_off": v("failed"),
        "stalls": sum(r["stalls"]["count"] for r in reports),
        "stall_s": f'{sum(r["stalls"]["stall_time_s"] for r in reports):.1f}',
        "startup_p50_ms": f"{pct(0.5):.0f}",
        "startup_p99_ms": f"{pct(0.99):.0f}",
        "delivered_mib": f'{sum(r["bytes"] for r in reports) / 2**20:.0f}',
        "origin_out_mib": f"{origin_out / 2**20:.0f}",
        "site_out_mib": f"{site_out / 2**20:.0f}",
        "peer_share": f"{peer / fetched:.3f}" if fetched else "0",
        "peer_bound": f"{bound:.3f}",
        "wasted": f"{max(0.0, sent - peer) / sent:.3f}" if sent else "0",
    }
    print(" ".join(f"{k}={x}" for k, x in fig.items()))


if __name__ == "__main__":
    main()
