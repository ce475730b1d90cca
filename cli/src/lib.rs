//! The `tokbench` CLI: submit benchmark sweeps to a coordinator (or run them locally with an
//! embedded coordinator and worker), watch them live, and turn stored runs into reports:
//! tables, PNG/SVG charts, Markdown, CSV, JSON and per-run benchmark JSON exports.

pub mod args;
pub mod artifact;
pub mod client;
pub mod commands;
pub mod error;
pub mod export;
pub mod fetch;
pub mod local;
pub mod output;
pub mod report;
pub mod show;
pub mod sweep;
pub mod watch;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
