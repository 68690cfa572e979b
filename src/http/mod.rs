//! What the proxy's HTTP sides share: the body type every handler answers
//! with and the small answers the proxy writes itself. Used by `listener`,
//! `proxy`, `admin` and the refresher, so none of them imports another for it.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

pub mod respond;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body every handler returns: a full buffer or a stream.
pub type Body = BoxBody<Bytes, BoxError>;
