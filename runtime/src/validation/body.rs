//! Bounded body reading that can give the body back whole, even when it was too large.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::BodyExt;

/// What [`read_limited`] found.
#[derive(Debug)]
pub enum Buffered {
    /// The whole body, at most the limit.
    Complete(Bytes),
    /// The body passed the limit: reading stopped right after the chunk that crossed it.
    TooLarge {
        /// The chunks read so far.
        prefix: Vec<Bytes>,
        /// The rest, unread.
        rest: Body,
    },
    /// The client broke the body off.
    Failed(String),
}

impl Buffered {
    /// The body as it was sent, for a request that goes on after a body that was too large:
    /// what was read, then the rest streamed.
    pub fn reassemble(prefix: Vec<Bytes>, rest: Body) -> Body {
        let head = futures_util::stream::iter(prefix.into_iter().map(Ok::<_, axum::Error>));
        Body::from_stream(head.chain(rest.into_data_stream()))
    }
}

/// Reads `body` into memory, at most `limit` bytes.
pub async fn read_limited(mut body: Body, limit: usize) -> Buffered {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Buffered::Failed(e.to_string()),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                total = total.saturating_add(data.len());
                chunks.push(data);
                if total > limit {
                    return Buffered::TooLarge { prefix: chunks, rest: body };
                }
            }
        }
    }
    let bytes = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(total);
            for c in chunks {
                all.extend_from_slice(&c);
            }
            all.freeze()
        }
    };
    Buffered::Complete(bytes)
}
