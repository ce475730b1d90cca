//! Per-shape choice between cuBLASLt's candidates and the plain path, by GPU time.

use super::*;
use candle_core::cuda_backend::cudarc::driver::{sys, LaunchConfig};
use candle_core::cuda_backend::{CudaDevice, WrapErr};
use candle_core::Result;


/// Picks how a prefill linear of one shape runs: each cuBLASLt candidate and the plain path
/// (cuBLAS, then the bias kernel) once to warm up, then 5 times between two CUDA events queued
/// behind a 1 ms `spin_ns` kernel, so that the events time the GPU work and not the host's
/// launch rate (at 128 rows a launch takes the host longer than the GPU; timed without the
/// spin, the choice among candidates was noise and opt-1.3b's batch-1 TTFT varied 2.0–4.1 ms
/// between runs on the H200). The fastest wins (`None`: the plain path). Runs once per shape and
/// process (the first prefill of a shape, i.e. a benchmark's warm-up), synchronizing the stream;
/// never inside a captured decode step (see `linear_lt`).
pub(super) fn tune_linear(
    l: &Launch,
    dev: &CudaDevice,
    candidates: &[LtAlgo],
    run: &dyn Fn(&LtAlgo) -> Result<()>,
    plain: &dyn Fn() -> Result<()>,
    (m, n, k): (usize, usize, usize),
) -> Result<Option<LtAlgo>> {
    let stream = dev.cuda_stream();
    let ctx = stream.context().clone();
    let time = |f: &dyn Fn() -> Result<()>| -> Result<Option<f32>> {
        if f().is_err() {
            return Ok(None); // a candidate that does not launch is not a candidate
        }
        let start = ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).w()?;
        let end = ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).w()?;
        let one = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: spin_ns takes one 64-bit value and touches no memory.
        unsafe { launch(l, dev, "spin_ns", one, &[Arg::Ptr(1_000_000)])? };
        start.record(&stream).w()?;
        for _ in 0..5 {
            f()?;
        }
        end.record(&stream).w()?;
        Ok(Some(start.elapsed_ms(&end).w()? / 5.0))
    };
    let mut best: Option<(f32, Option<_>)> = None;
    let plain_ms = time(plain)?;
    if let Some(t) = plain_ms {
        best = Some((t, None));
    }
    let mut lt_best = f32::INFINITY;
    for algo in candidates {
        if let Some(t) = time(&|| run(algo))? {
            lt_best = lt_best.min(t);
            if best.is_none_or(|(b, _)| t < b) {
                best = Some((t, Some(*algo)));
            }
        }
    }
    tracing::debug!(m, n, k, candidates = candidates.len(), plain_ms = ?plain_ms, cublaslt_best_ms = lt_best, chose_cublaslt = best.is_some_and(|(_, a)| a.is_some()), "prefill linear tuned");
    Ok(best.and_then(|(_, a)| a))
}
