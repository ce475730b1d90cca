#!/usr/bin/env python3
"""Make the Hugging Face parity fixtures of tokbench-worker (worker/tests/fixtures/).

Seven small random checkpoints (vocabulary VOCAB = 512, hidden size 32, 2 layers, 4 heads):

  opt_pre   OPT pre-LN
  opt_post  OPT in the opt-350m style (post-LN, word_embed_proj_dim != hidden_size, so
            project_in/project_out)
  gpt2      GPT-2
  llama     Llama 3 style: GQA (2 kv heads), rope_type "llama3" (original_max_position_embeddings
            16, so the scaling changes the rotary frequencies), untied lm_head, two EOS ids
  qwen2     Qwen2: q/k/v biases, tied embeddings, GQA
  qwen3     Qwen3: q_norm/k_norm, head_dim 16 != hidden_size / heads, tied embeddings, GQA
  mistral   Mistral: MQA (1 kv head), no sliding window, untied lm_head

OPT and GPT-2 folders hold:

  config.json                 transformers' config
  model.safetensors           save_pretrained() (safetensors)
  pytorch_model.bin           the same weights as a PyTorch pickle (torch.save of the state dict,
                              the file save_pretrained(safe_serialization=False) used to write)
  expected_logits.safetensors "logits" [3, T, vocab] f32: transformers' logits of a left-padded
                              batch of 3 prompts of different lengths (every position; the pads'
                              rows are meaningless and not compared)
  expected.json               the batch (input_ids, attention_mask, pad id), and the greedy
                              continuations of transformers' generate() with the same padding:
                              `greedy_ignore_eos` (EOS disabled, exactly max_new_tokens) and
                              `greedy_with_eos` (EOS on; transformers fills finished rows with pad)

The Llama-family folders (llama, qwen2, qwen3, mistral) hold, as a Hub checkpoint does:

  config.json                 save_pretrained(); transformers 5 writes the rotary settings as
                              "rope_parameters" {rope_theta, rope_type, ...}, not the older
                              top-level "rope_theta" / "rope_scaling"
  model-0000k-of-0000n.safetensors, model.safetensors.index.json
                              save_pretrained(max_shard_size=SHARD_SIZE): sharded safetensors (no
                              pytorch_model.bin); tied checkpoints (qwen2, qwen3) have no lm_head
  generation_config.json      ours: bos_token_id, eos_token_id as a list (llama: the fixture's
                              EOS and 2; qwen3: the fixture's EOS and <|endoftext|>), pad_token_id
                              (qwen)
  tokenizer.json              a 512-id BPE trained on CORPUS with the `tokenizers` library, in the
                              layout of the real family: llama = Llama 3 byte-level BPE; mistral =
                              SentencePiece-style BPE with byte fallback (<0x00>..<0xFF>) and
                              Metaspace; both with <unk>/<s>/</s> = 0/1/2 and a post-processor
                              that prepends <s>. qwen2/qwen3 = Qwen2's NFC + byte-level BPE,
                              <|endoftext|> = 511, nothing prepended
  tokenizer_config.json       add_bos_token (true for llama/mistral, false for qwen), the special
                              tokens, tokenizer_class
  expected_logits.safetensors as above (forward with the position ids generate() uses, which
                              expected.json records as `position_ids`)
  expected.json               as above, plus `position_ids`, `eos_token_ids` (all of
                              generation_config.json's; greedy_with_eos stops at any of them),
                              `text_prompts` and `text_prompt_ids`: TEXT_PROMPTS through
                              AutoTokenizer.from_pretrained(folder) with add_special_tokens=True
                              (BOS first for llama/mistral, none for qwen)

Pad ids: OPT 1, GPT-2 its original EOS (511), llama/mistral 0 (<unk>), qwen 511 (<|endoftext|>,
also the tokenizer's pad). Prompts start with BOS except for GPT-2 and Qwen. The fixture's EOS
(config.json's eos_token_id, expected.json's eos_token_id) is the 4th greedy token of prompt 0,
so that one sequence stops early; it is not the tokenizer's eos_token.

For the Llama-family fixtures the script also checks: each padded row's logits and greedy tokens
equal its prompt's run alone; AutoModelForCausalLM.from_pretrained(folder) gives exactly the
same logits, and generate() with the folder's generation_config gives greedy_with_eos;
AutoTokenizer gives the same ids as the bare tokenizer.json (what the tokenizers crate loads)
and decodes them back. For llama it prints the rotary frequencies with and without the llama3
scaling.

Weights are random but not HF's tiny init: a larger std (0.3) and random biases (0.05 randn) /
layer norm and RMSNorm weights (1 + 0.1 randn, q_norm/k_norm included), so that every parameter
(bias, norm, projections) changes the logits and a loading mistake cannot hide behind
near-uniform logits.

Run (CPU only, a few seconds per fixture):
    python3 -m venv /root/venvs/fixtures
    /root/venvs/fixtures/bin/pip install -r scripts/requirements-fixtures.txt  # tokenizers comes with transformers
    /root/venvs/fixtures/bin/python scripts/make_fixtures.py [--only NAME...] [--out DIR]
`--only NAME...` writes just those fixtures (e.g. `--only llama qwen2 qwen3 mistral`) and leaves
the other folders alone; `--out DIR` writes somewhere else (e.g. to diff a regeneration).
The logits depend on the CPU at the 1e-6 level: a regeneration on another machine changes
expected_logits.safetensors slightly (the tests allow 1e-4); the rest came out bit-identical.
Then check `du -sh worker/tests/fixtures` stays well under 4 MB and commit the folders.

How torch was installed (only PyPI is reachable; no download.pytorch.org CPU index):
`pip install --no-deps torch==2.11.0` alone does NOT work: `import torch` fails with
"libcublasLt.so.*[0-9] not found" because PyPI's Linux torch wheel is the CUDA build and
preloads its CUDA libraries even on a CPU-only machine. `pip install torch==2.11.0` with its
dependencies (the nvidia-* CUDA 13 wheels, ~4.7 GB venv, ~2 minutes at ~40 MB/s) works, and
runs fine on CPU without a GPU.
"""

