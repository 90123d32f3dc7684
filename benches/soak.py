#!/usr/bin/env python3
"""Mixed-load soak of `mistral-run serve` (driven by benches/soak.sh).

CONCURRENCY workers send, one after the other until --seconds have passed, a
seeded random mix of: streamed and non-streamed chat, completions (streamed or
not), embeddings, streams closed mid-way by dropping the connection, and bad
requests that must get a 4xx with an OpenAI-style error body. Every answer is
checked; anything unexpected is a failure. Meanwhile the server's RSS
(/proc/PID/status VmRSS) is sampled every --sample seconds.

Criteria (exit status 1 when one fails): no failure; the server still alive
and healthy at the end, and idle once the load stops (the in-flight, session
and queue gauges of /metrics back to 0: nothing leaked by dropped streams); RSS at the end (mean of the samples of the last
--window seconds of load) at most --max-rss-growth above RSS after the
warm-up (mean of the samples of the --window seconds after --warmup).
Also reported: TTFT p50/p95 of the streamed requests and aggregate tok/s
(completion tokens of all generation requests / load time).

Traffic goes to 127.0.0.1 only; the loop is bounded in time, and each request
in time (--request-timeout).
"""

import argparse
import asyncio
import json
import os
import random
import sys
import threading
import time
import urllib.request

import openai

WORDS = ("river mountain engine garden window silver morning letter harbor forest "
         "question music market winter candle bridge").split()


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    def __init__(self, pid, every):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples = []  # (seconds since start, KiB)
        self.t0 = time.monotonic()
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            v = rss_kib(self.pid)
            if v is not None:
                self.samples.append((time.monotonic() - self.t0, v))
            self.stop.wait(self.every)


