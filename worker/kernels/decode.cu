// tokbench's fused CUDA kernels for the decode step (one new token per sequence), compiled to
// PTX by worker/build.rs with nvcc when the `cuda` feature is on, loaded by src/model/cuda_ops.rs.
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
  const int s = blockIdx.x;
  const T* a = tok + (size_t)ids[s] * h;
  const T* b = pos + (size_t)positions[s] * h;
  for (int i = threadIdx.x; i < h; i += blockDim.x) out[(size_t)s * h + i] = from_f<T>(to_f(a[i]) + to_f(b[i]));
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
// Block: 128 threads. Dynamic shared memory: (cap + D + 16 * D) floats.
template <typename T, int D>
__device__ void decode_attention_fast(const T* __restrict__ qkv, const T* __restrict__ qkv_bias, T* k_cache, T* v_cache,
                                      const uint32_t* __restrict__ slot_ptr, const float* __restrict__ pad_bias,
                                      T* __restrict__ out, int heads, int cap) {
  constexpr int PER = 16 / sizeof(T);
  constexpr int CHUNKS = D / PER;        // 16-byte chunks per row
  constexpr int GROUPS = 128 / CHUNKS;   // P·V: thread groups over positions
  extern __shared__ float smem[];
  float* q = smem;                 // [D]
  float* part = smem + D;          // [GROUPS * D]
  float* p = part + GROUPS * D;    // [cap]
  __shared__ float scratch[32];
  const int head = blockIdx.x, seq = blockIdx.y, h = heads * D;
  const int slot = (int)*slot_ptr;
  const T* row = qkv + (size_t)seq * 3 * h;
  T* kc = k_cache + ((size_t)seq * heads + head) * cap * D;
  T* vc = v_cache + ((size_t)seq * heads + head) * cap * D;
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    const int qi = head * D + i, ki = h + head * D + i, vi = 2 * h + head * D + i;
    float qv = to_f(row[qi]), kv = to_f(row[ki]), vv = to_f(row[vi]);
    if (qkv_bias) {
      qv += to_f(qkv_bias[qi]);
      kv += to_f(qkv_bias[ki]);
      vv += to_f(qkv_bias[vi]);
    }
    q[i] = to_f(from_f<T>(qv));
    kc[(size_t)slot * D + i] = from_f<T>(kv);
    vc[(size_t)slot * D + i] = from_f<T>(vv);
  }
  __syncthreads();
  const int n = slot + 1;
  const float* pb = pad_bias + (size_t)seq * cap;
  float local_max = -INFINITY;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const T* kj = kc + (size_t)j * D;
    float k[D];
#pragma unroll
    for (int c = 0; c < CHUNKS; ++c) load16(kj + c * PER, k + c * PER);
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < D; ++i) s += q[i] * k[i];
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
  __syncthreads();
  const int c = threadIdx.x % CHUNKS, g = threadIdx.x / CHUNKS;
  float acc[PER];
