//! The families tokbench implements on candle, one file each, numerically matching
//! transformers (checked by `tests/hf_parity.rs`): OPT (`opt`), GPT-2 (`gpt2`), and the rotary
//! decoders Llama / Mistral / Qwen2 / Qwen3 (`llama`, one file for the four: same names and
//! layer recipe, the config says what differs).
//!
//! All are built from the shared layers in `layers` (linear, layer norm, RMSNorm, activations,
//! the attention cores, MHA and grouped) and `rotary`; this file holds the `Model` they load
//! into and its forward pass.

#[doc(hidden)]
pub mod cpu_matmul;
#[cfg(feature = "cuda")]
pub mod cuda_ops;
#[cfg(feature = "cuda")]
pub(crate) mod fast_decode;
#[cfg(feature = "cuda")]
pub(crate) mod paged_decode;
#[cfg(feature = "cuda")]
pub use fast_decode::DecodeMode;
#[cfg(feature = "cuda")]
pub(crate) use cuda_ops::Launch;
mod gpt2;
pub mod kv_cache;
mod layers;
mod llama;
mod opt;
mod rotary;

pub use kv_cache::KvCache;
pub(crate) use layers::{attention, scaled, Activation, LayerNorm, Linear};

use crate::error::{EngineError, Result};
use crate::weights::{WeightLoader, WeightSource};
use candle_core::{DType, Device, Tensor};
use tokbench_core::{ArchConfig, KernelOptions};

/// What a forward pass hands every CUDA launcher (the job's kernel options and, in a decode step,
/// the step's arena: `cuda_ops::Launch`). A build without CUDA launches nothing of its own, so
/// there it carries nothing.
#[cfg(not(feature = "cuda"))]
#[derive(Clone, Copy)]
pub(crate) struct Launch<'a>(std::marker::PhantomData<&'a ()>);

/// Added to the attention scores of masked keys. Finite (as transformers' `finfo.min`) so a
/// row whose keys are all masked (a padding query) gives uniform weights, not NaN that would
/// leak into the values of later layers.
pub(crate) const MASKED: f32 = f32::MIN;

enum Arch {
    Opt(opt::Opt),
    Gpt2(gpt2::Gpt2),
    Llama(llama::Llama),
}

pub struct Model {
    arch: Arch,
    config: ArchConfig,
    device: Device,
    dtype: DType,
    num_parameters: u64,
    weight_bytes: u64,
    /// The job's CUDA engine options ([`Self::set_kernel_options`]); ignored on the CPU.
    kernels: KernelOptions,
    /// The device's compute capability ×10 (None off CUDA): which of tokbench's kernel builds it
    /// runs, and whether with programmatic dependent launch (`KernelOptions::on_device`).
    device_cap: Option<u32>,
}

impl Model {
    /// Build the model from `source` (real files or synthetic) on `device` in `dtype`.
    /// Tensor shapes are checked against `config` (ShapeMismatch / TensorMissing on error).
    pub fn load(config: &ArchConfig, source: &WeightSource, dtype: DType, device: &Device) -> Result<Model> {
        check_dtype(dtype, device)?;
        let mut loader = WeightLoader::open(source, dtype, device)?;
        Self::build(config, &mut loader, dtype, device)
    }

    fn build(config: &ArchConfig, loader: &mut WeightLoader, dtype: DType, device: &Device) -> Result<Model> {
        let arch = match config {
            ArchConfig::Opt(c) => Arch::Opt(opt::Opt::load(c, loader)?),
            ArchConfig::Gpt2(c) => Arch::Gpt2(gpt2::Gpt2::load(c, loader)?),
            ArchConfig::Llama(c) => Arch::Llama(llama::Llama::load(c, loader)?),
        };
        Ok(Model {
            arch,
            config: config.clone(),
            device: device.clone(),
            dtype,
            num_parameters: loader.num_parameters(),
            weight_bytes: loader.bytes(),
            kernels: KernelOptions::default(),
            device_cap: device_compute_cap(device),
        })
    }

