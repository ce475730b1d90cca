// tokbench's fused CUDA kernels for the decode step (one new token per sequence), compiled to
// PTX by worker/build.rs with nvcc when the `cuda` feature is on, loaded by src/model/cuda_ops/launch.rs.
//
// Why: in candle, a decode step of a 12-layer model is ~27 kernel launches per layer (bias adds,
// head split/merge copies, cache writes, mask add, dtype casts, softmax...). These kernels do the
// same arithmetic in ~10 launches per layer, and they read the per-step cache slot from device
// memory, so a whole step can be captured once as a CUDA graph and replayed.
//
// All arithmetic is in f32; storage type T is float, __half or __nv_bfloat16.
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

// Programmatic dependent launch (compute_90 build, -DTOKBENCH_PDL; see cuda_ops/launch.rs): a kernel
// lets the next one launch at once (its blocks start as this one's drain), and waits for the
// previous kernel's completion and memory before it reads anything that kernel (or any earlier
// one) wrote. Every kernel waits in every block, so completion is transitive down the stream.
// Without the attribute at launch, or in the compute_80 build, both are no-ops.
#ifdef TOKBENCH_PDL
#define PDL_LAUNCH_DEPENDENTS() asm volatile("griddepcontrol.launch_dependents;" ::: "memory")
#define PDL_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#else
#define PDL_LAUNCH_DEPENDENTS()
#define PDL_WAIT()
#endif
#define PDL_ENTER()         \
  do {                      \
    PDL_LAUNCH_DEPENDENTS(); \
    PDL_WAIT();             \
  } while (0)

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
  return v;
}

// Block-wide reduction (blockDim.x a multiple of 32, ≤ 1024); every thread gets the result.
template <bool MAX>
__device__ float block_reduce(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = MAX ? warp_max(v) : warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < warps ? scratch[lane] : (MAX ? -INFINITY : 0.f);
  r = MAX ? warp_max(r) : warp_sum(r);
  return r;
}

// Attention of one new query per sequence over the cache, one block per (head, sequence).
//   qkv      [b, 3h]           this step's fused q|k|v projection (q pre-scaled), no bias yet
//   qkv_bias [3h] or null
//   k_cache, v_cache [b, H, cap, d]: the new k, v are written at `*slot` (in place), then
//            positions 0..=*slot are attended
//   pad_bias [b, cap] f32      0 or a large negative number (left padding)
//   out      [b, h]            heads merged (h = H * d)
// Dynamic shared memory: (cap + d) floats.
template <typename T>
__device__ void decode_attention(const T* __restrict__ qkv, const T* __restrict__ qkv_bias, T* k_cache, T* v_cache,
                                 const uint32_t* __restrict__ slot_ptr, const float* __restrict__ pad_bias,
                                 T* __restrict__ out, int heads, int d, int cap) {
  PDL_ENTER();
  extern __shared__ float smem[];
  float* q = smem;           // [d]
  float* p = smem + d;       // [cap] scores, then probabilities
  __shared__ float scratch[32];
  const int head = blockIdx.x, seq = blockIdx.y, h = heads * d;
  const int slot = (int)*slot_ptr;
  const T* row = qkv + (size_t)seq * 3 * h;
  T* kc = k_cache + ((size_t)seq * heads + head) * cap * d;
  T* vc = v_cache + ((size_t)seq * heads + head) * cap * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    const int qi = head * d + i, ki = h + head * d + i, vi = 2 * h + head * d + i;
    float qv = to_f(row[qi]), kv = to_f(row[ki]), vv = to_f(row[vi]);
    if (qkv_bias) {
      qv += to_f(qkv_bias[qi]);
      kv += to_f(qkv_bias[ki]);
      vv += to_f(qkv_bias[vi]);
    }
    // Rounded to T as the cache stores it, so this step sees what later steps will.
    q[i] = to_f(from_f<T>(qv));
    kc[(size_t)slot * d + i] = from_f<T>(kv);
    vc[(size_t)slot * d + i] = from_f<T>(vv);
  }
  __syncthreads();  // the new key/value row and q are visible to the whole block
  const int n = slot + 1;
  const float* pb = pad_bias + (size_t)seq * cap;
  float local_max = -INFINITY;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const T* kj = kc + (size_t)j * d;
    float s = 0.f;
    for (int i = 0; i < d; ++i) s += q[i] * to_f(kj[i]);
    s += pb[j];
    p[j] = s;
    local_max = fmaxf(local_max, s);
  }
  const float mx = block_reduce<true>(local_max, scratch);
  float local_sum = 0.f;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const float e = __expf(p[j] - mx);
    p[j] = e;
    local_sum += e;
  }
  const float inv = 1.f / block_reduce<false>(local_sum, scratch);
  __syncthreads();  // all p[j] written
  // Output: thread group g sums positions j ≡ g (mod groups) for dim i; partials reduced in smem.
  const int groups = blockDim.x / d > 0 ? blockDim.x / d : 1;
  const int i = threadIdx.x % d, g = threadIdx.x / d;
  float acc = 0.f;
  if (g < groups) {
    for (int j = g; j < n; j += groups) acc += p[j] * to_f(vc[(size_t)j * d + i]);
  }
  __syncthreads();
  // Reuse p as the partial-sum buffer (groups * d ≤ blockDim.x ≤ cap is not guaranteed: use q's
  // tail only when it fits, else fall back to atomics in smem).
  float* part = p;
  if (groups * d <= cap) {
    if (g < groups) part[g * d + i] = acc;
    __syncthreads();
    if (g == 0) {
      float s = 0.f;
      for (int k = 0; k < groups; ++k) s += part[k * d + i];
      out[(size_t)seq * h + head * d + i] = from_f<T>(s * inv);
    }
  } else {
    if (threadIdx.x < d) q[threadIdx.x] = 0.f;
    __syncthreads();
    if (g < groups) atomicAdd(&q[i], acc);
    __syncthreads();
    if (threadIdx.x < d) out[(size_t)seq * h + head * d + threadIdx.x] = from_f<T>(q[threadIdx.x] * inv);
  }
}

// y[r, c] = act(y[r, c] + bias[c]) in place. act: 0 none, 1 relu, 2 gelu (tanh), 3 gelu (erf).
template <typename T>
__device__ void bias_act(T* y, const T* __restrict__ bias, int rows, int cols, int act) {
  PDL_ENTER();
  const size_t n = (size_t)rows * cols;
  for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
    // Rounded to T after the bias add, as candle's separate add kernel does.
    float v = to_f(from_f<T>(to_f(y[idx]) + to_f(bias[idx % cols])));
    if (act == 1) v = fmaxf(v, 0.f);
    else if (act == 2) v = 0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    else if (act == 3) v = 0.5f * v * (1.f + erff(v * 0.7071067811865476f));
    y[idx] = from_f<T>(v);
  }
}

// y = (y + bias) + res in place (bias may be null): a linear layer's bias and the residual add.
template <typename T>
__device__ void bias_residual(T* y, const T* __restrict__ bias, const T* __restrict__ res, int rows, int cols) {
  PDL_ENTER();
  const size_t n = (size_t)rows * cols;
  for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
    float v = to_f(y[idx]);
    if (bias) v = to_f(from_f<T>(v + to_f(bias[idx % cols])));
    y[idx] = from_f<T>(v + to_f(res[idx]));
  }
}

// out[s, :] = tok[ids[s], :] + pos[positions[s], :]  (token + learned position embedding).
template <typename T>
__device__ void embed(const uint32_t* __restrict__ ids, const uint32_t* __restrict__ positions, const T* __restrict__ tok,
                      const T* __restrict__ pos, T* __restrict__ out, int h) {
  PDL_ENTER();
  const int s = blockIdx.x;
  const T* a = tok + (size_t)ids[s] * h;
  // pos null: no learned positions (the rotary families), the token row alone.
  const T* b = pos ? pos + (size_t)positions[s] * h : nullptr;
  for (int i = threadIdx.x; i < h; i += blockDim.x) out[(size_t)s * h + i] = b ? from_f<T>(to_f(a[i]) + to_f(b[i])) : a[i];
}


// The rotary families' prefill, per token: q and k through Qwen3's per-head RMSNorm (q_norm_w,
// k_norm_w; null: none) and the rotary embedding at positions[seq, tok], written as
//   q_out [b, heads, t, d]               (for the attention matmuls)
//   k_cache, v_cache [b, kv_heads, cap, d] at rows offset + tok (the cache, or [.., t, ..] tensors)
// from the projection qkv [b, t, (heads + 2 kv_heads) * d] (bias added). Replaces candle's three
// head-split copies, two rope kernels, Qwen3's two norms and the two cache copies of a layer with
// one launch (the prefill of a small model is bound by launches on the host). The arithmetic is
// the decode attention kernel's: norm as transformers rounds it, cos/sin rounded to T, one
// rounding of the rotated value.
// One block per (token, sequence), one warp per head row; dynamic shared memory: warps * d floats.
template <typename T>
__device__ void rotary_split(const T* __restrict__ qkv, const uint32_t* __restrict__ positions,
                             const float* __restrict__ inv_freq, const T* __restrict__ q_norm_w,
                             const T* __restrict__ k_norm_w, float eps, T* __restrict__ q_out, T* k_cache, T* v_cache,
                             int heads, int kv_heads, int d, int t, int cap, int offset) {
  extern __shared__ float rs_smem[];
  PDL_ENTER();
  const int tok = blockIdx.x, seq = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int warps = blockDim.x >> 5, rows = heads + 2 * kv_heads, half = d / 2;
  const T* row = qkv + ((size_t)seq * t + tok) * rows * d;
  const float pos = (float)positions[(size_t)seq * t + tok];
  float* buf = rs_smem + warp * d;
  for (int r = warp; r < rows; r += warps) {
    const T* x = row + (size_t)r * d;
    const bool is_q = r < heads, is_k = !is_q && r < heads + kv_heads;
    T* dst = is_q ? q_out + (((size_t)seq * heads + r) * t + tok) * d
           : is_k ? k_cache + (((size_t)seq * kv_heads + (r - heads)) * cap + offset + tok) * d
                  : v_cache + (((size_t)seq * kv_heads + (r - heads - kv_heads)) * cap + offset + tok) * d;
    if (!is_q && !is_k) {
      for (int i = lane; i < d; i += 32) dst[i] = x[i];
      continue;
    }
    const T* nw = is_q ? q_norm_w : k_norm_w;
    float ss = 0.f;
    for (int i = lane; i < d; i += 32) {
      const float v = to_f(x[i]);
      buf[i] = v;
      ss += v * v;
    }
    if (nw) {
      const float rstd = rsqrtf(warp_sum(ss) / d + eps);
      for (int i = lane; i < d; i += 32) buf[i] = to_f(from_f<T>(to_f(from_f<T>(buf[i] * rstd)) * to_f(nw[i])));
    }
    __syncwarp();
    float out[8];  // d <= 256: up to 8 values per lane
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      const int i = lane + 32 * n;
      if (i >= d) break;
      const float angle = pos * inv_freq[i % half];
      const float c = to_f(from_f<T>(cosf(angle))), sn = to_f(from_f<T>(sinf(angle)));
      const float other = buf[i < half ? i + half : i - half];
      out[n] = buf[i] * c + (i < half ? -other : other) * sn;
    }
    __syncwarp();  // buf is rewritten by this warp's next row
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      const int i = lane + 32 * n;
      if (i >= d) break;
      dst[i] = from_f<T>(out[n]);
    }
  }
}

