#!/usr/bin/env python3
"""Reads what benches/peers.sh left under its output folder and writes the report.

    python3 benches/peers_table.py report OUT      # OUT/peers.json, OUT/peers.md, OUT/peers.png
    python3 benches/peers_table.py verdict TOL KLD_MAX LOG...
        # one llama-perplexity --kl-divergence run (its stdout and stderr) against its base:
        # prints a one-line summary; exit 0 = agrees, 1 = disagrees, 2 = no figures in the log

Layout written by peers.sh (all plain files, so a half-finished run still reports):
    OUT/rows.txt                      the rows of this run, in order
    OUT/logs/_machine/                lscpu.txt, bandwidth-{start,end}.json, info.tsv
    OUT/logs/ROW/meta.tsv             key<TAB>value: group, type, file, n_prompt, n_gen, ...
    OUT/logs/ROW/STEP.{out,err,rc,cmd,maxrss,secs}
        ppl-ref                       llama-perplexity --no-repack (the build raced), writes the KLD base
        ppl-PATH                      llama-perplexity on PATH with --kl-divergence against it
        ppl-ours                      mistral-run perplexity
        info                          mistral-run info --json --tensors
        bench-PATH-rK                 llama-bench -o json (default, noamx) on round K
        bench-PATH-rK-pp / -tg        llama-batched-bench --output-format jsonl (norepack paths)
        bench-ours-rK                 mistral-run bench (its --save-json is bench-ours-rK.json)
"""
import json
import math
import os
import re
import statistics
import sys

TARGET_PP = 1.2
TARGET_TG = 1.0

# id -> (short label, what it is)
PATHS = {
    "default": ("default", "llama-bench, native build (-DGGML_NATIVE=ON; build-avx2 when held to AVX2), llama.cpp's defaults: "
                "weights repacked into the CPU's extra buffer types, AMX where the CPU has it"),
    "noamx": ("noamx", "llama-bench, build with AMX off (same AVX-512 flags, GGML_NATIVE=OFF), "
              "weights repacked (CPU_REPACK)"),
    "norepack": ("norepack", "llama-batched-bench -npl 1 --no-repack, the same build: plain CPU "
                 "buffers (the reference path of the correctness check)"),
    "noamx-norepack": ("noamx-norepack", "llama-batched-bench -npl 1 --no-repack, AMX-off build"),
}

FLAGS_OF_INTEREST = ["avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
                     "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx512vbmi", "gfni",
                     "amx_tile", "amx_int8", "amx_bf16"]


# ---------------------------------------------------------------- small readers

def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def read_rc(base):
    t = read(base + ".rc")
    try:
        return int(t.strip()) if t is not None else None
    except ValueError:
        return None


def read_int(path):
    t = read(path)
    try:
        return int(t.strip()) if t else None
    except ValueError:
        return None


def read_json(path):
    t = read(path)
    if not t:
        return None
    try:
        return json.loads(t)
    except ValueError:
        return None


def read_tsv(path):
    out = {}
    for line in (read(path) or "").splitlines():
        if "\t" in line:
            k, v = line.split("\t", 1)
            out[k] = v
    return out


def num(s):
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v


def finite(v):
    return v is not None and not math.isnan(v) and not math.isinf(v)


def last_error_line(*texts):
    for t in texts:
        if not t:
            continue
        lines = [l.strip() for l in t.splitlines() if l.strip()]
        for l in reversed(lines):
            if re.search(r"error|failed|unsupported|not supported|unknown|panick|invalid", l, re.I):
                return l[:300]
    for t in texts:
        if t and t.strip():
            return t.strip().splitlines()[-1][:300]
    return None


# ---------------------------------------------------------------- log parsers

def parse_kld(text):
    """Figures of a llama-perplexity --kl-divergence log."""
    if not text:
        return None
    pat = {
        "ppl_q": r"Mean PPL\(Q\)\s*:\s*(\S+)",
        "ppl_base": r"Mean PPL\(base\)\s*:\s*(\S+)",
        "kld": r"Mean\s+KLD:\s*(\S+)",
        "same_top_pct": r"Same top p:\s*(\S+)",
    }
    out = {}
    for k, p in pat.items():
        m = re.search(p, text)
        out[k] = num(m.group(1)) if m else None
    if out["ppl_q"] is None or out["ppl_base"] is None:
        # under ~100 scored tokens llama-perplexity prints no summary: the last chunk line holds
        # the running PPL(Q), ln(PPL(Q)/PPL(base)), KLD, dp RMS and same-top figures
        rows = re.findall(r"^\s*\d+\s+(\S+)\s+±\s+\S+\s+(\S+)\s+±\s+\S+\s+(\S+)\s+±\s+\S+"
                          r"\s+\S+\s+±\s+\S+\s+%\s+(\S+)\s+±", text, re.M)
        if not rows:
            return None
        q, ln_ratio, kld, top = (num(x) for x in rows[-1])
        if q is None or ln_ratio is None:
            return None
        out = {"ppl_q": q, "ppl_base": q / math.exp(ln_ratio) if finite(ln_ratio) else float("nan"),
               "kld": kld, "same_top_pct": top}
    return out


