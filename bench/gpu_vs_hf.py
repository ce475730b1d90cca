"""tokbench-worker vs Hugging Face transformers (dynamic cache and static cache), same device, same weights,
same prompt token ids, same workloads, runs interleaved.

Run on the GPU machine (its python3 at /opt/torch/.venv has torch + transformers):
    TOKBENCH_WORKER=/tmp/tokbench-worker python3 bench/gpu_vs_hf.py OUT_DIR
CPU smoke run (tiny models, the CPU worker; transformers does not compile on the CPU, see below):
    TOKBENCH_WORKER=target/release/tokbench-worker python3 bench/gpu_vs_hf.py OUT_DIR --device cpu
Environment: BENCH_REPS (timed repetitions per engine, default 5; 3 on cpu), BENCH_QUICK=1 (two workloads),
BENCH_WORKLOADS="model:dtype:batch:in:out,..." (only those),
BENCH_CPU_COMPILE=1 (cpu only: force transformers' compile of the static-cache step, to exercise that path), BENCH_ENGINES="tokbench,hf_dynamic,hf_static,hf_static_reuse"
(a subset), BENCH_STATIC_WARMUP (untimed static-cache generates before timing, default 2: the first compiles,
CUDA graphs are recorded during the first ones). Results: OUT_DIR/gpu_vs_hf.json (rewritten after every
workload, so a cut-off call keeps what finished), one ROW line per workload on stdout, a table at the end.

Engines, per workload:
  tokbench    `tokbench-worker bench --model DIR --weights real`, one process per repetition: each loads the
              model, runs 1 untimed warm-up pass, then 1 timed pass; its report's repetitions[0] is the sample.
  hf_dynamic  `model.generate(...)` with transformers' default cache (DynamicCache), no compile.
  hf_static_reuse  the same compiled static-cache path, but with one StaticCache passed as past_key_values and
              reset before each generate (its tensors keep their addresses, so recorded CUDA graphs can replay).
  hf_static   `model.generate(..., cache_implementation="static")`: a StaticCache, and transformers then
              compiles the decode step itself (torch.compile of the forward, its CompileConfig: inductor,
              mode "reduce-overhead", i.e. CUDA graphs through cudagraph trees) -- only on cuda/xpu/neuron/tpu.
              On the CPU transformers skips the compile; the JSON says so ("compile": {"used": false ...}).
              Warm-up generates (BENCH_STATIC_WARMUP, with the compile) are not timed.
Weights: tokbench writes its synthetic weights (seeded) as safetensors + config.json (`tokbench-worker
export-weights`); transformers loads that directory with from_pretrained(dtype=...), tokbench loads it as real
weights. Both engines convert the f32 file to the workload's dtype.
Prompt ids: the same on both sides. tokbench makes `--input-len` prompts itself (worker/src/prompts.rs); for this
exported directory (no tokenizer files) that is, for GPT-2 and OPT, its offline GPT-2 BPE and prompt i = the
word list SYNTHETIC_WORDS cycled from word i (OPT: after BOS </s>); for the rotary families, splitmix64 ids.
`tokbench_prompt_ids` rebuilds exactly those ids and transformers gets them as input_ids. The JSON records a
hash of the ids, whether tokbench's reported prompt text / length match them, and how many leading generated
ids agree between engines (greedy on the same weights and prompts: the first tokens agree unless f16/bf16
rounding breaks a near-tie; a prompt mismatch would show at token 1).
Workload: batch b prompts of exactly input_len ids, no padding, greedy, EOS ignored (min_new_tokens =
max_new_tokens = new), one batch per generate.
Order: repetition i runs the engines in the order ENGINES rotated by i (tokbench, hf_dynamic, hf_static, then
hf_dynamic, hf_static, tokbench, ...); the JSON records each repetition's order.

Definitions (all engines, per repetition; reported values are medians over the repetitions):
  wall     seconds from just before the generate starts to the last new token being on the host, device
           synchronised before both clock reads (tokbench: its pass wall time, the device synchronised before
           prefill and its last token copied to the host; transformers: torch.cuda.synchronize(); t0;
           generate(); torch.cuda.synchronize(); t1).
  tokens/s batch * new / median(wall)  [generated tokens per second, prefill included].
  TTFT     ms from the generate's start to the first new token of every sequence being on the host
           (tokbench: its prefill_seconds; transformers: a StoppingCriteria that, at its first call -- after the
           first token is selected -- synchronises the device and reads the clock; it returns a cached all-False
           tensor, so it adds one synchronisation per generate and nothing per step).
  step     ms = decode / (new - 1), decode = wall - TTFT part (tokbench: its decode_seconds, the sum of its
           host-synchronised step latencies; transformers: t1 - first-token time). Same formula both sides.
  peak     MiB: tokbench's engine_peak_allocated_mb (its CUDA memory pools' high-water mark, max over its
           processes; the transformers models stay loaded in this process meanwhile, which tokbench's pool
           figure does not count); transformers: memory resident for that engine after its warm-up (weights, static cache,
           CUDA-graph pools; measured as the allocation growth when it was set up) + the largest growth during a
           timed generate (torch.cuda.max_memory_allocated - memory_allocated before it). Nothing on cpu.
Recorded per engine: what ran (`config._attn_implementation`, parameter dtype, device), torch/transformers
versions, the compile config, dynamo/inductor counter deltas, CUDA graph skips and their reasons (captured from
torch's "cudagraphs"/"perf_hints"/"recompiles"/"graph_breaks" logs and inductor's cudagraph_skips counter), how
many CUDA graphs cudagraph trees recorded, and transformers' warnings.
"""
import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import time
import warnings

