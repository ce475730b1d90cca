//! Where weights come from: real files (safetensors, memory-mapped; sharded; or PyTorch
//! `pytorch_model.bin`) or synthetic (seeded random values generated on the target device).
//!
//! The model code asks a [`WeightLoader`] for each tensor by its Hugging Face name and the shape
//! the config implies; the loader checks the file against that shape (so a checkpoint that does
//! not belong to the config fails with the tensor's name, not deep inside a matmul), converts to
//! the requested dtype on the device, and counts parameters and bytes.

use crate::error::{EngineError, Result};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_distr::Distribution;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub enum WeightSource {
    /// One or more `.safetensors` files (shards) or one `pytorch_model.bin`.
    Files(Vec<PathBuf>),
    /// Deterministic seeded random values, generated directly on the target device.
    Synthetic { seed: u64 },
}

impl WeightSource {
    /// For reports: the file list, or `synthetic (seed N)`.
    pub fn describe(&self) -> String {
        match self {
            WeightSource::Files(paths) => paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            WeightSource::Synthetic { seed } => format!("synthetic (seed {seed})"),
        }
    }
    pub fn is_synthetic(&self) -> bool {
        matches!(self, WeightSource::Synthetic { .. })
    }
}

/// How a synthetic tensor is initialised: Hugging Face's `_init_weights` statistics
/// (normal with std `initializer_range`/`init_std` = 0.02 for linear and embedding weights,
/// zeros for biases, ones/zeros for layer norm weight/bias).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Init {
    Normal(f64),
    Zeros,
    Ones,
}

/// HF's default init std for OPT (`init_std`) and GPT-2 (`initializer_range`).
pub(crate) const HF_INIT_STD: f64 = 0.02;

enum Store {
    Safetensors {
        /// Each file mapped read-only, with the offset where its tensor data starts.
        maps: Vec<(memmap2::Mmap, usize)>,
        /// name -> (shape, index of the file)
        index: HashMap<String, (Vec<usize>, usize)>,
        /// name -> (dtype in the file, byte range within the file's data section)
        data: HashMap<String, (safetensors::Dtype, (usize, usize))>,
        paths: Vec<PathBuf>,
    },
    Pth {
        shards: Vec<(PathBuf, candle_core::pickle::PthTensors)>,
        /// name -> (shape, shard index)
        index: HashMap<String, (Vec<usize>, usize)>,
    },
    Synthetic {
        /// CPU: candle cannot seed its CPU RNG, so values come from this seeded generator.
        /// CUDA: None; the device's own RNG (curand) is seeded and generates on the device.
        cpu_rng: Option<rand::rngs::StdRng>,
        seed: u64,
    },
}

/// Hands out the tensors of one checkpoint (or synthetic ones) by HF name.
pub(crate) struct WeightLoader {
    store: Store,
    dtype: DType,
    device: Device,
    /// Prefix of the base model's names in this checkpoint (`model.`, `transformer.`, or empty).
    prefix: String,
    num_parameters: u64,
    bytes: u64,
    /// When set, every tensor handed out is also kept here under its full HF name
    /// (used to write synthetic checkpoints).
    record: Option<Vec<(String, Tensor)>>,
}

fn io_missing(path: &Path, e: impl std::fmt::Display) -> EngineError {
    EngineError::WeightsMissing { path: path.to_path_buf(), detail: e.to_string() }
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> EngineError {
    EngineError::WeightsCorrupt { path: path.to_path_buf(), detail: e.to_string() }
}

#[derive(PartialEq)]
enum FileKind {
    Safetensors,
    Pickle,
}

fn file_kind(path: &Path) -> Result<FileKind> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if name.ends_with(".safetensors") {
        Ok(FileKind::Safetensors)
    } else if name.ends_with(".bin") || name.ends_with(".pth") || name.ends_with(".pt") {
        Ok(FileKind::Pickle)
    } else {
        Err(EngineError::InvalidWorkload(format!(
            "weight file {} has an unknown format: expected *.safetensors or a PyTorch pytorch_model.bin (*.bin, *.pth, *.pt)",
            path.display()
        )))
    }
}