def parse_final_ppl(text):
    m = re.search(r"Final estimate: PPL = (\S+)", text or "")
    return num(m.group(1)) if m else None


def judge(k, tol, kld_max):
    """(ok, summary) for parsed KLD figures."""
    q, b, kld = k["ppl_q"], k["ppl_base"], k["kld"]
    ratio = q / b if finite(q) and finite(b) and b > 0 else float("nan")
    ok = finite(ratio) and abs(ratio - 1.0) <= tol and (kld is None or (finite(kld) and kld <= kld_max))
    top = k.get("same_top_pct")
    s = "PPL %s vs %s (x%.4f), mean KLD %s, same top token %s%%" % (
        fmt_g(q), fmt_g(b), ratio, fmt_g(kld), fmt_g(top))
    return ok, ratio, s


def fmt_g(v):
    if v is None:
        return "?"
    if not finite(v):
        return str(v)
    return "%.6g" % (0.0 if abs(v) < 1e-12 else v)


def parse_llama_bench(text):
    """llama-bench -o json: {'pp': [tok/s samples], 'tg': [...]} (+ commit)."""
    try:
        data = json.loads(text or "")
    except ValueError:
        return None
    out = {"pp": [], "tg": [], "commit": None}
    for e in data if isinstance(data, list) else []:
        out["commit"] = e.get("build_commit") or out["commit"]
        kind = "pp" if e.get("n_gen", 0) == 0 and e.get("n_prompt", 0) > 0 else (
            "tg" if e.get("n_prompt", 0) == 0 and e.get("n_gen", 0) > 0 else None)
        if kind:
            samples = e.get("samples_ts") or [e.get("avg_ts")]
            out[kind].extend(float(x) for x in samples if x is not None)
    return out


def parse_batched_jsonl(text, kind):
    """llama-batched-bench --output-format jsonl: speed_pp of the pp rows (tg == 0) or
    speed_tg of the tg rows (pp == 1); its nan / inf are not JSON."""
    vals = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        line = re.sub(r":\s*-?(nan|inf)\b", ": null", line)
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if kind == "pp" and e.get("tg") == 0 and e.get("speed_pp"):
            vals.append(float(e["speed_pp"]))
        if kind == "tg" and e.get("tg", 0) > 0 and e.get("speed_tg"):
            vals.append(float(e["speed_tg"]))
    return vals


def parse_ours(report):
    """mistral-run bench --save-json: tok/s samples, memory and errors."""
    out = {"pp": [], "tg": [], "peak_rss_bytes": None, "error": None, "model": None, "isa": None}
    if not report:
        return out
    for r in report.get("results") or []:
        out["peak_rss_bytes"] = r.get("peak_rss_bytes")
        out["model"] = r.get("model")
        out["isa"] = r.get("isa") or out["isa"]
        for t in r.get("tests") or []:
            kind = t.get("kind")
            if kind in ("pp", "tg"):
                ss = t.get("samples_seconds") or []
                n = t.get("n_tokens")
                if ss and n:
                    out[kind].extend(n / s for s in ss if s > 0)
                elif t.get("mean_tps") is not None:
                    out[kind].append(float(t["mean_tps"]))
    errs = report.get("errors") or []
    if errs:
        out["error"] = "; ".join(str(e.get("error", e)) for e in errs)[:300]
    return out


# ---------------------------------------------------------------- verdict subcommand

def cmd_verdict(tol, kld_max, logs):
    k = parse_kld("".join(read(l) or "" for l in logs))
    if k is None:
        print("no KL-divergence figures in %s" % " ".join(logs))
        return 2
    ok, _, s = judge(k, float(tol), float(kld_max))
    print(("agrees: " if ok else "DISAGREES: ") + s)
    return 0 if ok else 1


# ---------------------------------------------------------------- report

def stats(samples_by_round):
    """The fastest round's mean (one round: its mean). Other work on the machine only ever
    slows a round down, so the fastest is the closest to the engine's speed on a quiet machine;
    the same rule for both engines."""
    means = [statistics.fmean(s) for s in samples_by_round if s]
    if not means:
        return None
    allv = [x for s in samples_by_round for x in s]
    return {
        "tps": max(means),
        "round_means": means,
        "stdev": statistics.stdev(allv) if len(allv) > 1 else 0.0,
        "samples": allv,
    }