import torch
import transformers
from transformers import AutoModelForCausalLM, StoppingCriteria, StoppingCriteriaList

ENGINES = ("tokbench", "hf_dynamic", "hf_static", "hf_static_reuse")
TORCH_DTYPE = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}

# (model, dtype, batch sizes, input len, new tokens)
GPU_WORKLOADS = [
    ("gpt2", "f16", [1], 128, 32),
    ("gpt2", "bf16", [1], 128, 32),
    ("opt-125m", "f16", [1, 8, 32], 128, 128),
    ("gpt2", "f16", [1, 8, 32], 128, 128),
    ("opt-1.3b", "f16", [1, 8, 32], 128, 128),
]
QUICK_WORKLOADS = [("gpt2", "f16", [1], 128, 32), ("opt-125m", "f16", [1, 32], 128, 128)]
CPU_WORKLOADS = [("tiny-gpt2", "f32", [1, 2], 32, 16), ("tiny-opt", "f32", [2], 32, 16)]

# tokbench's SYNTHETIC_WORDS (worker/src/prompts.rs) as GPT-2 BPE ids (tiktoken r50k_base, the offline
# tokenizer tokbench uses for GPT-2 and OPT without tokenizer files): " the", " quick", " brown", " fox", " jumps",
# " over", " lazy", " dog", " and", " runs", " into", " forest", " where", " many", " trees", " grow", " under",
# " bright", " sun", " while", " birds", " sing", " songs", " of", " summer", " light".
SYNTHETIC_WORDS = [" the", " quick", " brown", " fox", " jumps", " over", " lazy", " dog", " and", " runs", " into",
                   " forest", " where", " many", " trees", " grow", " under", " bright", " sun", " while", " birds",
                   " sing", " songs", " of", " summer", " light"]
GPT2_WORD_IDS = [262, 2068, 7586, 21831, 18045, 625, 16931, 3290, 290, 4539, 656, 8222, 810, 867, 7150, 1663, 739,
                 6016, 4252, 981, 10087, 1702, 7259, 286, 3931, 1657]
GPT2_FALLBACK = "gpt2 fallback (tiktoken-rs r50k_base)"
NO_TOKENIZER = "none (synthetic token ids)"
M64 = (1 << 64) - 1


# ---------------------------------------------------------------- prompt ids (tokbench's, rebuilt)

