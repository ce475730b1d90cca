#!/usr/bin/env python3
"""tokbench-worker vs Hugging Face transformers (torch) on this machine's CPU, one workload.

Same architecture on both sides (opt-125m by default, or MODEL=smollm2-135m, any OPT, GPT-2,
Llama, Qwen2/3 or Mistral catalog model: tokbench's catalog config, read back from tokbench's own
report, is given to transformers' config class), random weights (synthetic on
tokbench's side, transformers' random init on torch's: speed does not depend on the values),
batch 4, prompts of exactly 32 tokens, 64 new tokens, greedy, EOS ignored
(min_new_tokens = max_new_tokens), one warm-up then the median of 3 timed runs, f32.

tokens/s on both sides = batch * new_tokens / wall time of one whole generation (prefill
included). Run through scripts/bench-cpu.sh, which builds the release binary first:
    scripts/bench-cpu.sh                 # or: TOKBENCH_WORKER=target/release/tokbench-worker python3 scripts/bench_cpu_vs_torch.py
Environment: MODEL (opt-125m), BATCH (4), INPUT_LEN (32), NEW_TOKENS (64), REPS (3), THREADS (all cores;
given to torch.set_num_threads and to tokbench as RAYON_NUM_THREADS).
Run it on an otherwise idle machine: with other processes competing for the cores, torch's
OpenMP threads spin-wait and its numbers collapse far more than tokbench's.

Python deps: torch + transformers (see scripts/requirements-fixtures.txt for how torch installs
from PyPI on a CPU-only machine).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import transformers

WORKER = os.environ.get("TOKBENCH_WORKER", "target/release/tokbench-worker")
MODEL = os.environ.get("MODEL", "opt-125m")
BATCH = int(os.environ.get("BATCH", "4"))
INPUT_LEN = int(os.environ.get("INPUT_LEN", "32"))
NEW = int(os.environ.get("NEW_TOKENS", "64"))
REPS = int(os.environ.get("REPS", "3"))
THREADS = int(os.environ.get("THREADS", str(os.cpu_count() or 1)))


def run_tokbench(out_json):
    cmd = [WORKER, "bench", "--model", MODEL, "--weights", "synthetic", "--device", "cpu", "--dtype", "f32",
           "--batch-size", str(BATCH), "--num-prompts", str(BATCH), "--input-len", str(INPUT_LEN),
           "--max-tokens", str(NEW), "--warmup", "1", "--repetitions", str(REPS), "--json", out_json, "--quiet"]
    # candle sizes its thread pool from RAYON_NUM_THREADS: same thread count as torch.
    env = dict(os.environ, RAYON_NUM_THREADS=str(THREADS))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"tokbench-worker failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    with open(out_json) as f:
        return json.load(f)


def run_torch(cfg):
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    if cfg["model_type"] == "opt":
        keys = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "ffn_dim", "max_position_embeddings",
                "word_embed_proj_dim", "do_layer_norm_before", "activation_function", "enable_bias",
                "layer_norm_elementwise_affine", "pad_token_id", "bos_token_id", "eos_token_id"]
        conf = transformers.OPTConfig(**{k: cfg[k] for k in keys if k in cfg})
        model = transformers.OPTForCausalLM(conf)
        pad = cfg["pad_token_id"]
    elif cfg["model_type"] in ("llama", "mistral", "qwen2", "qwen3"):
        # The rotary families: tokbench's config as written in its report, given to AutoConfig as is.
        fields = {k: v for k, v in cfg.items() if k != "model_type" and v is not None}
        conf = transformers.AutoConfig.for_model(cfg["model_type"], **fields)
        model = transformers.AutoModelForCausalLM.from_config(conf)
        eos = cfg.get("eos_token_id")
        pad = cfg.get("pad_token_id") or (eos[0] if isinstance(eos, list) else eos) or 0
    else:
        keys = ["vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
                "layer_norm_epsilon", "bos_token_id", "eos_token_id"]
        conf = transformers.GPT2Config(**{k: cfg[k] for k in keys if k in cfg})
        model = transformers.GPT2LMHeadModel(conf)
        pad = cfg["eos_token_id"]
    model = model.to(torch.float32).eval()
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(100, min(50000, cfg["vocab_size"]), (BATCH, INPUT_LEN), generator=g)
    mask = torch.ones_like(ids)
    kw = dict(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1, use_cache=True, pad_token_id=pad,
              max_new_tokens=NEW, min_new_tokens=NEW)
    times = []
    with torch.inference_mode():
        model.generate(**kw)  # warm-up
        for _ in range(REPS):
            t = time.perf_counter()
            out = model.generate(**kw)
            times.append(time.perf_counter() - t)
            assert out.shape == (BATCH, INPUT_LEN + NEW), out.shape
    med = statistics.median(times)
    return {"tokens_per_second": BATCH * NEW / med, "median_seconds": med, "runs_seconds": times,
            "attn": getattr(model.config, "_attn_implementation", "?")}


def main():
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        rep = run_tokbench(os.path.join(d, "tokbench.json"))
    im = rep["inference_metrics"]
    tb = im["tokens_per_second"]
    hf = run_torch(rep["model_properties"]["config"])
    cpu = rep["environment"]["cpu"]
    print(f"machine      {cpu}; torch {torch.__version__} ({THREADS} threads), transformers {transformers.__version__}")
    print(f"workload     {MODEL} f32, random weights, batch {BATCH}, input {INPUT_LEN} tokens, {NEW} new tokens, greedy, EOS ignored, warm-up 1, median of {REPS}")
    print(f"tokbench     {tb:8.1f} tokens/s  (median {im['total_inference_time_seconds']:.3f} s/run; runs {[round(r['total_inference_time_seconds'], 3) for r in rep['repetitions']]} s; "
          f"prefill {im['prefill_tokens_per_second']:.0f} tok/s, decode {im['decode_tokens_per_second']:.1f} tok/s, "
          f"TTFT p50 {im['ttft_ms']['p50']:.1f} ms, ITL p50 {im['inter_token_latency_ms']['p50']:.1f} ms)")
    print(f"torch        {hf['tokens_per_second']:8.1f} tokens/s  (median {hf['median_seconds']:.3f} s/run; runs {[round(t, 3) for t in hf['runs_seconds']]} s; attention {hf['attn']})")
    print(f"ratio        {tb / hf['tokens_per_second']:.2f}x  (tokbench / torch, higher is better for tokbench)")
    load_after, cores = os.getloadavg()[0], os.cpu_count() or 1
    print(f"load average {load_before:.1f} before, {load_after:.1f} after ({cores} cores)")
    if max(load_before, load_after) > cores:
        print("WARNING: other processes compete for the cores; figures are noisy. With OpenMP spin-waiting torch can "
              "collapse under contention: compare with OMP_WAIT_POLICY=PASSIVE, THREADS=1, or on an idle machine.")


if __name__ == "__main__":
    main()