def percentile(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Soak:
    def __init__(self, args):
        self.args = args
        self.host, self.port = "127.0.0.1", args.port
        self.api = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key=args.api_key,
                                      max_retries=0, timeout=args.request_timeout)
        self.model = None
        self.counts = {}
        self.failures = []
        self.ttft = []
        self.tokens = 0

    def ok(self, kind):
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def fail(self, kind, msg):
        self.counts["failed"] = self.counts.get("failed", 0) + 1
        if len(self.failures) < 50:
            self.failures.append(f"{kind}: {msg[:600]}")
        if self.counts["failed"] <= 20:
            print(f"soak: FAIL {kind}: {msg[:600]}", file=sys.stderr, flush=True)
        elif self.counts["failed"] == 21:
            print("soak: (further failures counted, not printed)", file=sys.stderr, flush=True)

    # --- the request kinds ----------------------------------------------------

    def prompt(self, rng):
        return "Write about " + " and ".join(rng.sample(WORDS, 2)) + f" ({rng.randrange(10**6)})."

    async def chat(self, rng, stream):
        mt = rng.randint(1, self.args.tokens)
        req = dict(model=self.model, messages=[{"role": "user", "content": self.prompt(rng)}],
                   max_tokens=mt, temperature=rng.choice([0, 0.7, 1.0]), seed=rng.randrange(1000))
        if not stream:
            r = await self.api.chat.completions.create(**req)
            c = r.choices[0]
            assert c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r}"
            assert isinstance(c.message.content, str), "no content"
            self.check_usage(r.usage, mt)
            self.tokens += r.usage.completion_tokens
            return
        await self.stream(req, mt, chat=True)

    async def completion(self, rng, stream):
        mt = rng.randint(1, self.args.tokens)
        req = dict(model=self.model, prompt=self.prompt(rng), max_tokens=mt,
                   temperature=rng.choice([0, 0.8]), seed=rng.randrange(1000))
        if rng.random() < 0.3:
            req["stop"] = [rng.choice([".", "\n", " the"])]
        if not stream:
            r = await self.api.completions.create(**req)
            c = r.choices[0]
            assert c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r}"
            self.check_usage(r.usage, mt)
            self.tokens += r.usage.completion_tokens
            return
        await self.stream(req, mt, chat=False)

    async def stream(self, req, mt, chat):
        t0 = time.perf_counter()
        first = None
        usage = None
        finishes = 0
        req = dict(req, stream=True, stream_options={"include_usage": True})
        create = self.api.chat.completions.create if chat else self.api.completions.create
        s = await create(**req)
        async with s:
            async for ch in s:
                if ch.usage is not None:
                    usage = ch.usage
                for c in ch.choices:
                    text = c.delta.content if chat else c.text
                    if text and first is None:
                        first = time.perf_counter()
                    if c.finish_reason:
                        finishes += 1
                        assert c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r}"
        assert finishes == 1, f"{finishes} finish_reasons in the stream"
        self.check_usage(usage, mt)
        self.tokens += usage.completion_tokens
        if first is not None:
            self.ttft.append((first - t0) * 1000)

    def check_usage(self, u, mt):
        assert u is not None, "no usage"
        assert u.total_tokens == u.prompt_tokens + u.completion_tokens, f"usage inconsistent: {u}"
        assert 0 <= u.completion_tokens <= mt, f"completion_tokens {u.completion_tokens} > max_tokens {mt}"

    async def embeddings(self, rng):
        inputs = [self.prompt(rng) for _ in range(rng.randint(1, 4))]
        r = await self.api.embeddings.create(model=self.model, input=inputs, encoding_format="float")
        assert len(r.data) == len(inputs), f"{len(r.data)} vectors for {len(inputs)} inputs"
        dim = len(r.data[0].embedding)
        assert dim > 0 and all(len(d.embedding) == dim for d in r.data), "vector lengths differ"

    async def raw(self, method, path, body, headers=(), key=True):
        """One HTTP/1.1 request on its own connection: (status, body bytes)."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Connection: close",
                    f"Content-Length: {len(body)}", "Content-Type: application/json"]
            if key and self.args.api_key:
                head.append(f"Authorization: Bearer {self.args.api_key}")
            head += list(headers)
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            await writer.drain()
            head_bytes = await reader.readuntil(b"\r\n\r\n")
            status = int(head_bytes.split(b" ", 2)[1])
            length = None
            for line in head_bytes.decode("latin-1").split("\r\n")[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v.strip())
            data = await (reader.readexactly(length) if length is not None else reader.read())
        finally:
            writer.close()
        return status, data

    async def cancelled(self, rng):
        """A stream dropped after a few chunks by closing the socket."""
        body = json.dumps(dict(model=self.model, stream=True, max_tokens=self.args.tokens,
                               temperature=0.7, seed=rng.randrange(1000),
                               messages=[{"role": "user", "content": self.prompt(rng)}])).encode()
        want = rng.randint(1, 4)
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            head = ["POST /v1/chat/completions HTTP/1.1", f"Host: {self.host}:{self.port}",
                    f"Content-Length: {len(body)}", "Content-Type: application/json",
                    "Accept: text/event-stream"]
            if self.args.api_key:
                head.append(f"Authorization: Bearer {self.args.api_key}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            await writer.drain()
            buf = b""
            while buf.count(b"data:") < want:
                chunk = await reader.read(4096)
                if not chunk:
                    break
                buf += chunk
            assert buf.startswith(b"HTTP/1.1 200") or buf.startswith(b"HTTP/1.0 200"), \
                f"status line {buf[:80]!r}"
            assert b"data:" in buf, f"no event before the stream ended: {buf[:300]!r}"
        finally:
            writer.close()  # drop it mid-stream

    BAD = [
        ("max_tokens -1", {"max_tokens": -1}),
        ("unknown field", {"frobnicate": 1}),
        ("temperature -1", {"temperature": -1}),
        ("messages not a list", {"messages": "hi"}),
        ("no messages", {"messages": None}),
        ("n 0", {"n": 0}),
        ("bad JSON", None),
        ("bad key", "key"),
    ]

    async def bad(self, rng):
        what, patch = rng.choice(self.BAD)
        if what == "bad key" and not self.args.api_key:
            what, patch = self.BAD[0]
        base = dict(model=self.model, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        headers = ()
        if patch is None:
            body = b'{"model": "x", "messages": [ {"role": '
        elif patch == "key":
            body = json.dumps(base).encode()
            headers = ("Authorization: Bearer wrong-key",)
        else:
            req = {**base, **patch}
            req = {k: v for k, v in req.items() if v is not None}
            body = json.dumps(req).encode()
        # a wrong key goes alone, without the right one beside it
        status, resp = await self.raw("POST", "/v1/chat/completions", body, headers, key=not headers)
        assert 400 <= status < 500, f"{what}: status {status}, body {resp[:300]!r}"
        try:
            err = json.loads(resp)["error"]
            assert isinstance(err.get("message"), str) and err["message"], "empty message"
        except Exception as e:
            raise AssertionError(f"{what}: status {status} without an OpenAI error body "
                                 f"({type(e).__name__}): {resp[:300]!r}")
        self.ok("bad:" + what)

    # --- the loop ---------------------------------------------------------------

    MIX = [("chat_stream", 30), ("chat", 15), ("completion_stream", 10), ("completion", 10),
           ("embeddings", 12), ("cancelled", 10), ("bad", 13)]

    async def one(self, kind, rng):
        if kind == "chat_stream":
            await self.chat(rng, True)
        elif kind == "chat":
            await self.chat(rng, False)
        elif kind == "completion_stream":
            await self.completion(rng, True)
        elif kind == "completion":
            await self.completion(rng, False)
        elif kind == "embeddings":
            await self.embeddings(rng)
        elif kind == "cancelled":
            await self.cancelled(rng)
        elif kind == "bad":
            await self.bad(rng)
            return
        self.ok(kind)

    async def worker(self, idx, deadline):
        rng = random.Random(self.args.seed * 1000 + idx)
        kinds, weights = zip(*self.MIX)
        n = 0
        while time.monotonic() < deadline and n < self.args.max_requests:
            n += 1
            kind = rng.choices(kinds, weights)[0]
            try:
                await asyncio.wait_for(self.one(kind, rng), self.args.request_timeout)
            except asyncio.TimeoutError:
                self.fail(kind, f"no answer within {self.args.request_timeout}s")
            except AssertionError as e:
                self.fail(kind, str(e))
            except openai.APIStatusError as e:
                self.fail(kind, f"HTTP {e.status_code}: {e.body}")
            except Exception as e:
                self.fail(kind, f"{type(e).__name__}: {e}")

    async def run(self, deadline):
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{self.port}/v1/models",
                headers={"Authorization": f"Bearer {self.args.api_key}"}), timeout=30) as r:
            self.model = json.load(r)["data"][0]["id"]
        await asyncio.gather(*(self.worker(i, deadline) for i in range(self.args.concurrency)))
        await self.api.close()


def health(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            return r.status
    except Exception as e:
        return getattr(e, "code", 0)


IDLE_GAUGES = ("mistral_run_requests_in_flight", "mistral_run_sessions_active",
               "mistral_run_queue_slots_used", "mistral_run_queue_depth")


def idle_gauges(port, key):
    """The gauges of /metrics that must fall to 0 once the load stops ({} when unreadable)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                 headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
    except Exception:
        return {}
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in IDLE_GAUGES:
            out[parts[0]] = float(parts[1])
    return out


