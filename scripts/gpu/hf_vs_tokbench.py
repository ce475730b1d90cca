#!/usr/bin/env python3
"""tokbench, transformers with its dynamic cache and transformers with its static cache, on the workload of each
given tokbench report, interleaved in the same call.

For each tokbench report (benchmark JSON of `tokbench-worker bench --json`) given on the command line:
  tokbench    the report's own workload (its "workload": model, synthetic weights and seed, dtype, kernels) run
              again with `tokbench-worker bench --workload-file`, warmup 1 and repetitions 1, one process per
              repetition (TOKBENCH_WORKER, default tokbench-worker on PATH). The given report itself is only
              quoted ("report_tok_s"), not compared: it ran earlier, not interleaved.
  hf_dynamic  the same architecture in transformers from the report's config (`model_properties.config`, the
              catalog config), random weights (speed does not depend on the values; generated ids are therefore
              not compared), on the report's device in its dtype, `generate()` with the default DynamicCache.
  hf_static   the same, `generate(..., cache_implementation="static")`: transformers then compiles the decode
              step (torch.compile, inductor, mode "reduce-overhead" = CUDA graphs) on cuda; BENCH_STATIC_WARMUP
              (default 2) untimed generates first.
Repetition i runs the engines in rotated order (as bench/gpu_vs_hf.py, whose engine code this uses).
Prompt ids: transformers gets the ids tokbench built for the report's synthetic `--input-len` prompts, rebuilt by
bench/gpu_vs_hf.py's `tokbench_prompt_ids` (GPT-2/OPT: its offline GPT-2 BPE word list; rotary families without
tokenizer files, tokenizer "none (synthetic token ids)": splitmix64 ids). When the report's tokenizer was real
tokenizer files or its prompts were not synthetic, the ids cannot be rebuilt here: transformers then gets seeded
random ids of the same shape and the output says "prompt_ids": {"same_as_tokbench": false, "why": ...}.
Greedy, EOS ignored (min_new_tokens = max_new_tokens), batch = the report's batch_size (one batch; a report with
more prompts than its batch size is refused).
Definitions (every engine, per repetition, medians reported; see bench/gpu_vs_hf.py): tokens/s = batch * new /
median wall, wall from the generate's start to its last token on the host, device synchronised before both
clock reads; TTFT = start to the first new token on the host (tokbench: prefill_seconds); step = decode /
(new - 1) (tokbench: decode_seconds; transformers: end - first-token time).

Usage (GPU machine, python of /opt/torch/.venv): hf_vs_tokbench.py REPORT.json [REPORT.json ...]
Env: REPS (timed repetitions per engine, default 3), TOKBENCH_WORKER, BENCH_ENGINES (subset of
tokbench,hf_dynamic,hf_static), BENCH_STATIC_WARMUP, HF_VS_TOKBENCH_OUT (folder for the reruns' reports and
hf_vs_tokbench.json; default the current folder, so families.sh's `cp *.json "$OUT"` takes them).
"""
import json
import os
import sys
import time

import torch
import transformers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import gpu_vs_hf as gv  # noqa: E402

REPS = int(os.environ.get("REPS", "3"))
STATIC_WARMUP = int(os.environ.get("BENCH_STATIC_WARMUP", "2"))
WORKER = os.environ.get("TOKBENCH_WORKER", "tokbench-worker")
OUT = os.environ.get("HF_VS_TOKBENCH_OUT", ".")
ENGINES = [e for e in os.environ.get("BENCH_ENGINES", ",".join(gv.ENGINES)).split(",") if e]


def hf_model(cfg, dtype, device):
    fields = {k: v for k, v in cfg.items() if k != "model_type" and v is not None}
    conf = transformers.AutoConfig.for_model(cfg["model_type"], **fields)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(conf, dtype=dtype)
    return model.to(device=device, dtype=dtype).eval()


def device_of(workload):
    d = workload["device"]
    if d == "Cpu":
        return torch.device("cpu")
    return torch.device(f"cuda:{d['Cuda'] if isinstance(d, dict) else 0}")


def prompt_ids(rep, cfg, b, input_len):
    wl = rep["workload"]
    tok = rep["model_properties"].get("tokenizer")
    if wl["prompts"].get("kind") != "synthetic":
        why = f"the report's prompts are {wl['prompts'].get('kind')!r}, not synthetic --input-len prompts"
    else:
        try:
            ids, _, how = gv.tokbench_prompt_ids(cfg, b, input_len, tokenizer=tok)
            return ids, dict(same_as_tokbench=True, source=how, sha256_16=gv.ids_hash(ids))
        except ValueError as e:
            why = str(e)
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(300, cfg["vocab_size"] - 1, (b, input_len), generator=g).tolist()
    return ids, dict(same_as_tokbench=False, why=why, source="seeded random ids (torch.randint, seed 1234)")