// Loads 16 bytes (PER = 16 / sizeof(T) values) as floats.
template <typename T>
__device__ __forceinline__ void load16(const T* p, float* out) {
  constexpr int PER = 16 / sizeof(T);
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < PER; ++i) out[i] = to_f(v[i]);
}

// decode_attention for a compile-time head size D (a multiple of 16 / sizeof(T)), 16-byte
// loads. Why: the generic kernel reads a key row one element per iteration, so each thread
// waits a memory latency per element (~40 us per call at 256 positions); here a thread issues
// all D/PER loads of its row at once, and the P·V loop keeps several rows in flight.
// Block: 256 threads (at batch 1 a step has only heads × 1 blocks: wide blocks, short serial
// chains). The first 256 key rows and the first 8 value rows of every thread are loaded together,
// right after the slot is known (one memory latency where there were three: keys, then values
// after the softmax); the row at the slot, which this block writes, is taken from shared memory.
// Dynamic shared memory: (D + GROUPS * D + cap + 2 * D) floats.
//
// ROPE: the rotary families (grouped key/value heads). The block of query head `head` reads its
// q and the k, v of its key/value head head / (heads / kv_heads) from the projection
// [b, (heads + 2 kv_heads) * D] (bias already added by the GEMV; q's softmax scale folded in),
// applies Qwen3's per-head RMSNorm to q and k (q_norm_w, k_norm_w; null: none) and the rotary
// embedding at positions[seq] (angles pos * inv_freq[i] in f32, cos and sin rounded to T, the
// rotate-half layout, as transformers computes them), and attends over the cache
// [b, kv_heads, cap, D]; the group's first query head writes the new k, v at the slot. The other
// heads of a group read the same cache rows, which their neighbouring blocks have just pulled
// into L2: HBM serves each key/value head once per step. Why one block per query head, not per
// key/value head: at batch 1 a Llama-3.2-1B layer has 8 key/value heads, and 8 blocks would
// leave most of the GPU idle through the attention's latency chain.
// Without ROPE (OPT, GPT-2): kv_heads = heads, qkv [b, 3h] with its bias added here.
// PAGED (the server's paged KV cache, ROPE only): k_cache/v_cache are the layer's block pool,
// [num_blocks * block_size, kv_heads * D] (a row per token slot); position j of sequence `seq`
// lives in pool row block_tables[seq * max_blocks + j / block_size] * block_size + j % block_size.
// slot_ptr then holds one slot per sequence (its length before this token: where the token's k/v
// go), there is no padding (pad_bias unused) and `cap` only bounds the longest sequence + 1.
template <typename T, int D, bool ROPE = false, bool PAGED = false>
__device__ void decode_attention_fast(const T* __restrict__ qkv, const T* __restrict__ qkv_bias, T* k_cache, T* v_cache,
                                      const uint32_t* __restrict__ slot_ptr, const float* __restrict__ pad_bias,
                                      T* __restrict__ out, int heads, int cap, int kv_heads = 0,
                                      const uint32_t* __restrict__ positions = nullptr,
                                      const float* __restrict__ inv_freq = nullptr, const T* __restrict__ q_norm_w = nullptr,
                                      const T* __restrict__ k_norm_w = nullptr, float norm_eps = 0.f,
                                      const uint32_t* __restrict__ block_tables = nullptr, int max_blocks = 0,
                                      int block_size = 1) {
  constexpr int PER = 16 / sizeof(T);
  constexpr int CHUNKS = D / PER;        // 16-byte chunks per row
  constexpr int GROUPS = 256 / CHUNKS;   // P·V: thread groups over positions
  constexpr int R = 8;                   // value rows in flight per thread
  extern __shared__ float smem[];
  float* q = smem;                 // [D]
  float* part = smem + D;          // [GROUPS * D]
  float* p = part + GROUPS * D;    // [cap]
  float* knew = p + cap;           // [D] this step's key and value, as the cache stores them
  float* vnew = knew + D;          // [D]
  __shared__ float scratch[32];
  if (!ROPE) kv_heads = heads;
  const int head = blockIdx.x, seq = blockIdx.y, h = heads * D;
  const int kvh = head / (heads / kv_heads), row_w = (heads + 2 * kv_heads) * D;
  const bool writer = head % (heads / kv_heads) == 0;
  T* kc = PAGED ? k_cache + (size_t)kvh * D : k_cache + ((size_t)seq * kv_heads + kvh) * cap * D;
  T* vc = PAGED ? v_cache + (size_t)kvh * D : v_cache + ((size_t)seq * kv_heads + kvh) * cap * D;
  const uint32_t* table = PAGED ? block_tables + (size_t)seq * max_blocks : nullptr;
  // Offset (elements) of position j's row from kc / vc.
  auto kv_row = [&](int j) -> size_t {
    if (PAGED) return ((size_t)table[j / block_size] * block_size + j % block_size) * kv_heads * D;
    return (size_t)j * D;
  };
  if (PAGED) slot_ptr += seq;
  const int c = threadIdx.x % CHUNKS, g = threadIdx.x / CHUNKS;
  // Rows before the slot were written by earlier steps (earlier graph launches or the prefill,
  // complete; without a graph, this layer's attention of an earlier step, over a hundred
  // launches back, behind GEMVs that each drain the whole GPU before the next can start all its
  // blocks), so they are loaded before waiting for the qkv GEMV: the keys and values then
  // stream while that kernel drains instead of after it (on an H200 the attention took ~6.4 us
  // after the qkv GEMV, ~15% of an opt-1.3b layer). The slot itself is set
  // by a kernel of this step that may still be running, so the early read (volatile: not from a
  // stale L1 line) only bounds the early loads; rows from it up to the slot read after the wait
  // are loaded then. The slot's row is this block's to write.
  const int early = min((int)*reinterpret_cast<const volatile uint32_t*>(slot_ptr), cap);
  uint4 k_first[CHUNKS], v_first[R];
  // The padding bias is set before the step's graph runs: this thread's first entry too.
  const float* pb = PAGED ? nullptr : pad_bias + (size_t)seq * cap;
  const float pb_first = !PAGED && (int)threadIdx.x < cap ? pb[threadIdx.x] : 0.f;
  {
    const int j = threadIdx.x;
#pragma unroll
    for (int cc = 0; cc < CHUNKS; ++cc)
      k_first[cc] = j < early ? *reinterpret_cast<const uint4*>(kc + kv_row(j) + cc * PER) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int jv = g + r * GROUPS;
      v_first[r] = jv < early ? *reinterpret_cast<const uint4*>(vc + kv_row(jv) + c * PER) : make_uint4(0, 0, 0, 0);
    }
  }
  // Thread i < D takes element i of this head's q, k and v; the bias is constant (loaded before
  // the wait), this step's row is loaded right after it, before the slot: one memory latency
  // after the wait where there were two.
  static_assert(D <= 256, "one thread per element of a head");
  const int i = threadIdx.x;
  const int qi = head * D + i, ki = h + kvh * D + i, vi = h + (kv_heads + kvh) * D + i;
  float bq = 0.f, bk = 0.f, bv = 0.f;
  if (qkv_bias && i < D) {
    bq = to_f(qkv_bias[qi]);
    bk = to_f(qkv_bias[ki]);
    bv = to_f(qkv_bias[vi]);
  }
  // Constants of the rotary and the q/k norms, loaded before the wait.
  float freq = 0.f, wq = 1.f, wk = 1.f;
  if (ROPE && i < D) {
    freq = inv_freq[i % (D / 2)];
    if (q_norm_w) {
      wq = to_f(q_norm_w[i]);
      wk = to_f(k_norm_w[i]);
    }
  }
  PDL_ENTER();
  const T* row = qkv + (size_t)seq * row_w;
  T rq{}, rk{}, rv{};
  if (i < D) {
    rq = row[qi];
    rk = row[ki];
    rv = row[vi];
  }
  const int slot = (int)*reinterpret_cast<const volatile uint32_t*>(slot_ptr);
  const int n = slot + 1, lo = min(early, slot);  // rows below lo come from the early loads
  float qv = to_f(rq) + bq, kv = to_f(rk) + bk;
  const float vv = to_f(rv) + bv;
  if (ROPE) {
    const float pos = (float)positions[seq];
    if (q_norm_w) {  // (the same for the whole block: every thread takes part in the sums)
      const float sq = block_reduce<false>(i < D ? qv * qv : 0.f, scratch);
      const float sk = block_reduce<false>(i < D ? kv * kv : 0.f, scratch);
      qv = to_f(from_f<T>(to_f(from_f<T>(qv * rsqrtf(sq / D + norm_eps))) * wq));
      kv = to_f(from_f<T>(to_f(from_f<T>(kv * rsqrtf(sk / D + norm_eps))) * wk));
    }
    // rotate_half: element i pairs with i ± D/2 (`part` is free until the P·V sums).
    if (i < D) {
      part[i] = qv;
      part[D + i] = kv;
    }
    __syncthreads();
    if (i < D) {
      const int other = i < D / 2 ? i + D / 2 : i - D / 2;
      const float sign = i < D / 2 ? -1.f : 1.f, angle = pos * freq;
      const float c = to_f(from_f<T>(cosf(angle))), sn = to_f(from_f<T>(sinf(angle)));
      qv = qv * c + sign * part[other] * sn;
      kv = kv * c + sign * part[D + other] * sn;
    }
    __syncthreads();  // part is read before the P·V sums overwrite it
  }
  if (i < D) {
    // Rounded to T as the cache stores it, so this step sees what later steps will.
    q[i] = to_f(from_f<T>(qv));
    knew[i] = to_f(from_f<T>(kv));
    vnew[i] = to_f(from_f<T>(vv));
    if (writer) {
      kc[kv_row(slot) + i] = from_f<T>(kv);
      vc[kv_row(slot) + i] = from_f<T>(vv);
    }
  }
  __syncthreads();  // q, knew, vnew and the cache row at the slot are visible to the whole block
  float local_max = -INFINITY;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    float s = 0.f;
    if (j == slot) {
#pragma unroll
      for (int i = 0; i < D; ++i) s += q[i] * knew[i];
    } else {
      const bool first = j < (int)blockDim.x && j < lo;
#pragma unroll
      for (int cc = 0; cc < CHUNKS; ++cc) {
        const uint4 raw = first ? k_first[cc] : *reinterpret_cast<const uint4*>(kc + kv_row(j) + cc * PER);
        const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int e = 0; e < PER; ++e) s += q[cc * PER + e] * to_f(v[e]);
      }
    }
    if (!PAGED) s += j == (int)threadIdx.x ? pb_first : pb[j];
    p[j] = s;
    local_max = fmaxf(local_max, s);
  }
  const float mx = block_reduce<true>(local_max, scratch);
  float local_sum = 0.f;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const float e = __expf(p[j] - mx);
    p[j] = e;
    local_sum += e;
  }
  const float inv = 1.f / block_reduce<false>(local_sum, scratch);
  __syncthreads();
  float acc[PER];
