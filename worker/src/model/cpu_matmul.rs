//! `x @ W^T + b` on the CPU for the few-row case of decode steps (m = batch ≤ [`MAX_M`] rows).
//!
//! candle's CPU matmul (the `gemm` crate) packs its operands into panels before multiplying,
//! which pays off for large m but, at m = 1…8, costs an extra pass over the weight matrix per
//! call: a decode step read every weight about twice. Here each weight row is streamed once,
//! sequentially, and multiplied against all m input rows (kept in L1) while it is in registers,
//! so a decode step is one pass over the weights, the memory floor of this shape.
//!
//! The weight must be `[n, k]` with k contiguous (nn.Linear layout; GPT-2's Conv1D weights are
//! transposed to it at load on the CPU). Accumulation is f32 FMA in 8 lanes; the sum order
//! differs from gemm's, so results agree to f32 rounding, not bitwise (checked against the
//! candle matmul in the tests below and against transformers by `tests/hf_parity.rs`).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape};
use rayon::prelude::*;
use std::sync::OnceLock;

/// Largest row count this kernel takes; larger m (prefill) goes to candle's gemm.
pub const MAX_M: usize = 8;

/// True when the CPU has AVX2 and FMA (checked once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// The candle custom op: `apply_op2_no_bwd(x, w)` or `apply_op3_no_bwd(x, w, b)`.
pub(crate) struct SmallMLinear;

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        other => candle_core::bail!("small-m linear: {what} must be f32, got {:?}", other.dtype()),
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("small-m linear: {what} must be contiguous"),
    }
}

impl SmallMLinear {
    fn run(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, "input")?;
        let w = f32_slice(ws, wl, "weight")?;
        let (n, k) = wl.shape().dims2()?;
        let xdims = xl.shape().dims();
        if xdims.last() != Some(&k) {
            candle_core::bail!("small-m linear: input {:?} does not end in k = {k}", xdims);
        }
        let m = x.len() / k;
        if m > MAX_M {
            candle_core::bail!("small-m linear: {m} rows, at most {MAX_M}");
        }
        let b = match bias {
            Some((bs, bl)) => {
                let b = f32_slice(bs, bl, "bias")?;
                if b.len() != n {
                    candle_core::bail!("small-m linear: bias has {} values, weight has {n} rows", b.len());
                }
                Some(b)
            }
            None => None,
        };
        let out = matmul_nt(x, m, k, w, n, b);
        let mut dims = xdims.to_vec();
        *dims.last_mut().expect("x has dims") = n;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

impl CustomOp2 for SmallMLinear {
    fn name(&self) -> &'static str {
        "small-m-linear"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(s1, l1, s2, l2, None)
    }
}

impl CustomOp3 for SmallMLinear {
    fn name(&self) -> &'static str {
        "small-m-linear-bias"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(s1, l1, s2, l2, Some((s3, l3)))
    }
}

/// Raw output pointer shared by the tasks; each task writes a disjoint set of columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// y[m, n] = x[m, k] · w[n, k]^T (+ b[n]). Requires [`available`]; m ≤ [`MAX_M`].
pub fn matmul_nt(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, b: Option<&[f32]>) -> Vec<f32> {
    assert!(available(), "matmul_nt needs AVX2 + FMA");
    assert_eq!(x.len(), m * k);
    assert_eq!(w.len(), n * k);
    let mut y = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return y;
    }
    // Enough tasks to balance the pool, each a multiple of 8 weight rows (≥ 16 KiB of weights
    // at k = 512, so task overhead stays small).
    let threads = rayon::current_num_threads().max(1);
    let rows_per_task = n.div_ceil(threads * 4).max(32).next_multiple_of(8);
    let out = OutPtr(y.as_mut_ptr());
    (0..n.div_ceil(rows_per_task)).into_par_iter().for_each(|t| {
        let r0 = t * rows_per_task;
        let r1 = (r0 + rows_per_task).min(n);
        // SAFETY: AVX2/FMA checked above; rows r0..r1 of every output row are written by
        // this task only, and y outlives the parallel loop.
        unsafe { rows_avx2(x, m, k, w, r0, r1, n, b, out) };
    });
    y
}

