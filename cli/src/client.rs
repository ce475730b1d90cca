//! The connection to the coordinator: a `Benchmarks` gRPC client that sends
//! `authorization: Bearer <token>` on every call, and the mapping of gRPC failures to one-line
//! errors with exit codes.

use crate::error::{root_cause, CliError, CliResult};
use tokbench_proto::auth::{self, AuthError, AuthedBenchmarksClient};
use tonic::{Code, Status};

pub type Client = AuthedBenchmarksClient;

/// A connected client plus the URL it talks to (for messages).
#[derive(Clone)]
pub struct Conn {
    pub url: String,
    pub client: Client,
}

pub fn unreachable_message(url: &str, cause: &str) -> String {
    let tls_hint = if url.starts_with("http://") { " If it serves TLS, use its https:// address and --ca-cert." } else { "" };
    format!(
        "cannot reach the coordinator at {url}: {cause}. Start one with `tokbench-coordinator --listen {}` (or point --coordinator / TOKBENCH_COORDINATOR at yours), or use `tokbench sweep --local`.{tls_hint}",
        url.trim_start_matches("http://").trim_start_matches("https://")
    )
}

/// Connects (eagerly, so an unreachable coordinator is reported at once, exit code 3).
pub async fn connect(url: &str, token: Option<&str>, ca_cert: Option<&std::path::Path>) -> CliResult<Conn> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(CliError::Usage(format!(
            "bad coordinator URL \"{url}\": it must start with http:// or https://, e.g. http://127.0.0.1:50051 (--coordinator / TOKBENCH_COORDINATOR)"
        )));
    }
    let pem = match ca_cert {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            CliError::Usage(format!("cannot read the CA certificate {}: {e}. Pass the PEM file that signed the coordinator's certificate (--ca-cert)", path.display()))
        })?),
        None => None,
    };
    // An empty TOKBENCH_TOKEN means "no token", as an unset one does.
    let token = token.filter(|t| !t.is_empty());
    let channel = auth::connect(url, pem.as_deref()).await.map_err(|e| match &e {
        AuthError::Connect { source, .. } => CliError::Unreachable(unreachable_message(url, &root_cause(source))),
        // A missing CA, or a handshake the CA does not vouch for: a setup problem, say what to pass.
        other => CliError::Usage(other.to_string()),
    })?;
    let client = auth::benchmarks_client(channel, token).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(Conn { url: url.to_string(), client })
}

impl Conn {
    /// Maps a failed call to a CLI error. `what` names the thing asked for ("sweep abc").
    pub fn status_error(&self, status: Status, what: &str) -> CliError {
        let msg = status.message().to_string();
        match status.code() {
            Code::Unavailable => CliError::Unreachable(unreachable_message(&self.url, if msg.is_empty() { "unavailable" } else { &msg })),
            Code::NotFound => CliError::Usage(format!(
                "{what} not found on the coordinator at {}{}. List what exists with `tokbench status` and `tokbench runs`",
                self.url,
                if msg.is_empty() { String::new() } else { format!(" ({msg})") }
            )),
            Code::Unauthenticated | Code::PermissionDenied => CliError::Usage(format!(
                "the coordinator at {} refused the request: {msg}. Pass its token with --token or TOKBENCH_TOKEN",
                self.url
            )),
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange | Code::AlreadyExists => {
                CliError::Usage(format!("{what}: {msg}"))
            }
            _ => CliError::Failure(format!("{what}: the coordinator answered {:?}: {msg}", status.code())),
        }
    }
}