    /// The synthetic weights of `config` for `seed`, as loaded on the CPU in f32, under their
    /// Hugging Face names (for writing checkpoints transformers can load).
    pub(crate) fn synthetic_tensors(config: &ArchConfig, seed: u64) -> Result<Vec<(String, Tensor)>> {
        let mut loader = WeightLoader::open(&WeightSource::Synthetic { seed }, DType::F32, &Device::Cpu)?;
        loader.record();
        Self::build(config, &mut loader, DType::F32, &Device::Cpu)?;
        Ok(loader.take_recorded())
    }

    pub fn config(&self) -> &ArchConfig {
        &self.config
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Parameters counted from the loaded tensors (tied lm_head once).
    pub fn num_parameters(&self) -> u64 {
        self.num_parameters
    }
    /// Bytes of the loaded weight tensors.
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// The engine options of the job about to run (a model kept for a later job takes that job's).
    /// (A generator whose decoder was built under other options rebuilds it.)
    pub fn set_kernel_options(&mut self, kernels: KernelOptions) {
        self.kernels = kernels;
    }
    /// Whether this model can run under the options set ([`Self::set_kernel_options`]): bf16
    /// needs the kernels of compute 8.0 or newer, so a bf16 job that asks for the 7.5 ones
    /// (`--kernel-compute-cap 75`) is refused.
    pub fn check_kernel_options(&self) -> Result<()> {
        match self.active_kernels() {
            Some(k) if self.dtype == DType::BF16 && !k.bf16_supported() => Err(EngineError::InvalidWorkload(format!(
                "the job asks for tokbench's compute {:.1} kernels (kernel compute_cap {}), which have no bf16: use --dtype f16, or leave the kernel compute capability unset",
                k.compute_cap.unwrap_or(0) as f32 / 10.0,
                k.compute_cap.unwrap_or(0)
            ))),
            _ => Ok(()),
        }
    }
    /// The engine options as asked for ([`Self::set_kernel_options`]).
    pub fn kernel_options(&self) -> &KernelOptions {
        &self.kernels
    }
    /// The options as they run on this model's device: None on the CPU (tokbench's CUDA kernels
    /// do not run there); on CUDA the asked ones with programmatic dependent launch off where the
    /// device cannot do it. (The decode path a batch actually took, after a failed graph capture
    /// or for sampling, is the batch's `decode_path`.)
    pub fn active_kernels(&self) -> Option<KernelOptions> {
        if !cfg!(feature = "cuda") || !self.device.is_cuda() {
            return None;
        }
        Some(self.kernels.on_device(self.device_cap.unwrap_or(0)))
    }
    /// What this model's forward passes hand the CUDA launchers (outside any decode step arena).
    pub(crate) fn launch(&self) -> Launch<'static> {
        #[cfg(feature = "cuda")]
        {
            Launch::new(self.active_kernels().unwrap_or(self.kernels))
        }
        #[cfg(not(feature = "cuda"))]
        {
            Launch(std::marker::PhantomData)
        }
    }

    /// Bytes of the KV cache generation allocates for `batch` sequences of up to
    /// `positions` positions (padded prompt + new tokens) in dtype `dtype` (key/value heads
    /// only: a grouped-query model caches `num_kv_heads * head_dim` per token and layer).
    pub fn kv_cache_bytes(config: &ArchConfig, batch: usize, positions: usize, dtype: DType) -> u64 {
        config.spec().kv_bytes_per_token(dtype.size_in_bytes()) * (batch * positions) as u64
    }

