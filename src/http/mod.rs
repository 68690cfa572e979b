//! What the proxy's HTTP sides share: the body type every handler answers
//! with, the one bounded read of a body and the small answers the proxy
//! writes itself. Used by `listener`, `proxy`, `admin`, `render` and the
//! refresher, so none of them imports another for it.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Limited};

pub mod respond;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body every handler returns: a full buffer or a stream.
pub type Body = BoxBody<Bytes, BoxError>;

/// Why a body could not be read whole within its bound.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// More than `limit` bytes arrived (or were announced).
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The body failed before its end (the peer's error as it said it).
    #[error("{0}")]
    Read(String),
}

/// The whole of `body`, or [`CollectError::TooLarge`] as soon as it passes
/// `limit` bytes, so no peer can make the proxy buffer more than that.
pub async fn collect_bounded<B>(body: B, limit: usize) -> Result<Bytes, CollectError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(CollectError::TooLarge { limit })
        }
        Err(e) => Err(CollectError::Read(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    #[tokio::test]
    async fn a_body_is_read_up_to_its_bound_and_no_further() {
        let exact = collect_bounded(Full::new(Bytes::from_static(b"12345")), 5).await;
        assert_eq!(exact.unwrap(), Bytes::from_static(b"12345"));
        let over = collect_bounded(Full::new(Bytes::from_static(b"123456")), 5).await;
        assert!(matches!(over, Err(CollectError::TooLarge { limit: 5 })));

        let chunks: Vec<Result<http_body::Frame<Bytes>, BoxError>> = vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"ab"))),
            Err("connection reset".into()),
        ];
        let broken = collect_bounded(StreamBody::new(futures::stream::iter(chunks)), 5).await;
        match broken {
            Err(CollectError::Read(detail)) => assert_eq!(detail, "connection reset"),
            other => panic!("{other:?}"),
        }
    }
}