#pragma unroll
  for (int i = 0; i < PER; ++i) acc[i] = 0.f;
  if (g < GROUPS) {
    for (int j0 = g; j0 < n; j0 += R * GROUPS) {
      uint4 raw[R];
      if (j0 == g) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const int j = j0 + r * GROUPS;
          raw[r] = j < lo ? v_first[r]
                          : (j < n ? *reinterpret_cast<const uint4*>(vc + kv_row(j) + c * PER) : make_uint4(0, 0, 0, 0));
        }
      } else {
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const int j = j0 + r * GROUPS;
          raw[r] = j < n ? *reinterpret_cast<const uint4*>(vc + kv_row(j) + c * PER) : make_uint4(0, 0, 0, 0);
        }
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int j = j0 + r * GROUPS;
        if (j < n) {
          const T* v = reinterpret_cast<const T*>(&raw[r]);
          const float pj = p[j];
          if (j == slot) {
#pragma unroll
            for (int i = 0; i < PER; ++i) acc[i] += pj * vnew[c * PER + i];
          } else {
#pragma unroll
            for (int i = 0; i < PER; ++i) acc[i] += pj * to_f(v[i]);
          }
        }
      }
    }
#pragma unroll
    for (int i = 0; i < PER; ++i) part[g * D + c * PER + i] = acc[i];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    float s = 0.f;
    for (int k = 0; k < GROUPS; ++k) s += part[k * D + i];
    out[(size_t)seq * h + head * D + i] = from_f<T>(s * inv);
  }
}

// Layer norm of one row, by a block of 256 threads, in f32. Generic path (any width, any
// alignment): every warp computes the statistics itself (two passes, shuffles only) and writes
// its share of the row; the block path below is taken wherever the row fits it.
template <typename T>
__device__ void layer_norm_row_generic(const T* __restrict__ xr, const T* __restrict__ w, const T* __restrict__ b, T* yr,
                                       int cols, float eps, bool rms) {
  constexpr int PER = 16 / sizeof(T);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, chunks = (cols + PER - 1) / PER;
  float sum = 0.f;
  for (int c = lane; c < chunks; c += 32)
    for (int e = 0; e < PER; ++e)
      if (c * PER + e < cols) sum += to_f(xr[c * PER + e]);
  const float mean = rms ? 0.f : warp_sum(sum) / cols;
  float sq = 0.f;
  for (int c = lane; c < chunks; c += 32)
    for (int e = 0; e < PER; ++e)
      if (c * PER + e < cols) sq += (to_f(xr[c * PER + e]) - mean) * (to_f(xr[c * PER + e]) - mean);
  const float rstd = rsqrtf(warp_sum(sq) / cols + eps);
  for (int c = warp * 32 + lane; c < chunks; c += 256)
    for (int e = 0; e < PER; ++e) {
      const int i = c * PER + e;
      if (i >= cols) continue;
      // RMSNorm as transformers rounds it: weight * (x * rstd).to(dtype).
      yr[i] = rms ? from_f<T>(to_f(from_f<T>(to_f(xr[i]) * rstd)) * to_f(w[i]))
                  : from_f<T>((to_f(xr[i]) - mean) * rstd * to_f(w[i]) + to_f(b[i]));
    }
}

// Block path (where the row fits: cols % (16 / sizeof(T)) == 0 and at most 512 16-byte chunks):
// the 256 threads share the row, thread t holding chunks t and t + 256 in registers, so the
// block reads the row once. Why: v6 had every warp hold the whole row and compute the statistics
// with shuffles; fused into the GEMV, an opt-1.3b layer's 2112 warps then pulled 8.6 MB out of L2
// right after the PDL wait — this path took the step from 0.978 to 0.940 ms on an H200
// (bench/gemv_chain.cu).
// Statistics in one pass, shifted by the row's first value (sums of d and d² with d = x - x[0],
// variance = E[d²] - E[d]²: no cancellation unless x[0] lies far outside the row's spread), one
// __syncthreads for the per-warp partial sums, added by every thread in a fixed order. The
// separate layer_norm kernel takes the same path, so fused and separate stay bit-identical.
// `buf` (0 or 1) alternates between consecutive rows so one row's partial sums are not
// overwritten while another thread still reads them.
constexpr int LN_NQ = 2;  // chunks per thread
template <typename T>
__device__ __forceinline__ bool ln_block_fits(int cols) {
  constexpr int PER = 16 / sizeof(T);
  return cols % PER == 0 && cols / PER <= 256 * LN_NQ;
}
template <typename T>
__device__ __forceinline__ void ln_block_params_load(const T* __restrict__ w, const T* __restrict__ b, int cols,
                                                     uint4 (&wr)[LN_NQ], uint4 (&br)[LN_NQ]) {
  constexpr int PER = 16 / sizeof(T);
  const int chunks = cols / PER;
#pragma unroll
  for (int q = 0; q < LN_NQ; ++q) {
    const int c = threadIdx.x + 256 * q;
    wr[q] = c < chunks ? *reinterpret_cast<const uint4*>(w + (size_t)c * PER) : make_uint4(0, 0, 0, 0);
    br[q] = c < chunks && b ? *reinterpret_cast<const uint4*>(b + (size_t)c * PER) : make_uint4(0, 0, 0, 0);
  }
}
template <typename T>
__device__ void layer_norm_row_block(const T* __restrict__ xr, const uint4 (&wr)[LN_NQ], const uint4 (&br)[LN_NQ], T* yr,
                                     int cols, float eps, int buf, bool rms) {
  constexpr int PER = 16 / sizeof(T);
  __shared__ float partial[2][16];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, chunks = cols / PER;
  // (RMSNorm: no shift, no mean; the sum of squares of x itself.)
  const float shift = rms ? 0.f : to_f(xr[0]);
  uint4 raw[LN_NQ];
#pragma unroll
  for (int q = 0; q < LN_NQ; ++q) {
    const int c = threadIdx.x + 256 * q;
    raw[q] = c < chunks ? *reinterpret_cast<const uint4*>(xr + (size_t)c * PER) : make_uint4(0, 0, 0, 0);
  }
  float s = 0.f, ss = 0.f;
#pragma unroll
  for (int q = 0; q < LN_NQ; ++q) {
    if (threadIdx.x + 256 * q >= chunks) continue;
    const T* v = reinterpret_cast<const T*>(&raw[q]);
#pragma unroll
    for (int e = 0; e < PER; ++e) {
      const float d = to_f(v[e]) - shift;
      s += d;
      ss += d * d;
    }
  }
  s = warp_sum(s);
  ss = warp_sum(ss);
  if (lane == 0) {
    partial[buf][warp] = s;
    partial[buf][8 + warp] = ss;
  }
  __syncthreads();
  float sum = 0.f, sq = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    sum += partial[buf][i];
    sq += partial[buf][8 + i];
  }
  const float md = rms ? 0.f : sum / cols;
  const float rstd = rsqrtf(fmaxf(sq / cols - md * md, 0.f) + eps);
#pragma unroll
  for (int q = 0; q < LN_NQ; ++q) {
    const int c = threadIdx.x + 256 * q;
    if (c >= chunks) continue;
    const T* v = reinterpret_cast<const T*>(&raw[q]);
    const T* wv = reinterpret_cast<const T*>(&wr[q]);
    const T* bv = reinterpret_cast<const T*>(&br[q]);
    uint4 o;
    T* ov = reinterpret_cast<T*>(&o);
#pragma unroll
    for (int e = 0; e < PER; ++e)
      ov[e] = rms ? from_f<T>(to_f(from_f<T>(to_f(v[e]) * rstd)) * to_f(wv[e]))
                  : from_f<T>((to_f(v[e]) - shift - md) * rstd * to_f(wv[e]) + to_f(bv[e]));
    *reinterpret_cast<uint4*>(yr + (size_t)c * PER) = o;
  }
}

// Layer norm over rows, one block of 256 threads per row.
template <typename T>
__device__ void layer_norm(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y,
                           int cols, float eps) {
  const size_t r = blockIdx.x;
  const bool aligned = ((uintptr_t)(x + r * cols) % 16 == 0) && ((uintptr_t)(y + r * cols) % 16 == 0) &&
                       ((uintptr_t)w % 16 == 0) && ((uintptr_t)b % 16 == 0);
  const bool block = aligned && ln_block_fits<T>(cols);
  uint4 wq[LN_NQ], bq[LN_NQ];
  if (block) ln_block_params_load<T>(w, b, cols, wq, bq);
  PDL_ENTER();
  if (block) layer_norm_row_block<T>(x + r * cols, wq, bq, y + r * cols, cols, eps, 0, false);
  else layer_norm_row_generic<T>(x + r * cols, w, b, y + r * cols, cols, eps, false);
}