def compare(path, out_rows):
    rep = json.load(open(path))
    cfg, wl, mp = rep["model_properties"]["config"], rep["workload"], rep["model_properties"]
    b, n = wl["batch_size"], wl["max_tokens"]
    input_len = wl["prompts"].get("input_len")
    num_prompts = wl["prompts"].get("num_prompts", b)
    if num_prompts != b or input_len is None:
        print(f"SKIP {path}: needs one batch of synthetic prompts (num_prompts {num_prompts}, batch {b}, input_len {input_len})", flush=True)
        return
    dtype_name = mp.get("dtype", "f16")
    dtype = gv.TORCH_DTYPE[dtype_name]
    device = device_of(wl)
    ids, pinfo = prompt_ids(rep, cfg, b, input_len)
    eos = cfg.get("eos_token_id")
    pad = cfg.get("pad_token_id") or (eos[0] if isinstance(eos, list) else eos) or 0
    tag = os.path.splitext(os.path.basename(path))[0]
    torch._dynamo.reset()
    engines, errors, models = [], {}, []
    if "tokbench" in ENGINES:
        w = dict(wl, warmup=1, repetitions=1, reuse_model=False)
        wfile = os.path.join(OUT, f"{tag}.workload.json")
        json.dump(w, open(wfile, "w"))
        out_json = os.path.join(OUT, f"{tag}.rerun.json")
        engines.append(gv.TokbenchEngine([WORKER, "bench", "--workload-file", wfile, "--json", out_json, "--quiet"], out_json))
    for name, static in (("hf_dynamic", False), ("hf_static", True), ("hf_static_reuse", "reuse")):
        if name not in ENGINES:
            continue
        try:
            gv.Sync(device)()
            before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
            m = hf_model(cfg, dtype, device)
            models.append(m)
            e = gv.HfEngine(name, m, static, ids, n, pad, device)
            e.warmup(STATIC_WARMUP if static else 1, before)
            engines.append(e)
        except Exception as ex:  # noqa: BLE001 -- report it, go on with the other engines
            errors[name] = f"{type(ex).__name__}: {ex}"[:2000]
            print("HF FAILED", name, path, errors[name], flush=True)
    try:
        samples, orders = gv.interleaved(engines, REPS)
    except Exception as ex:  # noqa: BLE001
        errors["run"] = f"{type(ex).__name__}: {ex}"[:3000]
        print("RUN FAILED", path, errors["run"], flush=True)
        samples, orders = {}, []
    row = dict(report=path, model=wl["model"], batch=b, input_len=input_len, new_tokens=n, dtype=dtype_name, device=str(device),
               report_tok_s=rep["inference_metrics"]["tokens_per_second"], prompt_ids=pinfo, orders=orders, engines={})
    for e in engines:
        s = samples.get(e.name)
        if not s:
            continue
        r = gv.summarize(s, b, n)
        r["ran"] = e.info
        if isinstance(e, gv.HfEngine):
            r["logs"] = gv.dedup(e.logs)[:60]
            r["counters_in_timed_runs"] = [x["counters"] for x in s if x["counters"]] or None
        else:
            r["peak_mib"] = max((x["peak_mib"] for x in s if x["peak_mib"] is not None), default=None)
            if pinfo["same_as_tokbench"]:
                r["prompt_tokens"] = sorted({o["prompt_tokens"] for o in e.report.get("outputs", [])})
        row["engines"][e.name] = r
    E = row["engines"]
    for a, c in (("tokbench", "hf_dynamic"), ("tokbench", "hf_static"), ("hf_static", "hf_dynamic"),
                 ("tokbench", "hf_static_reuse"), ("hf_static_reuse", "hf_dynamic")):
        if a in E and c in E:
            row[f"tok_s_ratio_{a}/{c}"] = E[a]["tok_s"] / E[c]["tok_s"]
    if errors:
        row["errors"] = errors
    out_rows.append(row)
    parts = []
    for name in gv.ENGINES:
        if name in E:
            x = E[name]
            extra = (f" ({x['ran'].get('decode_path')})" if name == "tokbench" else
                     f" ({x['ran']['attn_implementation']} {x['ran']['param_dtype'].replace('torch.', '')}"
                     f"{', compiled, cudagraphs ' + x['ran']['cudagraphs']['status'][:110] if x['ran']['compile']['used'] else ', not compiled'})")
            parts.append(f"{name} {x['tok_s']:.1f} tok/s TTFT {x['ttft_ms']:.2f} ms step {gv.fmt(x['step_ms'], '.3f', 1)} ms{extra}")
    ratios = " ".join(f"{k[len('tok_s_ratio_'):]} {v:.2f}x" for k, v in row.items() if k.startswith("tok_s_ratio_"))
    print(f"HF_VS_TOKBENCH {wl['model']} b{b} {input_len}/{n} {dtype_name}: " + " | ".join(parts) + f" | {ratios}"
          + ("" if pinfo["same_as_tokbench"] else f" | prompt ids NOT tokbench's: {pinfo['why']}"), flush=True)
    for m in models:
        if hasattr(m, "_cache"):
            del m._cache
    del engines, models
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main():
    os.makedirs(OUT, exist_ok=True)
    gv.enable_torch_logs()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no cuda"
    info = dict(torch=torch.__version__, transformers=transformers.__version__, gpu=gpu, reps=REPS, engines=ENGINES,
                static_warmup_generates=STATIC_WARMUP, date_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    print(f"transformers {info['transformers']}, torch {info['torch']}, {gpu}; engines {','.join(ENGINES)}, {REPS} interleaved reps", flush=True)
    rows = []
    for path in sys.argv[1:]:
        compare(path, rows)
        with open(os.path.join(OUT, "hf_vs_tokbench.json"), "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