def bytes_per_token(info):
    """Weight bytes one decoded token reads: every matrix but the embedding table (one row),
    unless it is tied to the output; MoE expert tensors scaled by used / total experts."""
    if not info or not info.get("tensors"):
        return None
    n_exp = info.get("expert_count") or 0
    n_used = info.get("expert_used_count") or 0
    tied = bool(info.get("tied_embeddings"))
    total = 0.0
    for t in info["tensors"]:
        name, b = t.get("name", ""), t.get("bytes") or 0
        if name.startswith("token_embd") and not tied:
            continue
        if n_exp and n_used and ("_exps" in name or re.search(r"\.ffn_(gate|up|down)\.\d+", name)):
            b = b * n_used / n_exp
        total += b
    return int(total)


def type_mix(info):
    if not info or not info.get("tensor_types"):
        return None
    tt = sorted(info["tensor_types"], key=lambda t: -(t.get("bytes") or 0))
    total = sum(t.get("bytes") or 0 for t in tt) or 1
    return [{"type": t["type"], "count": t.get("count"), "bytes": t.get("bytes"),
             "share": (t.get("bytes") or 0) / total} for t in tt]


def load_row(out, row, tol, kld_max):
    d = os.path.join(out, "logs", row)
    meta = read_tsv(os.path.join(d, "meta.tsv"))
    paths = [p for p in meta.get("paths", "").split(",") if p]
    rounds = int(meta.get("rounds") or 1)
    res = {
        "row": row, "group": meta.get("group"), "type": meta.get("type"),
        "file": meta.get("file"), "file_name": os.path.basename(meta.get("file") or row),
        "n_prompt": int(meta.get("n_prompt") or 0), "n_gen": int(meta.get("n_gen") or 0),
        "repetitions": int(meta.get("reps") or 0), "rounds": rounds,
        "threads": int(meta.get("threads") or 0), "ppl_chunks": int(meta.get("chunks") or 0),
        "load_average_before": meta.get("load_before"), "started": meta.get("started"),
        "cpu_busy_pct_before": int(meta["busy_before"]) if meta.get("busy_before", "").isdigit() else None,
        "notes": [n for n in meta.get("notes", "").split("|") if n],
        "size_bytes": None, "type_mix": None, "bytes_per_token": None,
        "checks": {}, "llama": {}, "ours": {}, "best": {}, "ratio": {},
    }
    if res["file"] and os.path.exists(res["file"]):
        res["size_bytes"] = os.path.getsize(res["file"])
    info = read_json(os.path.join(d, "info.out"))
    res["type_mix"] = type_mix(info)
    res["bytes_per_token"] = bytes_per_token(info)
    # The bandwidth probes beside the row's rounds (files that stream from memory): the highest,
    # as each engine's figure is its fastest round.
    probes = []
    for k in range(1, rounds + 1):
        j = read_json(os.path.join(d, "bandwidth-r%d.json" % k))
        runs = (((j or {}).get("machine") or {}).get("bandwidth") or {}).get("runs") or []
        probes += [x.get("mean_gb_s") for x in runs
                   if x.get("threads") == res["threads"] and x.get("mean_gb_s")]
    res["bandwidth_probes_gb_s"] = probes
    res["bandwidth_gb_s"] = max(probes) if probes else None

    # correctness checks
    ref_rc = read_rc(os.path.join(d, "ppl-ref"))
    ref_ppl = parse_final_ppl(read(os.path.join(d, "ppl-ref.out")))
    ref_ppl = ref_ppl if ref_ppl is not None else parse_final_ppl(read(os.path.join(d, "ppl-ref.err")))
    res["checks"]["reference"] = {"ran": ref_rc is not None, "rc": ref_rc, "ppl": ref_ppl,
                                  "error": None if ref_rc in (0, None) else last_error_line(
                                      read(os.path.join(d, "ppl-ref.err")))}
    for p in paths:
        if p == "norepack":
            res["checks"][p] = {"status": "reference" if ref_rc == 0 else "failed",
                                "ok": ref_rc == 0, "summary": "the reference itself"}
            continue
        base = os.path.join(d, "ppl-" + p)
        rc = read_rc(base)
        if rc is None:
            res["checks"][p] = {"status": "not run", "ok": False}
            continue
        k = parse_kld((read(base + ".out") or "") + (read(base + ".err") or ""))
        if k is None:
            res["checks"][p] = {"status": "failed", "ok": False, "rc": rc,
                                "error": last_error_line(read(base + ".err"))}
            continue
        ok, ratio, s = judge(k, tol, kld_max)
        res["checks"][p] = dict(k, status="ok" if ok else "wrong", ok=ok, ppl_ratio=ratio, summary=s)
    base = os.path.join(d, "ppl-ours")
    rc = read_rc(base)
    if rc is not None:
        ppl = parse_final_ppl((read(base + ".out") or "") + (read(base + ".err") or ""))
        ratio = ppl / ref_ppl if finite(ppl) and finite(ref_ppl) and ref_ppl else None
        res["checks"]["ours"] = {
            "rc": rc, "ppl": ppl, "ppl_ratio_to_reference": ratio,
            "status": ("ok" if ratio is not None and abs(ratio - 1) <= tol else
                       "differs" if ratio is not None else
                       "failed" if ppl is None else "no reference"),
            "error": None if rc == 0 else last_error_line(read(base + ".err"), read(base + ".out")),
        }

    # llama.cpp speed
    for p in paths:
        per = {"pp": [], "tg": []}
        rss, errors, ran, commit = [], [], False, None
        for k in range(1, rounds + 1):
            b = os.path.join(d, "bench-%s-r%d" % (p, k))
            if p in ("default", "noamx"):
                rc = read_rc(b)
                if rc is None:
                    continue
                ran = True
                lb = parse_llama_bench(read(b + ".out"))
                if rc != 0 or not lb:
                    errors.append(last_error_line(read(b + ".err")) or "rc %s" % rc)
                if lb:
                    per["pp"].append(lb["pp"])
                    per["tg"].append(lb["tg"])
                    commit = lb["commit"] or commit
                rss.append(read_int(b + ".maxrss"))
            else:
                for kind in ("pp", "tg"):
                    rc = read_rc(b + "-" + kind)
                    if rc is None:
                        continue
                    ran = True
                    vals = parse_batched_jsonl(read(b + "-" + kind + ".out"), kind)
                    if rc != 0 or not vals:
                        errors.append(last_error_line(read(b + "-" + kind + ".err")) or "rc %s" % rc)
                    per[kind].append(vals)
                    rss.append(read_int(b + "-" + kind + ".maxrss"))
        if not ran:
            continue
        rss = [r for r in rss if r]
        res["llama"][p] = {
            "pp": stats(per["pp"]), "tg": stats(per["tg"]),
            "max_rss_bytes": max(rss) * 1024 if rss else None,
            "error": "; ".join(e for e in errors if e) or None,
            "build_commit": commit,
        }

    # ours
    per = {"pp": [], "tg": []}
    rss, peak, errors, ran, model, isas = [], [], [], False, None, set()
    for k in range(1, rounds + 1):
        b = os.path.join(d, "bench-ours-r%d" % k)
        rc = read_rc(b)
        if rc is None:
            continue
        ran = True
        o = parse_ours(read_json(b + ".json"))
        per["pp"].append(o["pp"])
        per["tg"].append(o["tg"])
        if o["peak_rss_bytes"]:
            peak.append(o["peak_rss_bytes"])
        model = o["model"] or model
        if o["isa"]:
            isas.add(o["isa"])
        if rc != 0 or o["error"] or not (o["pp"] or o["tg"]):
            errors.append(o["error"] or last_error_line(read(b + ".err"), read(b + ".out")) or "rc %s" % rc)
        rss.append(read_int(b + ".maxrss"))
    if ran:
        rss = [r for r in rss if r]
        err = "; ".join(dict.fromkeys(e for e in errors if e)) or None
        res["ours"] = {
            "pp": stats(per["pp"]), "tg": stats(per["tg"]),
            "peak_rss_bytes": max(peak) if peak else None,
            "max_rss_bytes": max(rss) * 1024 if rss else None,
            "model": model, "error": err, "isa": sorted(isas),
            "supported": not (err and re.search(r"unsupported|not supported|unknown (ggml )?type|"
                                                r"type \S+ is not", err, re.I)),
        }

    # best correct llama.cpp path per test, ratios
    for kind in ("pp", "tg"):
        best = None
        for p, v in res["llama"].items():
            if not res["checks"].get(p, {}).get("ok") or not v.get(kind):
                continue
            if best is None or v[kind]["tps"] > best["tps"]:
                best = {"path": p, "tps": v[kind]["tps"]}
        res["best"][kind] = best
        o = (res["ours"].get(kind) or {}).get("tps") if res["ours"] else None
        res["ratio"][kind] = o / best["tps"] if (o and best and best["tps"]) else None
    return res


