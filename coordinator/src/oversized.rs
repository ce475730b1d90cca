//! A request over the message-size limit is answered RESOURCE_EXHAUSTED (gRPC's code for a size
//! limit), not tonic's OUT_OF_RANGE ("decoded message length too large"): a response layer
//! rewrites that one status, wherever it travels (response headers of a trailers-only answer, or
//! the trailers), and keeps tonic's message, which names the size and the limit.

use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http::{HeaderMap, HeaderValue, Response};

/// OUT_OF_RANGE and RESOURCE_EXHAUSTED as `grpc-status` values.
const OUT_OF_RANGE: &[u8] = b"11";
const RESOURCE_EXHAUSTED: &str = "8";

fn rewrite(headers: &mut HeaderMap) {
    let oversized = headers.get("grpc-status").is_some_and(|v| v.as_bytes() == OUT_OF_RANGE)
        // grpc-message is percent-encoded ("message%20length%20too%20large").
        && headers.get("grpc-message").and_then(|m| m.to_str().ok()).is_some_and(|m| m.replace("%20", " ").contains("message length too large"));
    if oversized {
        headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
    }
}

/// The response mapping for `tower::util::MapResponseLayer`.
pub fn oversized_is_resource_exhausted<B>(res: Response<B>) -> Response<RewriteStatus<B>> {
    let (mut parts, body) = res.into_parts();
    rewrite(&mut parts.headers);
    Response::from_parts(parts, RewriteStatus(body))
}

/// A response body whose trailers get the same rewrite.
pub struct RewriteStatus<B>(B);

impl<B> http_body::Body for RewriteStatus<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.0).poll_frame(cx).map(|frame| {
            frame.map(|f| {
                f.map(|mut frame| {
                    if let Some(trailers) = frame.trailers_mut() {
                        rewrite(trailers);
                    }
                    frame
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}
