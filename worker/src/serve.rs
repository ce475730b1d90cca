//! `tokbench-worker serve` (to be written).
#[derive(clap::Args, Debug)]
pub struct ServeArgs {}
pub fn main(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented")
}
