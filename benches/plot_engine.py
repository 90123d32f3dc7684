#!/usr/bin/env python3
"""Tables and charts of benches/engine.sh's logs (benches/results/engine/).

For every model it prints two Markdown tables, ours against each llama.cpp
build (its better flash-attention setting per cell, named in the table):
prefill and decode tok/s by depth, and aggregate generation tok/s by the
number of sessions; and it draws the same as PNG charts next to the logs.

    python3 benches/plot_engine.py [benches/results/engine]

Needs matplotlib (pip install matplotlib).
"""

import glob
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DIR = sys.argv[1] if len(sys.argv) > 1 else "benches/results/engine"


def ours_depth(path):
    """{(kind, depth): tok/s} from `mistral-run bench --save-json`."""
    with open(path) as f:
        r = json.load(f)["results"][0]
    return {(t["kind"], t.get("n_depth", 0)): t["mean_tps"] for t in r["tests"]}


def llama_depth(paths):
    """{(kind, depth): (tok/s, fa)}: the better of -fa 0 / 1 per cell."""
    rows = []
    for path in paths:
        with open(path) as f:
            text = f.read()
        if text.strip():  # a run cut short leaves an empty file
            rows += json.loads(text)
    out = {}
    for t in rows:
        kind = "pp" if t["n_prompt"] > 0 else "tg"
        key = (kind, t.get("n_depth", 0))
        fa = int(bool(t.get("flash_attn")))
        if key not in out or t["avg_ts"] > out[key][0]:
            out[key] = (t["avg_ts"], fa)
    return out


def ours_batched(path):
    """{sessions: (S_PP, S_TG)} from `mistral-run batched-bench --json`."""
    with open(path) as f:
        rows = json.load(f)["results"]
    return {r["pl"]: (r["speed_pp"], r["speed_tg"]) for r in rows}


ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|" + r"\s*([\d.]+)\s*\|" * 7)


def llama_batched(path):
    """{sessions: (S_PP, S_TG)} from llama-batched-bench's table."""
    out = {}
    with open(path) as f:
        for line in f:
            m = ROW.match(line)
            if m:
                v = [float(x) for x in m.groups()]
                out[int(v[2])] = (v[5], v[7])
    return out


def amx_wrong(name):
    """llama.cpp's AMX kernels give wrong results for Q4_0 / Q4_1 (REFERENCE.md)."""
    return "Q4_0" in name or "Q4_1" in name


def tag_name(tag, name):
    """The peer's label: engine.sh runs llama-bench with the build whose
    results are right for the file (no AMX for Q4_0 / Q4_1)."""
    if tag == "llama":
        tag = "build-noamx" if amx_wrong(name) else "build"
    return {
        "build": "llama.cpp (AMX, wrong results)" if amx_wrong(name) else "llama.cpp (AMX)",
        "build-noamx": "llama.cpp (no AMX)",
    }.get(tag, tag)


def main():
    models = sorted({os.path.basename(p).split("-depth-")[0] for p in glob.glob(f"{DIR}/*-depth-ours.json")})
    for name in models:
        ours = ours_depth(f"{DIR}/{name}-depth-ours.json")
        peers = {"llama": llama_depth(sorted(glob.glob(f"{DIR}/{name}-depth-llama*.json")))}
        depths = sorted({d for (_, d) in ours})
        print(f"\n### {name}: tok/s by depth (pp512, tg64)\n")
        head = "| depth | ours pp | ours tg |"
        sep = "|---:|---:|---:|"
        for tag in peers:
            head += f" {tag_name(tag, name)} pp | ratio | {tag_name(tag, name)} tg | ratio |"
            sep += "---:|---:|---:|---:|"
        print(head)
        print(sep)
        for d in depths:
            line = f"| {d} | {ours.get(('pp', d), 0):.1f} | {ours.get(('tg', d), 0):.1f} |"
            for peer in peers.values():
                for kind in ("pp", "tg"):
                    v, fa = peer.get((kind, d), (0, 0))
                    ratio = ours.get((kind, d), 0) / v if v else 0
                    line += f" {v:.1f} (fa {fa}) | {ratio:.2f}× |"
            print(line)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, kind, title in zip(axes, ("pp", "tg"), ("prefill (pp512)", "decode (tg64)")):
            ax.plot(depths, [ours.get((kind, d), 0) for d in depths], "o-", label="mistral-run")
            for tag, peer in peers.items():
                ax.plot(depths, [peer.get((kind, d), (0, 0))[0] for d in depths], "s--", label=tag_name(tag, name))
            ax.set_xscale("symlog", linthresh=512)
            ax.set_xlabel("depth (tokens already in the KV cache)")
            ax.set_ylabel("tok/s")
            ax.set_title(f"{name}: {title}")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(f"{DIR}/{name}-depth.png", dpi=110)

        bpath = f"{DIR}/{name}-batched-ours.json"
        if not os.path.exists(bpath):
            continue
        ob = ours_batched(bpath)
        bpeers = {
            os.path.basename(p)[len(name) + 9 : -4]: llama_batched(p)
            for p in sorted(glob.glob(f"{DIR}/{name}-batched-*.log"))
            if not p.endswith("-ours.log")
        }
        sessions = sorted(ob)
        print(f"\n### {name}: aggregate tok/s by sessions (S_PP prefill, S_TG generation)\n")
        head = "| sessions | ours S_PP | ours S_TG |"
        sep = "|---:|---:|---:|"
        for tag in bpeers:
            head += f" {tag_name(tag, name)} S_PP | {tag_name(tag, name)} S_TG | S_TG ratio |"
            sep += "---:|---:|---:|"
        print(head)
        print(sep)
        for s in sessions:
            line = f"| {s} | {ob[s][0]:.1f} | {ob[s][1]:.1f} |"
            for peer in bpeers.values():
                pp, tg = peer.get(s, (0, 0))
                line += f" {pp:.1f} | {tg:.1f} | {ob[s][1] / tg if tg else 0:.2f}× |"
            print(line)
        fig, ax = plt.subplots(figsize=(6, 4.2))
        ax.plot(sessions, [ob[s][1] for s in sessions], "o-", label="mistral-run")
        for tag, peer in bpeers.items():
            ax.plot(sessions, [peer.get(s, (0, 0))[1] for s in sessions], "s--", label=tag_name(tag, name))
        ax.set_xlabel("sessions decoding at once")
        ax.set_ylabel("aggregate generation tok/s")
        ax.set_title(f"{name}: batched decode")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(f"{DIR}/{name}-batched.png", dpi=110)


if __name__ == "__main__":
    main()
