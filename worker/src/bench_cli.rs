//! `tokbench-worker bench` (to be written).
#[derive(clap::Args, Debug)]
pub struct BenchArgs {}
pub fn main(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented")
}
