#!/usr/bin/env python3
"""Checks `mistral-run serve` with the real `openai` and `mistralai` clients.

Run by tests/server-clients.sh, which starts the server and sets:
  SERVER_PORT      the port on 127.0.0.1
  SERVER_API_KEY   the server's --api-key
  FIM_PORT         a second server, on a model with fill-in-the-middle tokens
  EXPECT_MODEL_ID  (optional) the id /v1/models must report

Each check prints one line, "ok   name" or "FAIL name: why"; the last line is
"N passed, N failed" and the exit status is 1 when any check failed. A failed
check shows the request that was sent and what the server answered.
"""

import base64
import json
import math
import os
import struct
import sys
import time
import traceback
import urllib.error
import urllib.request

import openai
from mistralai.client import Mistral
from mistralai.client import errors as mistral_errors

PORT = int(os.environ["SERVER_PORT"])
KEY = os.environ["SERVER_API_KEY"]
EXPECT_MODEL_ID = os.environ.get("EXPECT_MODEL_ID", "")
ROOT = f"http://127.0.0.1:{PORT}"
TIMEOUT = 300.0  # seconds per request; debug builds on 2 cores are slow

client = openai.OpenAI(base_url=ROOT + "/v1", api_key=KEY, max_retries=0, timeout=TIMEOUT)
mistral = Mistral(api_key=KEY, server_url=ROOT, timeout_ms=int(TIMEOUT * 1000))

MODEL = None  # set by the first check
CHAT_MSGS = [{"role": "user", "content": "Write one sentence about the sea."}]
COMPLETION_PROMPT = "The three most important things to know about the ocean are"


class CheckFailed(AssertionError):
    pass


def need(cond, msg, **shown):
    """assert with the evidence: the request/response fields passed as keywords."""
    if not cond:
        detail = "".join(f"\n      {k}: {_short(v)}" for k, v in shown.items())
        raise CheckFailed(msg + detail)


def _short(v, limit=1500):
    if hasattr(v, "model_dump"):
        v = v.model_dump(exclude_none=True)
    s = v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
    return s if len(s) <= limit else s[:limit] + f"... ({len(s)} chars)"