def tokbench_prompt_ids(cfg, n, input_len, tokenizer=None):
    """The ids `tokbench-worker bench --input-len` feeds the model for a directory/catalog model without tokenizer
    files (worker/src/prompts.rs `synthetic` / `synthetic_ids`). Returns (ids: n lists, expected prompt text or
    None, description). `tokenizer`: the report's model_properties.tokenizer when known; another tokenizer
    (real tokenizer files) is refused with ValueError, as its ids cannot be rebuilt here."""
    mt = cfg["model_type"]
    if mt in ("gpt2", "opt"):
        if tokenizer is not None and not tokenizer.startswith(GPT2_FALLBACK):
            raise ValueError(f"tokbench used tokenizer {tokenizer!r}; only its offline GPT-2 BPE is rebuilt here")
        bos = [cfg.get("bos_token_id", 2)] if mt == "opt" else []
        ids, texts = [], []
        for i in range(n):
            body = [(i + k) % len(GPT2_WORD_IDS) for k in range(input_len - len(bos))]
            ids.append(bos + [GPT2_WORD_IDS[w] for w in body])
            texts.append("".join(SYNTHETIC_WORDS[w] for w in body))
        return ids, texts, f"tokbench synthetic words in GPT-2 BPE{' after BOS ' + str(bos[0]) if bos else ''}"
    if tokenizer is not None and tokenizer != NO_TOKENIZER:
        raise ValueError(f"tokbench used tokenizer {tokenizer!r}; only token-id prompts (no tokenizer) are rebuilt here")
    bos_id = cfg.get("bos_token_id") if mt in ("llama", "mistral") else None
    bos = [bos_id] if isinstance(bos_id, int) else []
    vocab = cfg["vocab_size"]
    low = min(256, vocab // 2)
    ids = []
    for i in range(n):
        state = (0x9E3779B97F4A7C15 * (i + 1)) & M64
        row = list(bos)
        for _ in range(input_len - len(bos)):
            state = (state + 0x9E3779B97F4A7C15) & M64  # splitmix64
            z = state
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            z ^= z >> 31
            row.append(low + z % (vocab - low))
        ids.append(row)
    return ids, [f"[{input_len} synthetic token ids]"] * n, "tokbench splitmix64 token ids" + (f" after BOS {bos[0]}" if bos else "")


def ids_hash(ids):
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]


