#!/usr/bin/env python3
"""The table and chart of benches/serve.sh's runs (benches/results/serve/).

Reads OUT/<model>-<engine>-c<clients>-r<round>.json (benches/serve-load.py's
output; engine is ours or llama), takes the median over rounds of each cell,
and writes:
  OUT/serve.md   per model and client count: aggregate tok/s of ours and of
                 llama-server and their ratio, TTFT p50/p95 of each
  OUT/serve.png  bars of aggregate tok/s per model per engine

    python3 benches/plot_serve.py [benches/results/serve]

Needs matplotlib (the venv of tests/server-clients.sh gets it from serve.sh).
"""

import glob
import json
import os
import re
import statistics
import sys

DIR = sys.argv[1] if len(sys.argv) > 1 else "benches/results/serve"
NAME = re.compile(r"^(?P<model>.+)-(?P<engine>ours|llama)-c(?P<clients>\d+)-r(?P<round>\d+)\.json$")
ENGINES = [("ours", "mistral-run serve"), ("llama", "llama-server")]


def load():
    """{(model, clients): {engine: [run, ...]}}"""
    cells = {}
    for path in sorted(glob.glob(os.path.join(DIR, "*.json"))):
        m = NAME.match(os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            run = json.load(f)
        key = (m["model"], int(m["clients"]))
        cells.setdefault(key, {}).setdefault(m["engine"], []).append(run)
    return cells


def med(runs, get):
    xs = [get(r) for r in runs]
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summary(runs):
    if not runs:
        return None
    return dict(
        tps=med(runs, lambda r: r.get("aggregate_tok_s")),
        p50=med(runs, lambda r: r["ttft_ms"]["p50"]),
        p95=med(runs, lambda r: r["ttft_ms"]["p95"]),
        req=med(runs, lambda r: r["request_tok_s"]["p50"]),
        failures=sum(r["failures"] + r["timed_out"] for r in runs),
        short=sum(r["short"] for r in runs),
        completed=sum(r["completed"] for r in runs),
        rounds=len(runs),
        tokens=runs[0]["tokens"],
        ignore_eos=runs[0]["ignore_eos"],
    )


def fmt(x, nd=1):
    return "—" if x is None else f"{x:.{nd}f}"


def table(cells):
    lines = [
        "| model | clients | ours tok/s | llama-server tok/s | ours / llama | "
        "ours TTFT p50 / p95 ms | llama TTFT p50 / p95 ms | ours / llama per-request tok/s | "
        "failed | short |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = set()
    servers = {}
    for (model, clients) in sorted(cells, key=lambda k: (k[0], -k[1])):
        s = {e: summary(cells[(model, clients)].get(e, [])) for e, _ in ENGINES}
        o, l = s["ours"], s["llama"]
        ratio = (o["tps"] / l["tps"]) if o and l and o["tps"] and l["tps"] else None
        for x in (o, l):
            if x:
                notes.add((x["tokens"], x["ignore_eos"], x["rounds"]))
        for e, _ in ENGINES:
            for run in cells[(model, clients)].get(e, []):
                cmd = run.get("meta", {}).get("server")
                if cmd:
                    servers.setdefault(cmd, None)
        lines.append(
            f"| {model} | {clients} | {fmt(o and o['tps'])} | {fmt(l and l['tps'])} | "
            f"{fmt(ratio, 2) + '×' if ratio else '—'} | "
            f"{fmt(o and o['p50'], 0)} / {fmt(o and o['p95'], 0)} | "
            f"{fmt(l and l['p50'], 0)} / {fmt(l and l['p95'], 0)} | "
            f"{fmt(o and o['req'])} / {fmt(l and l['req'])} | "
            f"{o['failures'] if o else '—'} / {l['failures'] if l else '—'} | "
            f"{o['short'] if o else '—'} / {l['short'] if l else '—'} |")
    foot = []
    for tokens, eos, rounds in sorted(notes, key=str):
        foot.append(f"max_tokens {tokens}, ignore_eos {'sent' if eos else 'not sent'}, "
                    f"median of {rounds} round(s)")
    lines.append("")
    lines.append("Aggregate tok/s: completion tokens of all finished requests / wall time of the run; "
                 "TTFT: per streamed request, from sending it to its first content chunk; "
                 "per-request tok/s: completion tokens / that request's whole time (p50); "
                 "failed: failed or timed-out requests (ours / llama); short: requests that "
                 "ended before max_tokens. " + "; ".join(foot) + ".")
    if servers:
        lines.append("")
        lines.append("Servers:")
        lines.append("")
        lines += [f"- `{cmd}`" for cmd in servers]
    return "\n".join(lines) + "\n"


def chart(cells, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    client_counts = sorted({c for _, c in cells}, reverse=True)
    models = sorted({m for m, _ in cells})
    fig, axes = plt.subplots(1, len(client_counts), figsize=(5.5 * len(client_counts), 4.2),
                             squeeze=False)
    width = 0.38
    colors = {"ours": "#d9534f", "llama": "#5b7db1"}
    for ax, clients in zip(axes[0], client_counts):
        for j, (engine, label) in enumerate(ENGINES):
            xs, ys = [], []
            for i, model in enumerate(models):
                s = summary(cells.get((model, clients), {}).get(engine, []))
                if s and s["tps"] is not None:
                    xs.append(i + (j - 0.5) * width)
                    ys.append(s["tps"])
            bars = ax.bar(xs, ys, width, label=label, color=colors[engine])
            ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models, fontsize=8)
        ax.set_ylabel("aggregate generated tok/s")
        ax.set_title(f"{clients} concurrent client{'s' if clients > 1 else ''}, streamed chat")
        ax.legend(fontsize=8, ncol=2, loc="upper center")
        ax.margins(y=0.25)
        ax.set_xlim(-0.8, len(models) - 0.2)
    fig.suptitle("HTTP server throughput: mistral-run serve vs llama-server (same machine, same settings)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    cells = load()
    if not cells:
        print(f"plot_serve: no runs in {DIR}", file=sys.stderr)
        return 1
    md = table(cells)
    with open(os.path.join(DIR, "serve.md"), "w") as f:
        f.write(md)
    print(md)
    chart(cells, os.path.join(DIR, "serve.png"))
    print(f"plot_serve: wrote {os.path.join(DIR, 'serve.md')} and {os.path.join(DIR, 'serve.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
