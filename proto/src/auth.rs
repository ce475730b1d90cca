//! Shared-token authentication and client connection helpers, used by the coordinator (server
//! side check), the worker and the CLI (client side).
//!
//! The token travels as gRPC metadata `authorization: Bearer <token>` on every call. It is a
//! shared secret, so use TLS (`--tls-cert/--tls-key` on the coordinator, an `https://` URL and
//! `ca_pem` here) whenever the network between client and coordinator is not trusted.
//!
//! ```ignore
//! use tokbench_proto::auth;
//! let channel = auth::connect("http://127.0.0.1:50051", None).await?;
//! let mut client = auth::benchmarks_client(channel, Some("secret"))?;
//! ```

use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::v1::benchmarks_client::BenchmarksClient;
use crate::v1::worker_queue_client::WorkerQueueClient;

/// Metadata key carrying the token.
pub const AUTHORIZATION: &str = "authorization";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the token contains characters that cannot be sent in a gRPC header (only visible ASCII is allowed); choose a token of letters, digits and punctuation")]
    InvalidToken,
    #[error("the token is empty; pass a non-empty --token (or TOKBENCH_TOKEN), or none at all")]
    EmptyToken,
    #[error("bad coordinator address \"{url}\": {source}. Use e.g. http://127.0.0.1:50051 (https:// with TLS)")]
    BadUrl { url: String, source: tonic::transport::Error },
    #[error("TLS setup for {url}: {source}")]
    Tls { url: String, source: tonic::transport::Error },
    #[error("{url} is an https:// address but no CA certificate was given: pass --ca-cert FILE (or TOKBENCH_CA_CERT) with the PEM certificate of the CA that signed the coordinator's certificate (this build does not load the system's CAs)")]
    MissingCa { url: String },
    #[error("cannot connect to the coordinator at {url}: {source}. Is `tokbench-coordinator` running there (and reachable)?")]
    Connect { url: String, source: tonic::transport::Error },
    #[error("{}", tls_failure_message(.url, .cause))]
    TlsHandshake { url: String, cause: String },
    #[error("token file {file}{}: {why}", if *.line > 0 { format!(", line {line}") } else { String::new() })]
    BadTokenFile { file: String, line: usize, why: String },
}

/// Client side: adds `authorization: Bearer <token>` to every request (nothing when no token).
#[derive(Clone, Debug, Default)]
pub struct BearerToken {
    header: Option<MetadataValue<Ascii>>,
}

impl BearerToken {
    pub fn new(token: Option<&str>) -> Result<Self, AuthError> {
        let header = match token {
            None => None,
            Some("") => return Err(AuthError::EmptyToken),
            Some(t) => Some(format!("Bearer {t}").parse::<MetadataValue<Ascii>>().map_err(|_| AuthError::InvalidToken)?),
        };
        Ok(BearerToken { header })
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            request.metadata_mut().insert(AUTHORIZATION, h.clone());
        }
        Ok(request)
    }
}

/// Who a token speaks for. The coordinator serves clients (`Benchmarks`: sweeps, runs,
/// reports) and workers (`WorkerQueue`: leases and results) under separate credentials, so a
/// client cannot act as a worker and forge results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Worker,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Worker => "worker",
        }
    }
}

/// A set of accepted tokens, kept as SHA-256 hashes (the coordinator holds no plaintext token
/// after start-up) and compared in constant time against every entry.
#[derive(Clone, Debug, Default)]
pub struct TokenSet {
    hashes: Vec<[u8; 32]>,
}

impl TokenSet {
    /// Plain tokens.
    pub fn from_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Result<TokenSet, AuthError> {
        let mut set = TokenSet::default();
        for t in tokens {
            if t.is_empty() {
                return Err(AuthError::EmptyToken);
            }
            // A token that cannot be sent as a header could never match: refuse it now.
            BearerToken::new(Some(t))?;
            set.hashes.push(sha256(t.as_bytes()));
        }
        Ok(set)
    }

