//! The CPU decode-step floor for opt-125m-shaped weights (f32), not a test: times one pass of
//! the few-row kernel (`cpu_matmul`) over every weight matrix of a decode step at batch m,
//! candle's gemm on the same matrices, and a plain sequential read (sum) of the same bytes, all in
//! this run, and prints ms per step and GB/s. `cargo run --release -p tokbench-worker --example cpu_decode_floor [m]`
use candle_core::{Device, Tensor};
use std::time::Instant;
use tokbench_worker::model::cpu_matmul;

fn main() {
    let m: usize = std::env::args().nth(1).map(|s| s.parse().expect("m")).unwrap_or(4);
    let (h, f, v, layers) = (768usize, 3072usize, 50272usize, 12usize);
    let mut shapes = Vec::new();
    for _ in 0..layers {
        shapes.extend([(3 * h, h), (h, h), (f, h), (h, f)]);
    }
    shapes.push((v, h));
    let ws: Vec<Vec<f32>> = shapes.iter().map(|&(n, k)| (0..n * k).map(|i| ((i % 97) as f32) * 1e-3).collect()).collect();
    let bytes: usize = ws.iter().map(|w| w.len() * 4).sum();
    let xs: Vec<Vec<f32>> = shapes.iter().map(|&(_, k)| vec![0.5f32; m * k]).collect();
    let reps = 10;
    let time = |name: &str, f: &mut dyn FnMut()| {
        f();
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!("{name:<28} {:8.2} ms/step  {:6.1} GB/s", s * 1e3, bytes as f64 / s / 1e9);
    };
    println!("opt-125m decode-step weights: {:.1} MB, m = {m}, threads = {}", bytes as f64 / 1e6, rayon::current_num_threads());
    time("sequential read (sum)", &mut || {
        let s: f32 = ws.iter().map(|w| {
            use rayon::prelude::*;
            w.par_chunks(1 << 16)
                .map(|c| {
                    // 16 independent lanes: vectorises without reassociating float sums.
                    let a = c.chunks_exact(16).fold([0f32; 16], |mut a, x| {
                        for i in 0..16 {
                            a[i] += x[i];
                        }
                        a
                    });
                    a.iter().sum::<f32>()
                })
                .sum::<f32>()
        }).sum();
        std::hint::black_box(s);
    });
    if cpu_matmul::available() {
        time("cpu_matmul (few-row kernel)", &mut || {
            for ((w, x), &(n, k)) in ws.iter().zip(&xs).zip(&shapes) {
                std::hint::black_box(cpu_matmul::matmul_nt(x, m, k, w, n, None));
            }
        });
    }
    let dev = Device::Cpu;
    let wt: Vec<Tensor> = ws.iter().zip(&shapes).map(|(w, &(n, k))| Tensor::from_slice(w, (n, k), &dev).unwrap()).collect();
    let xt: Vec<Tensor> = xs.iter().zip(&shapes).map(|(x, &(_, k))| Tensor::from_slice(x, (m, k), &dev).unwrap()).collect();
    time("candle matmul (gemm)", &mut || {
        for (w, x) in wt.iter().zip(&xt) {
            std::hint::black_box(x.matmul(&w.t().unwrap()).unwrap());
        }
    });
}
