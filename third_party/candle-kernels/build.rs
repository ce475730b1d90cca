//! tokbench's fork of candle-kernels 0.11.1 (see README.md): candle's PTX kernels are built for
//! several compute capabilities, one module set per capability, and `Module::ptx` picks one at
//! run time. Upstream builds one set, for `CUDA_COMPUTE_CAP` or the local GPU.
use cudaforge::{KernelBuilder, Result};
use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

const CUTILE_FEATURE: &str = "CARGO_FEATURE_CUTILE";

/// The capabilities built when `CUDA_COMPUTE_CAP` is unset: Turing, Ampere (bf16), Ada (fp8) and
/// Hopper. A GPU runs the newest of them not newer than itself (8.6 runs 8.0's, 10.0 runs 8.9's).
const DEFAULT_CAPS: &[usize] = &[75, 80, 89, 90];

/// `CUDA_COMPUTE_CAP`: one capability ("90", "8.6") or a comma-separated list ("75,80"); unset:
/// [`DEFAULT_CAPS`].
fn ptx_caps() -> Vec<usize> {
    let Ok(text) = env::var("CUDA_COMPUTE_CAP") else { return DEFAULT_CAPS.to_vec() };
    let mut caps: Vec<usize> = text
        .split(',')
        .map(|c| c.trim().trim_end_matches(['a', 'f']).replace('.', ""))
        .filter(|c| !c.is_empty())
        .map(|c| {
            let n: usize = c.parse().unwrap_or_else(|_| panic!("CUDA_COMPUTE_CAP={text}: expected capabilities like 75 or 75,80,90"));
            if n < 20 { n * 10 } else { n }
        })
        .collect();
    caps.sort_unstable();
    caps.dedup();
    assert!(!caps.is_empty(), "CUDA_COMPUTE_CAP={text}: expected capabilities like 75 or 75,80,90");
    caps
}

fn main() -> Result<()> {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src");
    println!("cargo::rerun-if-changed=src/compatibility.cuh");
    println!("cargo::rerun-if-changed=src/cuda_utils.cuh");
    println!("cargo::rerun-if-changed=src/binary_op_macros.cuh");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");

    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let caps = ptx_caps();
    // One PTX set per capability, each in its own folder (cudaforge names a PTX file after its
    // source), and ptx.rs with one module of constants per capability plus the table `BUILT`.
    let mut ptx_rs = String::new();
    let mut built = String::from("pub const BUILT: &[(u32, bool)] = &[");
    for &cap in &caps {
        let dir = out_dir.join(format!("sm{cap}"));
        std::fs::create_dir_all(&dir)?;
        // compute_90 gets cudaforge's arch-specific 90a, which runs on 9.x only (see lib.rs).
        let arch_specific = cap >= 90;
        KernelBuilder::new()
            .source_dir("src")
            .exclude(&["moe_*.cu", "mmvq_gguf.cu", "mmq_*.cu"])
            .compute_cap(cap)
            .out_dir(&dir)
            .arg("--expt-relaxed-constexpr")
            .arg("-std=c++17")
            .arg("-O3")
            .build_ptx()?;
        writeln!(ptx_rs, "pub mod sm{cap} {{").unwrap();
        for name in ["affine", "binary", "cast", "conv", "fill", "indexing", "quantized", "reduce", "sort", "ternary", "unary"] {
            writeln!(
                ptx_rs,
                r#"    pub const {}: &str = include_str!(concat!(env!("OUT_DIR"), "/sm{cap}/{name}.ptx"));"#,
                name.to_uppercase()
            )
            .unwrap();
        }
        writeln!(ptx_rs, "}}").unwrap();
        write!(built, "({cap}, {arch_specific}), ").unwrap();
    }
    built.push_str("];\n");
    ptx_rs.push_str(&built);
    // The ptx table per module, newest capability first: `table!(UNARY)`.
    ptx_rs.push_str("macro_rules! table { ($cst:ident) => { &[");
    for &cap in caps.iter().rev() {
        write!(ptx_rs, "({cap}, {}, $crate::ptx::sm{cap}::$cst), ", cap >= 90).unwrap();
    }
    ptx_rs.push_str("] }; }\npub(crate) use table;\n");
    std::fs::write(out_dir.join("ptx.rs"), ptx_rs)?;

    let mut moe_sources = vec![
        "src/moe/moe_gguf.cu",
        "src/moe/moe_wmma.cu",
        "src/moe/moe_wmma_gguf.cu",
        "src/mmvq_gguf.cu",
        "src/mmq_gguf/mmq_quantize.cu",
        "src/mmq_gguf/mmq_instance_q4_0.cu",
        "src/mmq_gguf/mmq_instance_q4_1.cu",
        "src/mmq_gguf/mmq_instance_q5_0.cu",
        "src/mmq_gguf/mmq_instance_q5_1.cu",
        "src/mmq_gguf/mmq_instance_q8_0.cu",
        "src/mmq_gguf/mmq_instance_q2_k.cu",
        "src/mmq_gguf/mmq_instance_q3_k.cu",
        "src/mmq_gguf/mmq_instance_q4_k.cu",
        "src/mmq_gguf/mmq_instance_q5_k.cu",
        "src/mmq_gguf/mmq_instance_q6_k.cu",
    ];
    if env::var_os(CUTILE_FEATURE).is_some() {
        moe_sources.push("src/moe/moe_align.cu");
    }

    // The statically linked MoE / GGUF kernels (unused by tokbench) stay a one-architecture
    // cubin, as upstream: the newest capability asked for. bf16 WMMA needs 8.0 or newer.
    let moe_cap = *caps.last().unwrap();
    let mut moe_builder = KernelBuilder::default()
        .source_files(moe_sources)
        .compute_cap(moe_cap)
        .arg("--expt-relaxed-constexpr")
        .arg("-std=c++17")
        .arg("-O3");
    if moe_cap < 80 {
        moe_builder = moe_builder.arg("-DNO_BF16_KERNEL");
    }

    let mut is_target_msvc = false;
    if let Ok(target) = std::env::var("TARGET") {
        if target.contains("msvc") {
            is_target_msvc = true;
            moe_builder = moe_builder.arg("-D_USE_MATH_DEFINES");
        }
    }

    if !is_target_msvc {
        moe_builder = moe_builder.arg("-Xcompiler").arg("-fPIC");
    }

    moe_builder.build_lib(out_dir.join("libmoe.a"))?;
    println!("cargo:rustc-link-search={}", out_dir.display());
    println!("cargo:rustc-link-lib=moe");
    println!("cargo:rustc-link-lib=dylib=cudart");
    if !is_target_msvc {
        println!("cargo:rustc-link-lib=stdc++");
    }
    Ok(())
}
