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
