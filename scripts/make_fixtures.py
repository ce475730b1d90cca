#!/usr/bin/env python3
"""Make the Hugging Face parity fixtures of tokbench-worker (worker/tests/fixtures/).

For three small random checkpoints -- OPT pre-LN, OPT in the opt-350m style (post-LN,
word_embed_proj_dim != hidden_size, so project_in/project_out), GPT-2 -- this writes, per model,
a folder with:

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

Weights are random but not HF's tiny init: a larger std and random biases / layer norm
parameters, so that every parameter (bias, LN affine, projections) changes the logits and a
loading mistake cannot hide behind near-uniform logits.

Run (CPU only, a few seconds):
    python3 -m venv /root/venvs/fixtures
    /root/venvs/fixtures/bin/pip install -r scripts/requirements-fixtures.txt
    /root/venvs/fixtures/bin/python scripts/make_fixtures.py
then check `du -sh worker/tests/fixtures` stays well under 2 MB and commit the folder.

How torch was installed (only PyPI is reachable; no download.pytorch.org CPU index):
`pip install --no-deps torch==2.11.0` alone does NOT work: `import torch` fails with
"libcublasLt.so.*[0-9] not found" because PyPI's Linux torch wheel is the CUDA build and
preloads its CUDA libraries even on a CPU-only machine. `pip install torch==2.11.0` with its
dependencies (the nvidia-* CUDA 13 wheels, ~4.7 GB venv, ~2 minutes at ~40 MB/s) works, and
runs fine on CPU without a GPU.
"""

import json
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, OPTConfig, OPTForCausalLM

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "worker", "tests", "fixtures")
VOCAB = 512
MAX_NEW_TOKENS = 8
PROMPT_LENGTHS = [5, 9, 3]


def randomize(model, std):
    """Random values for every parameter, biases and layer norms included."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight") or ".ln_" in name and name.endswith(".weight") or name.endswith("ln_f.weight"):
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


def make(name, model, pad_id, first_token):
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
    model.config.eos_token_id = eos_id
    model.generation_config.eos_token_id = eos_id
    # generate() stops early when every row has finished: pad to full length like the rows
    # that finished before the others.
    with_eos = [r + [pad_id] * (MAX_NEW_TOKENS - len(r)) for r in greedy(eos_id)]
    for row_no, row_eos in zip(no_eos, with_eos):
        k = row_no.index(eos_id) + 1 if eos_id in row_no else MAX_NEW_TOKENS
        assert row_eos == row_no[:k] + [pad_id] * (MAX_NEW_TOKENS - k), (row_no, row_eos)
    assert eos_id in no_eos[0][: MAX_NEW_TOKENS - 1]

    model.save_pretrained(d)  # config.json (with the chosen eos) + model.safetensors
    p = os.path.join(d, "generation_config.json")
    if os.path.exists(p):
        os.remove(p)
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
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print(name, "greedy:", no_eos, "with eos", eos_id, ":", with_eos)


def main():
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                  ffn_dim=64, pad_token_id=1, bos_token_id=2, eos_token_id=2)
    opt_pre = OPTConfig(hidden_size=32, word_embed_proj_dim=32, do_layer_norm_before=True, **common)
    opt_post = OPTConfig(hidden_size=32, word_embed_proj_dim=16, do_layer_norm_before=False, **common)
    gpt2 = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=None,
                      activation_function="gelu_new", bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)

    for name, cfg in (("opt_pre", opt_pre), ("opt_post", opt_post), ("gpt2", gpt2)):
        is_gpt2 = isinstance(cfg, GPT2Config)
        model = (GPT2LMHeadModel if is_gpt2 else OPTForCausalLM)(cfg)
        randomize(model, 0.3)
        model.tie_weights()
        # GPT-2 has no pad token: transformers pads with EOS (the original id, VOCAB-1, kept as
        # the pad id even after the fixture's EOS id is moved to a token greedy decoding emits).
        pad = cfg.eos_token_id if is_gpt2 else cfg.pad_token_id
        first = None if is_gpt2 else cfg.bos_token_id
        make(name, model, pad, first)


if __name__ == "__main__":
    main()