def machine(out, threads):
    m = os.path.join(out, "logs", "_machine")
    info = read_tsv(os.path.join(m, "info.tsv"))
    lscpu = read(os.path.join(m, "lscpu.txt")) or ""
    model = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
    flags = re.search(r"^Flags:\s*(.+)$", lscpu, re.M)
    flags = set(flags.group(1).split()) if flags else set()

    def bw(name):
        j = read_json(os.path.join(m, name))
        runs = (((j or {}).get("machine") or {}).get("bandwidth") or {}).get("runs") or []
        by = {r.get("threads"): r.get("mean_gb_s") for r in runs}
        return {"by_threads": by, "at_threads": by.get(threads)}

    l3 = re.search(r"^L3 cache:\s*([\d.]+)\s*([KMG])i?B?", lscpu, re.M)
    l3 = int(float(l3.group(1)) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[l3.group(2)]) if l3 else None

    return {
        "cpu": model.group(1).strip() if model else None,
        "l3_bytes": l3,
        "flags": {f: (f in flags) for f in FLAGS_OF_INTEREST},
        "logical_cores": info.get("nproc"),
        "threads": threads,
        "memory": info.get("memory"),
        "kernel": info.get("kernel"),
        "bandwidth_start_gb_s": bw("bandwidth-start.json"),
        "bandwidth_end_gb_s": bw("bandwidth-end.json"),
        "date_start": info.get("date_start"),
        "date_end": info.get("date_end"),
        "llama_cpp": {
            "sdist": info.get("llama_sdist"),
            "build_commit": info.get("llama_commit"),
            "version_line": info.get("llama_version"),
            "compiler": info.get("llama_compiler"),
            "cmake_build": info.get("llama_cmake_build"),
            "cmake_build_noamx": info.get("llama_cmake_build-noamx"),
            "cmake_build_avx2": info.get("llama_cmake_build-avx2"),
        },
        "ours": {"version": info.get("ours_version"), "git": info.get("ours_git")},
        "isa": info.get("cfg_ISA") or "native",
        "load_average_start": info.get("load_start"),
        "cpu_busy_pct_start": info.get("busy_start"),
        "load_average_end": info.get("load_end"),
        "settings": {k[4:]: v for k, v in info.items() if k.startswith("cfg_")},
    }