// Greedy choice per row: index of the largest value, the smallest index among equals.
// One block of 1024 threads per row.
template <typename T>
__device__ void argmax_rows(const T* __restrict__ x, uint32_t* __restrict__ out, int cols) {
  PDL_ENTER();
  __shared__ float sv[32];
  __shared__ int si[32];
  const T* xr = x + (size_t)blockIdx.x * cols;
  float best = -INFINITY;
  int bi = 0x7fffffff;
#pragma unroll 8
  for (int i = threadIdx.x; i < cols; i += blockDim.x) {
    const float v = to_f(xr[i]);
    if (v > best) { best = v; bi = i; }  // i grows per thread: the first of equals stays
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffff, best, o);
    const int oi = __shfl_xor_sync(0xffffffff, bi, o);
    if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) { sv[warp] = best; si[warp] = bi; }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x >> 5;
    best = lane < warps ? sv[lane] : -INFINITY;
    bi = lane < warps ? si[lane] : 0x7fffffff;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffff, best, o);
      const int oi = __shfl_xor_sync(0xffffffff, bi, o);
      if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
    }
    if (lane == 0) out[blockIdx.x] = (uint32_t)(bi == 0x7fffffff ? 0 : bi);
  }
}

// Prefill attention probabilities: softmax over the last dim of scores [b, H, t, L] (T) plus a
// bias [b, 1, t, L] (f32, 0 or a large negative number) broadcast over heads, in f32; writes
// probabilities as T. Replaces candle's cast to f32, broadcast add, softmax and cast back (four
// passes over the largest tensor of the prefill). `out` may be `scores` itself (each warp reads
// its whole row before it writes it).
template <typename T>
__device__ void masked_softmax(const T* scores, const float* __restrict__ bias, T* out, int heads,
                               int t, int L, int rows) {
  PDL_ENTER();
  // One warp per row (rows of prefill attention are short: 128 keys for a 128-token prompt),
  // the row in registers: 32 lanes x MAXI values, L <= 1024.
  constexpr int MAXI = 32;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const size_t r = (size_t)blockIdx.x * (blockDim.x >> 5) + warp;  // (batch, head, query)
  if (r >= (size_t)rows) return;
  const int qi = (int)(r % t);
  const size_t bb = r / ((size_t)heads * t);
  const T* sr = scores + r * L;
  const float* br = bias + (bb * t + qi) * L;
  float v[MAXI];
  float mx = -INFINITY;
#pragma unroll
  for (int k = 0; k < MAXI; ++k) {
    const int i = lane + k * 32;
    v[k] = i < L ? to_f(sr[i]) + br[i] : -INFINITY;
    mx = fmaxf(mx, v[k]);
  }
  mx = warp_max(mx);
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < MAXI; ++k) {
    const int i = lane + k * 32;
    v[k] = i < L ? __expf(v[k] - mx) : 0.f;
    sum += v[k];
  }
  const float inv = 1.f / warp_sum(sum);
#pragma unroll
  for (int k = 0; k < MAXI; ++k) {
    const int i = lane + k * 32;
    if (i < L) out[r * L + i] = from_f<T>(v[k] * inv);
  }
}

// The largest of one int per lane of a full warp (redux.sync on compute 8.0+, shuffles before).
__device__ __forceinline__ int warp_max_int(int v) {
#if __CUDA_ARCH__ >= 800
  return __reduce_max_sync(0xffffffff, v);
#else
#pragma unroll
  for (int o = 16; o; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffff, v, o));
  return v;
#endif
}

// Index of the first real (unmasked) key of a sequence, from its key-padding row (t if none);
// every thread of the block gets it. Holds the block's PDL wait (the row comes from the host
// before the prefill, the qkv read after this from the previous kernel).
__device__ int first_real_key(const float* __restrict__ padrow, int t) {
  __shared__ int first;
  if (threadIdx.x == 0) first = t;
  PDL_ENTER();
  __syncthreads();
  for (int j = threadIdx.x; j < t; j += blockDim.x)
    if (padrow[j] > -1e30f) atomicMin(&first, j);
  __syncthreads();
  return first;
}

// Prefill attention, fused: for sequence `seq`, head `head` and a tile of blockDim.x queries
// (one per thread), softmax(q·kᵀ + bias)·v over the keys of the same prompt, straight from the
// qkv projection [b, t, 3h] (q pre-scaled, bias added) into `out` [b, t, h] (heads merged), and
// this tile's keys and values copied into rows 0..t of the cache [b, heads, cap, D] (null: no
// cache). Replaces the unfused path's three head-split copies, two cache writes, two batched
// matmuls, the softmax over a [b, heads, t, t] score tensor and the head merge (nsys of an
// opt-1.3b batch-32 prefill: the split copies and the softmax dominated).
// All arithmetic in f32 (scores, softmax and the weighted sum are not rounded to T in between).
// `bias` [b, 1, t, t] f32 must be the prefill's causal ⊕ key-padding bias (0 or MASKED,
// PrefillInputs::bias): keys after the query are skipped, and the key padding is read from the
// bias's last query row (which the causal part leaves whole). A query with no real key at or
// before it (a padding position ahead of the first token) gets uniform weights over all t keys,
// as softmax gives over a row of equal MASKED scores in the unfused path.
// Keys are staged in rounds of KC in shared memory as f32 (converted once per block, not once per
// query); each thread scores U keys at a time (independent dot products) and folds them into
// its running max / sum / output (online softmax).
template <typename T, int D>
__device__ void prefill_attention(const T* __restrict__ qkv, const float* __restrict__ bias, T* __restrict__ k_cache,
                                  T* __restrict__ v_cache, T* __restrict__ out, int heads, int t, int cap) {
  constexpr int PER = 16 / sizeof(T);  // values per 16-byte chunk
  constexpr int CH = D / PER;          // chunks per head row
  constexpr int KC = 64;               // keys staged per round
  constexpr int U = 16;                // keys scored together
  static_assert(D % PER == 0 && D % 4 == 0 && KC % U == 0, "head size");
  __shared__ float4 ks[KC][D / 4];
  __shared__ float4 vs[KC][D / 4];
  __shared__ float pad[KC];
  const int head = blockIdx.x, seq = blockIdx.y, q0 = blockIdx.z * blockDim.x;
  const int h = heads * D, row = 3 * h;
  const T* base = qkv + (size_t)seq * t * row;
  const float* padrow = bias + ((size_t)seq * t + (t - 1)) * t;
  const int first_real = first_real_key(padrow, t);
  const int qi = q0 + threadIdx.x;
  const bool active = qi < t;
  // Last key this thread's query attends (-1: none, the thread has no query); a query before the
  // first real key scores every key alike (0), so its weights come out uniform over all t keys.
  const bool uniform = qi < first_real;
  const int lim = !active ? -1 : (uniform ? t - 1 : qi);
  const int warp_lim = warp_max_int(lim);
  const int kend = q0 < first_real ? t : min(t, q0 + (int)blockDim.x);
  float q[D], acc[D];
#pragma unroll
  for (int i = 0; i < D; ++i) {
    q[i] = 0.f;
    acc[i] = 0.f;
  }
  if (active) {
    const T* qr = base + (size_t)qi * row + head * D;
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      const uint4 raw = *reinterpret_cast<const uint4*>(qr + c * PER);
      const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int e = 0; e < PER; ++e) q[c * PER + e] = to_f(v[e]);
    }
    if (k_cache) {
      const size_t at = (((size_t)seq * heads + head) * cap + qi) * D;
#pragma unroll
      for (int c = 0; c < CH; ++c) {
        *reinterpret_cast<uint4*>(k_cache + at + c * PER) = *reinterpret_cast<const uint4*>(qr + h + c * PER);
        *reinterpret_cast<uint4*>(v_cache + at + c * PER) = *reinterpret_cast<const uint4*>(qr + 2 * h + c * PER);
      }
    }
  }
  float m = -INFINITY, l = 0.f;
  for (int k0 = 0; k0 < kend; k0 += KC) {
    __syncthreads();  // the previous round's keys are no longer read
    const int n = min(KC, kend - k0);
    for (int c = threadIdx.x; c < KC * CH; c += blockDim.x) {
      const int j = c / CH, cc = c % CH;
      float* kd = reinterpret_cast<float*>(&ks[j][0]) + cc * PER;
      float* vd = reinterpret_cast<float*>(&vs[j][0]) + cc * PER;
      if (j < n) {
        const T* kr = base + (size_t)(k0 + j) * row + h + head * D + cc * PER;
        const uint4 kraw = *reinterpret_cast<const uint4*>(kr);
        const uint4 vraw = *reinterpret_cast<const uint4*>(kr + h);
        const T* kv = reinterpret_cast<const T*>(&kraw);
        const T* vv = reinterpret_cast<const T*>(&vraw);
#pragma unroll
        for (int e = 0; e < PER; ++e) {
          kd[e] = to_f(kv[e]);
          vd[e] = to_f(vv[e]);
        }
      } else {
#pragma unroll
        for (int e = 0; e < PER; ++e) kd[e] = vd[e] = 0.f;
      }
    }
    for (int j = threadIdx.x; j < KC; j += blockDim.x) pad[j] = j < n ? padrow[k0 + j] : 0.f;
    __syncthreads();
    for (int j0 = 0; j0 < n && k0 + j0 <= warp_lim; j0 += U) {
      float s[U];
#pragma unroll
      for (int u = 0; u < U; ++u) s[u] = 0.f;
#pragma unroll
      for (int d4 = 0; d4 < D / 4; ++d4) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const float4 k = ks[j0 + u][d4];
          s[u] += q[4 * d4] * k.x + q[4 * d4 + 1] * k.y + q[4 * d4 + 2] * k.z + q[4 * d4 + 3] * k.w;
        }
      }
      float cmax = -INFINITY;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int j = j0 + u;
        s[u] = (j < n && k0 + j <= lim) ? (uniform ? 0.f : s[u] + pad[j]) : -INFINITY;
        cmax = fmaxf(cmax, s[u]);
      }
      const float mnew = fmaxf(m, cmax);
      const float scale = m == -INFINITY ? 0.f : __expf(m - mnew);
      l *= scale;
#pragma unroll
      for (int i = 0; i < D; ++i) acc[i] *= scale;
      m = mnew;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const float p = s[u] == -INFINITY ? 0.f : __expf(s[u] - m);
        l += p;
#pragma unroll
        for (int d4 = 0; d4 < D / 4; ++d4) {
          const float4 v = vs[j0 + u][d4];
          acc[4 * d4] += p * v.x;
          acc[4 * d4 + 1] += p * v.y;
          acc[4 * d4 + 2] += p * v.z;
          acc[4 * d4 + 3] += p * v.w;
        }
      }
    }
  }
  if (active) {
    const float inv = 1.f / l;
    T* o = out + ((size_t)seq * t + qi) * h + head * D;
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      uint4 raw;
      T* v = reinterpret_cast<T*>(&raw);
#pragma unroll
      for (int e = 0; e < PER; ++e) v[e] = from_f<T>(acc[c * PER + e] * inv);
      *reinterpret_cast<uint4*>(o + c * PER) = raw;
    }
  }
}