#pragma unroll
  for (int i = 0; i < PER; ++i) acc[i] = 0.f;
  if (g < GROUPS) {
#pragma unroll 4
    for (int j = g; j < n; j += GROUPS) {
      float v[PER];
      load16(vc + (size_t)j * D + c * PER, v);
      const float pj = p[j];
#pragma unroll
      for (int i = 0; i < PER; ++i) acc[i] += pj * v[i];
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

// Layer norm over rows of `cols` (≤ 256 * 16), one block of 256 threads per row, the row kept in
// registers (two-pass mean/variance in f32, as torch). candle's kernel runs one warp per row
// for rows under 1024 wide and reads them serially: ~14 us per call at 768 columns.
template <typename T>
__device__ void layer_norm(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y,
                           int cols, float eps) {
  constexpr int MAXI = 16;
  __shared__ float scratch[32];
  const size_t r = blockIdx.x;
  const T* xr = x + r * cols;
  float v[MAXI];
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < MAXI; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    v[k] = i < cols ? to_f(xr[i]) : 0.f;
    sum += v[k];
  }
  const float mean = block_reduce<false>(sum, scratch) / cols;
  float sq = 0.f;
#pragma unroll
  for (int k = 0; k < MAXI; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    if (i < cols) sq += (v[k] - mean) * (v[k] - mean);
  }
  const float rstd = rsqrtf(block_reduce<false>(sq, scratch) / cols + eps);
#pragma unroll
  for (int k = 0; k < MAXI; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    if (i < cols) y[r * cols + i] = from_f<T>((v[k] - mean) * rstd * to_f(w[i]) + to_f(b[i]));
  }
}

// Greedy choice per row: index of the largest value, the smallest index among equals.
// One block of 1024 threads per row.
template <typename T>
__device__ void argmax_rows(const T* __restrict__ x, uint32_t* __restrict__ out, int cols) {
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
// passes over the largest tensor of the prefill). One block of 256 threads per row, L ≤ 4096.
template <typename T>
__device__ void masked_softmax(const T* __restrict__ scores, const float* __restrict__ bias, T* __restrict__ out, int heads,
                               int t, int L, int rows) {
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

// y[m, n] = x[m, k] · w[n, k]^T for m ≤ 8 rows (decode steps), w row-major (k contiguous),
// with the layer's epilogue fused: mode 0 plain; 1 bias (optional) then activation `act`
// (0 none, 1 relu, 2 gelu tanh, 3 gelu erf); 2 bias (optional) then + res[m, n]. Rounded to T
// after the matmul and after the bias add, as the unfused kernels do.
// Why: at m ≤ 8 a linear layer is a pass over its weights; cuBLAS reaches ~2.2 TB/s here on
// an H200 (~4.2 TB/s copy rate). One warp per output row, 16-byte loads, several in flight.
// Requires k % (16 / sizeof(T)) == 0 and 16-byte aligned rows. Block: 256 threads (8 rows).
template <typename T>
__device__ void gemv_small_m(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                             const T* __restrict__ res, T* __restrict__ y, int m, int n, int k, int mode, int act) {
  constexpr int PER = 16 / sizeof(T);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + warp;
  if (row >= n) return;
  const T* wr = w + (size_t)row * k;
  const int chunks = k / PER;
  float acc[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = 0.f;
  // Batches of B 16-byte weight loads per lane issued before any arithmetic, so each warp keeps
  // B * 512 bytes in flight (a plain strided loop waits a memory latency per load).
  constexpr int B = 8;
  for (int base = 0; base < chunks; base += 32 * B) {
    uint4 raw[B];
#pragma unroll
    for (int b = 0; b < B; ++b) {
      const int c = base + b * 32 + lane;
      raw[b] = c < chunks ? *reinterpret_cast<const uint4*>(wr + c * PER) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int b = 0; b < B; ++b) {
      const int c = base + b * 32 + lane;
      if (c < chunks) {
        const T* wv = reinterpret_cast<const T*>(&raw[b]);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          if (i < m) {
            float xv[PER];
            load16(x + (size_t)i * k + c * PER, xv);
#pragma unroll
            for (int e = 0; e < PER; ++e) acc[i] += to_f(wv[e]) * xv[e];
          }
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = warp_sum(acc[i]);
  if (lane < m) {
    float v = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) if (i == lane) v = acc[i];
    v = to_f(from_f<T>(v));
    if (mode != 0 && bias) v = to_f(from_f<T>(v + to_f(bias[row])));
    if (mode == 1) {
      if (act == 1) v = fmaxf(v, 0.f);
      else if (act == 2) v = 0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
      else if (act == 3) v = 0.5f * v * (1.f + erff(v * 0.7071067811865476f));
    } else if (mode == 2) {
      v += to_f(res[(size_t)lane * n + row]);
    }
    y[(size_t)lane * n + row] = from_f<T>(v);
  }
}

#define INSTANTIATE_GEMV(T, SUFFIX)                                                                                  \
  extern "C" __global__ void gemv_small_m_##SUFFIX(const T* x, const T* w, const T* bias, const T* res, T* y, int m, \
                                                   int n, int k, int mode, int act) {                                \
    gemv_small_m<T>(x, w, bias, res, y, m, n, k, mode, act);                                                         \
  }
INSTANTIATE_GEMV(float, f32)
INSTANTIATE_GEMV(__half, f16)
INSTANTIATE_GEMV(__nv_bfloat16, bf16)

#define INSTANTIATE_FAST(T, SUFFIX, D)                                                                               \
  extern "C" __global__ void decode_attention_d##D##_##SUFFIX(const T* qkv, const T* qkv_bias, T* k_cache,          \
                                                             T* v_cache, const uint32_t* slot, const float* pad_bias, \
                                                             T* out, int heads, int cap) {                           \
    decode_attention_fast<T, D>(qkv, qkv_bias, k_cache, v_cache, slot, pad_bias, out, heads, cap);                  \
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
#define INSTANTIATE_ALL_FAST(T, SUFFIX) \
  INSTANTIATE_FAST(T, SUFFIX, 16)       \
  INSTANTIATE_FAST(T, SUFFIX, 32)       \
  INSTANTIATE_FAST(T, SUFFIX, 64)       \
  INSTANTIATE_FAST(T, SUFFIX, 128)      \
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

INSTANTIATE(float, f32)
INSTANTIATE(__half, f16)
INSTANTIATE(__nv_bfloat16, bf16)

// End of a graph-replayed step: the sampled ids become the next step's input, every position
// and the cache slot move one forward. One thread per sequence.
extern "C" __global__ void advance_step(const uint32_t* __restrict__ next, uint32_t* ids, uint32_t* positions,
                                        uint32_t* slot, int b) {
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s < b) {
    ids[s] = next[s];
    positions[s] += 1;
  }
  if (s == 0) *slot += 1;
}