import argparse
import json
import os
import shutil
import sys
import unicodedata

import torch
import transformers
from safetensors.torch import save_file
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, OPTConfig, OPTForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "worker", "tests", "fixtures")
VOCAB = 512
MAX_NEW_TOKENS = 8
PROMPT_LENGTHS = [5, 9, 3]
# Small enough that every Llama-family checkpoint is split into several safetensors shards.
SHARD_SIZE = "100KB"


def randomize(model, std):
    """Random values for every parameter, biases and layer norms included."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # OPT: *layer_norm.weight; GPT-2: ln_1/ln_2/ln_f; Llama/Qwen/Mistral RMSNorm:
            # input_layernorm, post_attention_layernorm, model.norm, Qwen3's q_norm/k_norm.
            if (name.endswith("layer_norm.weight") or ".ln_" in name and name.endswith(".weight")
                    or name.endswith("ln_f.weight") or name.endswith("norm.weight")):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))


def prompts(first_token, avoid):
    g = torch.Generator().manual_seed(99)
    out = []
    for n in PROMPT_LENGTHS:
        ids = []
        while len(ids) < n:
            t = int(torch.randint(3, VOCAB, (1,), generator=g))
            if t not in avoid:
                ids.append(t)
        if first_token is not None:
            ids[0] = first_token
        out.append(ids)
    return out


def left_pad(batch, pad_id):
    t = max(len(p) for p in batch)
    ids = [[pad_id] * (t - len(p)) + p for p in batch]
    mask = [[0] * (t - len(p)) + [1] * len(p) for p in batch]
    return torch.tensor(ids), torch.tensor(mask)


def gpt2_position_ids(mask):
    # What transformers' generate() passes GPT-2 for a left-padded batch.
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def generate_position_ids(mask):
    # What transformers 5's generate() passes Llama/Qwen/Mistral for a left-padded batch (pads
    # get position 0; their rows are masked out anyway). Without it, forward() would use
    # 0..T-1 for every row, pads included.
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 0)


def make(name, model, pad_id, first_token, hf=None):
    """Write one fixture folder. `hf` (the Llama-family fixtures only; None for OPT/GPT-2, whose
    folders are unchanged) holds: `special_ids` (ids the chosen EOS must not be), `extra_eos`
    (further EOS ids of generation_config.json), `generation_config` (its other keys),
    `tokenizer` (a function writing tokenizer.json and tokenizer_config.json into a folder)."""
    model.eval()
    d = os.path.join(OUT, name)
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)

    batch = prompts(first_token, {pad_id, model.config.eos_token_id})
    ids, mask = left_pad(batch, pad_id)
    kwargs = {}
    if isinstance(model, GPT2LMHeadModel):
        kwargs["position_ids"] = gpt2_position_ids(mask)
    elif hf is not None:
        kwargs["position_ids"] = generate_position_ids(mask)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, **kwargs).logits.float().contiguous()

    def greedy(eos):
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=MAX_NEW_TOKENS,
                min_new_tokens=0,
                do_sample=False,
                pad_token_id=pad_id,
                eos_token_id=eos,
            )
        return out[:, ids.shape[1]:].tolist()

    # An eos id no model output can reach (out of vocab) turns EOS stopping off.
    no_eos = greedy(VOCAB + 10)
    assert all(len(r) == MAX_NEW_TOKENS for r in no_eos), no_eos
    # EOS = the 4th greedy token of prompt 0 (if it is not special), so that the with-EOS
    # fixture really stops one sequence early while the others go on.
    eos_id = no_eos[0][3]
    if eos_id in (pad_id, first_token) or eos_id in batch[0]:
        sys.exit(f"{name}: chosen eos {eos_id} collides with the pad/bos id or the prompt; change the seed")
    if hf is not None and eos_id in hf["special_ids"]:
        sys.exit(f"{name}: chosen eos {eos_id} is a special token id; change the seed")
    # All EOS ids (generation_config.json's list): the chosen one first, then the fixed ones.
    eos_ids = [eos_id] + (list(hf["extra_eos"]) if hf is not None else [])
    model.config.eos_token_id = eos_id
    model.generation_config.eos_token_id = eos_id
    # generate() stops early when every row has finished: pad to full length like the rows
    # that finished before the others. The Llama-family fixtures stop at any of eos_ids, as
    # generate() does with their generation_config.json.
    with_eos = [r + [pad_id] * (MAX_NEW_TOKENS - len(r)) for r in greedy(eos_id if hf is None else eos_ids)]
    for row_no, row_eos in zip(no_eos, with_eos):
        hits = [i for i, t in enumerate(row_no) if t in eos_ids]
        k = hits[0] + 1 if hits else MAX_NEW_TOKENS
        assert row_eos == row_no[:k] + [pad_id] * (MAX_NEW_TOKENS - k), (row_no, row_eos)
    assert eos_id in no_eos[0][: MAX_NEW_TOKENS - 1]

    if hf is None:
        model.save_pretrained(d)  # config.json (with the chosen eos) + model.safetensors
    else:
        # config.json + model-0000k-of-0000n.safetensors + model.safetensors.index.json
        model.save_pretrained(d, max_shard_size=SHARD_SIZE)
    p = os.path.join(d, "generation_config.json")
    if os.path.exists(p):
        os.remove(p)
    if hf is None:
        torch.save(model.state_dict(), os.path.join(d, "pytorch_model.bin"))
    save_file({"logits": logits}, os.path.join(d, "expected_logits.safetensors"))
    expected = {
        "model": name,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "prompts": batch,
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "pad_token_id": pad_id,
        "eos_token_id": eos_id,
        "max_new_tokens": MAX_NEW_TOKENS,
        "greedy_ignore_eos": no_eos,
        "greedy_with_eos": with_eos,
    }
    if hf is not None:
        check_rows_alone(name, model, batch, logits, no_eos)
        shards = sorted(f for f in os.listdir(d) if f.startswith("model-") and f.endswith(".safetensors"))
        assert len(shards) >= 2 and os.path.exists(os.path.join(d, "model.safetensors.index.json")), shards
        assert not os.path.exists(os.path.join(d, "model.safetensors"))
        gen = dict(hf["generation_config"], eos_token_id=eos_ids)
        with open(os.path.join(d, "generation_config.json"), "w") as f:
            json.dump(gen, f, indent=2)
            f.write("\n")
        hf["tokenizer"](d)
        text_ids = text_prompt_ids(d)
        expected["position_ids"] = kwargs["position_ids"].tolist()
        expected["eos_token_ids"] = eos_ids
        expected["text_prompts"] = TEXT_PROMPTS
        expected["text_prompt_ids"] = text_ids
        check_reload(name, d, ids, mask, kwargs, logits, pad_id, eos_ids, with_eos)
        print(name, "shards:", shards, "text_prompt_ids:", text_ids)
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print(name, "greedy:", no_eos, "with eos", eos_ids if hf is not None else eos_id, ":", with_eos)


def check_rows_alone(name, model, batch, logits, no_eos):
    """Each padded row's logits and greedy tokens equal those of its prompt run alone, so the
    fixture's padding / position ids are what a per-sequence engine must reproduce."""
    worst = 0.0
    for row, prompt in enumerate(batch):
        one = torch.tensor([prompt])
        with torch.no_grad():
            alone = model(input_ids=one).logits.float()[0]
            out = model.generate(input_ids=one, attention_mask=torch.ones_like(one), max_new_tokens=MAX_NEW_TOKENS,
                                 min_new_tokens=0, do_sample=False, pad_token_id=0, eos_token_id=VOCAB + 10)
        worst = max(worst, (logits[row, logits.shape[1] - len(prompt):] - alone).abs().max().item())
        assert out[0, len(prompt):].tolist() == no_eos[row], (name, row)
    assert worst < 1e-4, (name, worst)
    print(f"{name}: padded rows vs each prompt alone: max |logit diff| {worst:.2e}, same greedy tokens")