def common_prefix(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def agreement(a, b):
    """Leading generated ids two engines agree on, per sequence: min, median, and the share agreeing at token 1."""
    if not a or not b or len(a) != len(b):
        return None
    pre = [common_prefix(x, y) for x, y in zip(a, b)]
    return dict(min=min(pre), median=statistics.median(pre), of=len(a[0]), first_token_agree=sum(p > 0 for p in pre) / len(pre))


# ---------------------------------------------------------------- what torch/transformers did

class LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        if record.name.endswith("__trace"):  # torch's structured trace (TORCH_TRACE), no message text
            return
        try:
            self.records.append(dict(logger=record.name, level=record.levelname, msg=record.getMessage()[:400]))
        except Exception:  # noqa: BLE001 -- a bad log record must not end the benchmark
            pass


def enable_torch_logs():
    """Turn on the torch log artifacts that say whether CUDA graphs ran (they also print to stderr)."""
    try:
        torch._logging.set_logs(cudagraphs=True, perf_hints=True, recompiles=True, graph_breaks=True)
    except Exception as e:  # noqa: BLE001
        print("WARN cannot enable torch logs:", e, file=sys.stderr)


@contextlib.contextmanager
def captured():
    """Log records of torch and transformers and Python warnings raised inside the block."""
    cap = LogCapture()
    # A record goes up to the first logger that does not propagate; torch gives "torch._inductor",
    # "torch._dynamo", ... their own handlers and propagate=False, so the handler goes on each of those.
    names = ["torch", "transformers"] + [n for n, lg in list(logging.root.manager.loggerDict.items())
                                         if isinstance(lg, logging.Logger) and not lg.propagate
                                         and n.startswith(("torch.", "transformers."))]
    loggers = [logging.getLogger(n) for n in dict.fromkeys(names)]
    for lg in loggers:
        lg.addHandler(cap)
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        try:
            yield cap
        finally:
            for lg in loggers:
                lg.removeHandler(cap)
            for w in ws:
                cap.records.append(dict(logger="warnings", level=w.category.__name__, msg=str(w.message)[:400]))


def dedup(records):
    """Log records once each, with how often they came, torch/transformers logs before Python warnings."""
    seen = {}
    for r in records:
        key = (r["logger"], r["level"], r["msg"])
        seen[key] = seen.get(key, 0) + 1
    out = [dict(logger=k[0], level=k[1], msg=k[2], count=n) for k, n in seen.items()]
    return sorted(out, key=lambda r: r["logger"] == "warnings")


def dynamo_counters():
    from torch._dynamo.utils import counters
    return {cat: dict(c) for cat, c in counters.items() if cat in ("inductor", "stats", "graph_break", "recompiles", "unimplemented")}


def counter_delta(before, after):
    out = {}
    for cat, c in after.items():
        d = {k: v - before.get(cat, {}).get(k, 0) for k, v in c.items() if v != before.get(cat, {}).get(k, 0)}
        if d:
            out[cat] = {k: (v if isinstance(v, (int, float)) else str(v)) for k, v in d.items()}
    return out


def cudagraphs_recorded(device):
    """CUDA graphs cudagraph trees has recorded on this device so far (its graph id counter), or None."""
    if device.type != "cuda":
        return None
    try:
        from torch._inductor import cudagraph_trees
        mgr = cudagraph_trees.get_manager(device.index or 0, create_if_none_exists=False)
        if mgr is None:
            return 0
        m = re.match(r"count\((\d+)\)", repr(mgr.graph_counter))
        return int(m.group(1)) if m else None
    except Exception:  # noqa: BLE001
        return None


# ---------------------------------------------------------------- engines

class Sync:
    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __call__(self):
        if self.cuda:
            torch.cuda.synchronize()


class FirstToken(StoppingCriteria):
    """Reads the clock (device synchronised) at its first call: the first new token has just been selected."""

    def __init__(self, sync):
        self.sync, self.t, self.false = sync, None, None

    def __call__(self, input_ids, scores, **kwargs):
        if self.t is None:
            self.sync()
            self.t = time.perf_counter()
        if self.false is None or self.false.shape[0] != input_ids.shape[0]:
            self.false = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return self.false


class HfEngine:
    """transformers generate() on one model instance, dynamic (default) or static cache."""

    def __init__(self, name, model, static, ids, new, pad_id, device):
        self.name, self.model, self.static, self.new, self.device = name, model, static, new, device
        self.sync = Sync(device)
        self.ids = torch.tensor(ids, dtype=torch.long, device=device)
        self.kw = dict(input_ids=self.ids, attention_mask=torch.ones_like(self.ids), do_sample=False, num_beams=1,
                       use_cache=True, pad_token_id=pad_id, max_new_tokens=new, min_new_tokens=new)
        self.cache = None
        if static == "reuse":
            # One StaticCache for every generate, reset before each: its tensors keep their
            # addresses, so CUDA graphs recorded over them can be replayed (with
            # cache_implementation="static", torch on the H100 re-recorded its graphs every step
            # because a static input's data pointer changed).
            # Its length is the one generate() gives its own static cache (input + new - 1: the last
            # new token is never fed back), so hf_static and this engine share one compiled graph; a
            # different length made dynamo recompile with dynamic shapes and torch's cudagraph trees
            # then failed ("length mismatch between inputs, recorded_data_ptr, and placeholders",
            # H100, torch 2.11, 2026-12-07).
            from transformers import StaticCache
            self.cache = StaticCache(config=model.config, max_cache_len=self.ids.shape[1] + new - 1)
            self.kw["past_key_values"] = self.cache
        elif static:
            self.kw["cache_implementation"] = "static"
        if static and device.type == "cpu" and os.environ.get("BENCH_CPU_COMPILE") == "1":
            # Smoke test of the compile path on the CPU: transformers' own CompileConfig, forced on all devices.
            cc = transformers.CompileConfig()
            cc._compile_all_devices = True
            self.kw["compile_config"] = cc
        self.info = {}
        self.resident_bytes = None
        self.logs = []

    def _generate(self):
        ft = FirstToken(self.sync)
        with torch.inference_mode():
            if self.cache is not None:
                # Inside inference mode: the cache's tensors were made in it (the first generate).
                self.cache.reset()
            self.sync()
            t0 = time.perf_counter()
            out = self.model.generate(**self.kw, stopping_criteria=StoppingCriteriaList([ft]))
            self.sync()
            t1 = time.perf_counter()
        b, n = self.ids.shape
        assert out.shape == (b, n + self.new), out.shape
        return t0, ft.t, t1, out[:, n:].tolist()

    def warmup(self, n, alloc_before_model):
        c0, g0 = dynamo_counters(), cudagraphs_recorded(self.device)
        t = time.perf_counter()
        with captured() as cap:
            for _ in range(n):
                self._generate()
        self.logs += cap.records
        m = self.model
        if self.device.type == "cuda":
            self.sync()
            self.resident_bytes = torch.cuda.memory_allocated() - alloc_before_model
        compiled = hasattr(m, "_compiled_call")
        cc = getattr(m, "_last_compile_config", None)
        g1 = cudagraphs_recorded(self.device)
        rec = None if g0 is None or g1 is None else g1 - g0
        skips = sorted({r["msg"] for r in cap.records if "skipping cudagraphs" in r["msg"]})
        counted = counter_delta(c0, dynamo_counters())
        n_skips = counted.get("inductor", {}).get("cudagraph_skips", 0)
        self.info = dict(
            attn_implementation=getattr(m.config, "_attn_implementation", None),
            param_dtype=str(next(m.parameters()).dtype), device=str(next(m.parameters()).device),
            cache_implementation=("static (one StaticCache passed as past_key_values, reset before each generate)" if self.static == "reuse"
                                  else "static (StaticCache)" if self.static else "dynamic (DynamicCache, default)"),
            warmup_generates=n, warmup_seconds=time.perf_counter() - t,
            compile=dict(used=compiled,
                         config=(cc.to_dict() if cc is not None else None),
                         forced_on_cpu="compile_config" in self.kw,
                         why=None if compiled else (
                             "dynamic cache: transformers does not compile" if not self.static else
                             f"transformers auto-compiles the static-cache decode step only on cuda/xpu/neuron/tpu; "
                             f"this model is on {self.device.type}, so compile was skipped")),
            cudagraphs=dict(
                mode=(cc.to_dict().get("mode") if cc is not None else None),
                graphs_recorded_in_warmup=rec,
                skips_logged=skips, skips_counted=n_skips,
                status=("not applicable (no compile)" if not compiled else
                        f"not applicable on {self.device.type} (CUDA graphs need cuda; inductor counted {n_skips} skip(s))"
                        if self.device.type != "cuda" else
                        f"skipped: {'; '.join(skips)} (graphs recorded: {rec})" if skips else
                        f"skipped ({n_skips} counted by inductor, reason not logged; graphs recorded: {rec})" if n_skips else
                        f"used ({rec} graphs recorded)" if rec else
                        "unclear: no skip logged or counted, no graph recorded (see counters_in_warmup)")),
            counters_in_warmup=counted,
        )

    def run(self):
        c0 = dynamo_counters()
        base = 0
        if self.device.type == "cuda":
            self.sync()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        with captured() as cap:
            t0, tf, t1, gen = self._generate()
        peak_growth = (torch.cuda.max_memory_allocated() - base) if self.device.type == "cuda" else None
        d = counter_delta(c0, dynamo_counters())
        self.logs += cap.records
        # cudagraph trees re-recording a graph in a timed run (a static input moved): its time is in the figure.
        rerecords = sum(1 for r in cap.records if "Re-recording" in r["msg"])
        return dict(wall_s=t1 - t0, prefill_s=tf - t0, decode_s=t1 - tf, generated=gen, peak_growth=peak_growth,
                    counters=d or None, cudagraph_rerecords=rerecords)


class TokbenchEngine:
    """One `tokbench-worker bench` process per repetition (its own warm-up pass, then one timed pass)."""

    name = "tokbench"

    def __init__(self, cmd, out_json):
        self.cmd, self.out_json = cmd, out_json
        self.info, self.report, self.errors = {}, None, []

    def run(self):
        if os.path.exists(self.out_json):
            os.remove(self.out_json)
        p = subprocess.run(self.cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"tokbench failed (exit {p.returncode}): {' '.join(self.cmd)}\n{p.stderr[-2000:]}")
        r = json.load(open(self.out_json))
        self.report = r
        rep = r["repetitions"][0]
        im, gm, mp = r["inference_metrics"], r["gpu_metrics"], r["model_properties"]
        self.info = dict(decode_path=im.get("decode_path"), decode_kernels=im.get("decode_kernels"), dtype=mp.get("dtype"),
                         tokenizer=mp.get("tokenizer"), weights=mp.get("weights"), weights_source=mp.get("weights_source"),
                         device=gm.get("device"), gpu=gm.get("gpu_name"), memory_source=gm.get("memory_source"),
                         warmup_passes_per_process=im.get("warmup_runs"), command=" ".join(self.cmd))
        steps = rep.get("step_latencies_ms") or []
        return dict(wall_s=rep["total_inference_time_seconds"], prefill_s=rep["prefill_seconds"], decode_s=rep["decode_seconds"],
                    generated=[o["generated_token_ids"] for o in r.get("outputs", [])],
                    peak_mib=gm.get("engine_peak_allocated_mb") or gm.get("peak_memory_allocated_mb"),
                    itl_p50_ms=statistics.median(steps) if steps else None)


def interleaved(engines, reps, errors):
    """Repetition i runs the engines rotated by i. Returns ({name: [sample]}, [[order of rep i]]). An engine
    that fails is recorded in `errors` and left out of the later repetitions; the others go on."""
    samples = {e.name: [] for e in engines}
    orders = []
    for i in range(reps):
        live = [e for e in engines if e.name not in errors]
        if not live:
            break
        k = i % len(live)
        order = live[k:] + live[:k]
        orders.append([e.name for e in order])
        for e in order:
            try:
                samples[e.name].append(e.run())
            except Exception as ex:  # noqa: BLE001 -- report it and go on with the other engines
                errors[e.name] = f"{type(ex).__name__}: {ex}"[:3000]
                samples[e.name] = []
                print("ENGINE FAILED", e.name, errors[e.name][:300], flush=True)
    return samples, orders


def summarize(samples, bs, new):
    """The same statistics for every engine (see the module docstring)."""
    walls = [s["wall_s"] for s in samples]
    med = statistics.median(walls)
    steps = [s["decode_s"] / (new - 1) * 1e3 for s in samples] if new > 1 else []
    return dict(tok_s=bs * new / med, wall_s_median=med, ttft_ms=statistics.median(s["prefill_s"] for s in samples) * 1e3,
                step_ms=statistics.median(steps) if steps else None,
                tok_s_runs=[bs * new / w for w in walls], wall_s_runs=walls, ttft_ms_runs=[s["prefill_s"] * 1e3 for s in samples],
                step_ms_runs=steps, reps=len(samples))


# ---------------------------------------------------------------- the benchmark

def d2d_bandwidth_gbs():
    """Device-to-device copy bandwidth (bytes read + written per second), 1 GiB buffers."""
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    a.random_(0, 255)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    ts = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); b.copy_(a); e.record(); torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / 1e3)
    del a, b
    torch.cuda.empty_cache()
    return 2 * n / statistics.median(ts) / 1e9


