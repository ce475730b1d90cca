#!/usr/bin/env python3
"""The server's batched prefill against one pass per sequence, in the same run.

Starts `tokbench-worker serve-openai` twice on the same model and weights, once with
`--batched-prefill true` and once with `false`, and sends each the same burst: N completions of
IN prompt tokens (token ids) and OUT new tokens, all at once (each in its own thread), R rounds.
Prints, per setting: the burst's wall time (first send to last response, seconds), TTFT mean and
p50 (first streamed token, ms), prefill passes (`tokbench_prefill_passes_total`), and the ratio
of the two wall times. Not a test.

    python3 scripts/bench_batched_prefill.py --worker target/release/tokbench-worker \
        --model smollm2-135m --device cpu --n 8 --in-len 128 --out-len 4
"""
import argparse
import json
import statistics
import subprocess
import threading
import time
import urllib.request


def start(worker, model, device, dtype, batched):
    cmd = [worker, "serve-openai", "--listen", "127.0.0.1:0", "--offline", "--model", model,
           "--weights", "synthetic", "--device", device, "--batched-prefill", "true" if batched else "false"]
    if dtype:
        cmd += ["--dtype", dtype]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("listening on "):
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, line.split()[-1].strip()
    raise SystemExit(f"serve-openai exited before listening: {p.wait()}")


def one(url, model, prompt, out_len, t0, ttft, done):
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": out_len, "ignore_eos": True,
                       "stream": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
    first = None
    with urllib.request.urlopen(req) as r:
        for raw in r:
            line = raw.decode().strip()
            if first is None and line.startswith("data: {"):
                first = time.perf_counter()
    ttft.append((first - t0) * 1e3)
    done.append(time.perf_counter())


def metric(url, name):
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + "{"))


def burst(url, model, prompts, out_len):
    ttft, done, threads = [], [], []
    t0 = time.perf_counter()
    for p in prompts:
        t = threading.Thread(target=one, args=(url, model, p, out_len, t0, ttft, done))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    return max(done) - t0, ttft


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--worker", required=True)
    a.add_argument("--model", default="smollm2-135m")
    a.add_argument("--device", default="cpu")
    a.add_argument("--dtype", default=None)
    a.add_argument("--n", type=int, default=8)
    a.add_argument("--in-len", type=int, default=128)
    a.add_argument("--out-len", type=int, default=4)
    a.add_argument("--rounds", type=int, default=3)
    args = a.parse_args()
    prompts = [[(7 + 31 * i + 13 * j) % 20000 + 10 for j in range(args.in_len)] for i in range(args.n)]
    walls = {}
    for batched in (False, True):
        p, url = start(args.worker, args.model, args.device, args.dtype, batched)
        try:
            burst(url, args.model, prompts[:2], args.out_len)  # warm-up
            before = metric(url, "tokbench_prefill_passes_total")
            rs = [burst(url, args.model, prompts, args.out_len) for _ in range(args.rounds)]
            passes = metric(url, "tokbench_prefill_passes_total") - before
        finally:
            p.terminate()
            p.wait()
        wall = statistics.median(w for w, _ in rs)
        ttft = [x for _, t in rs for x in t]
        walls[batched] = wall
        print(f"batched_prefill={str(batched).lower():5}  burst of {args.n} x {args.in_len} in / {args.out_len} out: "
              f"wall {wall:.3f} s (median of {args.rounds}), TTFT mean {statistics.mean(ttft):.1f} ms "
              f"p50 {statistics.median(ttft):.1f} ms, prefill passes {passes / args.rounds:.1f} per burst")
    print(f"per-sequence wall / batched wall = {walls[False] / walls[True]:.2f}x "
          f"({args.model}, {args.device}, {args.n} requests at once)")


if __name__ == "__main__":
    main()
