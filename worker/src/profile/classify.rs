//! Kernel classification: what a GPU kernel spends its time on, from its name.

use tokbench_core::report::GpuTimeCategory;

/// candle-kernels 0.11.1 op names (`extern "C"` kernels named `<op>_<dtype>[_<dtype>]`):
/// unary.cu (u*), binary.cu (b*, comparisons), affine.cu, cast.cu, ternary.cu (where),
/// fill.cu (fill, const_set, copy2d), indexing.cu (index_select `is`, gather, index_add `ia`,
/// scatter `s`/`sa`), reduce.cu (layernorm, rmsnorm, rope, sum, fast_*; softmax is attention).
const CANDLE_ELEMENTWISE_OPS: &[&str] = &[
    // unary
    "uabs", "uceil", "ucopy", "ucos", "uelu", "uerf", "uexp", "ufloor", "ugelu", "ugelu_erf", "ulog", "uneg", "unormcdf", "upowf",
    "urecip", "urelu", "uround", "usigmoid", "usign", "usilu", "usin", "usqr", "usqrt", "utanh",
    // binary and comparisons
    "badd", "bdiv", "bmaximum", "bminimum", "bmul", "bsub", "eq", "ne", "lt", "le", "gt", "ge",
    // affine, cast, where, fill
    "affine", "cast", "where", "fill", "const_set", "copy2d",
    // indexing
    "is", "gather", "ia", "s", "sa",
    // reductions and normalisation
    "layernorm", "rmsnorm", "rope", "rope_i", "rope_thd", "sum", "fast_sum", "fast_sum_small", "fast_max", "fast_min",
    "fast_argmax", "fast_argmin",
];

/// Generic (non-candle, e.g. PyTorch) normalisation / elementwise kernel name parts.
const ELEMENTWISE_WORDS: &[&str] = &[
    "layernorm", "layer_norm", "rmsnorm", "rms_norm", "batchnorm", "batch_norm", "groupnorm", "group_norm", "elementwise", "reduce",
    "copy", "gelu", "relu", "fill",
];

/// tokbench's decode.cu kernels that pick tokens or advance the step, and candle's sampling ops.
const SAMPLING_PREFIXES: &[&str] = &["argmax_rows_", "advance_step", "asort_", "fast_argmax_"];

/// tokbench's decode.cu kernels that are normalisation or elementwise work.
const TOKBENCH_ELEMENTWISE_PREFIXES: &[&str] = &["layer_norm_", "bias_act_", "bias_residual_", "embed_"];

const DTYPE_TOKENS: &[&str] = &["f16", "f32", "f64", "bf16", "u8", "u32", "i16", "i32", "i64", "f8", "e4m3", "e5m2", "fp8", "f8e4m3"];

/// `<op>_<dtype>[_<dtype>...]` with `op` in CANDLE_ELEMENTWISE_OPS.
fn is_candle_elementwise(name: &str) -> bool {
    CANDLE_ELEMENTWISE_OPS.iter().any(|op| {
        name.strip_prefix(op)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|types| !types.is_empty() && types.split('_').all(|t| DTYPE_TOKENS.contains(&t)))
    })
}

/// What a GPU kernel spends its time on, from its (demangled) name. Rules, first match wins:
/// 1. attention: the name contains `softmax`, `attn`, `attention`, `flash`, `fmha` or `sdpa`
///    (candle's `softmax_<dtype>` is the attention softmax in these models; checked before GEMM
///    because fused attention kernels often carry `gemm`/`cutlass` in their names too);
/// 2. gemm: cuBLAS/cuBLASLt/CUTLASS matrix multiplies: `nvjet*` (cuBLAS on Hopper, e.g.
///    `nvjet_sm90_hsh_*`), `*xmma*` (`sm80_xmma_gemm_*`), `*gemm*` (`ampere_*gemm*`,
///    `*sgemm*`, `*hgemm*`), `*gemv*` (cuBLAS batch-1 paths), `cutlass*`, `*splitKreduce*`
///    (cuBLAS split-K epilogue);
/// 3. normalization+elementwise: candle's kernels (`ucopy_f16`, `affine_f32`, `bmul_f16`,
///    `badd_f16`, `layernorm_f16`, `cast_f16_f32`, `where_u8_f16`, `fill_f16`, `is_u32_f16`,
///    `fast_max_f32`, `fast_argmax_f32`, ... see CANDLE_ELEMENTWISE_OPS) and generic names
///    containing `layernorm`/`layer_norm`/`rmsnorm`/`rms_norm`/`batch_norm`/`group_norm`,
///    `elementwise`, `reduce`, `copy`, `gelu`, `relu`, `fill` (not bare `norm`: cuRAND's
///    `curand_normal` would match);
/// 4. tokbench's own decode kernels (worker/kernels/decode.cu), by name prefix: GEMV
///    (`gemv_small_m<rows>_<dtype>`) is caught by rule 2 and its attention kernels
///    (`decode_attention*`, `prefill_attention*`, `masked_softmax_*`) by rule 1;
///    `layer_norm_*`, `bias_act_*` (GEMM epilogue: bias + activation), `bias_residual_*`
///    (bias + residual add) and `embed_*` (token + position embedding) are
///    normalization+elementwise; `argmax_rows_*` and `advance_step*` (the chosen ids become
///    the next step's input) are sampling, as are candle's `asort_*` (top-k) and `fast_argmax_*`;
///    `spin_ns` (cuBLASLt tuning's stream filler) is other;
/// 5. memcpy/memset kernels by name (`*memcpy*`, `*memset*`) — transfers themselves come
///    from cuda_gpu_mem_time_sum and always count as memcpy+memset;
/// 6. anything else: other. On the GPU machine that is cuRAND (`gen_sequenced<curandState...>`,
///    `generate_seed_pseudo`: synthetic weights drawn on the device during
///    model_initialization, not inference work) and `spin_ns`.
pub fn classify_kernel(name: &str) -> GpuTimeCategory {
    let lower = name.to_ascii_lowercase();
    // Demangled C++ names start with the return type ("void "); the base name follows.
    let base = lower.strip_prefix("void ").unwrap_or(&lower);
    let has = |s: &str| lower.contains(s);
    if ["softmax", "attn", "attention", "flash", "fmha", "sdpa"].iter().any(|s| has(s)) {
        GpuTimeCategory::Attention
    } else if base.starts_with("nvjet") || base.starts_with("cutlass") || ["gemm", "gemv", "xmma", "splitkreduce"].iter().any(|s| has(s)) {
        GpuTimeCategory::Gemm
    } else if has("curand") || base.starts_with("spin_ns") {
        GpuTimeCategory::Other
    } else if SAMPLING_PREFIXES.iter().any(|p| base.starts_with(p)) {
        GpuTimeCategory::Sampling
    } else if TOKBENCH_ELEMENTWISE_PREFIXES.iter().any(|p| base.starts_with(p)) || is_candle_elementwise(base) || ELEMENTWISE_WORDS.iter().any(|s| has(s)) {
        GpuTimeCategory::NormalizationElementwise
    } else if has("memcpy") || has("memset") {
        GpuTimeCategory::MemcpyMemset
    } else {
        GpuTimeCategory::Other
    }
}