def pad_id_of(cfg):
    if cfg.get("pad_token_id") is not None:
        return cfg["pad_token_id"]
    eos = cfg.get("eos_token_id")
    return (eos[0] if isinstance(eos, list) else eos) if eos is not None else 0


def load_hf(model_dir, dtype, device):
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=TORCH_DTYPE[dtype])
    return m.to(device).eval()


def run_workload(args, worker, mdir, cfg, model, dtype, bs, inp, new, device, engines_wanted):
    tag = f"{model}_{dtype}_b{bs}_{inp}_{new}"
    ids, texts, how = tokbench_prompt_ids(cfg, bs, inp)
    row = dict(model=model, dtype=dtype, batch=bs, input_len=inp, new_tokens=new,
               prompt_ids=dict(source=how, sha256_16=ids_hash(ids), first=ids[0][:8]))
    engines, errors = [], {}
    hf_models = []
    torch._dynamo.reset()  # a fresh compile per workload (no recompile limit across models)
    sync = Sync(device)
    if "tokbench" in engines_wanted:
        out_json = os.path.join(args.out, f"tb_{tag}.json")
        cmd = [worker, "bench", "--model", mdir, "--weights", "real", "--device", "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}",
               "--dtype", dtype, "--batch-size", str(bs), "--num-prompts", str(bs), "--input-len", str(inp),
               "--max-tokens", str(new), "--warmup", "1", "--repetitions", "1", "--json", out_json, "--quiet"]
        engines.append(TokbenchEngine(cmd, out_json))
    for name, static in (("hf_dynamic", False), ("hf_static", True), ("hf_static_reuse", "reuse")):
        if name not in engines_wanted:
            continue
        try:
            sync()
            before = torch.cuda.memory_allocated() if device.type == "cuda" else 0
            m = load_hf(mdir, dtype, device)
            hf_models.append(m)
            e = HfEngine(name, m, static, ids, new, pad_id_of(cfg), device)
            e.warmup(args.static_warmup if static else 1, before)
            engines.append(e)
        except Exception as ex:  # noqa: BLE001 -- report it and go on with the other engines
            errors[name] = f"{type(ex).__name__}: {ex}"[:2000]
            print("HF FAILED", name, tag, errors[name], flush=True)
    samples, orders = interleaved(engines, args.reps, errors)
    row["orders"] = orders
    row["engines"] = {}
    gens = {}
    for e in engines:
        s = samples.get(e.name)
        if not s:
            continue
        r = summarize(s, bs, new)
        r["ran"] = e.info
        gens[e.name] = s[-1]["generated"]
        if isinstance(e, HfEngine):
            growth = [x["peak_growth"] for x in s if x["peak_growth"] is not None]
            r["peak_mib"] = (e.resident_bytes + max(growth)) / 2**20 if growth and e.resident_bytes is not None else None
            r["resident_mib"] = e.resident_bytes / 2**20 if e.resident_bytes is not None else None
            r["counters_in_timed_runs"] = [x["counters"] for x in s if x["counters"]] or None
            r["cudagraph_rerecords_in_timed_runs"] = [x["cudagraph_rerecords"] for x in s]
            r["logs"] = dedup(e.logs)[:60]
            if e.static and e.info["compile"]["used"]:
                # Anything compiled or recompiled during the timed runs means the timing includes compile work.
                r["recompiled_during_timing"] = any((x["counters"] or {}).get("stats", {}).get("unique_graphs") for x in s)
        else:
            r["peak_mib"] = max((x["peak_mib"] for x in s if x["peak_mib"] is not None), default=None)
            r["itl_p50_ms_runs"] = [x["itl_p50_ms"] for x in s]
            rep = e.report
            outs = rep.get("outputs", [])
            row["prompt_ids"]["tokbench_prompt_tokens"] = sorted({o["prompt_tokens"] for o in outs})
            row["prompt_ids"]["tokbench_prompt_text_matches"] = [o["prompt"] for o in outs] == texts
            row["prompt_ids"]["tokbench_tokenizer"] = rep["model_properties"].get("tokenizer")
            row["weights_mib"] = rep["model_properties"]["model_size_mb"]
            row["arch"] = dict(layers=rep["model_properties"]["num_layers"], hidden=rep["model_properties"]["hidden_size"],
                               vocab=rep["model_properties"]["vocab_size"])
        row["engines"][e.name] = r
    row["generated_agreement"] = {f"{a}~{b}": agreement(gens[a], gens[b]) for a, b in
                                  (("tokbench", "hf_dynamic"), ("tokbench", "hf_static"), ("hf_dynamic", "hf_static"),
                                   ("tokbench", "hf_static_reuse"))
                                  if a in gens and b in gens}
    E = row["engines"]
    for a, b in (("tokbench", "hf_dynamic"), ("tokbench", "hf_static"), ("hf_static", "hf_dynamic"),
                 ("tokbench", "hf_static_reuse"), ("hf_static_reuse", "hf_dynamic")):
        if a in E and b in E:
            row[f"tok_s_ratio_{a}/{b}"] = E[a]["tok_s"] / E[b]["tok_s"]
    if "arch" in row:
        nbytes = 4 if dtype == "f32" else 2
        kv = 2 * row["arch"]["layers"] * bs * (inp + new) * row["arch"]["hidden"] * nbytes
        row["need_mib"] = row["weights_mib"] + (kv + bs * row["arch"]["vocab"] * 4) / 2**20
        if args.bw and bs == 1:
            row["memory_floor_step_ms"] = row["weights_mib"] * 2**20 / (args.bw * 1e9) * 1e3
    if errors:
        row["errors"] = errors
    for m in hf_models:
        if hasattr(m, "_cache"):
            del m._cache
    del engines, hf_models
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default="bench-out", help="output folder (weights, tokbench reports, gpu_vs_hf.json)")
    ap.add_argument("--device", default=os.environ.get("BENCH_DEVICE", "cuda"), help="cuda, cuda:N or cpu (smoke run)")
    a = ap.parse_args(argv)
    a.device = torch.device(a.device if a.device != "cuda" else "cuda:0")
    cpu = a.device.type == "cpu"
    a.reps = int(os.environ.get("BENCH_REPS", "3" if cpu else "5"))
    a.static_warmup = int(os.environ.get("BENCH_STATIC_WARMUP", "2"))
    a.engines = [e for e in os.environ.get("BENCH_ENGINES", ",".join(ENGINES)).split(",") if e]
    bad = [e for e in a.engines if e not in ENGINES]
    if bad:
        ap.error(f"BENCH_ENGINES: unknown {bad}; known: {','.join(ENGINES)}")
    a.workloads = CPU_WORKLOADS if cpu else (QUICK_WORKLOADS if os.environ.get("BENCH_QUICK") == "1" else GPU_WORKLOADS)
    if os.environ.get("BENCH_WORKLOADS"):
        a.workloads = [(m, d, [int(b)], int(i), int(o)) for m, d, b, i, o in
                       (w.split(":") for w in os.environ["BENCH_WORKLOADS"].split(","))]
    return a


