// Microbenchmark of tokbench's batch-1 decode step kernels without the rest of the engine: the
// kernels of worker/kernels/decode.cu launched in the order and with the shapes of one decode
// step of a pre-LN OPT model (per layer: qkv GEMV with the norm fused, decode attention, out GEMV
// + residual, fc1 GEMV with the norm fused + relu, fc2 GEMV + residual; then the lm_head GEMV with
// the argmax), captured as one CUDA graph with programmatic dependent launch, as the worker runs
// it, and parts of it alone (kernel boundaries only, no attention, no fused norm); prints ms per step against
// the memory floor (weight bytes / device-to-device copy rate measured here, read + write bytes
// per second, as bench/gpu_vs_hf.py).
//
// Build (scripts/gpu/package.sh does): nvcc -O3 -std=c++17 -arch=sm_90 -DTOKBENCH_PDL
//   bench/gemv_chain.cu -o gemv_chain
// Run: ./gemv_chain [layers hidden ffn vocab heads]   (default opt-1.3b: 24 2048 8192 50272 32)
// GEMV_CHAIN_TRACE_ONLY=1: only the step, with the per-block timeline of a traced run (where each
// kernel's blocks start, pass the PDL wait and end, relative to the previous kernel's last exit).
#include "../worker/kernels/decode.cu"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <map>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#define CK(x)                                                                                        \
  do {                                                                                               \
    cudaError_t e = (x);                                                                             \
    if (e != cudaSuccess) {                                                                          \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e));              \
      exit(1);                                                                                       \
    }                                                                                                \
  } while (0)

__global__ void fill_half(__half* p, size_t n, unsigned seed, float scale) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    unsigned h = (unsigned)i * 2654435761u ^ seed;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    p[i] = __float2half(((h & 0xffff) / 65535.f - 0.5f) * scale);
  }
}

static __half* alloc_fill(size_t n, float scale, unsigned seed) {
  __half* p;
  CK(cudaMalloc(&p, n * sizeof(__half)));
  fill_half<<<1024, 256>>>(p, n, seed, scale);
  CK(cudaGetLastError());
  return p;
}

struct Layer {
  __half *ln1_w, *ln1_b, *qkv_w, *qkv_b, *out_w, *out_b, *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b, *kc, *vc;
};

static int g_sms = 0;
static bool g_pdl = true;
static int g_blocks_per_sm = 0;  // 0: as many as fit (the engine's persistent grid)
static bool g_norm = true;       // fuse the pre-norms (else the GEMV reads x as is)
static bool g_plain_smem = true; // GEMVs without a norm stage x in shared memory
static bool g_balanced = false;   // grid: as few blocks as give every block the same number of row groups
static int g_variant = 0;        // 0 the engine's kernels; 1 traced
static unsigned long long* g_trace = nullptr;
static int g_trace_k = 0;        // next kernel's index in the trace
static std::vector<std::string> g_trace_names;

// The cost of a kernel boundary alone: a kernel that only waits for its predecessor.
__global__ void noop_kernel(int* p) {
  PDL_ENTER();
  if (threadIdx.x == 0 && p) p[blockIdx.x] = 0;
}

// Per-block timeline of a step (`trace` variants): every block of every kernel writes four
// %globaltimer stamps (ns): entry, before the PDL wait (its first weight loads issued), after the
// wait, exit (after a block-wide barrier). Kernel k, block b at trace[(k * TRACE_BLOCKS + b) * 4].
constexpr int TRACE_BLOCKS = 1024;
__device__ __forceinline__ unsigned long long gtime() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
struct TraceWait {
  unsigned long long* rec;
  __device__ void operator()() const {
    if (threadIdx.x == 0) rec[1] = gtime();
    PDL_ENTER();
    if (threadIdx.x == 0) rec[2] = gtime();
  }
};
// The engine's batch-1 GEMV (gemv_small_m1_f16) with the stamps. (A build with 4 loads per
// batch and 4 blocks per SM in the register budget, so the next kernel's blocks are resident and
// loading a whole kernel earlier: opt-1.3b 1.510 vs 1.117 ms per step, H200; dropped.)
__global__ void __launch_bounds__(256, 2)
    gemv_traced(const __half* x, const __half* w, const __half* bias, const __half* res, const __half* ln_w,
                const __half* ln_b, float eps, __half* y, int n, int k, int wpr, int mode, int act, int x_in_smem,
                unsigned long long* trace) {
  unsigned long long* rec = trace + (size_t)blockIdx.x * 4;
  if (threadIdx.x == 0) rec[0] = gtime();
  gemv_small_m<__half, 1, 8, TraceWait>(x, w, bias, res, ln_w, ln_b, eps, y, n, k, wpr, mode, act, x_in_smem,
                                        TraceWait{rec});
  __syncthreads();
  if (threadIdx.x == 0) rec[3] = gtime();
}
__global__ void attention_traced(const __half* qkv, const __half* qkv_bias, __half* k_cache, __half* v_cache,
                                 const uint32_t* slot, const float* pad_bias, __half* out, int heads, int cap,
                                 unsigned long long* trace) {
  unsigned long long* rec = trace + (size_t)blockIdx.x * 4;
  if (threadIdx.x == 0) rec[0] = rec[1] = gtime();
  decode_attention_fast<__half, 64>(qkv, qkv_bias, k_cache, v_cache, slot, pad_bias, out, heads, cap);
  __syncthreads();
  if (threadIdx.x == 0) rec[2] = rec[0], rec[3] = gtime();
}

