#!/usr/bin/env python3
"""Load generator for an OpenAI-compatible server (`mistral-run serve`, llama-server).

K concurrent clients, each sending --requests streamed chat (or completions)
requests one after the other, at temperature 0 with max_tokens = --tokens, each
client with its own prompts. Bounded in count (clients x requests) and in time
(--max-seconds: no request starts after it, and one still running then is cut
and counted as timed out).

    python3 benches/serve-load.py --base-url http://127.0.0.1:8080/v1 \\
        --clients 8 --requests 4 --tokens 64 --json out.json

It prints and writes (--json) the aggregate generated tok/s (completion tokens
of the finished requests / wall time from the first request's start to the
last one's end), per-request time to first token p50/p95, per-request tok/s
(completion tokens / the request's whole time, and decode rate after the first
token), and the number of failures. Completion tokens come from the streamed
usage (stream_options.include_usage) when the server sends it, else from the
number of content chunks. --ignore-eos sends "ignore_eos": true (llama-server
accepts it) so that every request generates exactly --tokens tokens; without
it a request may stop early at end of text (counted under "short").

Needs the `openai` package (the venv of tests/server-clients.sh has it).
"""

import argparse
import asyncio
import json
import sys
import time
import urllib.request

import openai

TOPICS = [
    "a lighthouse keeper", "the history of bread", "a journey to Mars", "how rivers form",
    "a chess tournament", "the life of bees", "an old clock shop", "winter in the mountains",
    "a robot learning to paint", "the first telescope", "a storm at sea", "a city at night",
    "how volcanoes work", "a lost letter", "the invention of paper", "a desert caravan",
]
STYLES = ["Write a long story about", "Explain in detail", "Describe at length",
          "Tell me everything about"]


def prompt_for(client, request):
    topic = TOPICS[(client * 5 + request) % len(TOPICS)]
    style = STYLES[(client + request) % len(STYLES)]
    return f"{style} {topic}. (client {client}, request {request})"