    /// Full forward pass of a left-padded batch without cache: `input_ids` [b, t] u32,
    /// `attention_mask` [b, t] u32 (1 = real token, 0 = padding). Returns logits [b, t, vocab] f32.
    /// Used by parity tests against transformers.
    pub fn forward_full(&mut self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        if attention_mask.dims() != [b, t] {
            return Err(EngineError::InvalidWorkload(format!(
                "attention_mask has shape {:?} but input_ids has [{b}, {t}]; they must match",
                attention_mask.dims()
            )));
        }
        let mask: Vec<Vec<u32>> = attention_mask.to_dtype(DType::U32)?.to_vec2()?;
        self.check_ids(&input_ids.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?)?;
        let inputs = PrefillInputs::new(&mask, self.position_offset());
        let positions = inputs.positions(&self.device)?;
        let bias = inputs.bias(&self.device)?;
        let ids = input_ids.to_dtype(DType::U32)?.to_device(&self.device)?;
        self.forward(&ids, &positions, &bias, None, false)
    }

    /// One forward pass: `ids` [b, t] u32, `position_rows` [b, t] u32 (rows of the position
    /// table, offset included), `bias` [b, 1, t, L] f32 (0 or [`MASKED`]; L = cached + t).
    /// With a cache, this pass's keys/values are appended to it. `last_only`: logits of the
    /// last position only ([b, 1, vocab]); else [b, t, vocab]. Logits are f32.
    pub(crate) fn forward(
        &self,
        ids: &Tensor,
        position_rows: &Tensor,
        bias: &Tensor,
        mut cache: Option<&mut KvCache>,
        last_only: bool,
    ) -> Result<Tensor> {
        let t = ids.dim(1)?;
        let l = &self.launch();
        let hidden = match &self.arch {
            Arch::Opt(m) => m.hidden(l, ids, position_rows, bias, cache.as_deref_mut())?,
            Arch::Gpt2(m) => m.hidden(l, ids, position_rows, bias, cache.as_deref_mut())?,
            Arch::Llama(m) => m.hidden(l, ids, position_rows, bias, cache.as_deref_mut())?,
        };
        if let Some(c) = cache {
            c.advance(t);
        }
        let hidden = if last_only && t > 1 { hidden.narrow(1, t - 1, 1)?.contiguous()? } else { hidden };
        let logits = match &self.arch {
            Arch::Opt(m) => m.logits(l, &hidden)?,
            Arch::Gpt2(m) => m.logits(l, &hidden)?,
            Arch::Llama(m) => m.logits(l, &hidden)?,
        };
        Ok(logits.to_dtype(DType::F32)?)
    }

    /// Row of the position table for logical position p is p + this (OPT's fairseq offset 2;
    /// rotary families take the position itself).
    pub(crate) fn position_offset(&self) -> u32 {
        match self.config.spec().position {
            tokbench_core::arch::PositionKind::Learned { offset, .. } => offset as u32,
            tokbench_core::arch::PositionKind::Rotary { .. } => 0,
        }
    }