def inductor_cudagraphs_flag():
    """torch._inductor.config.triton.cudagraphs (the global default; mode "reduce-overhead" turns it on per compile)."""
    try:
        import torch._inductor.config as ic
        return ic.triton.cudagraphs
    except Exception:  # noqa: BLE001
        return None


def fmt(x, spec, width):
    return format(x, spec) if isinstance(x, (int, float)) else "-".rjust(width)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.makedirs(args.out, exist_ok=True)
    worker = os.environ.get("TOKBENCH_WORKER", "tokbench-worker")
    dev = args.device
    enable_torch_logs()
    info = {"torch": torch.__version__, "transformers": transformers.__version__, "python": sys.version.split()[0],
            "device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
            "cuda": torch.version.cuda, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "reps": args.reps,
            "engines": args.engines, "static_warmup_generates": args.static_warmup, "worker": worker,
            "inductor_triton_cudagraphs_global": inductor_cudagraphs_flag(),
            "cpu_threads": torch.get_num_threads()}
    args.bw = None
    if dev.type == "cuda":
        args.bw = info["d2d_bandwidth_gb_s"] = d2d_bandwidth_gbs()
    print("INFO", json.dumps(info), flush=True)
    rows, exported = [], {}
    path = os.path.join(args.out, "gpu_vs_hf.json")
    for model, dtype, batches, inp, new in args.workloads:
        mdir = os.path.join(args.out, "weights", model)
        if model not in exported:
            p = subprocess.run([worker, "export-weights", "--model", model, "--out", mdir], capture_output=True, text=True)
            if p.returncode != 0:
                print("EXPORT FAILED", model, p.stderr[-2000:], flush=True)
                continue
            exported[model] = json.load(open(os.path.join(mdir, "config.json")))
        for bs in batches:
            row = run_workload(args, worker, mdir, exported[model], model, dtype, bs, inp, new, dev, args.engines)
            rows.append(row)
            print("ROW", json.dumps(row), flush=True)
            with open(path, "w") as f:
                json.dump({"info": info, "rows": rows}, f, indent=1)
    print_table(info, rows, args)