impl WeightLoader {
    pub(crate) fn open(source: &WeightSource, dtype: DType, device: &Device) -> Result<WeightLoader> {
        let store = match source {
            WeightSource::Synthetic { seed } => {
                let cpu_rng = match device {
                    Device::Cpu => Some(rand::rngs::StdRng::seed_from_u64(*seed)),
                    _ => {
                        // A fresh generator state: the same seed gives the same tensors on the
                        // same device, whatever ran on it before.
                        device.set_seed(*seed)?;
                        None
                    }
                };
                Store::Synthetic { cpu_rng, seed: *seed }
            }
            WeightSource::Files(paths) => Self::open_files(paths)?,
        };
        Ok(WeightLoader {
            store,
            dtype,
            device: device.clone(),
            prefix: String::new(),
            num_parameters: 0,
            bytes: 0,
            record: None,
        })
    }

    fn open_files(paths: &[PathBuf]) -> Result<Store> {
        let Some(first) = paths.first() else {
            return Err(EngineError::InvalidWorkload(
                "no weight files given: pass model.safetensors (or its shards) or pytorch_model.bin".into(),
            ));
        };
        let kind = file_kind(first)?;
        for p in paths {
            if file_kind(p)? != kind {
                return Err(EngineError::InvalidWorkload(format!(
                    "weight files mix safetensors and PyTorch formats ({} and {}): give one format",
                    first.display(),
                    p.display()
                )));
            }
            let meta = std::fs::metadata(p).map_err(|e| io_missing(p, e))?;
            if !meta.is_file() {
                return Err(io_missing(p, "not a regular file"));
            }
            // Opening it here separates "cannot read" (missing) from "cannot parse" (corrupt).
            std::fs::File::open(p).map_err(|e| io_missing(p, e))?;
        }
        match kind {
            FileKind::Safetensors => {
                let mut index = HashMap::new();
                let mut data = HashMap::new();
                let mut maps = Vec::with_capacity(paths.len());
                for (i, p) in paths.iter().enumerate() {
                    let file = std::fs::File::open(p).map_err(|e| io_missing(p, e))?;
                    // SAFETY: the file is mapped read-only and not modified while loading, as
                    // with every safetensors loader (transformers, candle's VarBuilder).
                    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| corrupt(p, e))?;
                    // Header check per file so a corrupt shard is named; it also checks that the
                    // tensors' byte ranges tile the data section and end where the file ends.
                    let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| corrupt(p, e))?;
                    for (name, info) in meta.tensors() {
                        index.insert(name.clone(), (info.shape.clone(), i));
                        data.insert(name, (info.dtype, info.data_offsets));
                    }
                    maps.push((map, 8 + header_len));
                }
                Ok(Store::Safetensors { maps, index, data, paths: paths.to_vec() })
            }
            FileKind::Pickle => {
                let mut shards = Vec::new();
                let mut index = HashMap::new();
                for (i, p) in paths.iter().enumerate() {
                    let pth = candle_core::pickle::PthTensors::new(p, None).map_err(|e| corrupt(p, e))?;
                    for (name, info) in pth.tensor_infos() {
                        index.insert(name.clone(), (info.layout.dims().to_vec(), i));
                    }
                    shards.push((p.clone(), pth));
                }
                if index.is_empty() {
                    return Err(corrupt(first, "it holds no tensors (expected a state dict saved with torch.save)"));
                }
                Ok(Store::Pth { shards, index })
            }
        }
    }

    /// Keep every tensor handed out (with its full HF name) for [`Self::take_recorded`].
    pub(crate) fn record(&mut self) {
        self.record = Some(Vec::new());
    }
    pub(crate) fn take_recorded(&mut self) -> Vec<(String, Tensor)> {
        self.record.take().unwrap_or_default()
    }

    pub(crate) fn is_synthetic(&self) -> bool {
        matches!(self.store, Store::Synthetic { .. })
    }

    /// The dtype and device tensors are loaded to.
    pub(crate) fn target(&self) -> (DType, Device) {
        (self.dtype, self.device.clone())
    }

    pub(crate) fn num_parameters(&self) -> u64 {
        self.num_parameters
    }
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    fn names(&self) -> Option<&HashMap<String, (Vec<usize>, usize)>> {
        match &self.store {
            Store::Safetensors { index, .. } | Store::Pth { index, .. } => Some(index),
            Store::Synthetic { .. } => None,
        }
    }

    /// Picks the prefix of the base model's names: the first of `candidates` under which
    /// `probe` exists (checkpoints of `*ForCausalLM` use `model.`/`transformer.`, those of the
    /// bare base model none). Synthetic weights use the first candidate (the `*ForCausalLM`
    /// names transformers writes).
    pub(crate) fn choose_prefix(&mut self, candidates: &[&str], probe: &str) -> Result<()> {
        let Some(names) = self.names() else {
            self.prefix = candidates[0].to_string();
            return Ok(());
        };
        if let Some(p) = candidates.iter().find(|p| names.contains_key(&format!("{p}{probe}"))) {
            self.prefix = p.to_string();
            return Ok(());
        }
        let tried: Vec<String> = candidates.iter().map(|p| format!("{p}{probe}")).collect();
        Err(EngineError::TensorMissing { name: tried[0].clone(), detail: self.missing_detail(&tried) })
    }

    fn missing_detail(&self, tried: &[String]) -> String {
        let mut sample: Vec<&String> = self.names().map(|n| n.keys().collect()).unwrap_or_default();
        sample.sort();
        let n = sample.len();
        sample.truncate(5);
        format!(
            "looked for {}; the checkpoint has {n} tensors, e.g. {}. Is it a checkpoint of this architecture (config.json model_type)?",
            tried.join(" / "),
            sample.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )
    }

    /// Whether the checkpoint holds `name` (a root name, no prefix). Synthetic: false.
    pub(crate) fn contains_root(&self, name: &str) -> bool {
        self.names().is_some_and(|n| n.contains_key(name))
    }

    /// The tensor `prefix + name` with the given shape.
    pub(crate) fn get(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        self.get_root(&full, shape, init)
    }

    /// The tensor `name` (no prefix) with the given shape.
    pub(crate) fn get_root(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let tensor = match &mut self.store {
            Store::Synthetic { cpu_rng, seed } => synthetic(cpu_rng.as_mut(), *seed, shape, init, self.dtype, &self.device)?,
            Store::Safetensors { maps, index, data, paths } => {
                let (actual, file) = lookup(index, name, shape)?;
                let (dtype, (start, end)) = data[name];
                let (map, base) = &maps[file];
                let bad = |e: &dyn std::fmt::Display| corrupt(&paths[file], format!("tensor {name}: {e}"));
                let file_dtype = match dtype {
                    safetensors::Dtype::F32 => DType::F32,
                    safetensors::Dtype::F16 => DType::F16,
                    safetensors::Dtype::BF16 => DType::BF16,
                    safetensors::Dtype::F64 => DType::F64,
                    other => return Err(bad(&format!("dtype {other:?} is not a float type tokbench loads (F32, F16, BF16, F64)"))),
                };
                let t = match &self.device {
                    // Copied piece by piece, each piece's mapped pages released right after it.
                    Device::Cpu => copy_to_host(map, base + start, end - start, file_dtype, actual).map_err(|e| bad(&e))?,
                    // Straight from the mapping to the device; then its pages are released.
                    device => {
                        let t = Tensor::from_raw_buffer(&map[base + start..base + end], file_dtype, actual, device).map_err(|e| bad(&e))?;
                        release_pages(map, base + start, end - start);
                        t
                    }
                };
                t.to_dtype(self.dtype)?
            }
            Store::Pth { shards, index } => {
                let (_, shard) = lookup(index, name, shape)?;
                let (path, pth) = &shards[shard];
                let t = pth
                    .get(name)
                    .map_err(|e| corrupt(path, format!("tensor {name}: {e}")))?
                    .ok_or_else(|| corrupt(path, format!("tensor {name} is listed but cannot be read")))?;
                t.to_dtype(self.dtype)?.to_device(&self.device)?
            }
        };
        if tensor.dims() != shape {
            // The header said one thing and the data another.
            return Err(EngineError::ShapeMismatch { name: name.to_string(), expected: shape.to_vec(), actual: tensor.dims().to_vec() });
        }
        let n = tensor.elem_count() as u64;
        self.num_parameters += n;
        self.bytes += n * self.dtype.size_in_bytes() as u64;
        if let Some(rec) = &mut self.record {
            rec.push((name.to_string(), tensor.clone()));
        }
        Ok(tensor)
    }
}