// The same attention on tensor cores, for f16/bf16 and head size 64 (every model in the catalog):
// why — the kernel above runs at ~3.5x its ALU estimate (one query per thread, 176 registers,
// 12 warps per SM, 4 FMAs per 16-byte shared load; opt-1.3b batch 32: 313 us per layer, 7.5 ms
// of a 26 ms prefill). Here a block of 4 warps takes 64 queries, a warp 16,
// and per round of 64 keys the warp computes its 16 x 64 scores with mma.sync m16n8k16 (f32
// accumulate), masks them, folds them into its rows' running max and sum (online softmax, f32),
// rounds the weights to T and multiplies them with the values on tensor cores into a 16 x 64
// f32 accumulator. Fragment layouts are PTX's for m16n8k16 (g = lane / 4, c = lane % 4): A
// a0 = (row g, cols 2c, 2c+1), a1 = row g+8, a2 = cols +8, a3 = both; B b0 = (rows 2c, 2c+1 of
// column g), b1 = rows +8; C c0, c1 = (row g, cols 2c, 2c+1), c2, c3 = row g+8. The score
// accumulator of two adjacent key tiles is then exactly the A fragment of the weights.
// Keys are staged as [key][d] and values transposed as [d][key] (row stride 72: the 32-bit
// fragment loads of a warp hit 32 different banks). Semantics (mask, padding rows, cache) as above.
__device__ __forceinline__ uint32_t pack2(float a, float b, __half) {
  const __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t pack2(float a, float b, __nv_bfloat16) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&h);
}
// d += a·b for one 16×8×16 tile. Compute 8.0+: one m16n8k16 mma. Turing (7.5) has only the
// m16n8k8 f16 shape: the same tile as two of them (k 0..7 from a0, a1, b0; k 8..15 from a2, a3,
// b1: the k16 fragment layout is the two k8 layouts side by side). bf16 mma needs 8.0, and the
// engine refuses bf16 below it, so the bf16 tile never runs there.
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, __half) {
#if __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(b0));
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[2]), "r"(a[3]), "r"(b1));
#endif
}
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, __nv_bfloat16) {
#if __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

template <typename T>
__device__ void prefill_attention_mma(const T* __restrict__ qkv, const float* __restrict__ bias, T* __restrict__ k_cache,
                                      T* __restrict__ v_cache, T* __restrict__ out, int heads, int t, int cap) {
  constexpr int D = 64, KC = 64, QB = 64, LD = D + 8;  // head size, keys per round, queries per block, smem row
  __shared__ __align__(16) T ks[KC * LD];               // [key][d]
  __shared__ __align__(16) T vt[D * LD];                // [d][key]
  __shared__ float pad[KC];
  const int head = blockIdx.x, seq = blockIdx.y, q0 = blockIdx.z * QB;
  const int h = heads * D, row = 3 * h;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const T* base = qkv + (size_t)seq * t * row;
  const float* padrow = bias + ((size_t)seq * t + (t - 1)) * t;
  const int first_real = first_real_key(padrow, t);
  // This block's queries' keys and values into the cache (rows q0 .. q0 + QB).
  if (k_cache) {
    for (int i = threadIdx.x; i < QB * (D / 8); i += blockDim.x) {
      const int r = q0 + i / (D / 8), cc = i % (D / 8);
      if (r >= t) continue;
      const T* src = base + (size_t)r * row + h + head * D + cc * 8;
      const size_t at = (((size_t)seq * heads + head) * cap + r) * D + cc * 8;
      *reinterpret_cast<uint4*>(k_cache + at) = *reinterpret_cast<const uint4*>(src);
      *reinterpret_cast<uint4*>(v_cache + at) = *reinterpret_cast<const uint4*>(src + h);
    }
  }
  // The two query rows of this thread: r = 0 -> row g, r = 1 -> row g + 8 of the warp's 16.
  int qrow[2], lim[2];
  bool uniform[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    qrow[r] = q0 + warp * 16 + g + 8 * r;
    uniform[r] = qrow[r] < first_real;
    lim[r] = qrow[r] >= t ? -1 : (uniform[r] ? t - 1 : qrow[r]);
  }
  const int warp_lim = warp_max_int(max(lim[0], lim[1]));
  const int kend = q0 < first_real ? t : min(t, q0 + QB);
  // q as A fragments, 4 steps of 16 dims (rows past t read row t - 1: computed, never stored).
  uint32_t qa[4][4];
  {
    const T* qr0 = base + (size_t)min(qrow[0], t - 1) * row + head * D;
    const T* qr1 = base + (size_t)min(qrow[1], t - 1) * row + head * D;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      qa[kk][0] = *reinterpret_cast<const uint32_t*>(qr0 + kk * 16 + 2 * c);
      qa[kk][1] = *reinterpret_cast<const uint32_t*>(qr1 + kk * 16 + 2 * c);
      qa[kk][2] = *reinterpret_cast<const uint32_t*>(qr0 + kk * 16 + 2 * c + 8);
      qa[kk][3] = *reinterpret_cast<const uint32_t*>(qr1 + kk * 16 + 2 * c + 8);
    }
  }
  float o[8][4];
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  for (int k0 = 0; k0 < kend; k0 += KC) {
    __syncthreads();  // the previous round's keys are no longer read
    const int n = min(KC, kend - k0);
    for (int i = threadIdx.x; i < KC * (D / 8); i += blockDim.x) {
      const int j = i / (D / 8), cc = i % (D / 8);
      uint4 kraw = make_uint4(0, 0, 0, 0), vraw = make_uint4(0, 0, 0, 0);
      if (j < n) {
        const T* kr = base + (size_t)(k0 + j) * row + h + head * D + cc * 8;
        kraw = *reinterpret_cast<const uint4*>(kr);
        vraw = *reinterpret_cast<const uint4*>(kr + h);
      }
      *reinterpret_cast<uint4*>(ks + j * LD + cc * 8) = kraw;
      const T* vv = reinterpret_cast<const T*>(&vraw);
#pragma unroll
      for (int e = 0; e < 8; ++e) vt[(cc * 8 + e) * LD + j] = vv[e];
    }
    for (int j = threadIdx.x; j < KC; j += blockDim.x) pad[j] = j < n ? padrow[k0 + j] : 0.f;
    __syncthreads();
    if (k0 > warp_lim) continue;  // warp-uniform: none of this warp's rows attends these keys
    float s[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const T* kr = ks + (nt * 8 + g) * LD + kk * 16 + 2 * c;
        mma16816(s[nt], qa[kk], *reinterpret_cast<const uint32_t*>(kr), *reinterpret_cast<const uint32_t*>(kr + 8), T{});
      }
    }
    float cmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1, j = nt * 8 + 2 * c + (e & 1);
        const bool valid = j < n && k0 + j <= lim[r];
        s[nt][e] = valid ? (uniform[r] ? 0.f : s[nt][e] + pad[j]) : -INFINITY;
        cmax[r] = fmaxf(cmax[r], s[nt][e]);
      }
    float scale[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      cmax[r] = fmaxf(cmax[r], __shfl_xor_sync(0xffffffff, cmax[r], 1));
      cmax[r] = fmaxf(cmax[r], __shfl_xor_sync(0xffffffff, cmax[r], 2));
      const float mnew = fmaxf(m[r], cmax[r]);
      scale[r] = m[r] == -INFINITY ? 0.f : __expf(m[r] - mnew);
      m[r] = mnew;
      l[r] *= scale[r];
    }
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        o[nt][e] *= scale[r];
        const float p = s[nt][e] == -INFINITY ? 0.f : __expf(s[nt][e] - m[r]);
        s[nt][e] = p;
        l[r] += p;
      }
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {  // 16 keys: score tiles 2kk and 2kk + 1
      const uint32_t pa[4] = {pack2(s[2 * kk][0], s[2 * kk][1], T{}), pack2(s[2 * kk][2], s[2 * kk][3], T{}),
                              pack2(s[2 * kk + 1][0], s[2 * kk + 1][1], T{}), pack2(s[2 * kk + 1][2], s[2 * kk + 1][3], T{})};
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const T* vr = vt + (nt * 8 + g) * LD + kk * 16 + 2 * c;
        mma16816(o[nt], pa, *reinterpret_cast<const uint32_t*>(vr), *reinterpret_cast<const uint32_t*>(vr + 8), T{});
      }
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffff, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffff, l[r], 2);
    if (qrow[r] >= t) continue;
    const float inv = 1.f / l[r];
    T* orow = out + ((size_t)seq * t + qrow[r]) * h + head * D + 2 * c;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
      *reinterpret_cast<uint32_t*>(orow + nt * 8) = pack2(o[nt][2 * r] * inv, o[nt][2 * r + 1] * inv, T{});
  }
}

