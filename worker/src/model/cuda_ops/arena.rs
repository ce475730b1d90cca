//! The decode step's buffer arena: owned by the decoder (`FastDecoder`), lent to the launchers
//! of one step through [`Launch::with_arena`].

use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{DType, Result, Storage, Tensor};
use super::Launch;

/// Buffers for the outputs of one decode step, reused by the next step: the n-th output of a
/// step takes the n-th buffer (allocated on the first step, or again when its dtype or shape
/// changed). A decode step is the same sequence of launches every time, so after the first
/// step nothing is allocated.
#[derive(Default)]
pub struct StepArena {
    buffers: Vec<Tensor>,
    next: usize,
}

impl StepArena {
    /// Starts a step: its first output takes the first buffer again.
    pub fn rewind(&mut self) {
        self.next = 0;
    }
    /// Bytes the arena holds on the device.
    pub fn bytes(&self) -> usize {
        self.buffers.iter().map(|t| t.elem_count() * t.dtype().size_in_bytes()).sum()
    }
}

/// An output tensor: the buffer of `l`'s step arena for this call when a decode step launches
/// (see [`Launch::with_arena`]), else fresh.
pub(super) fn output<T: CudaDType + DeviceRepr>(l: &Launch, dev: &CudaDevice, dtype: DType, shape: &[usize]) -> Result<Tensor> {
    let fresh = || -> Result<Tensor> {
        let n: usize = shape.iter().product();
        // SAFETY: every caller's kernel writes every element before anything reads it.
        let slice = unsafe { dev.alloc::<T>(n)? };
        Ok(Tensor::from_storage(Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, dev.clone())), shape, BackpropOp::none(), false))
    };
    let Some(arena) = l.arena() else { return fresh() };
    let mut arena = arena.borrow_mut();
    let i = arena.next;
    arena.next += 1;
    if let Some(t) = arena.buffers.get(i) {
        if t.dtype() == dtype && t.dims() == shape {
            return Ok(t.clone());
        }
    }
    let t = fresh()?;
    if i < arena.buffers.len() {
        arena.buffers[i] = t.clone();
    } else {
        arena.buffers.push(t.clone());
    }
    Ok(t)
}