/// A host tensor from `len` bytes of the mapping at `offset`, copied in pieces of a few MiB with
/// each piece's mapped pages released after it is copied: host memory stays at one copy of the
/// weights even for a tensor as large as an embedding matrix (206 MB for opt-1.3b).
fn copy_to_host(map: &memmap2::Mmap, offset: usize, len: usize, dtype: DType, shape: &[usize]) -> candle_core::Result<Tensor> {
    fn copy<T: candle_core::WithDType>(map: &memmap2::Mmap, offset: usize, len: usize, shape: &[usize]) -> candle_core::Result<Tensor> {
        let size = std::mem::size_of::<T>();
        if len % size != 0 {
            candle_core::bail!("{len} bytes is not a whole number of {size}-byte elements");
        }
        let count = len / size;
        let mut values: Vec<T> = Vec::with_capacity(count);
        const PIECE: usize = 8 << 20;
        let mut done = 0;
        while done < len {
            let n = PIECE.min(len - done);
            // SAFETY: `values` has capacity for `len` bytes; bytes [0, done) are initialised, this
            // copies the next `n` from the mapping (no alignment needed for a byte copy), and the
            // length is set only once every byte is written. The element types are plain floats
            // for which every bit pattern is valid.
            unsafe {
                std::ptr::copy_nonoverlapping(map[offset + done..].as_ptr(), (values.as_mut_ptr() as *mut u8).add(done), n);
            }
            release_pages(map, offset + done, n);
            done += n;
        }
        // SAFETY: all `count` elements were written above.
        unsafe { values.set_len(count) };
        Tensor::from_vec(values, shape, &Device::Cpu)
    }
    match dtype {
        DType::F32 => copy::<f32>(map, offset, len, shape),
        DType::F16 => copy::<half::f16>(map, offset, len, shape),
        DType::BF16 => copy::<half::bf16>(map, offset, len, shape),
        DType::F64 => copy::<f64>(map, offset, len, shape),
        other => candle_core::bail!("dtype {other:?} is not loaded from safetensors"),
    }
}

