"""tokbench-worker vs Hugging Face transformers on the same GPU, same weights, same workloads.

Run on the GPU machine (its python3 at /opt/torch/.venv has torch + transformers):
    TOKBENCH_WORKER=/tmp/tokbench-worker python3 bench/gpu_vs_hf.py OUT_DIR

For each model, tokbench writes its synthetic weights (seeded) as safetensors + config.json
(`tokbench-worker export-weights`); transformers loads that directory with from_pretrained and
tokbench loads it as real weights, so both run the same numbers. Prompts are exactly
`input_len` token ids (the same ids for both), greedy, EOS ignored (min_new_tokens =
max_new_tokens), one warm-up, REPS timed repetitions, medians reported.

Definitions (both engines): tokens/s = batch * new_tokens / wall time of the whole generate
call (prefill included), device synchronised before reading the clock. TTFT = time of a
generate with 1 new token (HF) / prefill time (tokbench). Step = decode time / (new - 1).
"""
import json, os, statistics, subprocess, sys, time

import torch
import transformers
from transformers import AutoModelForCausalLM

WORKER = os.environ.get("TOKBENCH_WORKER", "tokbench-worker")
REPS = int(os.environ.get("BENCH_REPS", "5"))
OUT = sys.argv[1] if len(sys.argv) > 1 else "bench-out"
QUICK = os.environ.get("BENCH_QUICK") == "1"
os.makedirs(OUT, exist_ok=True)

# (model, dtype, batch sizes, input len, new tokens)
WORKLOADS = [
    ("gpt2", "f16", [1], 128, 32),
    ("gpt2", "bf16", [1], 128, 32),
    ("opt-125m", "f16", [1, 8, 32], 128, 128),
    ("gpt2", "f16", [1, 8, 32], 128, 128),
    ("opt-1.3b", "f16", [1, 8, 32], 128, 128),
]
if QUICK:
    WORKLOADS = [("gpt2", "f16", [1], 128, 32), ("opt-125m", "f16", [1, 32], 128, 128)]
# BENCH_WORKLOADS="model:dtype:batch:in:out,..." runs only those (a short device call).
if os.environ.get("BENCH_WORKLOADS"):
    WORKLOADS = [(m, d, [int(b)], int(i), int(o)) for m, d, b, i, o in
                 (w.split(":") for w in os.environ["BENCH_WORKLOADS"].split(","))]
TORCH_DTYPE = {"f16": torch.float16, "bf16": torch.bfloat16}


def sync():
    torch.cuda.synchronize()


def d2d_bandwidth_gbs():
    """Device-to-device copy bandwidth (bytes read + written per second), 1 GiB buffers."""
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    a.random_(0, 255)
    for _ in range(3):
        b.copy_(a)
    sync()
    ts = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); b.copy_(a); e.record(); sync()
        ts.append(s.elapsed_time(e) / 1e3)
    del a, b
    torch.cuda.empty_cache()
    return 2 * n / statistics.median(ts) / 1e9


def prompt_ids(bs, input_len, vocab):
    g = torch.Generator().manual_seed(1234)
    return torch.randint(100, vocab - 100, (bs, input_len), generator=g)


def hf_run(model_dir, dtype, bs, input_len, new, vocab, pad_id):
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=TORCH_DTYPE[dtype]).to("cuda").eval()
    ids = prompt_ids(bs, input_len, vocab).cuda()
    mask = torch.ones_like(ids)
    kw = dict(input_ids=ids, attention_mask=mask, do_sample=False, pad_token_id=pad_id, num_beams=1, use_cache=True)
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model.generate(**kw, max_new_tokens=new, min_new_tokens=new)  # warm-up
        full, one = [], []
        for _ in range(REPS):
            sync(); t = time.perf_counter()
            out = model.generate(**kw, max_new_tokens=new, min_new_tokens=new)
            sync(); full.append(time.perf_counter() - t)
            assert out.shape == (bs, input_len + new), out.shape
        for _ in range(REPS):
            sync(); t = time.perf_counter()
            model.generate(**kw, max_new_tokens=1, min_new_tokens=1)
            sync(); one.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**20
    med, ttft = statistics.median(full), statistics.median(one)
    del model
    torch.cuda.empty_cache()
    return dict(tok_s=bs * new / med, ttft_ms=ttft * 1e3, step_ms=(med - ttft) / max(new - 1, 1) * 1e3,
                peak_mib=peak, runs_s=full, attn="sdpa")