def raw(method, path, body=None, key=KEY, headers=None):
    """A request without any client library: (status, headers, parsed-or-text body)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(ROOT + path, data=data, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            status, hdrs, text = r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        status, hdrs, text = e.code, e.headers, e.read().decode()
    try:
        return status, hdrs, json.loads(text)
    except ValueError:
        return status, hdrs, text


def check_usage(usage, max_tokens=None, what="usage"):
    need(usage is not None, f"{what} is missing")
    p, c, t = usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
    need(isinstance(p, int) and p >= 1, f"{what}.prompt_tokens should be >= 1", usage=usage)
    need(isinstance(c, int) and c >= 1, f"{what}.completion_tokens should be >= 1", usage=usage)
    need(t == p + c, f"{what}.total_tokens != prompt_tokens + completion_tokens", usage=usage)
    if max_tokens is not None:
        need(c <= max_tokens, f"{what}.completion_tokens > max_tokens={max_tokens}", usage=usage)


def stream_chat(**req):
    """Streams a chat completion: (text per choice index, chunks)."""
    chunks = list(client.chat.completions.create(stream=True, **req))
    texts = {}
    for ch in chunks:
        for c in ch.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
    return texts, chunks


def stream_completion(**req):
    chunks = list(client.completions.create(stream=True, **req))
    texts = {}
    for ch in chunks:
        for c in ch.choices:
            texts[c.index] = texts.get(c.index, "") + (c.text or "")
    return texts, chunks


def check_stream_tail(chunks, req, usage_expected, n=1):
    """The shape rules of a streamed answer with include_usage."""
    need(len(chunks) >= 2, "a stream should have at least two chunks", request=req,
         chunks=[c.model_dump() for c in chunks])
    finishes = [(c.index, c.finish_reason) for ch in chunks for c in ch.choices if c.finish_reason]
    need(sorted(i for i, _ in finishes) == list(range(n)),
         f"each of the {n} choices should get exactly one finish_reason", request=req, finishes=finishes)
    last = chunks[-1]
    need(last.usage is not None, "the last chunk should carry usage (stream_options.include_usage)",
         request=req, last_chunk=last)
    need(last.choices == [], "the usage chunk should have choices: [] (as OpenAI sends it)",
         request=req, last_chunk=last)
    for ch in chunks[:-1]:
        need(ch.usage is None, "only the last chunk should carry usage", request=req, chunk=ch)
    if usage_expected is not None:
        need(last.usage.model_dump() == usage_expected.model_dump(),
             "streamed usage differs from the non-streamed usage of the same request",
             request=req, streamed=last.usage, non_streamed=usage_expected)
    ids = {ch.id for ch in chunks}
    need(len(ids) == 1, "all chunks of one stream should share one id", ids=sorted(ids))
    return last.usage


# --- the checks ------------------------------------------------------------


def check_health_and_metrics():
    st, _, body = raw("GET", "/health", key=None)
    need(st == 200, "GET /health without a key should answer 200", status=st, body=body)
    st, hdrs, body = raw("GET", "/metrics")
    need(st == 200, "GET /metrics with the key should answer 200", status=st, body=body)
    need(isinstance(body, str) and "# TYPE" in body,
         "GET /metrics should be Prometheus text (with # TYPE lines)", body=body)


def check_models():
    global MODEL
    models = client.models.list()
    ids = [m.id for m in models.data]
    need(len(ids) == 1, "GET /v1/models should list exactly one model", models=models)
    need(ids[0], "the model id is empty", models=models)
    if EXPECT_MODEL_ID:
        need(ids[0] == EXPECT_MODEL_ID, f"the model id should be {EXPECT_MODEL_ID!r}", models=models)
    need(models.data[0].object == "model", 'each model should have object "model"', models=models)
    MODEL = ids[0]
    return f"id {MODEL!r}"


_chat_ref = {}


def chat_req(**extra):
    return {**dict(model=MODEL, messages=CHAT_MSGS, temperature=0, max_tokens=32), **extra}


def check_chat():
    req = chat_req()
    r = client.chat.completions.create(**req)
    need(r.object == "chat.completion", 'object should be "chat.completion"', request=req, response=r)
    need(len(r.choices) == 1, "one choice expected", request=req, response=r)
    c = r.choices[0]
    need(c.index == 0, "choice index should be 0", request=req, response=r)
    need(c.message.role == "assistant", "role should be assistant", request=req, response=r)
    need(isinstance(c.message.content, str) and c.message.content.strip(),
         "the content is empty", request=req, response=r)
    need(c.finish_reason in ("stop", "length"), "finish_reason should be stop or length",
         request=req, response=r)
    check_usage(r.usage, max_tokens=32)
    if c.finish_reason == "length":
        need(r.usage.completion_tokens == 32, "finish_reason length but completion_tokens != max_tokens",
             request=req, response=r)
    _chat_ref["r"] = r
    req2 = {k: v for k, v in chat_req(max_completion_tokens=5).items() if k != "max_tokens"}
    r2 = client.chat.completions.create(**req2)
    need(1 <= r2.usage.completion_tokens <= 5, "max_completion_tokens=5 was not honoured",
         request=req2, response=r2)
    return f"{r.usage.completion_tokens} tokens, {c.finish_reason}: {c.message.content[:60]!r}"


def check_chat_stream():
    ref = _chat_ref.get("r")
    need(ref is not None, "needs the non-streamed chat check to have passed")
    req = chat_req(stream_options={"include_usage": True})
    texts, chunks = stream_chat(**req)
    need(chunks and chunks[0].choices and chunks[0].choices[0].delta.role == "assistant",
         "the first chunk's delta should have role assistant", request=req,
         first_chunk=chunks[0] if chunks else None)
    need(all(ch.object == "chat.completion.chunk" for ch in chunks),
         'each chunk should have object "chat.completion.chunk"', request=req)
    want = ref.choices[0].message.content
    if texts.get(0) != want:
        again = client.chat.completions.create(**chat_req()).choices[0].message.content
        need(False, "streamed deltas differ from the non-streamed content (temperature 0)",
             request=req, streamed=texts.get(0), non_streamed=want,
             non_streamed_again=again, hint=repeat_hint(want, texts.get(0), again))
    fin = [c.finish_reason for ch in chunks for c in ch.choices if c.finish_reason]
    need(fin == [ref.choices[0].finish_reason], "streamed finish_reason differs from non-streamed",
         streamed=fin, non_streamed=ref.choices[0].finish_reason)
    check_stream_tail(chunks, req, ref.usage)
    return f"{len(chunks)} chunks"


def repeat_hint(first, streamed, again):
    if again == streamed:
        return ("the same non-streamed request sent again gives the streamed text: the output "
                "at temperature 0 changed between the first and later identical requests, "
                "not between streamed and non-streamed")
    if again == first:
        return "the non-streamed request repeats itself; only streaming differs"
    return "three different answers to one request at temperature 0"


def check_completions():
    req = dict(model=MODEL, prompt=COMPLETION_PROMPT, temperature=0, max_tokens=24)
    r = client.completions.create(**req)
    need(r.object == "text_completion", 'object should be "text_completion"', request=req, response=r)
    need(len(r.choices) == 1 and r.choices[0].index == 0, "one choice with index 0 expected",
         request=req, response=r)
    text = r.choices[0].text
    need(isinstance(text, str) and text.strip(), "the text is empty", request=req, response=r)
    need(r.choices[0].finish_reason in ("stop", "length"), "finish_reason should be stop or length",
         request=req, response=r)
    check_usage(r.usage, max_tokens=24)
    sreq = dict(req, stream_options={"include_usage": True})
    texts, chunks = stream_completion(**sreq)
    if texts.get(0) != text:
        again = client.completions.create(**req).choices[0].text
        need(False, "streamed text differs from the non-streamed text (temperature 0)",
             request=sreq, streamed=texts.get(0), non_streamed=text, non_streamed_again=again,
             hint=repeat_hint(text, texts.get(0), again))
    check_stream_tail(chunks, sreq, r.usage)
    return f"{r.usage.completion_tokens} tokens: {text[:60]!r}"


def check_completions_logprobs():
    req = dict(model=MODEL, prompt=COMPLETION_PROMPT, temperature=0, max_tokens=8, logprobs=2)
    r = client.completions.create(**req)
    lp = r.choices[0].logprobs
    need(lp is not None and lp.tokens, "logprobs.tokens missing", request=req, response=r)
    n = r.usage.completion_tokens
    need(len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n,
         "tokens / token_logprobs / top_logprobs should have one entry per completion token",
         request=req, response=r)
    for tok, l, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        need(l is not None and l <= 1e-6, f"token logprob should be <= 0 ({tok!r}: {l})", response=r)
        need(isinstance(top, dict) and len(top) == 2, "each top_logprobs entry should map 2 tokens",
             request=req, entry=top)
        best = max(top.values())
        need(abs(l - best) < 1e-3, "at temperature 0 the sampled token should be the most likely one",
             token=tok, logprob=l, top=top)
    if r.choices[0].text.isascii():
        need("".join(lp.tokens) == r.choices[0].text, "the tokens should spell the text",
             tokens=lp.tokens, text=r.choices[0].text)


def check_embeddings():
    a, b = "The cat sat on the mat.", "Quarterly revenue grew by four percent."
    # The openai client asks for base64 by default and decodes it itself.
    req = dict(model=MODEL, input=[a, b, a])
    r = client.embeddings.create(**req)
    need(len(r.data) == 3, "three vectors expected for three inputs", request=req, response=r)
    need([d.index for d in r.data] == [0, 1, 2], "indices should be 0, 1, 2", request=req)
    vecs = [d.embedding for d in r.data]
    dim = len(vecs[0])
    need(dim > 0 and all(len(v) == dim for v in vecs), "vectors should have one length > 0",
         lengths=[len(v) for v in vecs])
    need(all(math.isfinite(x) for v in vecs for x in v), "vectors should hold finite values")
    need(any(x != 0 for x in vecs[0]), "the vector is all zeros")
    need(close(vecs[0], vecs[2]), "the same text in one request gave different vectors",
         diff=maxdiff(vecs[0], vecs[2]))
    need(not close(vecs[0], vecs[1]), "two different texts gave the same vector")
    need(r.usage is not None and r.usage.prompt_tokens >= 2, "usage.prompt_tokens missing",
         request=req, usage=r.usage)
    # The same text alone, as floats: the same vector again.
    req2 = dict(model=MODEL, input=a, encoding_format="float")
    r2 = client.embeddings.create(**req2)
    need(len(r2.data) == 1 and close(r2.data[0].embedding, vecs[0]),
         "the same text in a second request (float) gave a different vector", request=req2,
         diff=maxdiff(r2.data[0].embedding, vecs[0]) if r2.data else None)
    # The base64 answer itself: little-endian float32.
    st, _, body = raw("POST", "/v1/embeddings", dict(model=MODEL, input=[a], encoding_format="base64"))
    need(st == 200, "base64 embeddings request failed", status=st, body=body)
    emb = body["data"][0]["embedding"]
    need(isinstance(emb, str), "with encoding_format base64 the embedding should be a string", body=body)
    raw_bytes = base64.b64decode(emb)
    need(len(raw_bytes) == 4 * dim, "base64 embedding should be dim float32 values",
         bytes=len(raw_bytes), dim=dim)
    floats = struct.unpack(f"<{dim}f", raw_bytes)
    need(close(floats, vecs[0]), "base64 and float vectors differ", diff=maxdiff(floats, vecs[0]))
    return f"dim {dim}"


def close(u, v, tol=1e-4):
    if len(u) != len(v):
        return False
    scale = max(1.0, max(abs(x) for x in u))
    return maxdiff(u, v) <= tol * scale


def maxdiff(u, v):
    return max((abs(x - y) for x, y in zip(u, v)), default=float("inf"))


def pick_stop_word(text):
    """A word from the middle of text whose first occurrence is not at the start."""
    words = [w.strip(".,;:!?\"'()") for w in text.split()]
    cands = [w for w in words if len(w) >= 3 and w.isalpha()]
    if not cands:
        return None
    order = sorted(range(len(cands)), key=lambda i: abs(i - len(cands) // 2))
    for i in order:
        pos = text.find(cands[i])
        if pos > 0 and text[:pos].strip():
            return cands[i]
    return None


def check_stop():
    base = chat_req(max_tokens=48)
    r = client.chat.completions.create(**base)
    full = r.choices[0].message.content
    word = pick_stop_word(full)
    need(word, "no usable stop word in the greedy output", request=base, content=full)
    want = full[: full.find(word)]
    req = dict(base, stop=[word])
    r2 = client.chat.completions.create(**req)
    got = r2.choices[0].message.content
    need(got == want, f"with stop={[word]!r} the content should be the text before it",
         request=req, got=got, want=want, full=full)
    need(r2.choices[0].finish_reason == "stop", 'finish_reason should be "stop"', request=req, response=r2)
    # Streamed, the held-back prefix of a possible stop must not leak.
    texts, chunks = stream_chat(**req)
    need(texts.get(0) == want, f"streamed with stop={[word]!r} the deltas should spell the text before it",
         request=req, got=texts.get(0), want=want)
    fin = [c.finish_reason for ch in chunks for c in ch.choices if c.finish_reason]
    need(fin == ["stop"], 'streamed finish_reason should be "stop"', request=req, finish=fin)
    # A plain string is also allowed for stop.
    req3 = dict(model=MODEL, prompt=COMPLETION_PROMPT, temperature=0, max_tokens=32)
    full3 = client.completions.create(**req3).choices[0].text
    word3 = pick_stop_word(full3)
    if word3:
        req3 = dict(req3, stop=word3)
        r3 = client.completions.create(**req3)
        need(r3.choices[0].text == full3[: full3.find(word3)],
             "completions with a string stop should end before it", request=req3,
             got=r3.choices[0].text, full=full3)
        need(r3.choices[0].finish_reason == "stop", 'finish_reason should be "stop"', request=req3,
             response=r3)
    return f"stop {word!r} -> {want!r}"


def check_seed():
    req = dict(model=MODEL, messages=[{"role": "user", "content": "Tell me a short story."}],
               temperature=1.0, max_tokens=24, seed=1234)
    t1 = client.chat.completions.create(**req).choices[0].message.content
    t2 = client.chat.completions.create(**req).choices[0].message.content
    need(t1 == t2, "the same seed at temperature 1 gave different texts", request=req, first=t1, second=t2)
    others = []
    for s in (1, 2, 3):
        others.append(client.chat.completions.create(**dict(req, seed=s)).choices[0].message.content)
    need(any(o != t1 for o in others), "seeds 1, 2 and 3 all gave the text of seed 1234",
         request=req, text=t1, others=others)
    return f"{sum(o != t1 for o in others)}/3 other seeds differ"


def check_chat_logprobs():
    req = chat_req(max_tokens=16, logprobs=True, top_logprobs=3)
    r = client.chat.completions.create(**req)
    c = r.choices[0]
    need(c.logprobs is not None and c.logprobs.content, "choices[0].logprobs.content missing",
         request=req, response=r)
    content = c.logprobs.content
    need(len(content) == r.usage.completion_tokens,
         "logprobs.content should have one entry per completion token", request=req,
         entries=len(content), completion_tokens=r.usage.completion_tokens)
    for e in content:
        need(e.logprob <= 1e-6, f"logprob should be <= 0 for {e.token!r}", entry=e)
        tops = e.top_logprobs
        need(len(tops) == 3, "3 top_logprobs expected per token", request=req, entry=e)
        lps = [t.logprob for t in tops]
        need(all(x <= 1e-6 for x in lps), "top logprobs should be <= 0", entry=e)
        need(lps == sorted(lps, reverse=True), "top_logprobs should be sorted most likely first", entry=e)
        need(e.token == tops[0].token or abs(e.logprob - tops[0].logprob) < 1e-5,
             "at temperature 0 the sampled token should be top_logprobs[0]", entry=e)
        need(abs(e.logprob - tops[0].logprob) < 1e-3,
             "at temperature 0 the sampled token's logprob should be the top one", entry=e)
        if e.bytes is not None and _utf8(bytes(e.bytes)) is not None:
            need(bytes(e.bytes).decode() == e.token, "bytes should be the UTF-8 of token", entry=e)
    text = c.message.content
    if text.isascii():
        need("".join(e.token for e in content) == text, "the logprob tokens should spell the content",
             tokens=[e.token for e in content], content=text)
    return f"{len(content)} tokens"


def _utf8(b):
    try:
        return b.decode()
    except UnicodeDecodeError:
        return None


def check_n():
    req = dict(model=MODEL, messages=[{"role": "user", "content": "Name a colour."}],
               temperature=1.0, max_tokens=12, seed=42, n=2)
    r = client.chat.completions.create(**req)
    need(sorted(c.index for c in r.choices) == [0, 1], "n=2 should give choices 0 and 1",
         request=req, response=r)
    for c in r.choices:
        need(c.finish_reason in ("stop", "length"), "finish_reason should be stop or length", response=r)
        need(c.message.role == "assistant", "role should be assistant", response=r)
    check_usage(r.usage, max_tokens=24)
    sreq = dict(req, stream_options={"include_usage": True})
    texts, chunks = stream_chat(**sreq)
    need(sorted(texts) == [0, 1], "streamed n=2 should carry choices 0 and 1", request=sreq,
         indices=sorted(texts))
    check_stream_tail(chunks, sreq, None, n=2)
    return " | ".join(repr(c.message.content[:30]) for c in sorted(r.choices, key=lambda c: c.index))


def check_auth():
    bad = openai.OpenAI(base_url=ROOT + "/v1", api_key="not-" + KEY, max_retries=0, timeout=TIMEOUT)
    for what, call in (("models.list", lambda: bad.models.list()),
                       ("chat", lambda: bad.chat.completions.create(**chat_req(max_tokens=2)))):
        try:
            r = call()
        except openai.AuthenticationError as e:
            need(e.status_code == 401, f"{what} with a wrong key: status should be 401", status=e.status_code)
        else:
            raise CheckFailed(f"{what} with a wrong key succeeded: {_short(r)}")
    for path, body in (("/v1/models", None), ("/v1/chat/completions", chat_req(max_tokens=2)),
                       ("/metrics", None)):
        st, hdrs, resp = raw("POST" if body else "GET", path, body, key=None)
        need(st == 401, f"{path} without a key should answer 401", status=st, body=resp)
        if path.startswith("/v1"):
            check_error_shape(resp, f"{path} without a key")
    return "wrong key and no key both 401"


def check_error_shape(body, what):
    need(isinstance(body, dict) and isinstance(body.get("error"), dict),
         f'{what}: the body should be {{"error": {{...}}}}', body=body)
    err = body["error"]
    for k in ("message", "type", "param", "code"):
        need(k in err, f"{what}: error.{k} missing", body=body)
    need(isinstance(err["message"], str) and err["message"], f"{what}: error.message empty", body=body)


def check_bad_requests():
    cases = [
        ("max_tokens=-1", dict(max_tokens=-1)),
        ("an unsupported field", dict(extra_body={"frobnicate": True})),
        ("temperature=-1", dict(temperature=-1)),
    ]
    for what, kw in cases:
        req = dict(chat_req(max_tokens=4), **kw)
        try:
            r = client.chat.completions.create(**req)
        except openai.BadRequestError as e:
            need(e.status_code == 400, f"{what}: status should be 400", status=e.status_code)
            check_error_shape(e.body if isinstance(e.body, dict) and "error" in e.body
                              else {"error": e.body}, what)
        else:
            raise CheckFailed(f"{what} was accepted: request {_short(req)} -> {_short(r)}")
    st, _, body = raw("POST", "/v1/chat/completions", None, headers={"Content-Type": "application/json"})
    need(400 <= st < 500, "an empty body should get a 4xx", status=st, body=body)
    req = urllib.request.Request(ROOT + "/v1/chat/completions", data=b"{not json", method="POST",
                                 headers={"Authorization": f"Bearer {KEY}",
                                          "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=TIMEOUT)
        raise CheckFailed("malformed JSON was accepted")
    except urllib.error.HTTPError as e:
        need(e.code == 400, "malformed JSON should get 400", status=e.code, body=e.read().decode())
    st, _, body = raw("GET", "/v1/nonexistent")
    need(st == 404, "an unknown route should get 404", status=st, body=body)
    return "max_tokens=-1, unknown field, temperature=-1, bad JSON, unknown route"


def check_mistral_chat():
    msgs = [{"role": "user", "content": "Write one sentence about mountains."}]
    req = dict(model=MODEL, messages=msgs, temperature=0, max_tokens=32, random_seed=7)
    r = mistral.chat.complete(**req)
    need(r.choices and r.choices[0].message is not None, "no message in the answer", request=req, response=r)
    text = r.choices[0].message.content
    need(isinstance(text, str) and text.strip(), "the content is empty", request=req, response=r)
    need(r.choices[0].finish_reason in ("stop", "length"), "finish_reason should be stop or length",
         response=r)
    need(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens,
         "usage inconsistent", usage=r.usage)
    parts, events = [], []
    with mistral.chat.stream(**req) as stream:
        for ev in stream:
            events.append(ev)
            for c in ev.data.choices:
                if isinstance(c.delta.content, str):
                    parts.append(c.delta.content)
    streamed = "".join(parts)
    need(streamed == text, "mistralai chat.stream text differs from chat.complete (temperature 0)",
         request=req, streamed=streamed, non_streamed=text)
    need(any(c.finish_reason for ev in events for c in ev.data.choices),
         "no finish_reason in the mistralai stream", request=req)
    r2 = mistral.chat.complete(**dict(req, max_tokens=4, safe_prompt=True))
    need(r2.choices and r2.usage.completion_tokens >= 1, "safe_prompt=True should be accepted",
         response=r2)
    return f"{r.usage.completion_tokens} tokens: {text[:60]!r}"


def check_mistral_fim():
    """On the default model: FIM where the vocabulary has the tokens, else a clear 400."""
    card = client.models.list().data[0]
    caps = (card.model_extra or {}).get("capabilities") or {}
    req = dict(model=MODEL, prompt="def fibonacci(n):\n    ", suffix="\n    return a\n",
               max_tokens=32, temperature=0, random_seed=3)
    try:
        r = mistral.fim.complete(**req)
    except mistral_errors.MistralError as e:
        need(caps.get("completion_fim") is False,
             "FIM failed though /v1/models says completion_fim is not false",
             request=req, status=e.status_code, body=e.body, capabilities=caps)
        need(e.status_code == 400, "FIM on a model without FIM tokens should be a 400",
             status=e.status_code, body=e.body)
        check_error_shape(json.loads(e.body), "FIM without FIM tokens")
        return "refused with 400 (this vocabulary has no FIM tokens)"
    need(caps.get("completion_fim") is not False, "FIM answered though completion_fim is false",
         capabilities=caps)
    return check_fim_answer(r, req)


def check_fim_answer(r, req):
    need(r.choices and r.choices[0].message is not None, "no message in the FIM answer",
         request=req, response=r)
    text = r.choices[0].message.content
    need(isinstance(text, str) and text, "the FIM completion is empty", request=req, response=r)
    need(r.choices[0].finish_reason in ("stop", "length"), "finish_reason should be stop or length",
         request=req, response=r)
    need(1 <= r.usage.completion_tokens <= req["max_tokens"], "usage.completion_tokens out of range",
         usage=r.usage)
    need(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens,
         "usage inconsistent", usage=r.usage)
    return repr(text[:60])


def check_mistral_fim_model():
    """fim.complete and fim.stream on a model with [PREFIX]/[SUFFIX] (FIM_PORT)."""
    port = os.environ.get("FIM_PORT")
    need(port, "FIM_PORT is not set (tests/server-clients.sh starts the FIM server)")
    fim = Mistral(api_key=KEY, server_url=f"http://127.0.0.1:{port}", timeout_ms=int(TIMEOUT * 1000))
    model = fim.models.list().data[0].id
    req = dict(model=model, prompt="def add(a, b):\n    ", suffix="\n\nprint(add(1, 2))\n",
               max_tokens=16, temperature=0, random_seed=5)
    r = fim.fim.complete(**req)
    note = check_fim_answer(r, req)
    parts = []
    with fim.fim.stream(**req) as stream:
        for ev in stream:
            for c in ev.data.choices:
                if isinstance(c.delta.content, str):
                    parts.append(c.delta.content)
    need("".join(parts) == r.choices[0].message.content,
         "fim.stream text differs from fim.complete (temperature 0)", request=req,
         streamed="".join(parts), non_streamed=r.choices[0].message.content)
    return note


def check_mistral_embeddings():
    req = dict(model=MODEL, inputs=["first text", "second text"])
    r = mistral.embeddings.create(**req)
    need(len(r.data) == 2 and all(d.embedding for d in r.data), "two vectors expected",
         request=req, response=r)
    return f"dim {len(r.data[0].embedding)}"


def check_mistral_auth():
    bad = Mistral(api_key="not-" + KEY, server_url=ROOT, timeout_ms=int(TIMEOUT * 1000))
    try:
        r = bad.chat.complete(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    except mistral_errors.MistralError as e:
        need(e.status_code == 401, "mistralai with a wrong key: status should be 401",
             status=e.status_code, body=e.body)
        return f"{type(e).__name__} 401"
    raise CheckFailed(f"mistralai with a wrong key succeeded: {_short(r)}")


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
TOOL_MSGS = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def check_structured_helpers():
    """The clients' own structured-output helpers: a pydantic model in, a
    parsed object out (the server holds the answer to the model's schema)."""
    from typing import Literal
    from pydantic import BaseModel, Field

    class City(BaseModel):
        name: str = Field(max_length=24)
        country: str = Field(max_length=24)
        population_millions: int = Field(ge=0, le=50)
        climate: Literal["hot", "mild", "cold"]

    msgs = [{"role": "user", "content": "Describe Paris as JSON."}]
    r = client.chat.completions.parse(model=MODEL, messages=msgs, response_format=City,
                                      temperature=1.0, seed=5, max_tokens=120)
    city = r.choices[0].message.parsed
    need(isinstance(city, City), "openai's parse() gave no City", response=r)
    m = mistral.chat.parse(response_format=City, model=MODEL, messages=msgs, temperature=1.0,
                           random_seed=5, max_tokens=120)
    mcity = m.choices[0].message.parsed
    need(isinstance(mcity, City), "mistralai's parse() gave no City", response=m)
    return f"openai {city.model_dump()} / mistralai {mcity.model_dump()}"


def check_tool_args(call, req):
    import jsonschema
    need(call.type == "function" and call.function.name == "get_weather",
         "the call should be to get_weather", request=req, call=call)
    try:
        args = json.loads(call.function.arguments)
        jsonschema.validate(args, WEATHER_TOOL["function"]["parameters"])
    except Exception as e:
        need(False, f"the arguments do not fit the tool's schema: {e}", request=req, call=call)
    need(isinstance(call.id, str) and call.id, "the call has no id", call=call)
    return args


def check_tools():
    # tool_choice required, at temperature 1: the constraint keeps the call valid.
    for seed in range(3):
        req = dict(model=MODEL, messages=TOOL_MSGS, tools=[WEATHER_TOOL], tool_choice="required",
                   temperature=1.0, seed=seed, max_tokens=100, parallel_tool_calls=False)
        r = client.chat.completions.create(**req)
        c = r.choices[0]
        need(c.finish_reason == "tool_calls", 'finish_reason should be "tool_calls"', request=req, response=r)
        need(c.message.tool_calls and len(c.message.tool_calls) == 1, "one tool call expected", request=req, response=r)
        args = check_tool_args(c.message.tool_calls[0], req)
    # The call and its result go back in; the answer is text.
    call = c.message.tool_calls[0]
    msgs = TOOL_MSGS + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.function.name,
                                                              "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})},
    ]
    req = dict(model=MODEL, messages=msgs, tools=[WEATHER_TOOL], tool_choice="none", temperature=0, max_tokens=40)
    r = client.chat.completions.create(**req)
    need(r.choices[0].message.content and not r.choices[0].message.tool_calls,
         "after the tool result the answer should be text", request=req, response=r)
    # A named function.
    req = dict(model=MODEL, messages=TOOL_MSGS, tools=[WEATHER_TOOL], temperature=0, max_tokens=100,
               tool_choice={"type": "function", "function": {"name": "get_weather"}})
    r = client.chat.completions.create(**req)
    check_tool_args(r.choices[0].message.tool_calls[0], req)
    # An unknown name is a 400.
    try:
        client.chat.completions.create(**dict(req, tool_choice={"type": "function", "function": {"name": "nope"}}))
        need(False, "tool_choice naming an unknown tool should be a 400")
    except openai.BadRequestError:
        pass
    return f"args {args}"