template <typename... Args>
static void launch(void (*k)(Args...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = g_pdl ? 1 : 0;
  CK(cudaLaunchKernelEx(&cfg, k, args...));
}

// The cost of a grid-wide barrier inside one persistent kernel (what a whole-step "megakernel"
// would pay between phases instead of a kernel boundary): `phases` barriers, every block resident.
__global__ void barrier_chain(unsigned* count, unsigned* gen, int phases) {
  PDL_ENTER();
  for (int p = 0; p < phases; ++p) {
    __syncthreads();
    if (threadIdx.x == 0) {
      const unsigned g = *(volatile unsigned*)gen;
      __threadfence();
      if (atomicAdd(count, 1u) == gridDim.x - 1) {
        *(volatile unsigned*)count = 0;
        __threadfence();
        atomicAdd(gen, 1u);
      } else {
        while (*(volatile unsigned*)gen == g) {
        }
      }
      __threadfence();
    }
    __syncthreads();
  }
}

// A persistent kernel running the GEMVs of a whole step (no attention) with a grid-wide barrier
// between them where the chain has a kernel boundary: each GEMV issues its first weight loads
// before the barrier, as it does before the PDL wait. Barrier: a monotonic counter (zeroed before
// the launch), release-add and acquire-poll by one thread per block (FENCE: CG-style fences and
// relaxed atomics instead). Every block must be resident (grid = resident blocks).
template <bool FENCE>
struct GridWait {
  unsigned* counter;
  unsigned target;
  __device__ void operator()() const {
    __syncthreads();
    if (threadIdx.x == 0) {
      if (FENCE) {
        __threadfence();
        atomicAdd(counter, 1u);
        while (*(volatile unsigned*)counter < target) {
        }
        __threadfence();
      } else {
        asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counter) : "memory");
        unsigned v;
        do {
          asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(counter) : "memory");
        } while (v < target);
      }
    }
    __syncthreads();
  }
};

struct MegaLayer {
  const __half *ln1_w, *ln1_b, *qkv_w, *out_w, *out_b, *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
};

template <bool FENCE>
__global__ void __launch_bounds__(256, 2) mega_gemvs(const MegaLayer* layers, int L, int H, int F, __half* h, __half* qkv,
                                                     const __half* att, __half* h2, __half* f, unsigned* counter, int wpr_h,
                                                     int wpr_f, const __half* lnf_w, const __half* lnf_b, const __half* lm,
                                                     unsigned long long* keys, int V) {
  unsigned phase = 0;
  auto next = [&]() { return GridWait<FENCE>{counter, (++phase) * gridDim.x}; };
  for (int i = 0; i < L; ++i) {
    const MegaLayer& l = layers[i];
    gemv_small_m<__half, 1, 8>(h, l.qkv_w, nullptr, nullptr, l.ln1_w, l.ln1_b, 1e-5f, qkv, 3 * H, H, wpr_h, 0, 0, 1, next());
    gemv_small_m<__half, 1, 8>(att, l.out_w, l.out_b, h, nullptr, nullptr, 1e-5f, h2, H, H, wpr_h, 2, 0, 1, next());
    gemv_small_m<__half, 1, 8>(h2, l.fc1_w, l.fc1_b, nullptr, l.ln2_w, l.ln2_b, 1e-5f, f, F, H, wpr_h, 1, 1, 1, next());
    gemv_small_m<__half, 1, 8>(f, l.fc2_w, l.fc2_b, h2, nullptr, nullptr, 1e-5f, h, H, F, wpr_f, 2, 0, 1, next());
  }
  gemv_small_m<__half, 1, 8>(h, lm, nullptr, (const __half*)keys, lnf_w, lnf_b, 1e-5f, nullptr, V, H, wpr_h, 3, 0, 1, next());
}