// Prefill attention of the rotary families on tensor cores, grouped-query: for sequence `seq`,
// query head `head` and 64 queries (4 warps of 16), softmax(q·kᵀ + bias)·v over this prompt's
// keys, which `rotary_split` already wrote into the cache (rows 0 .. t of the layer's
// [b, kv_heads, cap, D] tensors). q [b, heads, t, D] (rotary applied, softmax scale folded in);
// query head h reads key/value head h / (heads / kv_heads). out [b, t, heads * D], heads merged,
// the layout the o projection reads. `bias` [b, 1, t, t]: the prefill's causal ⊕ key-padding
// bias, of which only the last row (the padding) is read, as in prefill_attention_mma.
// Why: candle's path is four launches per layer (scores matmul, masked softmax, the matmul with
// v, the head merge) and materialises [b, heads, t, t] scores twice in memory.
template <typename T, int D>
__device__ void prefill_attention_gqa_mma(const T* __restrict__ q, const float* __restrict__ bias,
                                          const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                                          T* __restrict__ out, int heads, int kv_heads, int t, int cap) {
  constexpr int KC = 64, QB = 64, LDK = D + 8, LDV = KC + 8;  // keys per round, queries per block, smem rows
  constexpr int DK = D / 16, DN = D / 8;                       // 16-dim k-steps of q·kᵀ, 8-dim tiles of o
  __shared__ __align__(16) T ks[KC * LDK];                     // [key][d]
  __shared__ __align__(16) T vt[D * LDV];                      // [d][key]
  __shared__ float pad[KC];
  const int head = blockIdx.x, seq = blockIdx.y, q0 = blockIdx.z * QB;
  const int kvh = head / (heads / kv_heads);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const T* qbase = q + ((size_t)seq * heads + head) * t * D;
  const T* kbase = k_cache + ((size_t)seq * kv_heads + kvh) * cap * D;
  const T* vbase = v_cache + ((size_t)seq * kv_heads + kvh) * cap * D;
  const float* padrow = bias + ((size_t)seq * t + (t - 1)) * t;
  const int first_real = first_real_key(padrow, t);  // (waits for the previous kernel first)
  int qrow[2], lim[2];
  bool uniform[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    qrow[r] = q0 + warp * 16 + g + 8 * r;
    uniform[r] = qrow[r] < first_real;
    lim[r] = qrow[r] >= t ? -1 : (uniform[r] ? t - 1 : qrow[r]);
  }
  const int warp_lim = warp_max_int(max(lim[0], lim[1]));
  const int kend = q0 < first_real ? t : min(t, q0 + QB);
  uint32_t qa[DK][4];
  {
    const T* qr0 = qbase + (size_t)min(qrow[0], t - 1) * D;
    const T* qr1 = qbase + (size_t)min(qrow[1], t - 1) * D;
#pragma unroll
    for (int kk = 0; kk < DK; ++kk) {
      qa[kk][0] = *reinterpret_cast<const uint32_t*>(qr0 + kk * 16 + 2 * c);
      qa[kk][1] = *reinterpret_cast<const uint32_t*>(qr1 + kk * 16 + 2 * c);
      qa[kk][2] = *reinterpret_cast<const uint32_t*>(qr0 + kk * 16 + 2 * c + 8);
      qa[kk][3] = *reinterpret_cast<const uint32_t*>(qr1 + kk * 16 + 2 * c + 8);
    }
  }
  float o[DN][4];
#pragma unroll
  for (int nt = 0; nt < DN; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  for (int k0 = 0; k0 < kend; k0 += KC) {
    __syncthreads();  // the previous round's keys are no longer read
    const int n = min(KC, kend - k0);
    for (int i = threadIdx.x; i < KC * (D / 8); i += blockDim.x) {
      const int j = i / (D / 8), cc = i % (D / 8);
      uint4 kraw = make_uint4(0, 0, 0, 0), vraw = make_uint4(0, 0, 0, 0);
      if (j < n) {
        kraw = *reinterpret_cast<const uint4*>(kbase + (size_t)(k0 + j) * D + cc * 8);
        vraw = *reinterpret_cast<const uint4*>(vbase + (size_t)(k0 + j) * D + cc * 8);
      }
      *reinterpret_cast<uint4*>(ks + j * LDK + cc * 8) = kraw;
      const T* vv = reinterpret_cast<const T*>(&vraw);
#pragma unroll
      for (int e = 0; e < 8; ++e) vt[(cc * 8 + e) * LDV + j] = vv[e];
    }
    for (int j = threadIdx.x; j < KC; j += blockDim.x) pad[j] = j < n ? padrow[k0 + j] : 0.f;
    __syncthreads();
    if (k0 > warp_lim) continue;  // warp-uniform: none of this warp's rows attends these keys
    float s[KC / 8][4];
#pragma unroll
    for (int nt = 0; nt < KC / 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < DK; ++kk) {
        const T* kr = ks + (nt * 8 + g) * LDK + kk * 16 + 2 * c;
        mma16816(s[nt], qa[kk], *reinterpret_cast<const uint32_t*>(kr), *reinterpret_cast<const uint32_t*>(kr + 8), T{});
      }
    }
    float cmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < KC / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1, j = nt * 8 + 2 * c + (e & 1);
        const bool valid = j < n && k0 + j <= lim[r];
        s[nt][e] = valid ? (uniform[r] ? 0.f : s[nt][e] + pad[j]) : -INFINITY;
        cmax[r] = fmaxf(cmax[r], s[nt][e]);
      }
    float scale[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      cmax[r] = fmaxf(cmax[r], __shfl_xor_sync(0xffffffff, cmax[r], 1));
      cmax[r] = fmaxf(cmax[r], __shfl_xor_sync(0xffffffff, cmax[r], 2));
      const float mnew = fmaxf(m[r], cmax[r]);
      scale[r] = m[r] == -INFINITY ? 0.f : __expf(m[r] - mnew);
      m[r] = mnew;
      l[r] *= scale[r];
    }
#pragma unroll
    for (int nt = 0; nt < DN; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[nt][e] *= scale[e >> 1];
#pragma unroll
    for (int nt = 0; nt < KC / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const float p = s[nt][e] == -INFINITY ? 0.f : __expf(s[nt][e] - m[r]);
        s[nt][e] = p;
        l[r] += p;
      }
#pragma unroll
    for (int kk = 0; kk < KC / 16; ++kk) {  // 16 keys: score tiles 2kk and 2kk + 1
      const uint32_t pa[4] = {pack2(s[2 * kk][0], s[2 * kk][1], T{}), pack2(s[2 * kk][2], s[2 * kk][3], T{}),
                              pack2(s[2 * kk + 1][0], s[2 * kk + 1][1], T{}), pack2(s[2 * kk + 1][2], s[2 * kk + 1][3], T{})};
#pragma unroll
      for (int nt = 0; nt < DN; ++nt) {
        const T* vr = vt + (nt * 8 + g) * LDV + kk * 16 + 2 * c;
        mma16816(o[nt], pa, *reinterpret_cast<const uint32_t*>(vr), *reinterpret_cast<const uint32_t*>(vr + 8), T{});
      }
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffff, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffff, l[r], 2);
    if (qrow[r] >= t) continue;
    const float inv = 1.f / l[r];
    T* orow = out + (((size_t)seq * t + qrow[r]) * heads + head) * D + 2 * c;
#pragma unroll
    for (int nt = 0; nt < DN; ++nt)
      *reinterpret_cast<uint32_t*>(orow + nt * 8) = pack2(o[nt][2 * r] * inv, o[nt][2 * r + 1] * inv, T{});
  }
}

// SwiGLU of a prefill's fused gate|up projection: gu [rows, 2f] (gate | up) -> out [rows, f] =
// silu(gate) * up, each rounded to T as transformers' `act_fn(gate_proj(x)) * up_proj(x)` (and
// the GEMV's PRO_SWIGLU prologue) rounds. Requires f % (16 / sizeof(T)) == 0.
// Why: candle's `narrow(gate).silu() * narrow(up)` is two strided passes over the largest
// activation of the layer; this is one contiguous pass.
template <typename T>
__device__ void swiglu_rows(const T* __restrict__ gu, T* __restrict__ out, int rows, int f) {
  constexpr int PER = 16 / sizeof(T);
  PDL_ENTER();
  const int chunks = f / PER;
  const size_t total = (size_t)rows * chunks;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const size_t r = i / chunks, cc = i % chunks;
    const uint4 graw = *reinterpret_cast<const uint4*>(gu + r * 2 * f + cc * PER);
    const uint4 uraw = *reinterpret_cast<const uint4*>(gu + r * 2 * f + f + cc * PER);
    const T* gv = reinterpret_cast<const T*>(&graw);
    const T* uv = reinterpret_cast<const T*>(&uraw);
    uint4 o;
    T* ov = reinterpret_cast<T*>(&o);
#pragma unroll
    for (int e = 0; e < PER; ++e) {
      const float gf = to_f(gv[e]);
      ov[e] = from_f<T>(to_f(from_f<T>(gf / (1.f + expf(-gf)))) * to_f(uv[e]));
    }
    *reinterpret_cast<uint4*>(out + r * f + cc * PER) = o;
  }
}

// A 16-byte load of weights that are read once per step: through the read-only path, not kept
// in L1 (where the activations the GEMV re-reads live).
__device__ __forceinline__ uint4 ld_stream16(const void* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

// y[m, n] = x[m, k] · w[n, k]^T for M ≤ 8 rows (decode steps), w row-major (k contiguous), with
// the layer's pre-norm and epilogue fused:
//   ln_w != null: x is first layer-normed (ln_w, ln_b, eps; as the layer_norm kernel, so the values are
//                 those of the separate kernel), which needs x in shared memory (x_in_smem);
//   mode 0 plain; 1 bias (optional) then activation `act` (0 none, 1 relu, 2 gelu tanh, 3 gelu
//   erf); 2 bias (optional) then + res[m, n]; 3 bias (optional), then no output: res is a
//   u64 [M] of argmax keys (zeroed beforehand) that each warp's best row is atomicMax'ed into.
//   Rounded to T after the matmul and after the bias add, as the unfused kernels do.
// Why: at M ≤ 8 a linear layer is one pass over its weights, and every launch between two of
// them (norm, bias, activation, residual, argmax) costs a drain and a ramp of the whole GPU.
// Layout: a persistent grid (as many blocks as fit on the GPU at once) of 8-warp blocks; a block
// takes groups of 8 / wpr rows in turn, each row split over `wpr` warps (1, 2, 4, 8; chosen by
// cuda_ops::warps_per_row). Each warp keeps two batches of B loads per lane in
// flight: while it multiplies one batch it has already issued the next (the rest of its row or
// the first batch of its next row). The prologue (x staging, the norm) runs once per block.
// (v1 of this kernel ran one short-lived block per 8 rows, every block paying its latency chain
// anew: ~2 TB/s on an H200 against cuBLAS's ~2.7.)
// x_in_smem: x (normed or not) is staged in dynamic shared memory (M·k·sizeof(T) bytes); else
// read from global memory through L1. Requires k % (16 / sizeof(T)) == 0, 16-byte aligned
// rows, blockDim 256.
// A (value, index) pair as one integer whose unsigned order is: larger value first, then the
// smaller index; NaN below everything (argmax_rows never picks a NaN), -0 as +0.
__device__ __forceinline__ unsigned long long argmax_key(float v, int index) {
  if (v != v) return 0ull;
  if (v == 0.f) v = 0.f;
  const unsigned int u = __float_as_uint(v);
  const unsigned int ordered = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return ((unsigned long long)ordered << 32) | (unsigned long long)(0xffffffffu - (unsigned int)index);
}

template <typename T, int M, int B>
__device__ __forceinline__ void gemv_load(const T* __restrict__ w, int row, int n, int k, int c, int c1, uint4 (&raw)[B]) {
  constexpr int PER = 16 / sizeof(T);
  const T* wr = w + (size_t)min(row, n - 1) * k;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int b = 0; b < B; ++b) {
    const int cc = c + b * 32 + lane;
    raw[b] = cc < c1 ? ld_stream16(wr + (size_t)cc * PER) : make_uint4(0, 0, 0, 0);
  }
}

