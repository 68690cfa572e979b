//! The PROXY protocol (v1 text and v2 binary, as HAProxy specifies it):
//! TCP load balancers listed in `trusted_proxies` start each connection
//! with a header naming the client's address (`proxy_protocol = true`).
//! The header's source address then stands for the connection's peer
//! everywhere: X-Forwarded-For, logs, metrics, crawler verification.
//!
//! The framing (how many bytes the header takes) is decided here, the
//! header itself is read by the `ppp` crate. The bytes are peeked before
//! they are taken, so exactly the header leaves the socket and the request
//! behind it stays for the relay or hyper.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// The v2 signature (12 bytes).
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// The largest v2 header taken (16 bytes and the addresses and TLVs that
/// follow); real ones are tens of bytes.
const V2_MAX: usize = 4096;

/// What the bytes at the start of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A header may follow but is not complete yet.
    Incomplete,
    /// Not a PROXY header, or a broken one.
    Invalid(String),
    /// A header of `len` bytes; `source` is the client's address (`None`
    /// for the load balancer's own checks: v1 `UNKNOWN`, v2 `LOCAL`, or
    /// non-IP addresses).
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
}

/// Reads a PROXY header from the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Parsed {
    let shared = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..shared] == V2_SIGNATURE[..shared] && !bytes.is_empty() {
        if bytes.len() < 16 {
            return Parsed::Incomplete;
        }
        let len = 16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
        if len > V2_MAX {
            return Parsed::Invalid(format!("a v2 header of {len} bytes"));
        }
        if bytes.len() < len {
            return Parsed::Incomplete;
        }
        return match ppp::v2::Header::try_from(&bytes[..len]) {
            Ok(header) => Parsed::Header {
                len,
                source: match (header.command, header.addresses) {
                    (ppp::v2::Command::Local, _) => None,
                    (_, ppp::v2::Addresses::IPv4(a)) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    (_, ppp::v2::Addresses::IPv6(a)) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    _ => None,
                },
            },
            Err(e) => Parsed::Invalid(format!("bad v2 header: {e}")),
        };
    }
    let prefix = b"PROXY ";
    let shared = bytes.len().min(prefix.len());
    if bytes.is_empty() || bytes[..shared] != prefix[..shared] {
        return Parsed::Invalid("no PROXY header".into());
    }
    let window = &bytes[..bytes.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if bytes.len() < V1_MAX {
            Parsed::Incomplete
        } else {
            Parsed::Invalid("a v1 header without its end".into())
        };
    };
    let len = end + 2;
    let Ok(text) = std::str::from_utf8(&bytes[..len]) else {
        return Parsed::Invalid("a v1 header that is not text".into());
    };
    match ppp::v1::Header::try_from(text) {
        Ok(header) => Parsed::Header {
            len,
            source: match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Unknown => None,
            },
        },
        Err(e) => Parsed::Invalid(format!("bad v1 header: {e}")),
    }
}

/// Takes the PROXY header off the start of `stream` within `timeout`; the
/// client's address, or `None` when the header names none (the balancer's
/// own health check).
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, String> {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; V2_MAX];
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .map_err(|_| "no PROXY header within the header timeout".to_string())?
            .map_err(|e| e.to_string())?;
        if peeked == 0 {
            return Err("closed before a PROXY header".into());
        }
        match parse(&buf[..peeked]) {
            Parsed::Header { len, source } => {
                stream
                    .read_exact(&mut buf[..len])
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(source);
            }
            Parsed::Invalid(reason) => return Err(reason),
            Parsed::Incomplete => {
                // The rest is on its way: look again shortly (a peek
                // returns at once while any byte is waiting).
                if tokio::time::Instant::now() >= deadline {
                    return Err("no complete PROXY header within the header timeout".into());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn v1_headers_give_the_source_and_their_length() {
        let header = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n";
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse(&bytes),
            Parsed::Header {
                len: header.len(),
                source: Some("203.0.113.7:5555".parse().unwrap())
            }
        );
        let six = b"PROXY TCP6 2001:db8::7 2001:db8::1 4444 443\r\n";
        assert_eq!(
            parse(six),
            Parsed::Header {
                len: six.len(),
                source: Some("[2001:db8::7]:4444".parse().unwrap())
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                source: None
            }
        );
        assert_eq!(parse(b"PROXY TCP4 203.0.1"), Parsed::Incomplete);
        assert_eq!(parse(b"PRO"), Parsed::Incomplete);
        assert!(matches!(
            parse(b"PROXY TCP4 nonsense\r\n"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(&[b'P'; 200]), Parsed::Invalid(_)));
    }

    #[test]
    fn v2_headers_give_the_source_and_their_length() {
        let mut addresses = vec![198, 51, 100, 9, 10, 0, 0, 1];
        addresses.extend_from_slice(&4321u16.to_be_bytes());
        addresses.extend_from_slice(&443u16.to_be_bytes());
        let header = v2(1, 0x11, &addresses);
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"GET /");
        assert_eq!(
            parse(&bytes),
            Parsed::Header {
                len: header.len(),
                source: Some("198.51.100.9:4321".parse().unwrap())
            }
        );
        assert_eq!(parse(&header[..20]), Parsed::Incomplete);
        assert_eq!(parse(&header[..5]), Parsed::Incomplete);
        // LOCAL: the balancer's own check, no client.
        assert_eq!(
            parse(&v2(0, 0x00, &[])),
            Parsed::Header {
                len: 16,
                source: None
            }
        );
        // A length past the bound.
        let mut long = V2_SIGNATURE.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
    }
}