def check_reload(name, d, ids, mask, kwargs, logits, pad_id, eos_ids, with_eos):
    """The folder alone (sharded weights, generation_config.json) reproduces the fixture."""
    m = transformers.AutoModelForCausalLM.from_pretrained(d).eval()
    assert m.dtype == torch.float32, m.dtype
    with torch.no_grad():
        again = m(input_ids=ids, attention_mask=mask, **kwargs).logits.float()
        assert list(m.generation_config.eos_token_id) == eos_ids, m.generation_config.eos_token_id
        out = m.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS, pad_token_id=pad_id)
    diff = (again - logits).abs().max().item()
    assert diff == 0, (name, diff)
    rows = [r + [pad_id] * (MAX_NEW_TOKENS - len(r)) for r in out[:, ids.shape[1]:].tolist()]
    assert rows == with_eos, (name, rows, with_eos)
    print(f"{name}: reloaded with AutoModelForCausalLM: max |logit diff| {diff}, generate() with the folder's "
          f"generation_config reproduces greedy_with_eos")


def text_prompt_ids(d):
    """TEXT_PROMPTS through transformers' AutoTokenizer (add_special_tokens=True, the default),
    checked against the plain tokenizer.json (what the tokenizers crate loads) and decoded back."""
    from tokenizers import Tokenizer
    tok = transformers.AutoTokenizer.from_pretrained(d)
    raw = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    out = []
    for text in TEXT_PROMPTS:
        a = tok(text)["input_ids"]
        b = raw.encode(text).ids
        assert a == b, (d, type(tok).__name__, text, a, b)
        assert all(0 <= t < VOCAB for t in a)
        back = tok.decode(a, skip_special_tokens=True)
        assert back == unicodedata.normalize("NFC", text) or back == text, (text, back)
        out.append(a)
    print(f"{os.path.basename(d)}: AutoTokenizer -> {type(tok).__name__}, vocab {len(tok)}, "
          f"bos {tok.bos_token!r}/{tok.bos_token_id} eos {tok.eos_token!r}/{tok.eos_token_id} "
          f"pad {tok.pad_token!r}/{tok.pad_token_id}; same ids as tokenizer.json; decodes back")
    return out