def fmt_tps(v):
    if v is None:
        return "–"
    return "%.0f" % v if v >= 100 else "%.1f" % v if v >= 10 else "%.2f" % v


def fmt_bytes(b):
    if not b:
        return "–"
    return "%.0f MiB" % (b / 2**20) if b < 2**30 * 10 else "%.1f GiB" % (b / 2**30)


def fmt_ratio(r, target):
    if r is None:
        return "–"
    s = "%.2f" % r
    if r < target and float(s) >= target:
        # Under the target but rounding up to it: a third decimal says why it is bold.
        s = "%.3f" % r
    return "**%s**" % s if r < target else s


def path_cell(r):
    ref = r["checks"].get("reference", {})
    if not ref.get("ran"):
        return "– (not run)"
    if ref.get("rc") != 0:
        return "–<br>llama.cpp could not run it: %s" % short_err(ref.get("error"), r["file"])
    best = r["best"]
    used = {k: (best.get(k) or {}).get("path") for k in ("pp", "tg")}
    if used["pp"] and used["pp"] == used["tg"]:
        cell = used["pp"]
    else:
        cell = ", ".join("%s %s" % (k, used[k]) for k in ("pp", "tg") if used[k]) or "–"
    marks = []
    for p, c in r["checks"].items():
        if p in ("reference", "ours"):
            continue
        if c.get("status") == "wrong":
            marks.append("✗ %s wrong (PPL ×%.2f, KLD %s)" % (p, c.get("ppl_ratio") or float("nan"),
                                                           fmt_g(c.get("kld"))))
        elif c.get("status") in ("failed", "not run"):
            marks.append("✗ %s check %s" % (p, c["status"]))
    for p, v in r["llama"].items():
        if v.get("error"):
            marks.append("%s error: %s" % (p, short_err(v["error"], r["file"], 60)))
    return cell + ("<br>" + "<br>".join(marks) if marks else "")


def short_err(e, path, n=100):
    e = (e or "?").replace("|", "/")
    if path:
        e = e.replace(path + ": ", "").replace(path, os.path.basename(path))
    e = re.sub(r"^(error|main|common_init_from_params):\s*", "", e)
    return e[:n]


def ours_cell(r):
    o = r["ours"]
    if not o:
        return "not run"
    pp, tg = (o.get("pp") or {}).get("tps"), (o.get("tg") or {}).get("tps")
    if pp is None and tg is None:
        return ("not supported" if not o.get("supported", True) else "error") + (
            ": " + short_err(o["error"], r["file"]) if o.get("error") else "")
    s = "%s / %s" % (fmt_tps(pp), fmt_tps(tg))
    if o.get("error"):
        s += " (error: %s)" % short_err(o["error"], r["file"], 80)
    return s


def ppl_cell(r):
    ref = r["checks"].get("reference", {}).get("ppl")
    o = r["checks"].get("ours")
    if not o:
        return fmt_g(ref) if ref else "–"
    if o.get("ppl") is None:
        return "%s / error" % fmt_g(ref)
    s = "%s / %s" % (("%.4g" % ref) if ref else "?", "%.4g" % o["ppl"])
    if o.get("status") == "differs":
        s = "**%s (×%.3f)**" % (s, o["ppl_ratio_to_reference"])
    return s