def print_table(info, rows, args):
    print()
    print(f"device {info['gpu'] or info['device']}  torch {info['torch']}  transformers {info['transformers']}"
          + (f"  D2D copy {args.bw:.0f} GB/s" if args.bw else "") + f"  reps {args.reps} interleaved (rotating order)")
    print("tok/s = batch*new/median wall; TTFT, step = medians; step = decode/(new-1) on every engine")
    print(f"{'model':9s} {'dt':4s} {'bs':>3s} {'in/out':>8s} {'engine':10s} {'tok/s':>9s} {'TTFT ms':>8s} {'step ms':>8s} {'peak MiB':>9s}  what ran")
    for r in rows:
        for name in ENGINES:
            e = r["engines"].get(name)
            if not e:
                if name in args.engines:
                    print(f"{r['model']:9s} {r['dtype']:4s} {r['batch']:3d} {r['input_len']:>3d}/{r['new_tokens']:<4d} {name:10s} failed: {(r.get('errors') or {}).get(name, (r.get('errors') or {}).get('run', '?'))[:80]}")
                continue
            ran = e["ran"]
            what = (f"{ran.get('decode_path')} {ran.get('dtype')}" if name == "tokbench" else
                    f"{ran['attn_implementation']} {ran['param_dtype'].replace('torch.', '')} compile={'yes' if ran['compile']['used'] else 'no'} cudagraphs: {ran['cudagraphs']['status'][:60]}"
                    + (f"; re-recorded in timed runs {e['cudagraph_rerecords_in_timed_runs']}" if any(e.get('cudagraph_rerecords_in_timed_runs') or []) else ""))
            print(f"{r['model']:9s} {r['dtype']:4s} {r['batch']:3d} {r['input_len']:>3d}/{r['new_tokens']:<4d} {name:10s} {e['tok_s']:9.1f} "
                  f"{e['ttft_ms']:8.2f} {fmt(e['step_ms'], '8.3f', 8)} {fmt(e.get('peak_mib'), '9.0f', 9)}  {what}")
        ratios = "  ".join(f"{k[len('tok_s_ratio_'):]} {v:.2f}x" for k, v in r.items() if k.startswith("tok_s_ratio_"))
        agree = "  ".join(f"{k} {v['min']}/{v['of']}" for k, v in r.get("generated_agreement", {}).items() if v)
        print(f"{'':28s} {ratios}" + (f"  | leading ids agreeing (min) {agree}" if agree else "")
              + (f"  | floor {r['memory_floor_step_ms']:.3f} ms/step" if "memory_floor_step_ms" in r else ""))


if __name__ == "__main__":
    main()