# ---- tokenizers of the Llama-family fixtures -------------------------------------------------

# A fixed English text to train the tiny BPE vocabularies on (deterministic; change it and the
# tokenizers, hence text_prompt_ids, change).
CORPUS = """\
The benchmark loads a model, reads a batch of prompts and generates tokens until every
sequence has finished or reached its maximum length. It measures the time to the first token,
the time per output token and the number of tokens per second, and it writes the results to a
report. A prompt is a list of token ids; the tokenizer turns text into those ids and back.
Left padding puts the pad tokens before the prompt, so that the last position of every row is
the last token of its prompt, and the attention mask tells the model which positions are real.
Rotary position embeddings rotate the queries and keys by an angle that grows with the position;
grouped query attention shares each key and value head between several query heads.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
Sphinx of black quartz, judge my vow! How vexingly quick daft zebras jump.
Numbers such as 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 42, 100, 2024 and 12345 appear in text too.
Hello world! Hello, tokenizer. Greedy decoding picks the most likely next token at every step;
sampling draws it from the distribution instead. When the end of sequence token appears, the
sequence stops, and the remaining positions of its row are filled with the pad token.
Weights are stored in safetensors files, split into shards with an index that maps every tensor
name to the file holding it. The configuration file names the architecture, the hidden size,
the number of layers, heads and key value heads, the vocabulary size and the normalisation epsilon.
"""

