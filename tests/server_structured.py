"""Structured output through `mistral-run serve` with the real `openai` client:
200 generated JSON Schemas (objects, arrays, enums, bounded numbers, required
fields, nested $ref), each with a random prompt, sampled at temperature 1 so
that the constraint, not the model, keeps the output valid. Every output must
parse and validate against its schema with the independent `jsonschema`
package (Draft 2020-12). Usage: server_structured.py PORT API_KEY [CASES] [SEED]
"""
import concurrent.futures
import json
import random
import sys
import time

import jsonschema
from openai import OpenAI

port, key = sys.argv[1], sys.argv[2]
cases = int(sys.argv[3]) if len(sys.argv) > 3 else 200
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 2026
client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=300)
model = client.models.list().data[0].id

WORDS = ["name", "city", "size", "color", "count", "price", "owner", "tags", "kind", "level",
         "score", "items", "title", "label", "speed", "notes", "status", "rank", "weight", "code"]
ENUMS = [["red", "green", "blue"], ["small", "medium", "large"], ["on", "off"],
         ["cat", "dog", "bird", "fish"], [1, 2, 3], ["yes", "no", None]]
SUBJECTS = ["a city", "a pet", "a product in a shop", "a football match", "a recipe",
            "the weather", "a book", "a planet", "a car", "a student"]


def leaf(r):
    k = r.randrange(6)
    if k == 0:
        return {"type": "string", "maxLength": r.choice([4, 8, 12])}
    if k == 1:
        lo = r.randrange(-50, 50)
        return {"type": "integer", "minimum": lo, "maximum": lo + r.choice([1, 9, 99, 999])}
    if k == 2:
        # Bounded, with a step: JSON numbers have no limit on fraction digits,
        # and at temperature 1 a model may write them until max_tokens.
        return {"type": "number", "minimum": 0, "maximum": r.choice([1, 10, 100]),
                "multipleOf": r.choice([0.5, 0.25, 0.125])}
    if k == 3:
        return {"enum": r.choice(ENUMS)}
    if k == 4:
        return {"type": "boolean"}
    return {"type": "string", "enum": r.sample(WORDS, 3)}


def node(r, depth, defs):
    k = r.randrange(10) if depth < 3 else 0
    if k <= 4:
        return leaf(r)
    if k <= 6:
        return {"type": "array", "items": node(r, depth + 1, defs),
                "minItems": r.choice([0, 1]), "maxItems": r.choice([1, 2, 3])}
    if k == 7 and depth < 2:
        name = f"D{len(defs)}"
        defs[name] = None  # reserved: nested definitions get other names
        defs[name] = obj(r, depth + 1, defs)
        return {"$ref": f"#/$defs/{name}"}
    return obj(r, depth + 1, defs)


def obj(r, depth, defs):
    keys = r.sample(WORDS, r.randrange(1, 5))
    props = {k: node(r, depth, defs) for k in keys}
    req = [k for k in keys if r.random() < 0.7]
    return {"type": "object", "properties": props, "required": req, "additionalProperties": False}


def schema(r):
    defs = {}
    s = obj(r, 0, defs) if r.random() < 0.85 else node(r, 1, defs)
    if defs:
        s["$defs"] = defs
    return s


def run(i):
    r = random.Random(seed * 1000 + i)
    s = schema(r)
    prompt = f"Describe {r.choice(SUBJECTS)} as JSON."
    req = dict(model=model, messages=[{"role": "user", "content": prompt}], temperature=1.0,
               max_tokens=500, seed=i,
               response_format={"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": s}})
    t0 = time.time()
    resp = client.chat.completions.create(**req)
    text = resp.choices[0].message.content
    try:
        value = json.loads(text)
        jsonschema.Draft202012Validator(s).validate(value)
        return i, None, resp.usage.completion_tokens, time.time() - t0
    except Exception as e:  # parse or validation failure
        return i, f"case {i}: {type(e).__name__}: {str(e)[:200]}\n  schema {json.dumps(s)}\n  output {text!r} ({resp.choices[0].finish_reason})", resp.usage.completion_tokens, time.time() - t0


start = time.time()
failures, tokens = [], 0
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    for i, err, n, _ in pool.map(run, range(cases)):
        tokens += n
        if err:
            failures.append(err)
wall = time.time() - start
for f in failures[:10]:
    print(f, file=sys.stderr)
print(f"structured: {cases - len(failures)}/{cases} outputs parse and validate "
      f"({tokens} tokens in {wall:.1f} s)")
sys.exit(1 if failures else 0)
