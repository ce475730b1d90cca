//! Loading a safetensors checkpoint holds the weights in host memory about once: the file is
//! memory-mapped and each tensor's mapped pages are released once the tensor is copied, so the
//! peak resident set does not grow to "mapped file + copies" (twice the weights).
//! Linux only (peak RSS from /proc, reset through /proc/self/clear_refs). One test per binary,
//! so no other test's allocations land in the measurement.

#[cfg(target_os = "linux")]
#[test]
fn loading_safetensors_keeps_peak_host_memory_near_the_weight_size() {
    use candle_core::{DType, Device};
    use tokbench_worker::model::Model;
    use tokbench_worker::checkpoint::save_synthetic_checkpoint;
    use tokbench_worker::weights::WeightSource;

    fn status_kb(field: &str) -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} not in /proc/self/status"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    // A checkpoint big enough that the doubling would stand far above allocator noise:
    // tiny-opt has the real 50272-token vocabulary (embedding ≈ 12.9 MB in f32).
    let config = tokbench_core::Catalog::get("tiny-opt").unwrap().config();
    let dir = tempfile::tempdir().unwrap();
    save_synthetic_checkpoint(&config, 7, dir.path()).unwrap();
    let file = dir.path().join("model.safetensors");
    let file_bytes = std::fs::metadata(&file).unwrap().len();

    // Reset the peak (VmHWM) to the current RSS, so it measures the load alone.
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS through /proc/self/clear_refs");
    let before_kb = status_kb("VmRSS:");
    let model = Model::load(&config, &WeightSource::Files(vec![file]), DType::F32, &Device::Cpu).unwrap();
    let peak_kb = status_kb("VmHWM:");
    let weights = model.weight_bytes();
    let growth = (peak_kb.saturating_sub(before_kb)) * 1024;
    eprintln!("file {file_bytes} B, weights {weights} B, peak RSS growth while loading {growth} B");

    assert!(weights as f64 > 0.9 * file_bytes as f64, "the model should hold the file's tensors");
    // Copies alone are 1x the weights; keeping the mapped pages as well would be 2x.
    assert!(
        (growth as f64) < 1.4 * weights as f64,
        "peak RSS grew by {growth} B while loading {weights} B of weights: mapped pages are kept beside the copies"
    );
    assert!((growth as f64) > 0.5 * weights as f64, "the copies should show in the RSS (growth {growth} B)");
}
