#!/usr/bin/env python3
"""Give a checkpoint folder made by `tokbench-worker export-weights` (synthetic weights, no
tokenizer) a word-level tokenizer, so that servers which only take text prompts (`transformers
serve`) and tokbench's own server can be driven with the same text and count the same tokens.

    python3 bench/word_tokenizer.py DIR

Writes DIR/tokenizer.json and DIR/tokenizer_config.json. The vocabulary has the config's
`vocab_size` entries: the English words tokbench's load generator builds synthetic prompts from
(loadgen/src/dataset.rs, read from the repository) and the offline bench's words
(worker/src/prompts.rs), then filler words `w<id>`; the config's BOS and EOS ids get
`<|begin_of_text|>` and `<|end_of_text|>`, and the BOS is prepended to every encoding as Llama 3's
tokenizer does. Words split on whitespace and punctuation, so a prompt of n known words is n + 1
tokens (BOS) in every tokenizer library that reads tokenizer.json.
"""
import json
import pathlib
import re
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

ROOT = pathlib.Path(__file__).resolve().parent.parent


def rust_words(path, const):
    src = (ROOT / path).read_text()
    body = re.search(const + r": &\[&str\] = &\[(.*?)\];", src, re.S).group(1)
    return [w.strip() for w in re.findall(r'"([^"]*)"', body)]


def main(out):
    out = pathlib.Path(out)
    cfg = json.loads((out / "config.json").read_text())
    vocab_size = cfg["vocab_size"]
    first = lambda v: v[0] if isinstance(v, list) else v
    bos, eos = first(cfg.get("bos_token_id")), first(cfg.get("eos_token_id"))
    specials = {i: s for i, s in ((bos, "<|begin_of_text|>"), (eos, "<|end_of_text|>")) if i is not None}
    words = list(dict.fromkeys(rust_words("loadgen/src/dataset.rs", "WORDS") + rust_words("worker/src/prompts.rs", "SYNTHETIC_WORDS")))
    vocab, free = {}, iter(i for i in range(vocab_size) if i not in specials)
    vocab["<unk>"] = next(free)
    for w in words:
        vocab[w] = next(free)
    for i in free:
        vocab[f"w{i}"] = i
    for i, s in specials.items():
        vocab[s] = i
    assert len(vocab) == vocab_size, (len(vocab), vocab_size)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    if bos is not None:
        b = specials[bos]
        tok.post_processor = processors.TemplateProcessing(single=f"{b} $A", pair=f"{b} $A $B", special_tokens=[(b, bos)])
    from tokenizers import AddedToken
    tok.add_special_tokens([AddedToken(s, special=True) for s in specials.values()])
    tok.save(str(out / "tokenizer.json"))
    tc = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": cfg.get("max_position_embeddings", 2048), "clean_up_tokenization_spaces": False}
    if bos is not None:
        tc["bos_token"] = specials[bos]
    if eos is not None:
        tc["eos_token"] = specials[eos]
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=1))
    enc = tok.encode("the quick brown fox")
    print(f"{out}: word-level tokenizer, {vocab_size} entries ({len(words)} English words), 'the quick brown fox' -> {enc.ids}")


if __name__ == "__main__":
    main(sys.argv[1])