# The pre-tokenizer regexes of Llama 3's and Qwen2's tokenizer.json.
LLAMA3_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# Encoded with each fixture's tokenizer into expected.json's text_prompt_ids. The third has
# non-ASCII text (byte-level / byte-fallback pieces) and a decomposed "e" + U+0301 that Qwen's
# NFC normalizer composes.
TEXT_PROMPTS = ["Hello world! The quick brown fox jumps over the lazy dog.",
                "tokbench counts 12345 tokens per second",
                "na\u00efve cafe\u0301: 3\u00b0C \u00fcber alles"]


def corpus_lines():
    return [line for line in CORPUS.splitlines() if line.strip()]


def byte_level_bpe(split_regex, specials, size, normalizer=None):
    """A GPT-2-style byte-level BPE (Llama 3 / Qwen2 layout) trained on CORPUS to `size` ids,
    `specials` first."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split_regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_lines(), trainer)
    assert tok.get_vocab_size() == size, f"CORPUS too small: {tok.get_vocab_size()} < {size} ids"
    return tok


def write_tokenizer_config(d, cfg):
    base = {"model_max_length": 64, "clean_up_tokenization_spaces": False}
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(dict(base, **cfg), f, indent=2)
        f.write("\n")


def tokenizer_llama3(d):
    """Llama 3's layout: byte-level BPE with its split regex, BOS added by a TemplateProcessing
    post-processor; here with <unk>/<s>/</s> = 0/1/2 (Llama 3 has no <unk>, and its BOS is
    <|begin_of_text|>)."""
    from tokenizers import processors
    tok = byte_level_bpe(LLAMA3_SPLIT, ["<unk>", "<s>", "</s>"], VOCAB)
    assert [tok.token_to_id(t) for t in ("<unk>", "<s>", "</s>")] == [0, 1, 2]
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1",
                                      special_tokens=[("<s>", 1)]),
    ])
    tok.save(os.path.join(d, "tokenizer.json"))
    write_tokenizer_config(d, {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": True,
                               "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                               "unk_token": "<unk>", "pad_token": None})


def tokenizer_sentencepiece(d):
    """Mistral / Llama 2's layout (a SentencePiece BPE as transformers' LlamaTokenizer writes
    it): <unk>/<s>/</s> = 0/1/2, the 256 byte-fallback pieces <0x00>..<0xFF> = 3..258, then
    BPE pieces over "\u2581"-marked words (Metaspace), trained on CORPUS; BOS added by a
    TemplateProcessing post-processor."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    specials = ["<unk>", "<s>", "</s>"]
    t = Tokenizer(models.BPE(unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    t.train_from_iterator(corpus_lines(), trainers.BpeTrainer(vocab_size=VOCAB - 256, special_tokens=specials,
                                                              show_progress=False))
    assert t.get_vocab_size() == VOCAB - 256, f"CORPUS too small: {t.get_vocab_size()}"
    m = json.loads(t.to_str())["model"]
    vocab = {s: i for i, s in enumerate(specials)}
    vocab.update({f"<0x{b:02X}>": len(specials) + b for b in range(256)})
    for _, piece in sorted((i, p) for p, i in m["vocab"].items() if p not in specials):
        vocab[piece] = len(vocab)
    assert len(vocab) == VOCAB
    merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1, right=0)])
    tok.post_processor = processors.TemplateProcessing(single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1",
                                                       special_tokens=[("<s>", 1)])
    assert tok.get_vocab_size() == VOCAB
    tok.save(os.path.join(d, "tokenizer.json"))
    write_tokenizer_config(d, {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
                               "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
                               "legacy": False})