def check_tools_stream():
    req = dict(model=MODEL, messages=TOOL_MSGS, tools=[WEATHER_TOOL], tool_choice="required",
               temperature=0, max_tokens=100, stream=True)
    name, arguments, finish, content = "", "", None, ""
    for ch in client.chat.completions.create(**req):
        for c in ch.choices:
            for tc in (c.delta.tool_calls or []):
                name += tc.function.name or ""
                arguments += tc.function.arguments or ""
            content += c.delta.content or ""
            finish = c.finish_reason or finish
    need(finish == "tool_calls", 'the stream should finish with "tool_calls"', finish=finish)
    need(name == "get_weather" and not content, "the stream should carry the call, not text",
         name=name, content=content)
    import jsonschema
    jsonschema.validate(json.loads(arguments), WEATHER_TOOL["function"]["parameters"])
    return arguments


def check_mistral_tools():
    req = dict(model=MODEL, messages=TOOL_MSGS, tools=[WEATHER_TOOL], tool_choice="any",
               temperature=0.7, random_seed=3, max_tokens=100)
    r = mistral.chat.complete(**req)
    c = r.choices[0]
    need(c.finish_reason == "tool_calls" and c.message.tool_calls, "mistralai: no tool call",
         request=req, response=r)
    call = c.message.tool_calls[0]
    args = call.function.arguments
    args = json.loads(args) if isinstance(args, str) else args
    import jsonschema
    jsonschema.validate(args, WEATHER_TOOL["function"]["parameters"])
    return f"{call.function.name} {args}"