def tokbench_run(model_dir, dtype, bs, input_len, new):
    out_json = os.path.join(OUT, f"tb_{os.path.basename(model_dir)}_{dtype}_b{bs}_{input_len}_{new}.json")
    cmd = [WORKER, "bench", "--model", model_dir, "--weights", "real", "--device", "cuda:0", "--dtype", dtype,
           "--batch-size", str(bs), "--num-prompts", str(bs), "--input-len", str(input_len),
           "--max-tokens", str(new), "--warmup", "1", "--repetitions", str(REPS), "--json", out_json, "--quiet"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        print("TOKBENCH FAILED", " ".join(cmd), p.stderr[-2000:], flush=True)
        return None
    r = json.load(open(out_json))
    im, gm = r["inference_metrics"], r["gpu_metrics"]
    return dict(tok_s=im["tokens_per_second"], ttft_ms=im["ttft_ms"]["p50"], step_ms=im["inter_token_latency_ms"]["p50"],
                peak_mib=gm.get("engine_peak_allocated_mb") or gm.get("peak_memory_allocated_mb"), nvml_peak_mib=gm.get("peak_memory_allocated_mb"),
                allocated_mib=gm.get("gpu_memory_allocated_mb"),
                weight_mib=r["model_properties"]["model_size_mb"], runs_tok_s=[x["tokens_per_second"] for x in r["repetitions"]],
                cv=im.get("tokens_per_second_cv"), layers=r["model_properties"]["num_layers"],
                hidden=r["model_properties"]["hidden_size"], vocab=r["model_properties"]["vocab_size"])


def main():
    info = {"torch": torch.__version__, "transformers": transformers.__version__, "gpu": torch.cuda.get_device_name(0),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "reps": REPS}
    bw = d2d_bandwidth_gbs()
    info["d2d_bandwidth_gb_s"] = bw
    print("INFO", json.dumps(info), flush=True)
    rows = []
    exported = {}
    for model, dtype, batches, inp, new in WORKLOADS:
        mdir = os.path.join(OUT, "weights", model)
        if model not in exported:
            p = subprocess.run([WORKER, "export-weights", "--model", model, "--out", mdir], capture_output=True, text=True)
            if p.returncode != 0:
                print("EXPORT FAILED", model, p.stderr[-2000:], flush=True)
                continue
            exported[model] = json.load(open(os.path.join(mdir, "config.json")))
        cfg = exported[model]
        pad = cfg.get("pad_token_id") if cfg["model_type"] == "opt" else cfg.get("eos_token_id", 50256)
        for bs in batches:
            tb = tokbench_run(mdir, dtype, bs, inp, new)
            hf = hf_run(mdir, dtype, bs, inp, new, cfg["vocab_size"], pad)
            row = dict(model=model, dtype=dtype, batch=bs, input_len=inp, new_tokens=new, tokbench=tb, hf=hf)
            if tb:
                row["ratio_tok_s"] = tb["tok_s"] / hf["tok_s"]
                # Memory the workload needs: weights + KV cache (2 * layers * batch * positions * hidden * bytes) + logits (batch * vocab * 4).
                nbytes = 2
                kv = 2 * tb["layers"] * bs * (inp + new) * tb["hidden"] * nbytes
                need_mib = tb["weight_mib"] + (kv + bs * tb["vocab"] * 4) / 2**20
                row["need_mib"] = need_mib
                if model == "opt-1.3b" and bs == 1:
                    floor_ms = tb["weight_mib"] * 2**20 / (bw * 1e9) * 1e3
                    row["memory_floor_step_ms"] = floor_ms
            rows.append(row)
            print("ROW", json.dumps(row), flush=True)
    with open(os.path.join(OUT, "gpu_vs_hf.json"), "w") as f:
        json.dump({"info": info, "rows": rows}, f, indent=1)
    print()
    print(f"GPU: {info['gpu']}  torch {info['torch']}  transformers {info['transformers']}  D2D copy {bw:.0f} GB/s  reps {REPS}")
    print(f"{'model':9s} {'dt':4s} {'bs':>3s} {'in/out':>8s} | {'tb tok/s':>9s} {'hf tok/s':>9s} {'ratio':>6s} | {'tb ttft':>7s} {'hf ttft':>7s} | {'tb step':>7s} {'hf step':>7s} | {'tb peak':>8s} {'need':>7s} {'hf peak':>8s}")
    for r in rows:
        tb, hf = r["tokbench"], r["hf"]
        if not tb:
            print(f"{r['model']:9s} {r['dtype']:4s} {r['batch']:3d} tokbench failed; hf {hf['tok_s']:.1f} tok/s")
            continue
        print(f"{r['model']:9s} {r['dtype']:4s} {r['batch']:3d} {r['input_len']:>3d}/{r['new_tokens']:<4d} | {tb['tok_s']:9.1f} {hf['tok_s']:9.1f} {r['ratio_tok_s']:5.2f}x | "
              f"{tb['ttft_ms']:6.2f}m {hf['ttft_ms']:6.2f}m | {tb['step_ms']:6.3f}m {hf['step_ms']:6.3f}m | {tb['peak_mib'] or 0:7.0f}M {r['need_mib']:6.0f}M {hf['peak_mib']:7.0f}M"
              + (f"  floor {r['memory_floor_step_ms']:.3f} ms/step" if "memory_floor_step_ms" in r else ""))


if __name__ == "__main__":
    main()