// How a GEMV waits for the kernel before it (programmatic dependent launch); bench/gemv_chain.cu
// passes a grid-wide barrier instead to measure a persistent whole-step kernel.
struct PdlWait {
  __device__ void operator()() const { PDL_ENTER(); }
};

// What the GEMV does to x as it stages it (`prologue`): PRO_AUTO layer norm where ln_w is given
// (else a copy); PRO_COPY; PRO_LAYER_NORM (ln_w, ln_b); PRO_RMS_NORM (ln_w; transformers' RMSNorm:
// weight * (x * rstd).to(dtype)); PRO_SWIGLU: x is [M, 2k], gate | up, and the GEMV's input is
// silu(gate) * up, each rounded to T as transformers' `act_fn(gate_proj(x)) * up_proj(x)` is
// (the rotary families' down projection: the activation costs no launch and no pass of its own).
constexpr int PRO_AUTO = -1, PRO_COPY = 0, PRO_LAYER_NORM = 1, PRO_RMS_NORM = 2, PRO_SWIGLU = 3;

template <typename T, int M, int B, typename Wait = PdlWait>
__device__ void gemv_small_m(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                             const T* __restrict__ res, const T* __restrict__ ln_w, const T* __restrict__ ln_b, float eps,
                             T* __restrict__ y, int n, int k, int wpr, int mode, int act, int x_in_smem,
                             Wait wait = Wait(), int prologue = PRO_AUTO) {
  if (prologue == PRO_AUTO) prologue = ln_w ? PRO_LAYER_NORM : PRO_COPY;
  const bool normed = prologue == PRO_LAYER_NORM || prologue == PRO_RMS_NORM, rms = prologue == PRO_RMS_NORM;
  constexpr int PER = 16 / sizeof(T);
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ float red[8][M];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int rows_per_group = 8 / wpr, groups = (n + rows_per_group - 1) / rows_per_group;
  const int rloc = warp / wpr, part = warp % wpr;
  const int chunks = k / PER;
  const int per_part = (chunks + wpr - 1) / wpr;
  const int c0 = part * per_part, c_end = min(chunks, c0 + per_part);
  // A warp's work is a sequence of items (group, batch of its row part); batches per row are the
  // same for every warp, so every warp of a block walks the same sequence (the cross-warp
  // reduction below synchronises the block).
  const int nb = (per_part + 32 * B - 1) / (32 * B);
  const int items = ((groups - (int)blockIdx.x + (int)gridDim.x - 1) / (int)gridDim.x) * nb;
  auto row_of = [&](int item) { return ((int)blockIdx.x + (item / nb) * (int)gridDim.x) * rows_per_group + rloc; };
  // The epilogue's inputs of the row an item completes (bias; residual, which the previous kernel
  // may write, so only once it has been waited for) are loaded with the item's weights: their
  // latency then hides behind the loads instead of following the row's sum.
  // Kept as T until used: converting here would make the warp wait for the load.
  auto epilogue_load = [&](int item, T& eb, T& er, bool with_res) {
    const int row = row_of(item);
    if (item % nb != nb - 1 || part != 0 || lane >= M || row >= n) return;
    if (mode != 0 && bias) eb = bias[row];
    if (mode == 2 && with_res) er = res[(size_t)lane * n + row];
  };
  bool waited = false;
  auto issue = [&](int item, uint4(&buf)[B], T& eb, T& er) {
    const int row = row_of(item);
    gemv_load<T, M, B>(w, row, n, k, c0 + (item % nb) * 32 * B, row < n ? c_end : c0, buf);
    epilogue_load(item, eb, er, waited);
  };
  float acc[M];
  const T* xp = x;
  // Greedy choice (mode 3): the best key of this lane's input row over the rows this warp
  // computes, one atomicMax per warp at the end (one per output row serialised ~50k atomics on
  // one address in an lm_head: ~25 us of an opt-1.3b step on an H200).
  unsigned long long best = 0ull;
  auto consume = [&](int item, const uint4(&buf)[B], T eb, T er) {
    const int bi = item % nb, row = row_of(item);
    const int c1 = row < n ? c_end : c0, base = c0 + bi * 32 * B;
    if (bi == 0) {
#pragma unroll
      for (int i = 0; i < M; ++i) acc[i] = 0.f;
    }
#pragma unroll
    for (int b = 0; b < B; ++b) {
      const int c = base + b * 32 + lane;
      if (c < c1) {
        const T* wv = reinterpret_cast<const T*>(&buf[b]);
#pragma unroll
        for (int i = 0; i < M; ++i) {
          float xv[PER];
          load16(xp + (size_t)i * k + (size_t)c * PER, xv);
#pragma unroll
          for (int e = 0; e < PER; ++e) acc[i] += to_f(wv[e]) * xv[e];
        }
      }
    }
    if (bi != nb - 1) return;
    float r[M];
#pragma unroll
    for (int i = 0; i < M; ++i) r[i] = warp_sum(acc[i]);
    if (wpr > 1) {
      __syncthreads();  // red[] of the previous row has been read
      if (lane == 0) {
#pragma unroll
        for (int i = 0; i < M; ++i) red[warp][i] = r[i];
      }
      __syncthreads();
      if (part == 0) {
#pragma unroll
        for (int i = 0; i < M; ++i) {
          float s = 0.f;
          for (int p = 0; p < wpr; ++p) s += red[warp + p][i];
          r[i] = s;
        }
      }
    }
    if (part == 0 && row < n && lane < M) {
      float v = 0.f;
#pragma unroll
      for (int i = 0; i < M; ++i) if (i == lane) v = r[i];
      v = to_f(from_f<T>(v));
      if (mode != 0 && bias) v = to_f(from_f<T>(v + to_f(eb)));
      if (mode == 1) {
        if (act == 1) v = fmaxf(v, 0.f);
        else if (act == 2) v = 0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
        else if (act == 3) v = 0.5f * v * (1.f + erff(v * 0.7071067811865476f));
      } else if (mode == 2) {
        v += to_f(er);
      } else if (mode == 3) {
        // Greedy choice fused in (the lm_head): the largest value per input row, the smallest
        // index among equals, as argmax_rows over the T-rounded values.
        best = max(best, argmax_key(v, row));
        return;
      }
      y[(size_t)lane * n + row] = from_f<T>(v);
    }
  };
  // Two buffers in turn: the loads of the next item are in flight while this one is summed.
  // The first loads go out before the prologue and before waiting on the previous kernel
  // (weights are constant), so they stream while that kernel drains and the norm is computed.
  uint4 buf_a[B], buf_b[B];
  T eb_a = from_f<T>(0.f), er_a = eb_a, eb_b = eb_a, er_b = eb_a;
  if (items > 0) issue(0, buf_a, eb_a, er_a);
  // The norm's weights too (register paths): the prologue then waits on x alone.
  const bool ln_block = normed && ln_block_fits<T>(k);
  uint4 ln_wq[LN_NQ], ln_bq[LN_NQ];
  if (ln_block) ln_block_params_load<T>(ln_w, ln_b, k, ln_wq, ln_bq);
  wait();
  waited = true;
  if (items > 0) epilogue_load(0, eb_a, er_a, true);
  if (x_in_smem) {
    T* xs = reinterpret_cast<T*>(smem_raw);
    if (normed) {
#pragma unroll 1
      for (int i = 0; i < M; ++i) {
        if (ln_block) layer_norm_row_block<T>(x + (size_t)i * k, ln_wq, ln_bq, xs + (size_t)i * k, k, eps, i & 1, rms);
        else layer_norm_row_generic<T>(x + (size_t)i * k, ln_w, ln_b, xs + (size_t)i * k, k, eps, rms);
      }
    } else if (prologue == PRO_SWIGLU) {
      const int row_chunks = k / PER;
      for (int c = threadIdx.x; c < M * row_chunks; c += blockDim.x) {
        const int i = c / row_chunks, cc = c % row_chunks;
        float g[PER], u[PER];
        load16(x + (size_t)i * 2 * k + (size_t)cc * PER, g);
        load16(x + (size_t)i * 2 * k + k + (size_t)cc * PER, u);
        uint4 o;
        T* ov = reinterpret_cast<T*>(&o);
#pragma unroll
        for (int e = 0; e < PER; ++e) ov[e] = from_f<T>(to_f(from_f<T>(g[e] / (1.f + expf(-g[e])))) * u[e]);
        reinterpret_cast<uint4*>(xs)[c] = o;
      }
    } else {
      for (int c = threadIdx.x; c < M * k / PER; c += blockDim.x)
        reinterpret_cast<uint4*>(xs)[c] = reinterpret_cast<const uint4*>(x)[c];
    }
    __syncthreads();
    xp = xs;
  }
  for (int item = 0; item < items; item += 2) {
    if (item + 1 < items) issue(item + 1, buf_b, eb_b, er_b);
    consume(item, buf_a, eb_a, er_a);
    if (item + 1 >= items) break;
    if (item + 2 < items) issue(item + 2, buf_a, eb_a, er_a);
    consume(item + 1, buf_b, eb_b, er_b);
  }
  if (mode == 3 && part == 0 && lane < M && best != 0ull)
    atomicMax(reinterpret_cast<unsigned long long*>(const_cast<T*>(res)) + lane, best);
}

// Few rows need few registers: two blocks per SM with 2 × 8 loads in flight per lane; more
// rows take 2 × 4 loads and one block's worth of registers.
#define INSTANTIATE_GEMV_M(T, SUFFIX, M, B, MIN_BLOCKS)                                                              \
  extern "C" __global__ void __launch_bounds__(256, MIN_BLOCKS) gemv_small_m##M##_##SUFFIX(                          \
      const T* x, const T* w, const T* bias, const T* res, const T* ln_w, const T* ln_b, float eps, T* y, int n,      \
      int k, int wpr, int mode, int act, int x_in_smem, int prologue) {                                              \
    gemv_small_m<T, M, B>(x, w, bias, res, ln_w, ln_b, eps, y, n, k, wpr, mode, act, x_in_smem, PdlWait(), prologue); \
  }
