//! The origin side of the relay: one exchange on a raw connection, and the
//! answer's head parsed and rewritten for the client (framing, keep-alive).

use super::*;

/// An origin's answer as first read: the bytes and where its head ends.
pub(super) struct RawResponse {
    pub(super) bytes: Vec<u8>,
    /// The last read emptied the socket.
    pub(super) drained: bool,
}

/// Sends `request_head` and reads the response head (1xx answers skipped).
/// A reused connection that fails before any answer byte arrives is
/// replaced once by a new one: the origin may have closed it while idle,
/// and `GET`/`HEAD` are safe to send again.
pub(super) async fn exchange(
    origin: &url::Url,
    request_head: &[u8],
    limits: PoolLimits,
) -> Result<(TcpStream, RawResponse), OriginError> {
    if let Some(mut conn) = idle_take(origin.as_str(), limits.idle_timeout) {
        match send_and_read_head(&mut conn, request_head).await {
            Ok(Some(response)) => return Ok((conn, response)),
            Ok(None) => {}
            Err(e) => return Err(e),
        }
    }
    let mut conn = connect_tcp(origin, limits.connect_timeout)
        .await
        .map_err(|e| OriginError::Unreachable(e.to_string()))?;
    match send_and_read_head(&mut conn, request_head).await? {
        Some(response) => Ok((conn, response)),
        None => Err(OriginError::Unreachable(
            "origin closed the connection without answering".into(),
        )),
    }
}

/// `Ok(None)`: the connection failed before any answer byte arrived.
pub(super) async fn send_and_read_head(
    conn: &mut TcpStream,
    request_head: &[u8],
) -> Result<Option<RawResponse>, OriginError> {
    if conn.write_all(request_head).await.is_err() {
        return Ok(None);
    }
    let mut bytes = spare_buffer();
    loop {
        let drained = match read_draining(conn, &mut bytes).await {
            Ok((0, _)) | Err(_) if bytes.is_empty() => return Ok(None),
            Ok((0, _)) | Err(_) => {
                return Err(OriginError::Unreachable(
                    "origin closed the connection inside the response head".into(),
                ))
            }
            Ok((_, drained)) => drained,
        };
        // Interim answers (103 Early Hints, …) are not passed on.
        while let Some(end) = interim_answer_end(&bytes) {
            bytes.drain(..end);
        }
        if has_complete_head(&bytes) {
            return Ok(Some(RawResponse { bytes, drained }));
        }
        if bytes.len() >= MAX_RESPONSE_HEAD_BYTES {
            return Err(OriginError::Unreachable("response head over 64 KiB".into()));
        }
    }
}

/// Whether `bytes` hold a response head's end (its empty line), whether or
/// not the head parses.
pub(super) fn has_complete_head(bytes: &[u8]) -> bool {
    memchr::memmem::find(bytes, b"\n\r\n").is_some()
        || memchr::memmem::find(bytes, b"\n\n").is_some()
}

/// Where a complete 1xx head (other than 101) at the start of `bytes` ends.
pub(super) fn interim_answer_end(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < 12 || !bytes.starts_with(b"HTTP/1.") || bytes[9] != b'1' {
        return None;
    }
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        bytes,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) if resp.code != Some(101) => Some(n),
        _ => None,
    }
}

/// How the end of a response body is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Neither length nor chunks: the body ends when the origin closes.
    UntilClose,
}

/// The response head as the client gets it, and what it says about both
/// connections.
pub(super) struct ResponseHead {
    pub(super) bytes: Vec<u8>,
    /// Length of the origin's head in what was read.
    pub(super) origin_head_len: usize,
    /// The origin's status code.
    pub(super) status: u16,
    pub(super) framing: Framing,
    pub(super) origin_keep_alive: bool,
    pub(super) client_keep_alive: bool,
}

impl ResponseHead {
    pub(super) fn parse(
        raw: &[u8],
        head_only: bool,
        client_close: bool,
    ) -> Result<Self, &'static str> {
        let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            raw,
            &mut headers,
        );
        let (origin_head_len, status) = match parsed {
            Ok(httparse::Status::Complete(n)) => (n, resp.code.unwrap_or(0)),
            _ => return Err("malformed response head"),
        };
        if status == 101 {
            return Err("origin switched protocols unasked");
        }
        let mut content_length: Option<u64> = None;
        let mut length_lines = 0;
        let mut length_plain = false;
        let mut chunked = false;
        let mut transfer_coded = false;
        let mut origin_close = resp.version != Some(1);
        let mut has_date = false;
        let mut connection_named: Vec<&str> = Vec::new();
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                length_lines += 1;
                length_plain = !h.value.is_empty() && h.value.iter().all(u8::is_ascii_digit);
                let value = std::str::from_utf8(h.value).map_err(|_| "bad Content-Length")?;
                for part in value.split(',') {
                    let part = part.trim();
                    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                        return Err("bad Content-Length");
                    }
                    let n: u64 = part.parse().map_err(|_| "bad Content-Length")?;
                    if content_length.is_some_and(|earlier| earlier != n) {
                        return Err("conflicting Content-Length");
                    }
                    content_length = Some(n);
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_coded = true;
                let value = std::str::from_utf8(h.value).map_err(|_| "bad Transfer-Encoding")?;
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                let options =
                    connection_options(h.value, &mut connection_named).ok_or("bad Connection")?;
                origin_close |= options.close;
            } else if h.name.eq_ignore_ascii_case("date") {
                has_date = true;
            }
        }
        let framing = if head_only || status == 204 || status == 304 || status < 200 {
            Framing::Empty
        } else if transfer_coded {
            if chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            }
        } else if let Some(n) = content_length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        let client_keep_alive = !client_close && framing != Framing::UntilClose;
        let mut bytes = spare_buffer();
        bytes.extend_from_slice(b"HTTP/1.1 ");
        bytes.extend_from_slice(&status_digits(status));
        bytes.push(b' ');
        bytes.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
        bytes.extend_from_slice(b"\r\n");
        // With Transfer-Encoding a Content-Length is not the body's (RFC
        // 9112 §6.3): the client must not frame by it. A single plain value
        // is passed on as it came; a list or repeated lines become one.
        // A 204 or 1xx has no body and no length (RFC 9110 §8.6).
        let length_kept = !transfer_coded && status != 204 && status >= 200;
        let length_as_is = length_kept && length_lines == 1 && length_plain;
        for h in resp.headers.iter() {
            if is_hop_by_hop(h.name, &connection_named)
                || (!length_as_is && h.name.eq_ignore_ascii_case("content-length"))
            {
                continue;
            }
            push_header(&mut bytes, h.name.as_bytes(), h.value);
        }
        match content_length {
            Some(n) if length_kept && !length_as_is => {
                bytes.extend_from_slice(b"content-length: ");
                bytes.extend_from_slice(n.to_string().as_bytes());
                bytes.extend_from_slice(b"\r\n");
            }
            _ => {}
        }
        if framing == Framing::Chunked {
            bytes.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if !has_date {
            push_date(&mut bytes);
        }
        if !client_keep_alive {
            bytes.extend_from_slice(b"connection: close\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        Ok(ResponseHead {
            bytes,
            origin_head_len,
            status,
            framing,
            // An answer framed two ways (length and coding) may be an
            // attempt at response splitting (RFC 9112 §6.3): it is read by
            // its coding, and its connection is not trusted again.
            origin_keep_alive: !origin_close
                && framing != Framing::UntilClose
                && !(transfer_coded && length_lines > 0),
            client_keep_alive,
        })
    }
}