    /// Token ids the embedding can look up (an out-of-range id would read out of bounds on CUDA).
    pub(crate) fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let vocab = self.config.vocab_size();
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(EngineError::InvalidWorkload(format!(
                "token id {bad} is outside the model's vocabulary (vocab_size {vocab}): the tokenizer does not belong to this model"
            )));
        }
        Ok(())
    }

    /// How greedy decode steps run on CUDA (the `decode` of [`Self::set_kernel_options`]; tests
    /// compare modes).
    #[cfg(feature = "cuda")]
    pub fn set_decode_mode(&mut self, mode: DecodeMode) {
        self.set_kernel_options(KernelOptions { decode: mode, ..self.kernels });
    }
    #[cfg(feature = "cuda")]
    pub(crate) fn decode_mode(&self) -> Result<DecodeMode> {
        Ok(self.kernels.decode)
    }

    /// One decode step of ragged sequences over a paged KV pool on tokbench's CUDA kernels (the
    /// server's step, see `Llama::decode_logits_paged`): `ids`, `positions` u32 [b], the
    /// sequences' lengths and block tables in `paged`, `pool` per layer (keys, values) `[rows,
    /// kv_heads * head_dim]`. Logits [b, vocab] f32, or `None` where it does not apply: OPT and
    /// GPT-2, the CPU, a build without CUDA, or a head size / length the kernel does not take
    /// (the caller then gathers the blocks and runs [`Self::forward`]).
    #[cfg(feature = "cuda")]
    pub(crate) fn decode_paged(&self, ids: &Tensor, positions: &Tensor, paged: cuda_ops::PagedBlocks<'_>, pool: &[(Tensor, Tensor)]) -> Result<Option<Tensor>> {
        Ok(match self.decode_paged_with(&self.launch(), ids, positions, paged, pool)? {
            Some(t) => Some(t.to_dtype(DType::F32)?),
            None => None,
        })
    }

    /// [`Self::decode_paged`] with the launches of `l` (a step arena's, when captured as a
    /// graph: `paged_decode`), logits in the model's dtype.
    #[cfg(feature = "cuda")]
    pub(crate) fn decode_paged_with(&self, l: &Launch, ids: &Tensor, positions: &Tensor, paged: cuda_ops::PagedBlocks<'_>, pool: &[(Tensor, Tensor)]) -> Result<Option<Tensor>> {
        if !self.device.is_cuda() {
            return Ok(None);
        }
        match &self.arch {
            Arch::Llama(m) => m.decode_logits_paged(l, ids, positions, paged, pool),
            _ => Ok(None),
        }
    }

    /// Whether [`Self::decode_paged`] runs for this model (the rotary families on CUDA, a head
    /// size the kernel takes) with sequences up to `cap` positions.
    #[cfg(feature = "cuda")]
    pub(crate) fn paged_decode_fits(&self, cap: usize) -> bool {
        let spec = self.config.spec();
        self.device.is_cuda() && matches!(self.arch, Arch::Llama(_)) && cuda_ops::decode_attention_rope_fits(self.dtype, spec.head_dim, cap)
    }

    /// The rotary families' static decode step (see `Llama::decode_step_static`): logits
    /// [b, vocab] from device-side ids, positions, slot and padding bias [b, capacity]; None for
    /// OPT and GPT-2. Driven on the CPU by the tests (the CUDA decoder calls the Llama one directly,
    /// where its fused kernels do not apply).
    #[cfg(test)]
    pub(crate) fn decode_step_static(
        &self,
        l: &Launch,
        ids: &Tensor,
        positions: &Tensor,
        slot: &Tensor,
        pad_bias: &Tensor,
        cache: &KvCache,
    ) -> Result<Option<Tensor>> {
        match &self.arch {
            Arch::Llama(m) => Ok(Some(m.decode_step_static(l, ids, positions, slot, pad_bias, cache)?)),
            _ => Ok(None),
        }
    }
}

/// The compute capability ×10 of `device` (None off CUDA).
fn device_compute_cap(device: &Device) -> Option<u32> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        return Some(cuda_ops::device_compute_cap(d));
    }
    let _ = device;
    None
}