// As cuda_ops::warps_per_row: one warp per row when the rows keep nearly every resident warp
// busy, else enough warps that none has more than 256 16-byte chunks of a row.
static int warps_per_row(int chunks, int rows, int resident_warps) {
  if (rows * 10 >= resident_warps * 9) return 1;
  int w = 1;
  while (w < 8 && chunks > 256 * w) w *= 2;
  return w;
}

// One GEMV launch as cuda_ops::linear_small_m makes it (batch 1, f16).
static void gemv(cudaStream_t s, const __half* x, const __half* w, const __half* bias, const __half* res,
                 const __half* ln_w, const __half* ln_b, __half* y, int n, int k, int mode, int act) {
  if (!g_norm) ln_w = ln_b = nullptr;
  const int in_smem = ln_w || g_plain_smem;
  const size_t smem = in_smem ? (size_t)k * sizeof(__half) : 0;
  int per_sm = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_small_m1_f16, 256, smem));
  if (g_blocks_per_sm > 0) per_sm = std::min(per_sm, g_blocks_per_sm);
  const int wpr = warps_per_row(k / 8, n, std::max(per_sm, 1) * g_sms * 8);
  const int groups = (n + 8 / wpr - 1) / (8 / wpr);
  int blocks = std::min(groups, std::max(per_sm, 1) * g_sms);
  if (g_balanced) blocks = (groups + (groups + blocks - 1) / blocks - 1) / ((groups + blocks - 1) / blocks);
  if (g_variant != 0) {
    unsigned long long* tr = g_trace + (size_t)g_trace_k++ * TRACE_BLOCKS * 4;
    launch(gemv_traced, dim3(blocks), dim3(256), smem, s, x, w, bias, res, ln_w, ln_b, 1e-5f, y, n, k, wpr, mode, act, in_smem,
           tr);
    return;
  }
  launch(gemv_small_m1_f16, dim3(blocks), dim3(256), smem, s, x, w, bias, res, ln_w, ln_b, 1e-5f, y, n, k, wpr, mode,
         act, in_smem, PRO_AUTO);
}

struct Config {
  std::string name;
  bool pdl = true;
  int blocks_per_sm = 0;
  bool norm = true;
  bool plain_smem = true;
  int noop_blocks = -1;  // >= 0: the chain of kernels only, each a noop of this many blocks;
                         // <= -2: one kernel of -noop_blocks blocks with as many grid barriers
  bool attention = true;
  bool gemvs = true;
  int variant = 0;  // g_variant
  bool balanced = false;
};

