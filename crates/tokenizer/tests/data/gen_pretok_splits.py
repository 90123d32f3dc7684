"""Reference pre-tokenizer splits for tests/pretok.rs, computed with Python's
third-party `regex` module (a different engine from the fancy-regex the crate
uses). Each pre-tokenizer is a list of regexes applied in turn, every piece
being split into its matches and the text between them (llama.cpp's
unicode_regex_split / Hugging Face's Split with behavior "isolated").

    pip install regex && python3 gen_pretok_splits.py > pretok_splits.json
"""
import json
import regex

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3 = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
# Mistral's tekken pattern as written in its tokenizer.json.
TEKKEN = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
PRE = {
    "default": [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
    "gpt2": [GPT2],
    "llama-bpe": [LLAMA3],
    "smollm": [r"\p{N}", GPT2],
    "tekken": [TEKKEN],
}

def split(text, pattern):
    out, pos = [], 0
    for m in regex.finditer(pattern, text):
        if m.start() > pos:
            out.append(text[pos:m.start()])
        if m.end() > m.start():
            out.append(m.group())
        pos = m.end()
    if pos < len(text):
        out.append(text[pos:])
    return out

def pre_tokenize(text, patterns):
    pieces = [text] if text else []
    for p in patterns:
        pieces = [q for piece in pieces for q in split(piece, p)]
    return pieces

raw = open("../../../../tests/data/vocab/ggml-vocab-mistral-v1.gguf.inp", encoding="utf-8").read()
texts = raw.split("\n__ggml_vocab_test__\n")[:-1]
texts += [
    "ÉCOLE école HTTPServer iPhone XMLHttpRequest McDonald's ǅungla",
    "don't I'LL WE'RE 'S it's they've",
    "12345678 1,000,000 3.14159 ١٢٣ ⅷ",
    "  leading\n\n\ntrailing  \t",
    "path/to/file\r\nnext line/\nend",
    "こんにちは世界 안녕하세요 مرحبا  Ελληνικά",
    "a\u00a0b\u2003c",
    "<|im_start|>user\nHi!<|im_end|>",
    "e\u0301te\u0301 naïve",
    "$100 +50% <=> ^~| a|b",
]
print(json.dumps(
    {name: [{"text": t, "pieces": pre_tokenize(t, pats)} for t in texts] for name, pats in PRE.items()},
    ensure_ascii=False, indent=0))
