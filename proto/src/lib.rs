//! The gRPC contract of tokbench, package `tokbench.v1`: `Benchmarks` (for clients: sweeps,
//! runs, workers, artifacts) and `WorkerQueue` (for workers: register, lease, heartbeat,
//! complete/fail).

pub mod v1 {
    tonic::include_proto!("tokbench.v1");

    /// Encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tokbench_v1_descriptor");
}

pub mod auth;
pub mod sweep;