def write_md(out, rep):
    m = rep["machine"]
    L = []
    L.append("# mistral-run against llama.cpp on this machine")
    L.append("")
    L.append("Written by `benches/peers.sh` (tables by `benches/peers_table.py`); raw logs in `logs/`, "
             "every figure in `peers.json`.")
    L.append("")
    busy = [int(m["cpu_busy_pct_start"])] if str(m["cpu_busy_pct_start"] or "").isdigit() else []
    busy += [r["cpu_busy_pct_before"] for r in rep["rows"] if r["cpu_busy_pct_before"] is not None]
    if busy and max(busy) > 10:
        L.append("**Warning: the CPUs were up to %d%% busy with other work just before the start or "
                 "a row (see the notes). With every core in use by the benchmark, llama.cpp's OpenMP "
                 "threads collapse under contention far more than ours, so these figures favour "
                 "mistral-run and are not valid; rerun on a quiet machine.**" % max(busy))
        L.append("")
    L.append("- CPU: %s, %s logical cores; %s threads used by both engines" % (
        m["cpu"], m["logical_cores"], m["threads"]))
    L.append("- Flags: " + ", ".join(("%s" % f) if v else ("~~%s~~" % f) for f, v in m["flags"].items())
             + " (struck out: absent)")
    bs, be = m["bandwidth_start_gb_s"]["at_threads"], m["bandwidth_end_gb_s"]["at_threads"]
    L.append("- Memory read bandwidth (`mistral-run bench --bandwidth`, %s threads): %s GB/s at the start, "
             "%s GB/s at the end" % (m["threads"], "%.1f" % bs if bs else "?", "%.1f" % be if be else "?"))
    L.append("- Memory: %s; kernel %s; load average %s at the start, %s at the end; CPUs %s%% busy with "
             "other work just before the start" % (m["memory"], m["kernel"], m["load_average_start"],
                                                 m["load_average_end"], m["cpu_busy_pct_start"]))
    L.append("- Date: %s to %s" % (m["date_start"], m["date_end"]))
    lc = m["llama_cpp"]
    L.append("- llama.cpp: %s (vendor/llama.cpp at build commit %s; `%s`; %s)" % (
        lc["sdist"], lc["build_commit"], lc["version_line"], lc["compiler"]))
    L.append("- mistral-run: %s, git %s" % (m["ours"]["version"], m["ours"]["git"]))
    ran = sorted({i for r in rep["rows"] if r["ours"] for i in r["ours"].get("isa") or []})
    if m["isa"] != "native":
        L.append("- **Both engines held to %s** (`PEERS_ISA=%s`), standing in for a CPU without AVX-512: "
                 "llama.cpp from its `build-%s` configuration (%s), ours with `MISTRAL_KERNELS_ISA=%s` "
                 "(its kernels ran: %s). Memory, caches and clock are still this CPU's." % (
                     m["isa"].upper(), m["isa"], m["isa"], m["llama_cpp"]["cmake_build_avx2"] or "?",
                     m["isa"], ", ".join(ran) or "not recorded"))
    elif ran:
        L.append("- Our kernels' instruction-set path: %s" % ", ".join(ran))
    s = m["settings"]
    L.append("- Settings: %s" % ", ".join("%s=%s" % kv for kv in sorted(s.items())))
    L.append("")
    L.append("Each row: llama.cpp first, then ours (ours first in even rounds), same threads and "
             "sizes (pp = prompt tokens/s, tg = generated tokens/s, mean of the repetitions after "
             "one warm-up; with several rounds, each engine's fastest round, since other work on "
             "the machine only slows a round down; every round is in `peers.json`). Ratio = ours / "
             "llama.cpp's fastest path that computes correct results, per test; **bold**: under "
             "the target (pp < %.1f, tg < %.1f)." % (TARGET_PP, TARGET_TG))
    L.append("")
    L.append("| file | test | llama.cpp path used | llama.cpp pp / tg | ours pp / tg | ratio pp / tg | "
             "ours peak RSS | max RSS ours / llama.cpp | PPL llama.cpp / ours |")
    L.append("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rep["rows"]:
        bp, bt = (r["best"].get("pp") or {}).get("tps"), (r["best"].get("tg") or {}).get("tps")
        tg_path = (r["best"].get("tg") or r["best"].get("pp") or {}).get("path")
        lrss = (r["llama"].get(tg_path) or {}).get("max_rss_bytes") if tg_path else None
        L.append("| %s | pp%d / tg%d | %s | %s / %s | %s | %s / %s | %s | %s / %s | %s |" % (
            r["file_name"], r["n_prompt"], r["n_gen"], path_cell(r), fmt_tps(bp), fmt_tps(bt),
            ours_cell(r), fmt_ratio(r["ratio"].get("pp"), TARGET_PP),
            fmt_ratio(r["ratio"].get("tg"), TARGET_TG),
            fmt_bytes(r["ours"].get("peak_rss_bytes") if r["ours"] else None),
            fmt_bytes(r["ours"].get("max_rss_bytes") if r["ours"] else None), fmt_bytes(lrss),
            ppl_cell(r)))
    L.append("")
    L.append("Every llama.cpp path (pp / tg tok/s; ✗: computes wrong results here, not timed):")
    L.append("")
    L.append("| file | " + " | ".join("`%s`" % p for p in rep["paths"]) + " |")
    L.append("| --- |" + " ---: |" * len(rep["paths"]))
    for r in rep["rows"]:
        cells = []
        for p in rep["paths"]:
            c, v = r["checks"].get(p, {}), r["llama"].get(p)
            if c.get("status") == "wrong":
                cells.append("✗ (PPL ×%.2f)" % (c.get("ppl_ratio") or float("nan")))
            elif v and (v.get("pp") or v.get("tg")):
                cell = "%s / %s" % (fmt_tps((v.get("pp") or {}).get("tps")),
                                    fmt_tps((v.get("tg") or {}).get("tps")))
                if c.get("ppl_ratio") is not None and abs(c["ppl_ratio"] - 1) > 0.005:
                    cell += " (PPL ×%.3f)" % c["ppl_ratio"]
                cells.append(cell)
            elif v and v.get("error"):
                cells.append("error")
            elif c.get("status") in ("ok", "reference"):
                cells.append("not timed")
            else:
                cells.append(c.get("status") or "–")
        L.append("| %s | %s |" % (r["file_name"], " | ".join(cells)))
    L.append("")
    L.append("llama.cpp paths (each checked first: llama-perplexity -c %s on the first chunks of the "
             "text, `--kl-divergence` against the `--no-repack` run of the same build; a path is "
             "marked ✗ wrong when its perplexity differs by more than %.0f%% or its mean KL divergence "
             "exceeds %s, and is then not timed):" % (
                 rep["machine"]["settings"].get("PPL_CTX", 512), 100 * rep["tolerance"]["ppl"],
                 rep["tolerance"]["kld"]))
    L.append("")
    for p in rep["paths"]:
        L.append("- `%s`: %s" % (p, PATHS.get(p, (p, p))[1]))
    L.append("")
    L.append("Notes:")
    L.append("")
    L.append("- llama-batched-bench paths: pp from `-npp P,P,.. -ntg 0`, tg from `-npp 1,1,.. -ntg N` "
             "(one repetition per listed value, after its own warm-up), so tg starts at depth 1 like "
             "llama-bench's tg at depth 0.")
    L.append("- Max RSS: GNU time's maximum resident set of the whole process (llama.cpp: the process of "
             "the tg path used; mmapped weights count as they are touched). Ours peak RSS: what "
             "`mistral-run bench` itself reports.")
    L.append("- PPL column: the reference (llama.cpp `--no-repack`) and ours over the same chunks; "
             "**bold** where ours differs by more than %.0f%%. On the random-weight synthetic models "
             "perplexity means nothing in absolute terms; only the agreement does." % (
                 100 * rep["tolerance"]["ppl"]))
    for r in rep["rows"]:
        for n in r["notes"]:
            L.append("- %s: %s" % (r["file_name"], n))
        if (r["cpu_busy_pct_before"] or 0) > 10:
            L.append("- %s: **the CPUs were %d%% busy with other work just before this row**; its "
                     "figures are suspect" % (r["file_name"], r["cpu_busy_pct_before"]))
    bw, l3 = m["bandwidth_gb_s"], m.get("l3_bytes")
    for r in rep["rows"]:
        # The rows whose decode streams its weights from memory: more bytes a token than the L3
        # holds (the 7B shape where the L3 size is unknown).
        bpt = r["bytes_per_token"]
        if not bpt or (bpt <= l3 if l3 else r["group"] != "synth-7b"):
            continue
        parts = []
        rbw = r.get("bandwidth_gb_s") or bw
        for who, tps in (("ours", (r["ours"].get("tg") or {}).get("tps") if r["ours"] else None),
                         ("llama.cpp", (r["best"].get("tg") or {}).get("tps"))):
            if tps and rbw:
                parts.append("%s %.2f tok/s × %.2f GB = %.1f GB/s = %.0f%% of the bandwidth" % (
                    who, tps, bpt / 1e9, tps * bpt / 1e9, 100 * tps * bpt / 1e9 / rbw))
        if r.get("bandwidth_gb_s"):
            src = "the highest of the probes beside its rounds (%s)" % ", ".join(
                "%.1f" % b for b in r["bandwidth_probes_gb_s"])
        else:
            src = "the higher of the run's two measurements"
        L.append("- %s decode against bandwidth: %.2f GB of weights read per token (all but the "
                 "embedding table, KV cache left out); bandwidth %s GB/s, %s; %s." % (
                     r["file_name"], bpt / 1e9, "%.1f" % rbw if rbw else "?", src,
                     "; ".join(parts) or "no figures"))
    mixes = [r for r in rep["rows"] if r["type_mix"] and len(r["type_mix"]) > 1]
    if mixes:
        L.append("")
        L.append("Tensor types of each file (share of the weight bytes; llama-quantize falls back to "
                 "other types where a row length is not a multiple of the block, e.g. SmolLM2's 576):")
        L.append("")
        for r in mixes:
            L.append("- %s: %s" % (r["file_name"], ", ".join(
                "%s %.0f%%" % (t["type"], 100 * t["share"]) for t in r["type_mix"] if t["share"] >= 0.005)))
    L.append("")
    if rep.get("chart"):
        L.append("![ratios](peers.png)")
        L.append("")
    with open(os.path.join(out, "peers.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L))


def write_chart(out, rep):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = rep["rows"]
    if not rows:
        return None
    names = [r["file_name"].replace(".gguf", "") for r in rows]
    pp = [r["ratio"].get("pp") for r in rows]
    tg = [r["ratio"].get("tg") for r in rows]
    n = len(rows)
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * n + 3), 5.5))
    xs = list(range(n))
    w = 0.38
    ax.bar([x - w / 2 for x in xs], [v or float("nan") for v in pp], w, label="pp ratio (ours / llama.cpp)",
           color="#4c72b0")
    ax.bar([x + w / 2 for x in xs], [v or float("nan") for v in tg], w, label="tg ratio (ours / llama.cpp)",
           color="#dd8452")
    ax.axhline(TARGET_PP, color="#4c72b0", ls="--", lw=1, label="pp target %.1f" % TARGET_PP)
    ax.axhline(TARGET_TG, color="#dd8452", ls="--", lw=1, label="tg target %.1f" % TARGET_TG)
    vals = [v for v in pp + tg if v]
    lo = min(vals + [0.5]) / 1.5
    top = max(vals + [2.0]) * 3.0
    ax.set_yscale("log", base=2)
    ax.set_ylim(lo, top)
    for x, a, b in zip(xs, pp, tg):
        if a is None and b is None:
            ax.text(x, lo * 1.1, "n/a", ha="center", va="bottom", fontsize=8, rotation=90)
        for dx, v in ((-w / 2, a), (w / 2, b)):
            if v:
                ax.text(x + dx, v * 1.03, "%.2f" % v, ha="center", va="bottom", fontsize=6, rotation=90)
    from matplotlib.ticker import FuncFormatter
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: "%g" % v))
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("ours / llama.cpp, log scale (higher: ours faster)")
    m = rep["machine"]
    held = "" if m.get("isa", "native") == "native" else ", both held to %s" % m["isa"].upper()
    ax.set_title("mistral-run vs llama.cpp (%s), %s threads, %s%s" % (
        m["llama_cpp"]["sdist"] or "llama.cpp", m["threads"], m["cpu"] or "", held), fontsize=10)
    ax.legend(fontsize=8, loc="upper left", ncol=4)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out, "peers.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "peers.png"