def percentile(xs, q):
    """Linear interpolation between closest ranks; None for no data."""
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def first_model(base_url, api_key):
    req = urllib.request.Request(base_url.rstrip("/") + "/models",
                                 headers={"Authorization": f"Bearer {api_key}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["data"][0]["id"]


async def one_request(api, args, model, prompt):
    """Streams one request: a dict of its timings and token count."""
    common = dict(model=model, max_tokens=args.tokens, temperature=0, stream=True,
                  stream_options={"include_usage": True})
    if args.ignore_eos:
        common["extra_body"] = {"ignore_eos": True}
    t0 = time.perf_counter()
    t_first = None
    chunks = 0
    usage = None
    finish = None
    if args.endpoint == "chat":
        stream = await api.chat.completions.create(
            messages=[{"role": "user", "content": prompt}], **common)
    else:
        stream = await api.completions.create(prompt=prompt, **common)
    async with stream:
        async for ch in stream:
            if ch.usage is not None:
                usage = ch.usage
            for c in ch.choices:
                text = c.delta.content if args.endpoint == "chat" else c.text
                if text:
                    chunks += 1
                    if t_first is None:
                        t_first = time.perf_counter()
                if c.finish_reason:
                    finish = c.finish_reason
    t1 = time.perf_counter()
    tokens = usage.completion_tokens if usage is not None and usage.completion_tokens else chunks
    return dict(start=t0, end=t1, first=t_first, tokens=tokens, chunks=chunks,
                prompt_tokens=usage.prompt_tokens if usage is not None else None,
                usage=usage is not None, finish=finish)


async def client_loop(idx, api, args, model, deadline, results, errors, counts):
    for r in range(args.requests):
        left = deadline - time.perf_counter()
        if left <= 0:
            counts["not_started"] += args.requests - r
            return
        try:
            res = await asyncio.wait_for(one_request(api, args, model, prompt_for(idx, r)), left)
        except asyncio.TimeoutError:
            counts["timed_out"] += 1
            continue
        except Exception as e:  # an HTTP error, a dropped connection, a bad chunk
            counts["failures"] += 1
            if len(errors) < 10:
                errors.append(f"client {idx} request {r}: {type(e).__name__}: {str(e)[:300]}")
            continue
        res["client"] = idx
        results.append(res)


async def run(args):
    model = args.model or first_model(args.base_url, args.api_key)
    api = openai.AsyncOpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0,
                             timeout=args.max_seconds + 60)
    for w in range(args.warmup):  # not measured
        try:
            await asyncio.wait_for(one_request(api, argparse.Namespace(
                **{**vars(args), "tokens": min(args.tokens, 8)}), model, f"Hello {w}"), 300)
        except Exception as e:
            print(f"serve-load: warm-up request failed: {type(e).__name__}: {e}", file=sys.stderr)
    results, errors = [], []
    counts = dict(failures=0, timed_out=0, not_started=0)
    t_start = time.perf_counter()
    deadline = t_start + args.max_seconds
    await asyncio.gather(*(client_loop(i, api, args, model, deadline, results, errors, counts)
                           for i in range(args.clients)))
    t_end = time.perf_counter()
    await api.close()

    if results:
        wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    else:
        wall = t_end - t_start
    total = sum(r["tokens"] for r in results)
    ttft = [(r["first"] - r["start"]) * 1000 for r in results if r["first"] is not None]
    e2e_tps = [r["tokens"] / (r["end"] - r["start"]) for r in results if r["end"] > r["start"]]
    decode_tps = [(r["tokens"] - 1) / (r["end"] - r["first"]) for r in results
                  if r["first"] is not None and r["tokens"] > 1 and r["end"] > r["first"]]
    prompt_tokens = [r["prompt_tokens"] for r in results if r["prompt_tokens"] is not None]
    out = dict(
        label=args.label,
        base_url=args.base_url,
        model=model,
        endpoint=args.endpoint,
        clients=args.clients,
        requests_per_client=args.requests,
        tokens=args.tokens,
        ignore_eos=args.ignore_eos,
        max_seconds=args.max_seconds,
        completed=len(results),
        failures=counts["failures"],
        timed_out=counts["timed_out"],
        not_started=counts["not_started"],
        short=sum(1 for r in results if r["tokens"] < args.tokens),
        usage_reported=sum(1 for r in results if r["usage"]),
        wall_s=round(wall, 3),
        total_completion_tokens=total,
        aggregate_tok_s=round(total / wall, 3) if wall > 0 else None,
        ttft_ms=dict(p50=_r(percentile(ttft, 50)), p95=_r(percentile(ttft, 95)),
                     mean=_r(sum(ttft) / len(ttft)) if ttft else None),
        request_tok_s=dict(p50=_r(percentile(e2e_tps, 50)), p5=_r(percentile(e2e_tps, 5)),
                           p95=_r(percentile(e2e_tps, 95))),
        decode_tok_s=dict(p50=_r(percentile(decode_tps, 50)), p5=_r(percentile(decode_tps, 5)),
                          p95=_r(percentile(decode_tps, 95))),
        prompt_tokens_mean=_r(sum(prompt_tokens) / len(prompt_tokens)) if prompt_tokens else None,
        errors=errors,
        meta=dict(kv.split("=", 1) for kv in args.meta if "=" in kv),
    )
    return out


def _r(x, nd=3):
    return None if x is None else round(x, nd)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--model", help="model id to send (default: the first of GET /models)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--requests", type=int, default=4, help="requests per client (default 4)")
    ap.add_argument("--tokens", type=int, default=64, help="max_tokens per request (default 64)")
    ap.add_argument("--max-seconds", type=float, default=600,
                    help="no request starts after this; one still running is cut (default 600)")
    ap.add_argument("--endpoint", choices=["chat", "completions"], default="chat")
    ap.add_argument("--ignore-eos", action="store_true", help='send "ignore_eos": true')
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured requests first (default 1)")
    ap.add_argument("--label", default="", help="a name stored in the JSON")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                    help="stored under meta in the JSON (the server's command line, ...)")
    args = ap.parse_args()
    if args.clients < 1 or args.requests < 1 or args.tokens < 1:
        ap.error("--clients, --requests and --tokens must be >= 1")

    out = asyncio.run(run(args))
    t, d, e = out["ttft_ms"], out["decode_tok_s"], out["request_tok_s"]
    print(f"{out['label'] or out['model']}: {out['clients']} clients x {out['requests_per_client']} "
          f"requests x {out['tokens']} tokens: {out['completed']} done, {out['failures']} failed, "
          f"{out['timed_out']} timed out, {out['short']} short")
    print(f"  aggregate {out['aggregate_tok_s']} tok/s ({out['total_completion_tokens']} tokens "
          f"in {out['wall_s']} s)")
    print(f"  TTFT p50 {t['p50']} ms, p95 {t['p95']} ms; per request {e['p50']} tok/s p50 "
          f"(decode {d['p50']} tok/s p50)")
    for err in out["errors"]:
        print(f"  error: {err}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    return 1 if out["completed"] == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