    /// A token file: one token per line; `sha256:<64 hex digits>` lines give a token by its hash
    /// (so the file need not hold the secret); blank lines and lines starting with `#` are
    /// skipped. Several lines = several valid tokens (rotation: add the new one, move clients
    /// over, remove the old one).
    pub fn parse_file(text: &str, file: &str) -> Result<TokenSet, AuthError> {
        let mut set = TokenSet::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(hex) = line.strip_prefix("sha256:") {
                let bytes = decode_hex(hex.trim()).ok_or_else(|| AuthError::BadTokenFile {
                    file: file.into(),
                    line: n + 1,
                    why: "a sha256: line needs 64 hex digits (e.g. the output of `printf %s TOKEN | sha256sum`)".into(),
                })?;
                set.hashes.push(bytes);
            } else {
                BearerToken::new(Some(line)).map_err(|e| AuthError::BadTokenFile { file: file.into(), line: n + 1, why: e.to_string() })?;
                set.hashes.push(sha256(line.as_bytes()));
            }
        }
        if set.hashes.is_empty() {
            return Err(AuthError::BadTokenFile { file: file.into(), line: 0, why: "it holds no token (one per line; # starts a comment)".into() });
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `token` is in the set; looks at every entry whatever matches (no early exit).
    pub fn contains(&self, token: &str) -> bool {
        let h = sha256(token.as_bytes());
        self.hashes.iter().fold(false, |found, e| found | constant_time_eq(e, &h))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The coordinator's credentials: a shared token (every caller), and/or separate client and
/// worker token sets. Empty everywhere: no authentication.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub shared: TokenSet,
    pub clients: TokenSet,
    pub workers: TokenSet,
}

impl Credentials {
    /// Whether any token is required.
    pub fn required(&self) -> bool {
        !(self.shared.is_empty() && self.clients.is_empty() && self.workers.is_empty())
    }

    /// Whether clients and workers have credentials of their own.
    pub fn separated(&self) -> bool {
        !self.clients.is_empty() || !self.workers.is_empty()
    }

    /// The check for the service that `role` calls.
    pub fn require(&self, role: Role) -> RequireToken {
        RequireToken { creds: Some(Arc::new(self.clone())).filter(|c| c.required()), role }
    }
}

/// Server side: rejects requests without an accepted `authorization: Bearer <token>` for its
/// service's role with `Unauthenticated` (a token of the other role: `PermissionDenied`). With no
/// token configured every request passes.
#[derive(Clone, Debug)]
pub struct RequireToken {
    creds: Option<Arc<Credentials>>,
    role: Role,
}

impl Default for RequireToken {
    fn default() -> Self {
        RequireToken { creds: None, role: Role::Client }
    }
}

impl RequireToken {
    /// One shared token for clients and workers (None: no authentication).
    pub fn new(token: Option<&str>) -> Result<Self, AuthError> {
        match token {
            None => Ok(RequireToken::default()),
            Some(t) => Ok(Credentials { shared: TokenSet::from_tokens([t])?, ..Default::default() }.require(Role::Client)),
        }
    }

    pub fn check(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let Some(creds) = &self.creds else { return Ok(()) };
        let Some(value) = metadata.get(AUTHORIZATION) else {
            return Err(Status::unauthenticated(format!(
                "missing token: this coordinator requires `authorization: Bearer <token>`; pass --token (or set TOKBENCH_TOKEN) to a {} token of the coordinator",
                self.role.name()
            )));
        };
        let given = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
        let own = match self.role {
            Role::Client => &creds.clients,
            Role::Worker => &creds.workers,
        };
        let other = match self.role {
            Role::Client => &creds.workers,
            Role::Worker => &creds.clients,
        };
        // Evaluate every set (no early exit: timing does not tell which set a guess hit).
        let (in_shared, in_own, in_other) = (creds.shared.contains(given), own.contains(given), other.contains(given));
        if in_shared || in_own {
            Ok(())
        } else if in_other {
            Err(Status::permission_denied(format!(
                "this is a {other_role} token: the {service} service takes {role} tokens only (a {other_role} cannot act as a {role}); use a token from the coordinator's --{role}-token-file",
                other_role = match self.role {
                    Role::Client => "worker",
                    Role::Worker => "client",
                },
                role = self.role.name(),
                service = match self.role {
                    Role::Client => "Benchmarks (client)",
                    Role::Worker => "WorkerQueue (worker)",
                },
            )))
        } else {
            Err(Status::unauthenticated(format!(
                "wrong token: the `authorization: Bearer <token>` sent is not one of the coordinator's {} tokens; pass the right --token / TOKBENCH_TOKEN value",
                self.role.name()
            )))
        }
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata())?;
        Ok(request)
    }
}

/// Compares without an early exit, so response time does not tell how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An endpoint for `url` (http:// or https://). With https the server certificate must chain to
/// the CA in `ca_pem` (PEM bytes), which is therefore required: this build trusts no system
/// CAs. With http:// the CA is not used (plaintext).
pub fn endpoint(url: &str, ca_pem: Option<&[u8]>) -> Result<Endpoint, AuthError> {
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(|source| AuthError::BadUrl { url: url.into(), source })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // Keepalive detects a coordinator that vanished (SIGKILL, network loss) on idle connections.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10));
    if url.starts_with("https://") {
        let Some(pem) = ca_pem else { return Err(AuthError::MissingCa { url: url.into() }) };
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        ep = ep.tls_config(tls).map_err(|source| AuthError::Tls { url: url.into(), source })?;
    }
    Ok(ep)
}

/// When `err` (or an error it was caused by) is a failed TLS handshake -- a certificate the CA
/// does not vouch for, a name the certificate does not cover, a server that does not speak
/// TLS -- its description. Retrying cannot fix these, unlike a coordinator that is away.
pub fn tls_problem_in(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    // rustls' errors arrive wrapped (io::Error inside hyper/tonic errors) and are not public
    // types of tonic: recognise them by what they say.
    const MARKS: [&str; 7] = ["certificate", "invalid peer", "CorruptMessage", "corrupt message", "InvalidContentType", "HandshakeFailure", "received fatal alert"];
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut last_match = None;
    while let Some(e) = cur {
        let text = e.to_string();
        if MARKS.iter().any(|m| text.contains(m)) || text.contains("HTTPS without TLS") {
            last_match = Some(text);
        }
        cur = e.source();
    }
    last_match
}

/// `tls_problem_in` for a failed call.
pub fn tls_problem(status: &Status) -> Option<String> {
    use std::error::Error;
    if let Some(found) = status.source().and_then(tls_problem_in) {
        return Some(found);
    }
    tls_problem_in(status)
}

/// One-line explanation of a TLS failure talking to `url`.
pub fn tls_failure_message(url: &str, cause: &str) -> String {
    format!(
        "TLS handshake with the coordinator at {url} failed: {cause}. Pass --ca-cert FILE (or TOKBENCH_CA_CERT) with the PEM certificate of the CA that signed the coordinator's certificate, and use the host name or IP address that certificate was issued for"
    )
}

/// Connects now (fails fast when the coordinator is not there, or the TLS handshake fails).
pub async fn connect(url: &str, ca_pem: Option<&[u8]>) -> Result<Channel, AuthError> {
    endpoint(url, ca_pem)?.connect().await.map_err(|source| match tls_problem_in(&source) {
        Some(cause) => AuthError::TlsHandshake { url: url.into(), cause },
        None => AuthError::Connect { url: url.into(), source },
    })
}

/// A channel that connects on first use and reconnects by itself after the coordinator restarts.
pub fn connect_lazy(url: &str, ca_pem: Option<&[u8]>) -> Result<Channel, AuthError> {
    Ok(endpoint(url, ca_pem)?.connect_lazy())
}

pub type AuthedBenchmarksClient = BenchmarksClient<InterceptedService<Channel, BearerToken>>;
pub type AuthedWorkerQueueClient = WorkerQueueClient<InterceptedService<Channel, BearerToken>>;

/// A `Benchmarks` client sending `token` with every call.
pub fn benchmarks_client(channel: Channel, token: Option<&str>) -> Result<AuthedBenchmarksClient, AuthError> {
    // Reports and artifacts can be large: lift the 4 MiB default decode limit.
    Ok(BenchmarksClient::with_interceptor(channel, BearerToken::new(token)?).max_decoding_message_size(256 << 20))
}

/// A `WorkerQueue` client sending `token` with every call.
pub fn worker_queue_client(channel: Channel, token: Option<&str>) -> Result<AuthedWorkerQueueClient, AuthError> {
    Ok(WorkerQueueClient::with_interceptor(channel, BearerToken::new(token)?)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req_with(value: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(v) = value {
            r.metadata_mut().insert(AUTHORIZATION, v.parse().unwrap());
        }
        r
    }

    #[test]
    fn bearer_token_is_checked() {
        let mut check = RequireToken::new(Some("s3cret")).unwrap();
        assert!(check.call(req_with(Some("Bearer s3cret"))).is_ok());
        let wrong = check.call(req_with(Some("Bearer nope"))).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert!(wrong.message().contains("wrong token"), "{}", wrong.message());
        let missing = check.call(req_with(None)).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert!(missing.message().contains("missing token"), "{}", missing.message());
        // Round trip through the client interceptor.
        let sent = BearerToken::new(Some("s3cret")).unwrap().call(Request::new(())).unwrap();
        assert!(check.call(sent).is_ok());
    }

    #[test]
    fn no_token_configured_lets_everything_through() {
        let mut check = RequireToken::new(None).unwrap();
        assert!(check.call(req_with(None)).is_ok());
        assert!(check.call(req_with(Some("Bearer anything"))).is_ok());
    }

    #[test]
    fn bad_tokens_are_refused_up_front() {
        assert!(matches!(BearerToken::new(Some("")), Err(AuthError::EmptyToken)));
        assert!(matches!(RequireToken::new(Some("a\nb")), Err(AuthError::InvalidToken)));
    }
}