CHECKS = [
    check_health_and_metrics,
    check_models,
    check_chat,
    check_chat_stream,
    check_completions,
    check_completions_logprobs,
    check_embeddings,
    check_stop,
    check_seed,
    check_chat_logprobs,
    check_n,
    check_auth,
    check_bad_requests,
    check_mistral_chat,
    check_mistral_fim,
    check_mistral_fim_model,
    check_mistral_embeddings,
    check_mistral_auth,
    check_tools,
    check_tools_stream,
    check_mistral_tools,
    check_structured_helpers,
]


def main():
    passed = failed = 0
    only = set(sys.argv[1:])
    for check in CHECKS:
        name = check.__name__[len("check_"):]
        if only and name not in only:
            continue
        if MODEL is None and check not in (check_models, check_health_and_metrics):
            try:  # a run of only some checks still needs the model id
                check_models()
            except Exception:
                pass
        t0 = time.monotonic()
        try:
            note = check()
        except CheckFailed as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)
            continue
        except mistral_errors.ResponseValidationError as e:
            failed += 1
            print(f"FAIL {name}: the mistralai client rejected the server's {e.status_code} answer: "
                  f"{_short(str(e.cause) if getattr(e, 'cause', None) else str(e), 600)}"
                  f"\n      body: {_short(e.body, 400)}", flush=True)
            continue
        except (openai.APIStatusError, mistral_errors.MistralError) as e:
            failed += 1
            body = getattr(e, "body", None)
            print(f"FAIL {name}: the server answered {e.status_code}: {_short(body)}"
                  f"\n      ({type(e).__name__}: {_short(str(e), 600)})", flush=True)
            continue
        except Exception as e:  # a client-side parse error, a timeout, a bug here
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {_short(str(e), 1500)}", flush=True)
            traceback.print_exc(limit=4)
            continue
        passed += 1
        dt = time.monotonic() - t0
        print(f"ok   {name} ({dt:.1f}s){': ' + note if note else ''}", flush=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