def cmd_report(out):
    info = read_tsv(os.path.join(out, "logs", "_machine", "info.tsv"))
    tol = float(info.get("cfg_PPL_TOL") or 0.03)
    kld_max = float(info.get("cfg_KLD_MAX") or 0.05)
    threads = int(info.get("cfg_THREADS") or 0)
    rows = [l.strip() for l in (read(os.path.join(out, "rows.txt")) or "").splitlines() if l.strip()]
    rows = list(dict.fromkeys(rows))
    rep = {
        "schema": "peers/1",
        "machine": machine(out, threads),
        "tolerance": {"ppl": tol, "kld": kld_max},
        "targets": {"pp": TARGET_PP, "tg": TARGET_TG},
        "paths": [p for p in (info.get("cfg_PATHS") or "").split(",") if p],
        "rows": [load_row(out, r, tol, kld_max) for r in rows
                 if os.path.isdir(os.path.join(out, "logs", r))],
    }
    bws = [b for b in (rep["machine"]["bandwidth_start_gb_s"]["at_threads"],
                       rep["machine"]["bandwidth_end_gb_s"]["at_threads"]) if b]
    rep["machine"]["bandwidth_gb_s"] = max(bws) if bws else None
    for r in rep["rows"]:
        bpt, bw = r["bytes_per_token"], r["bandwidth_gb_s"] or rep["machine"]["bandwidth_gb_s"]
        r["decode_bandwidth_fraction"] = {
            who: (tps * bpt / 1e9 / bw if tps and bpt and bw else None)
            for who, tps in (("ours", (r["ours"].get("tg") or {}).get("tps") if r["ours"] else None),
                             ("llama.cpp", (r["best"].get("tg") or {}).get("tps")))}
    if not rep["machine"]["llama_cpp"]["build_commit"]:
        for r in rep["rows"]:
            for v in r["llama"].values():
                rep["machine"]["llama_cpp"]["build_commit"] = v.get("build_commit") or None
    rep["chart"] = write_chart(out, rep)
    with open(os.path.join(out, "peers.json"), "w", encoding="utf-8") as f:
        json.dump(rep, f, indent=1)
    write_md(out, rep)
    return 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "report" and len(argv) == 3:
        return cmd_report(argv[2])
    if len(argv) >= 5 and argv[1] == "verdict":
        return cmd_verdict(argv[2], argv[3], argv[4:])
    sys.stderr.write(__doc__)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