// Where a traced step's time goes, per kernel kind averaged over layers 1..L-1; times in us
// relative to the end of the previous kernel's last block (its exit stamp).
static void print_trace(const std::vector<unsigned long long>& tr, const std::vector<std::string>& names,
                        const std::vector<int>& blocks) {
  const int nk = (int)names.size();
  struct Acc { double n = 0, first_start = 0, med_start = 0, med_wait = 0, max_wait = 0, p10_end = 0, med_end = 0, max_end = 0; };
  std::map<std::string, Acc> acc;
  std::vector<std::string> order;
  unsigned long long res = ~0ull;
  double prev_end = 0;
  for (int k = 0; k < nk; ++k) {
    std::vector<double> st, wt, en;
    for (int b = 0; b < blocks[k]; ++b) {
      const unsigned long long* r = &tr[((size_t)k * TRACE_BLOCKS + b) * 4];
      st.push_back((double)r[0]);
      wt.push_back((double)r[2]);
      en.push_back((double)r[3]);
      if (r[3] > r[0]) res = std::min(res, r[3] - r[0]);
    }
    std::sort(st.begin(), st.end());
    std::sort(wt.begin(), wt.end());
    std::sort(en.begin(), en.end());
    const size_t m = st.size();
    if (k > 0 && k < nk - 1 && k >= 5) {
      if (!acc.count(names[k])) order.push_back(names[k]);
      Acc& a = acc[names[k]];
      a.n += 1;
      a.first_start += (st[0] - prev_end) / 1e3;
      a.med_start += (st[m / 2] - prev_end) / 1e3;
      a.med_wait += (wt[m / 2] - prev_end) / 1e3;
      a.max_wait += (wt[m - 1] - prev_end) / 1e3;
      a.p10_end += (en[m / 10] - prev_end) / 1e3;
      a.med_end += (en[m / 2] - prev_end) / 1e3;
      a.max_end += (en[m - 1] - prev_end) / 1e3;
    }
    if (k == nk - 1) {
      printf("  lm_head: first start %+.2f, median start %+.2f, median wait end %+.2f, ends p10 %.2f p50 %.2f max %.2f us\n",
             (st[0] - prev_end) / 1e3, (st[m / 2] - prev_end) / 1e3, (wt[m / 2] - prev_end) / 1e3,
             (en[m / 10] - prev_end) / 1e3, (en[m / 2] - prev_end) / 1e3, (en[m - 1] - prev_end) / 1e3);
    }
    prev_end = en[m - 1];
  }
  printf("  smallest block duration seen %llu ns (timer resolution bound)\n", res);
  printf("  %-6s %8s %8s %9s %9s %8s %8s %8s   (us after the previous kernel's last exit; mean over layers)\n", "kernel",
         "1st start", "med start", "med wait", "max wait", "p10 end", "p50 end", "max end");
  double total = 0;
  for (const auto& name : order) {
    const Acc& a = acc[name];
    printf("  %-6s %8.2f %8.2f %9.2f %9.2f %8.2f %8.2f %8.2f\n", name.c_str(), a.first_start / a.n, a.med_start / a.n,
           a.med_wait / a.n, a.max_wait / a.n, a.p10_end / a.n, a.med_end / a.n, a.max_end / a.n);
    total += a.max_end / a.n;
  }
  printf("  one layer: %.2f us\n", total);
}