#define INSTANTIATE_GEMV(T, SUFFIX)       \
  INSTANTIATE_GEMV_M(T, SUFFIX, 1, 8, 2)  \
  INSTANTIATE_GEMV_M(T, SUFFIX, 2, 8, 2)  \
  INSTANTIATE_GEMV_M(T, SUFFIX, 3, 4, 2)  \
  INSTANTIATE_GEMV_M(T, SUFFIX, 4, 4, 2)  \
  INSTANTIATE_GEMV_M(T, SUFFIX, 5, 4, 1)  \
  INSTANTIATE_GEMV_M(T, SUFFIX, 6, 4, 1)  \
  INSTANTIATE_GEMV_M(T, SUFFIX, 7, 4, 1)  \
  INSTANTIATE_GEMV_M(T, SUFFIX, 8, 4, 1)
INSTANTIATE_GEMV(float, f32)
INSTANTIATE_GEMV(__half, f16)
INSTANTIATE_GEMV(__nv_bfloat16, bf16)

#define INSTANTIATE_FAST(T, SUFFIX, D)                                                                               \
  extern "C" __global__ void decode_attention_d##D##_##SUFFIX(const T* qkv, const T* qkv_bias, T* k_cache,          \
                                                             T* v_cache, const uint32_t* slot, const float* pad_bias, \
                                                             T* out, int heads, int cap) {                           \
    decode_attention_fast<T, D>(qkv, qkv_bias, k_cache, v_cache, slot, pad_bias, out, heads, cap);                  \
  }                                                                                                                  \
  extern "C" __global__ void decode_attention_rope_d##D##_##SUFFIX(                                                  \
      const T* qkv, T* k_cache, T* v_cache, const uint32_t* slot, const float* pad_bias, const uint32_t* positions,  \
      const float* inv_freq, const T* q_norm_w, const T* k_norm_w, float norm_eps, T* out, int heads, int kv_heads,  \
      int cap) {                                                                                                     \
    decode_attention_fast<T, D, true>(qkv, nullptr, k_cache, v_cache, slot, pad_bias, out, heads, cap, kv_heads,    \
                                      positions, inv_freq, q_norm_w, k_norm_w, norm_eps);                            \
  }                                                                                                                  \
  extern "C" __global__ void decode_attention_rope_paged_d##D##_##SUFFIX(                                            \
      const T* qkv, T* k_pool, T* v_pool, const uint32_t* lens, const uint32_t* block_tables,                        \
      const uint32_t* positions, const float* inv_freq, const T* q_norm_w, const T* k_norm_w, float norm_eps, T* out, \
      int heads, int kv_heads, int cap, int max_blocks, int block_size) {                                            \
    decode_attention_fast<T, D, true, true>(qkv, nullptr, k_pool, v_pool, lens, nullptr, out, heads, cap, kv_heads, \
                                            positions, inv_freq, q_norm_w, k_norm_w, norm_eps, block_tables,        \
                                            max_blocks, block_size);                                                 \
  }
#define INSTANTIATE_ROWS(T, SUFFIX)                                                                                  \
  extern "C" __global__ void layer_norm_##SUFFIX(const T* x, const T* w, const T* b, T* y, int cols, float eps) {    \
    layer_norm<T>(x, w, b, y, cols, eps);                                                                            \
  }                                                                                                                  \
  extern "C" __global__ void argmax_rows_##SUFFIX(const T* x, uint32_t* out, int cols) { argmax_rows<T>(x, out, cols); } \
  extern "C" __global__ void masked_softmax_##SUFFIX(const T* scores, const float* bias, T* out, int heads, int t,   \
                                                     int L, int rows) {                                              \
    masked_softmax<T>(scores, bias, out, heads, t, L, rows);                                                         \
  }
#define INSTANTIATE_PREFILL(T, SUFFIX, D)                                                                            \
  extern "C" __global__ void __launch_bounds__(64) prefill_attention_d##D##_##SUFFIX(                                \
      const T* qkv, const float* bias, T* k_cache, T* v_cache, T* out, int heads, int t, int cap) {                 \
    prefill_attention<T, D>(qkv, bias, k_cache, v_cache, out, heads, t, cap);                                        \
  }
#define INSTANTIATE_PREFILL_MMA(T, SUFFIX)                                                                           \
  extern "C" __global__ void __launch_bounds__(128) prefill_attention_mma_d64_##SUFFIX(                             \
      const T* qkv, const float* bias, T* k_cache, T* v_cache, T* out, int heads, int t, int cap) {                 \
    prefill_attention_mma<T>(qkv, bias, k_cache, v_cache, out, heads, t, cap);                                       \
  }
INSTANTIATE_PREFILL_MMA(__half, f16)
INSTANTIATE_PREFILL_MMA(__nv_bfloat16, bf16)
#define INSTANTIATE_PREFILL_GQA(T, SUFFIX, D)                                                                        \
  extern "C" __global__ void __launch_bounds__(128) prefill_attention_gqa_mma_d##D##_##SUFFIX(                      \
      const T* q, const float* bias, const T* k_cache, const T* v_cache, T* out, int heads, int kv_heads, int t,    \
      int cap) {                                                                                                     \
    prefill_attention_gqa_mma<T, D>(q, bias, k_cache, v_cache, out, heads, kv_heads, t, cap);                       \
  }
INSTANTIATE_PREFILL_GQA(__half, f16, 64)
INSTANTIATE_PREFILL_GQA(__half, f16, 128)
INSTANTIATE_PREFILL_GQA(__nv_bfloat16, bf16, 64)
INSTANTIATE_PREFILL_GQA(__nv_bfloat16, bf16, 128)
#define INSTANTIATE_ALL_FAST(T, SUFFIX) \
  INSTANTIATE_FAST(T, SUFFIX, 16)       \
  INSTANTIATE_FAST(T, SUFFIX, 32)       \
  INSTANTIATE_FAST(T, SUFFIX, 64)       \
  INSTANTIATE_FAST(T, SUFFIX, 128)      \
  INSTANTIATE_PREFILL(T, SUFFIX, 32)    \
  INSTANTIATE_PREFILL(T, SUFFIX, 64)    \
  INSTANTIATE_ROWS(T, SUFFIX)
INSTANTIATE_ALL_FAST(float, f32)
INSTANTIATE_ALL_FAST(__half, f16)
INSTANTIATE_ALL_FAST(__nv_bfloat16, bf16)

#define INSTANTIATE(T, SUFFIX)                                                                                     \
  extern "C" __global__ void decode_attention_##SUFFIX(const T* qkv, const T* qkv_bias, T* k_cache, T* v_cache,    \
                                                       const uint32_t* slot, const float* pad_bias, T* out,         \
                                                       int heads, int d, int cap) {                                 \
    decode_attention<T>(qkv, qkv_bias, k_cache, v_cache, slot, pad_bias, out, heads, d, cap);                       \
  }                                                                                                                 \
  extern "C" __global__ void swiglu_##SUFFIX(const T* gu, T* out, int rows, int f) { swiglu_rows<T>(gu, out, rows, f); } \
  extern "C" __global__ void bias_act_##SUFFIX(T* y, const T* bias, int rows, int cols, int act) {                 \
    bias_act<T>(y, bias, rows, cols, act);                                                                          \
  }                                                                                                                 \
  extern "C" __global__ void bias_residual_##SUFFIX(T* y, const T* bias, const T* res, int rows, int cols) {       \
    bias_residual<T>(y, bias, res, rows, cols);                                                                     \
  }                                                                                                                 \
  extern "C" __global__ void embed_##SUFFIX(const uint32_t* ids, const uint32_t* positions, const T* tok,           \
                                            const T* pos, T* out, int h) {                                          \
    embed<T>(ids, positions, tok, pos, out, h);                                                                     \
  }

#define INSTANTIATE_ROTARY_SPLIT(T, SUFFIX)                                                                         \
  extern "C" __global__ void rotary_split_##SUFFIX(const T* qkv, const uint32_t* positions, const float* inv_freq,   \
                                                   const T* q_norm_w, const T* k_norm_w, float eps, T* q_out,        \
                                                   T* k_cache, T* v_cache, int heads, int kv_heads, int d, int t,    \
                                                   int cap, int offset) {                                            \
    rotary_split<T>(qkv, positions, inv_freq, q_norm_w, k_norm_w, eps, q_out, k_cache, v_cache, heads, kv_heads, d, \
                    t, cap, offset);                                                                                 \
  }

INSTANTIATE(float, f32)
INSTANTIATE(__half, f16)
INSTANTIATE(__nv_bfloat16, bf16)
INSTANTIATE_ROTARY_SPLIT(float, f32)
INSTANTIATE_ROTARY_SPLIT(__half, f16)
INSTANTIATE_ROTARY_SPLIT(__nv_bfloat16, bf16)

// End of a decode step for sequence s: its chosen id becomes the next step's input, its position
// moves one forward; the id is also written to page-locked host memory (`host_ids`, null: not),
// at row s, column = the position it follows, so the host reads every step's ids without a
// copy in the stream between two steps. Columns past `host_cols` are not
// written.
__device__ __forceinline__ void advance_one(uint32_t id, int s, uint32_t* ids, uint32_t* positions,
                                            uint32_t* host_ids, int host_cols) {
  ids[s] = id;
  const uint32_t p = positions[s];
  if (host_ids && p < (uint32_t)host_cols) host_ids[(size_t)s * host_cols + p] = id;
  positions[s] = p + 1;
}

// advance_step for ids chosen by the lm_head GEMV's argmax keys (mode 3), which it zeroes for the
// next step.
extern "C" __global__ void advance_step_keys(unsigned long long* keys, uint32_t* ids, uint32_t* positions, uint32_t* slot,
                                             int b, uint32_t* host_ids, int host_cols) {
  PDL_ENTER();
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s < b) {
    advance_one(0xffffffffu - (uint32_t)(keys[s] & 0xffffffffull), s, ids, positions, host_ids, host_cols);
    keys[s] = 0ull;
  }
  if (s == 0) *slot += 1;
}

// End of a graph-replayed step: the sampled ids become the next step's input, every position
// and the cache slot move one forward. One thread per sequence.
extern "C" __global__ void advance_step(const uint32_t* __restrict__ next, uint32_t* ids, uint32_t* positions,
                                        uint32_t* slot, int b, uint32_t* host_ids, int host_cols) {
  PDL_ENTER();
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s < b) advance_one(next[s], s, ids, positions, host_ids, host_cols);
  if (s == 0) *slot += 1;
}

// Keeps the stream busy for `ns` nanoseconds (one thread, %globaltimer): while it runs, the host
// queues the launches that `cuda_ops::tune_linear` then times between two events, so the
// measurement is their GPU time, not the host's launch rate.
extern "C" __global__ void spin_ns(unsigned long long ns) {
  unsigned long long start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < ns);
}
