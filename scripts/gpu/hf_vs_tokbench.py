#!/usr/bin/env python3
"""transformers generate() on the same workload as given tokbench reports, in the same call.

For each tokbench report (benchmark JSON of `tokbench-worker bench --json`) given on the command
line, this builds the same architecture in transformers from the report's own config
(`model_properties.config`, the catalog config), random weights (speed does not depend on the
values), on cuda in the report's dtype, and runs the report's workload: batch b, prompts of exactly
input_len random token ids (no padding), max_tokens new tokens, greedy, EOS ignored
(min_new_tokens = max_new_tokens), sdpa attention, DynamicCache. One warm-up, then the median of
REPS (3) timed calls, each between torch.cuda.synchronize(); TTFT = median of generate(max_new_tokens=1);
step = (t_full - TTFT) / (max_tokens - 1). Prints both sides and the ratio tokbench / transformers.

Usage (GPU machine, python of /opt/torch/.venv): hf_vs_tokbench.py REPORT.json [REPORT.json ...]
"""
import json
import os
import statistics
import sys
import time

import torch
import transformers

REPS = int(os.environ.get("REPS", "3"))
DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


def hf_model(cfg, dtype):
    fields = {k: v for k, v in cfg.items() if k != "model_type" and v is not None}
    conf = transformers.AutoConfig.for_model(cfg["model_type"], **fields)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(conf, torch_dtype=dtype)
    return model.to(dtype).eval()


def timed(model, ids, n, pad):
    kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1, use_cache=True,
              max_new_tokens=n, min_new_tokens=n, pad_token_id=pad)
    model.generate(**kw)
    ts = []
    for _ in range(REPS):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = model.generate(**kw)
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
        assert out.shape == (ids.shape[0], ids.shape[1] + n), out.shape
    return statistics.median(ts)


def main():
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)
    for path in sys.argv[1:]:
        rep = json.load(open(path))
        cfg = rep["model_properties"]["config"]
        wl = rep["workload"]
        im = rep["inference_metrics"]
        b, n = wl["batch_size"], wl["max_tokens"]
        input_len = wl["prompts"]["input_len"]
        dtype = DTYPES[rep["model_properties"].get("dtype", "f16")]
        model = hf_model(cfg, dtype)
        g = torch.Generator().manual_seed(1234)
        ids = torch.randint(300, cfg["vocab_size"] - 1, (b, input_len), generator=g).to("cuda")
        eos = cfg.get("eos_token_id")
        pad = cfg.get("pad_token_id") or (eos[0] if isinstance(eos, list) else eos) or 0
        with torch.inference_mode():
            full = timed(model, ids, n, pad)
            ttft = timed(model, ids, 1, pad)
        hf_tok_s = b * n / full
        hf_step = (full - ttft) / (n - 1) * 1e3
        name = wl["model"]
        print(f"HF_VS_TOKBENCH {name} b{b} {input_len}/{n} {dtype}: "
              f"tokbench {im['tokens_per_second']:.1f} tok/s TTFT p50 {im['ttft_ms']['p50']:.2f} ms ITL p50 {im['inter_token_latency_ms']['p50']:.2f} ms "
              f"(decode path {im.get('decode_path', '?')}) | transformers {hf_tok_s:.1f} tok/s TTFT {ttft * 1e3:.2f} ms step {hf_step:.2f} ms "
              f"| ratio {im['tokens_per_second'] / hf_tok_s:.2f}x", flush=True)
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