/// Drops the mapped pages of `len` bytes at `offset` from this process (they stay in the page
/// cache, and a later read faults them back in from the file). Without this, loading keeps every
/// page of the file resident beside the copied tensors: twice the weights at the peak.
fn release_pages(map: &memmap2::Mmap, offset: usize, len: usize) {
    #[cfg(unix)]
    {
        // Whole pages inside the range only: a page shared with a neighbouring tensor stays.
        const PAGE: usize = 4096;
        let first = offset.div_ceil(PAGE) * PAGE;
        let last = (offset + len) / PAGE * PAGE;
        if last > first {
            // SAFETY: the map is a read-only shared file mapping; after MADV_DONTNEED its pages
            // read the file's contents again, so no slice into it ever sees other data.
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, first, last - first) };
        }
    }
    #[cfg(not(unix))]
    let _ = (map, offset, len);
}

fn lookup<'a>(index: &'a HashMap<String, (Vec<usize>, usize)>, name: &str, shape: &[usize]) -> Result<(&'a [usize], usize)> {
    match index.get(name) {
        None => {
            let mut sample: Vec<&String> = index.keys().collect();
            sample.sort();
            let n = sample.len();
            sample.truncate(5);
            Err(EngineError::TensorMissing {
                name: name.to_string(),
                detail: format!(
                    "the checkpoint has {n} tensors, e.g. {}; it may be incomplete (a missing shard?) or of another architecture",
                    sample.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ),
            })
        }
        Some((actual, _)) if actual.as_slice() != shape => {
            Err(EngineError::ShapeMismatch { name: name.to_string(), expected: shape.to_vec(), actual: actual.clone() })
        }
        Some((actual, file)) => Ok((actual.as_slice(), *file)),
    }
}

fn synthetic(
    cpu_rng: Option<&mut rand::rngs::StdRng>,
    _seed: u64,
    shape: &[usize],
    init: Init,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    Ok(match init {
        Init::Zeros => Tensor::zeros(shape, dtype, device)?,
        Init::Ones => Tensor::ones(shape, dtype, device)?,
        Init::Normal(std) => match cpu_rng {
            Some(rng) => {
                let normal = rand_distr::Normal::new(0f32, std as f32)
                    .map_err(|e| EngineError::InvalidWorkload(format!("bad init std {std}: {e}")))?;
                let n: usize = shape.iter().product();
                let values: Vec<f32> = (0..n).map(|_| normal.sample(rng)).collect();
                Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?
            }
            // The device's RNG, seeded in `open`: the values never exist on the host.
            // curand generates f32 only; the conversion runs on the device.
            None => Tensor::randn(0f32, std as f32, shape, device)?.to_dtype(dtype)?,
        },
    })
}