def tokenizer_qwen2(d):
    """Qwen2's layout (Qwen3 uses the same): NFC, byte-level BPE with Qwen's split regex, no
    BOS added, <|endoftext|> = the last id (VOCAB - 1), also the pad token."""
    from tokenizers import AddedToken, normalizers, processors
    tok = byte_level_bpe(QWEN2_SPLIT, [], VOCAB - 1, normalizer=normalizers.NFC())
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    assert tok.token_to_id("<|endoftext|>") == VOCAB - 1 and tok.get_vocab_size() == VOCAB
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.save(os.path.join(d, "tokenizer.json"))
    write_tokenizer_config(d, {"tokenizer_class": "Qwen2Tokenizer", "add_bos_token": False,
                               "add_prefix_space": False, "bos_token": None, "eos_token": "<|endoftext|>",
                               "pad_token": "<|endoftext|>", "unk_token": None, "errors": "replace",
                               "split_special_tokens": False})


def check_llama3_rope(model):
    """The llama3 rope_type really rescales the rotary frequencies of this tiny config."""
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    theta = cfg.rope_parameters["rope_theta"]
    plain = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    scaled = model.model.rotary_emb.inv_freq.float()
    print("llama: inv_freq unscaled", [f"{x:.6g}" for x in plain.tolist()])
    print("llama: inv_freq llama3  ", [f"{x:.6g}" for x in scaled.tolist()])
    changed = (scaled - plain).abs() > 1e-12 * plain
    print(f"llama: llama3 rope scaling changes {int(changed.sum())} of {len(plain)} frequencies")
    assert changed.any()