def wait_idle(port, key, seconds=15):
    """Polls the gauges until all are 0 (a dropped stream may take a step to notice)."""
    end = time.monotonic() + seconds
    while True:
        g = idle_gauges(port, key)
        if not any(g.values()) or time.monotonic() > end:
            return g
        time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="the server's process id (for RSS)")
    ap.add_argument("--api-key", default="")
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--warmup", type=float, default=60,
                    help="RSS baseline taken after this many seconds (default 60, at most a third of --seconds)")
    ap.add_argument("--window", type=float, default=10, help="seconds of RSS samples averaged (default 10)")
    ap.add_argument("--sample", type=float, default=2, help="RSS sampling period, seconds (default 2)")
    ap.add_argument("--max-rss-growth", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=48, help="largest max_tokens of a request (default 48)")
    ap.add_argument("--request-timeout", type=float, default=300)
    ap.add_argument("--max-requests", type=int, default=100000, help="per worker")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default="benches/results/serve/soak.json")
    args = ap.parse_args()

    warmup = min(args.warmup, args.seconds / 3)
    window = min(args.window, warmup, max(args.seconds - warmup, 1) / 2)
    sampler = Sampler(args.pid, args.sample)
    sampler.start()
    soak = Soak(args)
    t0 = time.monotonic()
    deadline = t0 + args.seconds
    asyncio.run(soak.run(deadline))
    load_end = time.monotonic() - sampler.t0
    wall = time.monotonic() - t0
    time.sleep(min(args.sample, 2))
    sampler.stop.set()
    sampler.join()

    alive = os.path.exists(f"/proc/{args.pid}") and rss_kib(args.pid) is not None
    healthy = health(args.port) == 200 if alive else False
    gauges = wait_idle(args.port, args.api_key) if alive else {}
    samples = sampler.samples
    base = [v for t, v in samples if warmup <= t <= warmup + window]
    end = [v for t, v in samples if load_end - window <= t <= load_end]
    rss_base = sum(base) / len(base) if base else None
    rss_end = sum(end) / len(end) if end else None
    growth = (rss_end / rss_base - 1) if rss_base and rss_end else None

    checks = {
        "no failed requests": soak.counts.get("failed", 0) == 0,
        "server alive and healthy": alive and healthy,
        f"RSS growth <= {args.max_rss_growth:.0%}": growth is not None and growth <= args.max_rss_growth,
    }
    if gauges:  # no request, session or queue slot left behind (dropped streams included)
        checks["idle after the load (" + ", ".join(f"{k[len('mistral_run_'):]} {v:g}" for k, v in
                                                   gauges.items()) + ")"] = not any(gauges.values())
    step = max(1, len(samples) // 200)
    out = dict(
        seconds=args.seconds,
        wall_s=round(wall, 1),
        concurrency=args.concurrency,
        max_tokens=args.tokens,
        counts=dict(sorted(soak.counts.items())),
        requests=sum(v for k, v in soak.counts.items()),
        failed=soak.counts.get("failed", 0),
        failures=soak.failures,
        ttft_ms=dict(p50=_r(percentile(soak.ttft, 50)), p95=_r(percentile(soak.ttft, 95)),
                     n=len(soak.ttft)),
        completion_tokens=soak.tokens,
        aggregate_tok_s=_r(soak.tokens / wall) if wall > 0 else None,
        rss_kib=dict(after_warmup=_r(rss_base, 0), end=_r(rss_end, 0),
                     peak=max((v for _, v in samples), default=None),
                     warmup_s=warmup, window_s=window),
        rss_growth=_r(growth, 4),
        gauges_after=gauges,
        rss_samples=[(round(t, 1), v) for t, v in samples[::step]],
        checks=checks,
        passed=all(checks.values()),
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")

    print(f"soak: {out['requests']} requests in {out['wall_s']} s: {out['counts']}")
    print(f"soak: TTFT p50 {out['ttft_ms']['p50']} ms, p95 {out['ttft_ms']['p95']} ms "
          f"({len(soak.ttft)} streams); aggregate {out['aggregate_tok_s']} tok/s")
    r = out["rss_kib"]
    print(f"soak: RSS after warm-up {fmt_mib(r['after_warmup'])}, at the end {fmt_mib(r['end'])}, "
          f"peak {fmt_mib(r['peak'])}: growth {'—' if growth is None else f'{growth:+.2%}'}")
    for f_ in soak.failures[:10]:
        print(f"soak: failure: {f_}")
    for name, ok in checks.items():
        print(f"soak: {'ok  ' if ok else 'FAIL'} {name}")
    print(f"soak: wrote {args.json}")
    return 0 if out["passed"] else 1


def _r(x, nd=2):
    return None if x is None else round(x, nd)


def fmt_mib(kib):
    return "—" if kib is None else f"{kib / 1024:.1f} MiB"


if __name__ == "__main__":
    sys.exit(main())
