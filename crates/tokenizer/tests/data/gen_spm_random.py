"""Random texts encoded by SentencePiece itself with Mistral's own tokenizer
files (as shipped in the PyPI package mistral-common), for tests/spm_random.rs.

    pip install sentencepiece mistral-common==1.13.1
    python3 gen_spm_random.py > spm_random.json
"""
import json, os, random
import sentencepiece as spm
import mistral_common

data = os.path.join(os.path.dirname(mistral_common.__file__), "data")
models = {
    "ggml-vocab-mistral-v1.gguf": "tokenizer.model.v1",
    "ggml-vocab-mistral-v3.gguf": "mistral_instruct_tokenizer_240323.model.v3",
}
rng = random.Random(20261123)
words = open("../../../../tests/data/text/gpl-3.txt", encoding="utf-8").read().split()
blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
          (0x1780, 0x17FF), (0x2000, 0x206F), (0x2190, 0x22FF), (0x3040, 0x30FF), (0x4E00, 0x9FFF),
          (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0x1D400, 0x1D7FF), (0x300, 0x36F)]

def random_text():
    kind = rng.randrange(3)
    if kind == 0:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789 .,;:'\"!?()[]{}<>-_/\\@#$%^&*+=~`|\n\t")
                       for _ in range(rng.randrange(1, 60)))
    if kind == 1:
        out = []
        for _ in range(rng.randrange(1, 25)):
            lo, hi = rng.choice(blocks)
            out.append(chr(rng.randint(lo, hi)))
            if rng.random() < 0.2:
                out.append(" " * rng.randrange(1, 3))
        return "".join(out)
    seps = [" ", " ", " ", "  ", "\n", "\n\n", "\t", "   "]
    return "".join(w + rng.choice(seps) for w in rng.sample(words, rng.randrange(1, 15))).rstrip(" ") if rng.random() < 0.5 \
        else rng.choice(seps) + " ".join(rng.sample(words, rng.randrange(1, 15)))

texts = [random_text() for _ in range(300)]
out = {}
for gguf, model in models.items():
    sp = spm.SentencePieceProcessor(model_file=os.path.join(data, model))
    out[gguf] = [{"text": t, "ids": sp.encode(t)} for t in texts]
print(json.dumps(out, ensure_ascii=False))