/// Output columns r0..r1 for all m rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_avx2(x: &[f32], m: usize, k: usize, w: &[f32], r0: usize, r1: usize, n: usize, b: Option<&[f32]>, out: OutPtr) {
    // Register tiles: MR input rows × NR weight rows of 8-lane accumulators, MR * NR + MR + 1
    // ≤ 16 ymm registers (4 × 3 instead takes its inputs as memory operands: three weight rows
    // in flight rather than two). Weight rows are the outer loop so each is read from memory
    // once; all m input rows are multiplied against it while it is in L1.
    let mut r = r0;
    while r < r1 {
        let nr = match m {
            1 => 6,
            2 => 4,
            3 => 3,
            _ => 3,
        }
        .min(r1 - r);
        let mut i = 0;
        while i < m {
            let mr = (m - i).min(4);
            // SAFETY: (i, r) ranges in bounds by construction.
            unsafe {
                match (mr, nr) {
                    (1, 6) => tile::<1, 6>(x, i, k, w, r, b, n, out),
                    (2, 4) => tile::<2, 4>(x, i, k, w, r, b, n, out),
                    (3, 3) => tile::<3, 3>(x, i, k, w, r, b, n, out),
                    (4, 3) => tile::<4, 3>(x, i, k, w, r, b, n, out),
                    (4, 2) => tile::<4, 2>(x, i, k, w, r, b, n, out),
                    (4, 1) => tile::<4, 1>(x, i, k, w, r, b, n, out),
                    (3, 2) => tile::<3, 2>(x, i, k, w, r, b, n, out),
                    (3, 1) => tile::<3, 1>(x, i, k, w, r, b, n, out),
                    (2, 2) => tile::<2, 2>(x, i, k, w, r, b, n, out),
                    (2, 3) => tile::<2, 3>(x, i, k, w, r, b, n, out),
                    (2, 1) => tile::<2, 1>(x, i, k, w, r, b, n, out),
                    (1, 5) => tile::<1, 5>(x, i, k, w, r, b, n, out),
                    (1, 4) => tile::<1, 4>(x, i, k, w, r, b, n, out),
                    (1, 3) => tile::<1, 3>(x, i, k, w, r, b, n, out),
                    (1, 2) => tile::<1, 2>(x, i, k, w, r, b, n, out),
                    (1, 1) => tile::<1, 1>(x, i, k, w, r, b, n, out),
                    _ => unreachable!("tile {mr}x{nr}"),
                }
            }
            i += mr;
        }
        r += nr;
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_avx2(_: &[f32], _: usize, _: usize, _: &[f32], _: usize, _: usize, _: usize, _: Option<&[f32]>, _: OutPtr) {
    unreachable!("available() is false off x86_64")
}

/// How far ahead along a weight row the tile prefetches (floats, 1 KiB). Why: with two or three
/// rows streamed at once the hardware prefetcher alone kept too few lines in flight; on a 2-vCPU
/// AMD EPYC (Zen 5) the opt-125m decode-step weights at m = 4 went from 23.3 to 16.0 ms per step
/// with the 4 × 3 tile and this prefetch (interleaved runs of `examples/cpu_decode_floor`),
/// m = 1 unchanged. 128 and 512 floats were both slower than 256 there.
const PREFETCH_AHEAD: usize = 256;

/// y[i0 + a, r0 + c] for a < MR, c < NR.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn tile<const MR: usize, const NR: usize>(
    x: &[f32],
    i0: usize,
    k: usize,
    w: &[f32],
    r0: usize,
    b: Option<&[f32]>,
    n: usize,
    out: OutPtr,
) {
    use std::arch::x86_64::*;
    let xp = x.as_ptr().add(i0 * k);
    let wp = w.as_ptr().add(r0 * k);
    let mut acc = [[_mm256_setzero_ps(); NR]; MR];
    let k8 = k - k % 8;
    let mut kk = 0;
    // Tiles that would not fit 16 ymm registers with the inputs held (MR·NR + MR + 1 > 16) take
    // each input as a memory operand of its FMA instead (an L1 hit).
    if MR * NR + MR + 1 > 16 {
        while kk < k8 {
            for c in 0..NR {
                _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(c * k + kk + PREFETCH_AHEAD) as *const i8);
                let wv = _mm256_loadu_ps(wp.add(c * k + kk));
                for a in 0..MR {
                    acc[a][c] = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(a * k + kk)), wv, acc[a][c]);
                }
            }
            kk += 8;
        }
    } else {
        while kk < k8 {
            let mut xv = [_mm256_setzero_ps(); MR];
            for (a, v) in xv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(xp.add(a * k + kk));
            }
            for c in 0..NR {
                _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(c * k + kk + PREFETCH_AHEAD) as *const i8);
                let wv = _mm256_loadu_ps(wp.add(c * k + kk));
                for a in 0..MR {
                    acc[a][c] = _mm256_fmadd_ps(xv[a], wv, acc[a][c]);
                }
            }
            kk += 8;
        }
    }
    for a in 0..MR {
        for c in 0..NR {
            let mut s = hsum(acc[a][c]);
            for t in k8..k {
                s += *xp.add(a * k + t) * *wp.add(c * k + t);
            }
            if let Some(b) = b {
                s += b[r0 + c];
            }
            *out.0.add((i0 + a) * n + r0 + c) = s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hsum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01));
    _mm_cvtss_f32(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Against candle's own matmul (gemm) on random data, every tile shape and tails in k and n.
    #[test]
    fn matches_candle_matmul() {
        if !available() {
            eprintln!("skipped: no AVX2/FMA on this CPU");
            return;
        }
        let dev = Device::Cpu;
        for &(m, k, n) in &[(1, 64, 7), (2, 768, 50), (3, 37, 13), (4, 768, 3072), (5, 128, 9), (8, 1024, 33), (7, 9, 1)] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
            let want = x.matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
            let got = x.apply_op3_no_bwd(&w, &b, &SmallMLinear).unwrap();
            let diff = (want.clone() - &got).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff <= 1e-5 * scale.max(1.0), "m={m} k={k} n={n}: max diff {diff} (scale {scale})");
            let got2 = x.apply_op2_no_bwd(&w, &SmallMLinear).unwrap();
            let want2 = x.matmul(&w.t().unwrap()).unwrap();
            let diff2 = (want2 - got2).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff2 <= 1e-5 * scale.max(1.0), "no bias m={m} k={k} n={n}: {diff2}");
        }
    }

    #[test]
    fn three_dim_input_keeps_leading_dims() {
        if !available() {
            return;
        }
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (4, 1, 16), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (10, 16), &dev).unwrap();
        let y = x.apply_op2_no_bwd(&w, &SmallMLinear).unwrap();
        assert_eq!(y.dims(), &[4, 1, 10]);
    }

    #[test]
    fn rejects_non_f32_and_too_many_rows() {
        if !available() {
            return;
        }
        let dev = Device::Cpu;
        let w = Tensor::zeros((3, 8), candle_core::DType::F32, &dev).unwrap();
        let x = Tensor::zeros((MAX_M + 1, 8), candle_core::DType::F32, &dev).unwrap();
        let e = x.apply_op2_no_bwd(&w, &SmallMLinear).unwrap_err().to_string();
        assert!(e.contains("at most"), "{e}");
        let x16 = Tensor::zeros((2, 8), candle_core::DType::F16, &dev).unwrap();
        let e = x16.apply_op2_no_bwd(&w, &SmallMLinear).unwrap_err().to_string();
        assert!(e.contains("must be f32"), "{e}");
    }
}