def llama_family():
    """The Llama-family fixtures: (name, config, model class, pad id, first token, hf spec)."""
    eot = VOCAB - 1  # Qwen's <|endoftext|>
    small = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=64)
    llama = LlamaConfig(num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=500000.0,
                        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
                        tie_word_embeddings=False, attention_bias=False, bos_token_id=1, eos_token_id=2,
                        pad_token_id=None, **small)
    qwen2 = Qwen2Config(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6,
                        use_sliding_window=False, bos_token_id=eot, eos_token_id=eot, **small)
    qwen3 = Qwen3Config(num_key_value_heads=2, head_dim=16, tie_word_embeddings=True, rope_theta=1e6,
                        rms_norm_eps=1e-6, bos_token_id=eot, eos_token_id=eot, **small)
    mistral = MistralConfig(num_key_value_heads=1, sliding_window=None, tie_word_embeddings=False, rope_theta=1e6,
                            rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=None, **small)
    llama_gen = {"bos_token_id": 1}
    qwen_gen = {"bos_token_id": eot, "pad_token_id": eot}
    return [
        # Llama 3 style: GQA, llama3 rope scaling, two EOS ids in generation_config.json.
        ("llama", llama, LlamaForCausalLM, 0, 1,
         dict(special_ids={0, 1, 2}, extra_eos=[2], generation_config=llama_gen, tokenizer=tokenizer_llama3)),
        # qkv biases, tied embeddings.
        ("qwen2", qwen2, Qwen2ForCausalLM, eot, None,
         dict(special_ids={eot}, extra_eos=[], generation_config=qwen_gen, tokenizer=tokenizer_qwen2)),
        # q_norm/k_norm, head_dim (16) != hidden / heads (8), tied; <|endoftext|> is a 2nd EOS.
        ("qwen3", qwen3, Qwen3ForCausalLM, eot, None,
         dict(special_ids={eot}, extra_eos=[eot], generation_config=qwen_gen, tokenizer=tokenizer_qwen2)),
        # MQA (one kv head), SentencePiece-style tokenizer with byte fallback.
        ("mistral", mistral, MistralForCausalLM, 0, 1,
         dict(special_ids={0, 1, 2}, extra_eos=[], generation_config=llama_gen, tokenizer=tokenizer_sentencepiece)),
    ]


OLD = ["opt_pre", "opt_post", "gpt2"]
NEW = ["llama", "qwen2", "qwen3", "mistral"]


def main():
    global OUT
    ap = argparse.ArgumentParser(description="Write the HF parity fixtures (see the module docstring).")
    ap.add_argument("--only", nargs="+", choices=OLD + NEW, metavar="NAME",
                    help=f"write only these fixtures (of: {' '.join(OLD + NEW)}); default: all")
    ap.add_argument("--out", default=OUT, help="fixtures folder (default: worker/tests/fixtures)")
    args = ap.parse_args()
    OUT = args.out
    only = set(args.only or OLD + NEW)

    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                  ffn_dim=64, pad_token_id=1, bos_token_id=2, eos_token_id=2)
    opt_pre = OPTConfig(hidden_size=32, word_embed_proj_dim=32, do_layer_norm_before=True, **common)
    opt_post = OPTConfig(hidden_size=32, word_embed_proj_dim=16, do_layer_norm_before=False, **common)
    gpt2 = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=None,
                      activation_function="gelu_new", bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)

    for name, cfg in (("opt_pre", opt_pre), ("opt_post", opt_post), ("gpt2", gpt2)):
        if name not in only:
            continue
        is_gpt2 = isinstance(cfg, GPT2Config)
        model = (GPT2LMHeadModel if is_gpt2 else OPTForCausalLM)(cfg)
        randomize(model, 0.3)
        model.tie_weights()
        # GPT-2 has no pad token: transformers pads with EOS (the original id, VOCAB-1, kept as
        # the pad id even after the fixture's EOS id is moved to a token greedy decoding emits).
        pad = cfg.eos_token_id if is_gpt2 else cfg.pad_token_id
        first = None if is_gpt2 else cfg.bos_token_id
        make(name, model, pad, first)

    for name, cfg, cls, pad, first, hf in llama_family():
        if name not in only:
            continue
        model = cls(cfg)
        randomize(model, 0.3)
        model.tie_weights()
        if cfg.tie_word_embeddings:
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        if name == "llama":
            check_llama3_rope(model)
        make(name, model, pad, first, hf)


if __name__ == "__main__":
    main()