int main(int argc, char** argv) {
  const int L = argc > 1 ? atoi(argv[1]) : 24, H = argc > 2 ? atoi(argv[2]) : 2048, F = argc > 3 ? atoi(argv[3]) : 8192,
            V = argc > 4 ? atoi(argv[4]) : 50272, NH = argc > 5 ? atoi(argv[5]) : 32;
  const int D = H / NH, cap = 256;
  if (D != 64) {
    fprintf(stderr, "head size %d: only 64 is wired up here\n", D);
    return 1;
  }
  CK(cudaDeviceGetAttribute(&g_sms, cudaDevAttrMultiProcessorCount, 0));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::vector<Layer> layers(L);
  unsigned seed = 1;
  const float ws = 0.04f;
  for (auto& l : layers) {
    l.ln1_w = alloc_fill(H, 0.2f, seed++);
    l.ln1_b = alloc_fill(H, 0.2f, seed++);
    l.qkv_w = alloc_fill((size_t)3 * H * H, ws, seed++);
    l.qkv_b = alloc_fill(3 * H, 0.1f, seed++);
    l.out_w = alloc_fill((size_t)H * H, ws, seed++);
    l.out_b = alloc_fill(H, 0.1f, seed++);
    l.ln2_w = alloc_fill(H, 0.2f, seed++);
    l.ln2_b = alloc_fill(H, 0.2f, seed++);
    l.fc1_w = alloc_fill((size_t)F * H, ws, seed++);
    l.fc1_b = alloc_fill(F, 0.1f, seed++);
    l.fc2_w = alloc_fill((size_t)H * F, ws, seed++);
    l.fc2_b = alloc_fill(H, 0.1f, seed++);
    l.kc = alloc_fill((size_t)NH * cap * D, 1.f, seed++);
    l.vc = alloc_fill((size_t)NH * cap * D, 1.f, seed++);
  }
  __half* lnf_w = alloc_fill(H, 0.2f, seed++);
  __half* lnf_b = alloc_fill(H, 0.2f, seed++);
  __half* lm = alloc_fill((size_t)V * H, ws, seed++);
  __half* h = alloc_fill(H, 1.f, seed++);
  __half* qkv = alloc_fill(3 * H, 1.f, seed++);
  __half* att = alloc_fill(H, 1.f, seed++);
  __half* h2 = alloc_fill(H, 1.f, seed++);
  __half* f = alloc_fill(F, 1.f, seed++);
  unsigned long long* keys;
  CK(cudaMalloc(&keys, 8));
  CK(cudaMemset(keys, 0, 8));
  uint32_t* slot;
  CK(cudaMalloc(&slot, 4));
  const uint32_t slot_h = 200;
  CK(cudaMemcpy(slot, &slot_h, 4, cudaMemcpyHostToDevice));
  unsigned *bar_count, *bar_gen;
  CK(cudaMalloc(&bar_count, 4));
  CK(cudaMalloc(&bar_gen, 4));
  CK(cudaMemset(bar_count, 0, 4));
  CK(cudaMemset(bar_gen, 0, 4));
  MegaLayer* mega;
  {
    std::vector<MegaLayer> ml(L);
    for (int i = 0; i < L; ++i) {
      const Layer& l = layers[i];
      ml[i] = {l.ln1_w, l.ln1_b, l.qkv_w, l.out_w, l.out_b, l.ln2_w, l.ln2_b, l.fc1_w, l.fc1_b, l.fc2_w, l.fc2_b};
    }
    CK(cudaMalloc(&mega, L * sizeof(MegaLayer)));
    CK(cudaMemcpy(mega, ml.data(), L * sizeof(MegaLayer), cudaMemcpyHostToDevice));
    CK(cudaFuncSetAttribute(mega_gemvs<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, F * 2));
    CK(cudaFuncSetAttribute(mega_gemvs<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, F * 2));
  }
  float* pad;
  CK(cudaMalloc(&pad, cap * sizeof(float)));
  CK(cudaMemset(pad, 0, cap * sizeof(float)));
  CK(cudaDeviceSynchronize());

  const double weight_bytes =
      (double)L * ((double)4 * H * H + 2.0 * H * F) * 2 + (double)V * H * 2;
  // Device-to-device copy rate, 1 GiB, bytes read + written per second (as bench/gpu_vs_hf.py).
  double d2d = 0;
  {
    const size_t n = 1ull << 30;
    void *a, *b;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&b, n));
    CK(cudaMemset(a, 1, n));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> ts;
    for (int i = 0; i < 13; ++i) {
      CK(cudaEventRecord(e0));
      CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice));
      CK(cudaEventRecord(e1));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      if (i >= 3) ts.push_back(ms);
    }
    std::sort(ts.begin(), ts.end());
    d2d = 2.0 * n / (ts[ts.size() / 2] * 1e-3);
    CK(cudaFree(a));
    CK(cudaFree(b));
  }
  const double floor_ms = weight_bytes / d2d * 1e3;
  printf("%s, %d SMs, L2 %d MiB; model %d layers h %d ffn %d vocab %d: weights %.1f MiB, D2D %.0f GB/s, floor %.3f ms\n",
         prop.name, g_sms, prop.l2CacheSize >> 20, L, H, F, V, weight_bytes / (1 << 20), d2d / 1e9, floor_ms);

  std::vector<Config> configs = {
      {"step (this build)"},
      {"no PDL", false},
      {"no norm fused (wrong math)", true, 0, false},
      {"GEMVs only (no attention)", true, 0, true, true, -1, false},
      {"attention only", true, 0, true, true, -1, true, false},
      {"noop chain, 264 blocks", true, 0, true, true, 264},
      {"grid barriers, 132 blocks", true, 0, true, true, -132},
      {"grid barriers, 264 blocks", true, 0, true, true, -264},
      {"GEMVs only, one kernel, acq/rel barrier", true, 0, true, true, -1000},
      {"GEMVs only, one kernel, fenced barrier", true, 0, true, true, -1001},
      {"traced step", true, 0, true, true, -1, true, true, 1},
      {"balanced grid", true, 0, true, true, -1, true, true, 0, true},
      {"balanced grid, traced", true, 0, true, true, -1, true, true, 1, true},
  };
  // The step, its traced run (per-block timeline) and the balanced-grid variants only.
  if (getenv("GEMV_CHAIN_TRACE_ONLY"))
    configs.erase(std::remove_if(configs.begin() + 1, configs.end(),
                                 [](const Config& c) { return c.variant == 0 && !c.balanced; }),
                  configs.end());
  // Layer norm check: the layer_norm kernel against a double-precision reference, and the GEMV
  // with the norm fused against the layer_norm kernel then the plain GEMV (must be bit-identical).
  for (int cols : {H, 768, 1000, 3072, 4096}) {
    __half *x = alloc_fill(cols, 4.f, 77 + cols), *w = alloc_fill(cols, 2.f, 78), *b = alloc_fill(cols, 1.f, 79);
    __half* y = alloc_fill(cols, 0.f, 80);
    launch(layer_norm_f16, dim3(1), dim3(256), 0, (cudaStream_t)0, (const __half*)x, (const __half*)w, (const __half*)b, y,
           cols, 1e-5f);
    CK(cudaDeviceSynchronize());
    std::vector<__half> hx(cols), hw(cols), hb(cols), hy(cols);
    CK(cudaMemcpy(hx.data(), x, cols * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hw.data(), w, cols * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hb.data(), b, cols * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hy.data(), y, cols * 2, cudaMemcpyDeviceToHost));
    double mean = 0, var = 0;
    for (int i = 0; i < cols; ++i) mean += (double)__half2float(hx[i]);
    mean /= cols;
    for (int i = 0; i < cols; ++i) var += ((double)__half2float(hx[i]) - mean) * ((double)__half2float(hx[i]) - mean);
    var /= cols;
    double err = 0;
    for (int i = 0; i < cols; ++i) {
      const double ref = ((double)__half2float(hx[i]) - mean) / sqrt(var + 1e-5) * __half2float(hw[i]) + __half2float(hb[i]);
      err = std::max(err, fabs(ref - (double)__half2float(hy[i])) / std::max(1.0, fabs(ref)));
    }
    // fused vs separate (cols as k of a 64-row GEMV)
    __half* wm = alloc_fill((size_t)64 * cols, 0.05f, 81);
    __half *y1 = alloc_fill(64, 0.f, 82), *y2 = alloc_fill(64, 0.f, 83);
    const int wpr = warps_per_row(cols / 8, 64, 2 * g_sms * 8);
    launch(gemv_small_m1_f16, dim3(2), dim3(256), (size_t)cols * 2, (cudaStream_t)0, (const __half*)x, (const __half*)wm,
           (const __half*)nullptr, (const __half*)nullptr, (const __half*)w, (const __half*)b, 1e-5f, y1, 64, cols, wpr, 0, 0, 1, PRO_AUTO);
    launch(gemv_small_m1_f16, dim3(2), dim3(256), (size_t)cols * 2, (cudaStream_t)0, (const __half*)y, (const __half*)wm,
           (const __half*)nullptr, (const __half*)nullptr, (const __half*)nullptr, (const __half*)nullptr, 1e-5f, y2, 64, cols,
           wpr, 0, 0, 1, PRO_AUTO);
    CK(cudaDeviceSynchronize());
    std::vector<__half> h1(64), h2(64);
    CK(cudaMemcpy(h1.data(), y1, 128, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(h2.data(), y2, 128, cudaMemcpyDeviceToHost));
    int diff = 0;
    for (int i = 0; i < 64; ++i) diff += memcmp(&h1[i], &h2[i], 2) != 0;
    printf("layer norm %4d cols: max rel error vs f64 %.2e; fused GEMV vs norm + GEMV: %d of 64 outputs differ\n", cols, err, diff);
    for (void* p : {(void*)x, (void*)w, (void*)b, (void*)y, (void*)wm, (void*)y1, (void*)y2}) CK(cudaFree(p));
  }

  if (getenv("GEMV_CHAIN_ONLY")) configs.resize(1);  // one variant (for Nsight Compute)
  if (getenv("GEMV_CHAIN_BLOCKS_PER_SM")) configs[0].blocks_per_sm = atoi(getenv("GEMV_CHAIN_BLOCKS_PER_SM"));
  __half* h_init;
  CK(cudaMalloc(&h_init, (size_t)H * 2));
  CK(cudaMemcpy(h_init, h, (size_t)H * 2, cudaMemcpyDeviceToDevice));
  std::map<std::string, std::pair<std::vector<__half>, unsigned long long>> state;
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const int fast_smem = (D + 32 * D + cap + 2 * D) * 4;
  printf("%-28s %10s %10s %8s\n", "variant", "ms/step", "x floor", "GB/s");
  for (const auto& c : configs) {
    g_pdl = c.pdl;
    g_blocks_per_sm = c.blocks_per_sm;
    g_norm = c.norm;
    g_plain_smem = c.plain_smem;
    g_variant = c.variant;
    g_balanced = c.balanced;
    g_trace_k = 0;
    g_trace_names.clear();
    std::vector<int> trace_blocks;
    if (c.variant != 0 && !g_trace) CK(cudaMalloc(&g_trace, (size_t)(5 * L + 1) * TRACE_BLOCKS * 4 * 8));
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; c.noop_blocks >= 0 && i < 5 * L + 1; ++i)
      launch(noop_kernel, dim3(c.noop_blocks), dim3(256), 0, s, (int*)nullptr);
    if (c.noop_blocks <= -1000) {
      int per_sm = 0;
      CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, mega_gemvs<false>, 256, (size_t)F * 2));
      CK(cudaMemsetAsync(bar_count, 0, 4, s));
      const int wh = warps_per_row(H / 8, H, per_sm * g_sms * 8), wf = warps_per_row(F / 8, H, per_sm * g_sms * 8);
      if (c.noop_blocks == -1000)
        launch(mega_gemvs<false>, dim3(per_sm * g_sms), dim3(256), (size_t)F * 2, s, (const MegaLayer*)mega, L, H, F, h, qkv,
               (const __half*)att, h2, f, bar_count, wh, wf, (const __half*)lnf_w, (const __half*)lnf_b,
               (const __half*)lm, keys, V);
      else
        launch(mega_gemvs<true>, dim3(per_sm * g_sms), dim3(256), (size_t)F * 2, s, (const MegaLayer*)mega, L, H, F, h, qkv,
               (const __half*)att, h2, f, bar_count, wh, wf, (const __half*)lnf_w, (const __half*)lnf_b,
               (const __half*)lm, keys, V);
    }
    if (c.noop_blocks <= -2 && c.noop_blocks > -1000)
      launch(barrier_chain, dim3(-c.noop_blocks), dim3(256), 0, s, bar_count, bar_gen, 5 * L + 1);
    for (int i = 0; c.noop_blocks == -1 && i < L; ++i) {
      const Layer& l = layers[i];
      // qkv (norm fused, no bias: the attention kernel adds it), attention, out + residual,
      // fc1 (norm fused) + relu, fc2 + residual: as Opt::decode_logits.
      if (c.gemvs) gemv(s, h, l.qkv_w, nullptr, nullptr, l.ln1_w, l.ln1_b, qkv, 3 * H, H, 0, 0);
      g_trace_names.push_back("qkv");
      if (c.attention && c.variant == 1) {
        launch(attention_traced, dim3(NH, 1), dim3(256), (size_t)fast_smem, s, (const __half*)qkv, (const __half*)l.qkv_b,
               l.kc, l.vc, (const uint32_t*)slot, (const float*)pad, att, NH, cap,
               g_trace + (size_t)g_trace_k++ * TRACE_BLOCKS * 4);
        g_trace_names.push_back("attn");
      } else if (c.attention) {
        launch(decode_attention_d64_f16, dim3(NH, 1), dim3(256), (size_t)fast_smem, s, (const __half*)qkv,
               (const __half*)l.qkv_b, l.kc, l.vc, (const uint32_t*)slot, (const float*)pad, att, NH, cap);
      }
      if (!c.gemvs) continue;
      gemv(s, att, l.out_w, l.out_b, h, nullptr, nullptr, h2, H, H, 2, 0);
      gemv(s, h2, l.fc1_w, l.fc1_b, nullptr, l.ln2_w, l.ln2_b, f, F, H, 1, 1);
      gemv(s, f, l.fc2_w, l.fc2_b, h2, nullptr, nullptr, h, H, F, 2, 0);
      g_trace_names.insert(g_trace_names.end(), {"out", "fc1", "fc2"});
    }
    if (c.noop_blocks == -1 && c.gemvs) gemv(s, h, lm, nullptr, (const __half*)keys, lnf_w, lnf_b, nullptr, V, H, 3, 0);
    g_trace_names.push_back("lm");
    cudaGraph_t g;
    CK(cudaStreamEndCapture(s, &g));
    cudaGraphExec_t ge;
    CK(cudaGraphInstantiate(&ge, g, 0));
    {
      // One step from the same state for every variant: the GEMV-only chain and the one-kernel
      // versions must end bit-identical (same kernels, same order).
      CK(cudaMemcpyAsync(h, h_init, (size_t)H * 2, cudaMemcpyDeviceToDevice, s));
      CK(cudaMemsetAsync(keys, 0, 8, s));
      CK(cudaGraphLaunch(ge, s));
      CK(cudaStreamSynchronize(s));
      std::vector<__half> out(H);
      CK(cudaMemcpy(out.data(), h, (size_t)H * 2, cudaMemcpyDeviceToHost));
      unsigned long long key = 0;
      CK(cudaMemcpy(&key, keys, 8, cudaMemcpyDeviceToHost));
      state[c.name] = {out, key};
    }
    for (int i = 0; i < 30; ++i) CK(cudaGraphLaunch(ge, s));
    CK(cudaStreamSynchronize(s));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> per;
    for (int r = 0; r < 7; ++r) {
      const int N = 100;
      CK(cudaEventRecord(e0, s));
      for (int i = 0; i < N; ++i) CK(cudaGraphLaunch(ge, s));
      CK(cudaEventRecord(e1, s));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      per.push_back(ms / N);
    }
    std::sort(per.begin(), per.end());
    const double ms = per[per.size() / 2];
    printf("%-28s %10.4f %10.3f %8.0f   (min %.4f max %.4f)\n", c.name.c_str(), ms, ms / floor_ms,
           weight_bytes / (ms * 1e-3) / 1e9, per.front(), per.back());
    if (c.variant == 1) {
      // Block counts per kernel, as launched (the trace records every launched block).
      auto grid_of = [&](int n, int k) {
        int per_sm = 0;
        CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_traced, 256, (size_t)k * 2));
        if (g_blocks_per_sm > 0) per_sm = std::min(per_sm, g_blocks_per_sm);
        const int wpr = warps_per_row(k / 8, n, std::max(per_sm, 1) * g_sms * 8), groups = (n + 8 / wpr - 1) / (8 / wpr);
        const int b = std::min(groups, std::max(per_sm, 1) * g_sms);
        return g_balanced ? (groups + (groups + b - 1) / b - 1) / ((groups + b - 1) / b) : b;
      };
      for (int i = 0; i < L; ++i) {
        trace_blocks.push_back(grid_of(3 * H, H));
        trace_blocks.push_back(NH);
        trace_blocks.push_back(grid_of(H, H));
        trace_blocks.push_back(grid_of(F, H));
        trace_blocks.push_back(grid_of(H, F));
      }
      trace_blocks.push_back(grid_of(V, H));
      std::vector<unsigned long long> tr((size_t)g_trace_k * TRACE_BLOCKS * 4);
      CK(cudaMemcpy(tr.data(), g_trace, tr.size() * 8, cudaMemcpyDeviceToHost));
      print_trace(tr, g_trace_names, trace_blocks);
    }
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
  }
  if (state.count("step (this build)")) {
    const auto& ref = state["step (this build)"];
    for (const char* name : {"traced step", "balanced grid"}) {
      if (!state.count(name)) continue;
      const auto& got = state[name];
      int diff = 0;
      float worst = 0.f;
      for (int i = 0; i < H; ++i) {
        diff += memcmp(&ref.first[i], &got.first[i], 2) != 0;
        worst = std::max(worst, fabsf(__half2float(ref.first[i]) - __half2float(got.first[i])));
      }
      printf("%s vs the step after one step: %d of %d hidden values differ (max abs %.3g), argmax key %s\n", name, diff, H,
             worst, ref.second == got.second ? "equal" : "DIFFERS");
    }
  }
  if (!state.count("GEMVs only (no attention)")) return 0;
  const auto& ref = state["GEMVs only (no attention)"];
  for (const char* name : {"GEMVs only, one kernel, acq/rel barrier", "GEMVs only, one kernel, fenced barrier"}) {
    if (!state.count(name)) continue;
    const auto& got = state[name];
    int diff = 0;
    for (int i = 0; i < H; ++i) diff += memcmp(&ref.first[i], &got.first[i], 2) != 0;
    printf("%s vs the GEMV-only chain after one step: %d of %d hidden values differ, argmax key %s\n", name, diff, H,
           ref.second == got.second ? "equal" : "DIFFERS");
  }
  return 0;
}
