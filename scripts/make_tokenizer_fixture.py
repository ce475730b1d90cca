#!/usr/bin/env python3
"""Make worker/tests/data/gpt2_tokenizer_cases.json: token ids of Hugging Face's GPT-2 tokenizer
for tricky strings, to check tokbench's offline GPT-2 tokenizer (tiktoken-rs r50k_base) against.

The reference is transformers' GPT2TokenizerFast built from GPT-2's own encoder.json + vocab.bpe,
the copies shipped inside the tiktoken-rs crate (found in the cargo registry), so no network is
needed and both sides use the same published files.

Run:
    pip install transformers tokenizers        # no torch needed
    python3 scripts/make_tokenizer_fixture.py  # writes the JSON fixture
"""

import glob
import json
import os
import sys

from transformers import GPT2TokenizerFast

CASES = [
    "Hello, my name is",
    " leading space",
    "   three leading spaces and trailing   ",
    "tabs\tand\nnewlines\n\nand\r\nCRLF",
    "multiple     spaces   between words",
    "numbers 1234567 and 3.14159 and -42 and 1,000,000",
    "contractions: don't, I'm, we'll, they've, she'd, it's, you're",
    "UPPER lower MiXeD CamelCaseWords snake_case_words",
    "emoji: 😀🚀👍🏽 family 👨‍👩‍👧‍👦",
    "CJK: 日本語のテキスト 中文文本 한국어",
    "combining marks: e\u0301 a\u0308 n\u0303 (decomposed) vs é ä ñ",
    "accents: café naïve façade Zürich",
    "punctuation!!! ??? ... --- *** (brackets) [x] {y}",
    "code: fn main() { println!(\"hi\"); }",
    "url https://example.com/path?q=1&r=2#frag",
    "<|endoftext|> is just text here",
    "Ωμέγα Greek and Кириллица Cyrillic and עברית Hebrew",
    "",
    " ",
    "a",
    "\n",
    "The president of the United States is",
]


def find_assets():
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    hits = sorted(glob.glob(os.path.join(home, "registry/src/*/tiktoken-rs-*/assets/encoder.json")))
    if not hits:
        sys.exit("tiktoken-rs assets not found under $CARGO_HOME/registry/src; run `cargo fetch` in the repo first")
    d = os.path.dirname(hits[-1])
    return os.path.join(d, "encoder.json"), os.path.join(d, "vocab.bpe")


def main():
    vocab, merges = find_assets()
    # transformers 5 takes the vocabulary and merges as objects (vocab_file= is silently ignored,
    # giving an empty tokenizer); vocab.bpe's first line is a "#version" header.
    with open(vocab, encoding="utf-8") as f:
        encoder = json.load(f)
    with open(merges, encoding="utf-8") as f:
        merge_list = [tuple(line.split(" ")) for line in f.read().split("\n")[1:] if line]
    tok = GPT2TokenizerFast(vocab=encoder, merges=merge_list)
    if len(tok) != 50257 or tok("Hello world", add_special_tokens=False)["input_ids"] != [15496, 995]:
        sys.exit("the reference tokenizer is not GPT-2's (expected 50257 ids and 'Hello world' = [15496, 995])")
    cases = [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in CASES]
    out = {
        "source": "transformers GPT2TokenizerFast from tiktoken-rs assets/encoder.json + vocab.bpe (GPT-2's published files)",
        "transformers_version": __import__("transformers").__version__,
        "cases": cases,
    }
    path = os.path.join(os.path.dirname(__file__), "..", "worker", "tests", "data", "gpt2_tokenizer_cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