fn check_dtype(dtype: DType, device: &Device) -> Result<()> {
    // candle's kernels for this GPU: the newest PTX of this build it runs (None: none it runs).
    let candle_ptx = device_compute_cap(device).map(|cap| (cap, crate::device::candle_ptx_cap_for(cap, None)));
    let rebuild = |cap: u32| {
        format!(
            "built for {:?} (CUDA_COMPUTE_CAP at build time); rebuild with CUDA_COMPUTE_CAP unset (every capability) or naming {}.{} (docs/cuda.md)",
            crate::device::candle_ptx_caps(),
            cap / 10,
            cap % 10
        )
    };
    if let Some((cap, None)) = candle_ptx {
        return Err(EngineError::InvalidWorkload(format!(
            "this build has no candle kernels a GPU of compute {}.{} runs: they were {}",
            cap / 10,
            cap % 10,
            rebuild(cap)
        )));
    }
    match dtype {
        DType::F32 | DType::F16 => Ok(()),
        DType::BF16 if device.is_cpu() => Err(EngineError::InvalidWorkload(
            "bf16 is not supported on the CPU (candle has no bf16 CPU matmul): use f32 or f16 on cpu, or bf16 on cuda".into(),
        )),
        DType::BF16 => match candle_ptx {
            Some((cap, _)) if cap < 80 => Err(EngineError::InvalidWorkload(format!(
                "bf16 needs a GPU of compute capability 8.0 or newer (Ampere on); this GPU is {}.{}: use --dtype f16",
                cap / 10,
                cap % 10
            ))),
            Some((cap, Some(ptx))) if ptx < 80 => Err(EngineError::InvalidWorkload(format!(
                "bf16 is not in this build for this GPU: the candle kernels it runs are compute {}.{}'s, which have no bf16; use --dtype f16. They were {}",
                ptx / 10,
                ptx % 10,
                rebuild(cap)
            ))),
            _ => Ok(()),
        },
        other => Err(EngineError::InvalidWorkload(format!("model dtype {other:?} is not supported: use f32, f16 or bf16"))),
    }
}

/// Prefill inputs computed on the host from an attention mask ([b][t], 1 = token, 0 = pad):
/// position rows like transformers (`cumsum(mask) - 1` for tokens, so left padding does not
/// shift positions; padding gets row 1 in both OPT and GPT-2), and the two parts of the
/// attention bias: causal [t, t] and key padding [b, t]. They are combined on the device
/// ([`Self::bias`]), so a long batch does not build and copy b * t * t floats on the host.
pub(crate) struct PrefillInputs {
    /// [b * t] u32
    pub positions: Vec<u32>,
    /// [t * t] f32: 0 where key <= query, else MASKED.
    pub causal: Vec<f32>,
    /// [b * t] f32: 0 for tokens, MASKED for padding.
    pub key_padding: Vec<f32>,
    pub batch: usize,
    pub len: usize,
}

impl PrefillInputs {
    pub(crate) fn new(mask: &[Vec<u32>], position_offset: u32) -> PrefillInputs {
        let b = mask.len();
        let t = mask.first().map_or(0, |r| r.len());
        let mut positions = Vec::with_capacity(b * t);
        let mut key_padding = Vec::with_capacity(b * t);
        for row in mask {
            let mut seen = 0u32;
            for &m in row {
                if m != 0 {
                    positions.push(seen + position_offset);
                    seen += 1;
                    key_padding.push(0.0);
                } else {
                    positions.push(1);
                    key_padding.push(MASKED);
                }
            }
        }
        let causal = (0..t).flat_map(|q| (0..t).map(move |k| if k <= q { 0.0 } else { MASKED })).collect();
        PrefillInputs { positions, causal, key_padding, batch: b, len: t }
    }

    /// The [b, 1, t, t] f32 bias on `device`: MASKED where either part masks.
    pub(crate) fn bias(&self, device: &Device) -> Result<Tensor> {
        let (b, t) = (self.batch, self.len);
        let causal = Tensor::from_slice(&self.causal, (1, 1, t, t), device)?;
        let padding = Tensor::from_slice(&self.key_padding, (b, 1, 1, t), device)?;
        // minimum, not sum: MASKED + MASKED would overflow to -inf and a fully masked row
        // (a padding query) would turn into NaN.
        Ok(causal.broadcast_minimum(&padding)?)
    }

    pub(crate) fn positions(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.positions, (self.batch, self.len), device)?)
    }
}

/// The kernel options that ran, for `InferenceMetrics::kernels_run`: the model's
/// [`Model::active_kernels`] (None on the CPU) with `decode` the path the batch's decode steps
/// took, from its `decode_path` ("cuda-graph", "fused", "eager"; after a failed capture a graph
/// job runs "fused").
pub fn kernels_run(active: Option<KernelOptions>, decode_path: &str) -> Option<KernelOptions> {
    let mut k = active?;
    k.decode = match decode_path {
        "cuda-graph" => tokbench_core::DecodePath::Graph,
        "fused" => tokbench_core::DecodePath::Fused,
        "eager" => tokbench_core::DecodePath::Eager,
        _ => k.decode,
    };
    Some(k)
}

/// The kernel options that ran (`InferenceMetrics::kernels_run`) in words, for
/// `InferenceMetrics::decode_kernels`; empty on the CPU (None).
pub fn decode_kernels(active: Option<&KernelOptions>) -> String {
    let Some(k) = active else { return String::new() };
    let gemv = match k.gemv_max_rows.min(tokbench_core::kernel_options::GEMV_MAX_ROWS_LIMIT) {
        0 => "cuBLAS only (GEMV off)".to_string(),
        1 => "GEMV at 1 row".to_string(),
        n => format!("GEMV up to {n} rows"),
    };
    let pdl = if k.pdl { "programmatic dependent launch" } else { "no programmatic dependent launch" };
    let prefill = if k.fused_prefill_attention { "fused prefill attention" } else { "unfused prefill attention" };
    let epilogue = if k.lt_epilogue { "cuBLASLt bias epilogues" } else { "separate bias kernels" };
    // The rotary prefill kernels need the fused prefill attention or the epilogues to be on (layers.rs).
    let rotary = k.fused_rotary_prefill && (k.fused_prefill_attention || k.lt_epilogue);
    let epilogue = if rotary { format!("{epilogue}, fused rotary prefill") } else { epilogue.to_string() };
    match k.compute_cap {
        Some(cap) => format!("compute {}.{} kernels, {gemv}, {pdl}, {prefill}, {epilogue}", cap / 10, cap % 10),
        None => format!("{gemv}, {pdl}, {prefill}, {epilogue}"),
    }
}

#[cfg(test)]
mod kernel_report_tests {
    use super::*;
    use tokbench_core::DecodePath;

    #[test]
    fn kernels_run_takes_the_decode_path_that_ran_and_none_on_cpu() {
        let asked = KernelOptions::default();
        assert_eq!(kernels_run(None, "cpu"), None);
        assert_eq!(kernels_run(Some(asked), "cuda-graph"), Some(asked));
        assert_eq!(kernels_run(Some(asked), "fused").unwrap().decode, DecodePath::Fused);
        assert_eq!(kernels_run(Some(asked), "eager").unwrap().decode, DecodePath::Eager);
        assert_eq!(decode_kernels(None), "");
        assert_eq!(
            decode_kernels(Some(&asked)),
            "GEMV at 1 row, programmatic dependent launch, fused prefill attention, cuBLASLt bias epilogues, fused rotary prefill"
        );
        let no_rotary = KernelOptions { fused_rotary_prefill: false, ..asked };
        assert_eq!(decode_kernels(Some(&no_rotary)), "GEMV at 1 row, programmatic dependent launch, fused prefill attention, cuBLASLt bias epilogues");
        let off = KernelOptions { pdl: false, gemv_max_rows: 0, fused_prefill_attention: false, lt_epilogue: false, ..asked };
        assert_eq!(decode_kernels(Some(&off)), "cuBLAS only (GEMV off), no programmatic dependent launch, unfused prefill attention, separate bias kernels");
    }

    #[test]
    fn a_cpu_model_runs_no_cuda_kernels_whatever_it_is_asked() {
        let config = tokbench_core::Catalog::get("tiny-opt").unwrap().config();
        let mut model = Model::load(&config, &WeightSource::Synthetic { seed: 1 }, DType::F32, &Device::Cpu).unwrap();
        let asked = KernelOptions { gemv_max_rows: 4, ..KernelOptions::default() };
        model.set_kernel_options(asked);
        assert_eq!(model.kernel_options(), &asked);
        assert_eq!(model.active_kernels(), None);
    }
}
