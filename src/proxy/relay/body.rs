//! Where an answer's body ends: Content-Length counted down, or the chunked
//! framing scanned as it arrives (trailers dropped), with bounds on both.

use super::*;

/// Finds where a response body ends as its bytes arrive.
#[derive(Debug)]
pub(super) enum BodyEnd {
    Remaining(u64),
    Chunked(ChunkedEnd),
    UntilClose,
}

impl BodyEnd {
    pub(super) fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty => BodyEnd::Remaining(0),
            Framing::Length(n) => BodyEnd::Remaining(n),
            Framing::Chunked => BodyEnd::Chunked(ChunkedEnd::default()),
            Framing::UntilClose => BodyEnd::UntilClose,
        }
    }

    pub(super) fn ends_at_close(&self) -> bool {
        matches!(self, BodyEnd::UntilClose)
    }

    /// How many of `input`'s bytes belong to the body, which of them the
    /// client gets, and whether the body is complete with them.
    pub(super) fn feed(&mut self, input: &[u8]) -> Result<Fed, ChunkError> {
        match self {
            BodyEnd::Remaining(left) => {
                let take = (*left).min(input.len() as u64);
                *left -= take;
                Ok(Fed::whole(take as usize, *left == 0))
            }
            BodyEnd::Chunked(scanner) => {
                let end = scanner.feed(input)?;
                let taken = end.unwrap_or(input.len());
                Ok(Fed {
                    taken,
                    copied: scanner.body_bytes_in_last_feed(taken),
                    done: end.is_some(),
                    closing: if end.is_some() { b"\r\n" } else { b"" },
                })
            }
            BodyEnd::UntilClose => Ok(Fed::whole(input.len(), false)),
        }
    }
}

/// One step of [`BodyEnd::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fed {
    /// Bytes of the input that belong to the body.
    pub(super) taken: usize,
    /// How many of them, from the start, the client gets: a chunked body's
    /// trailer section is dropped (as hyper drops trailers no `Trailer`
    /// header announced, and `Trailer` is hop-by-hop), and replaced by
    /// `closing`, the empty line that ends the body.
    pub(super) copied: usize,
    pub(super) done: bool,
    pub(super) closing: &'static [u8],
}

impl Fed {
    pub(super) fn whole(taken: usize, done: bool) -> Fed {
        Fed {
            taken,
            copied: taken,
            done,
            closing: b"",
        }
    }

    pub(super) fn copy_to(&self, input: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&input[..self.copied]);
        out.extend_from_slice(self.closing);
    }
}

/// A chunked body's framing is broken or exceeds its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("bad chunk size line")]
    SizeLine,
    #[error("chunk size over 2^64")]
    SizeOverflow,
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    #[error("bad trailer section")]
    Trailer,
    #[error("chunk extensions or trailers over their bound")]
    TooLong,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChunkState {
    #[default]
    Size,
    /// After the size: optional whitespace, then `;` and extensions.
    SizeWhitespace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// Follows the chunked framing (RFC 9112 §7.1) of bytes copied verbatim,
/// to find where the body ends.
#[derive(Debug, Default)]
pub struct ChunkedEnd {
    pub(super) state: ChunkState,
    pub(super) size: u64,
    pub(super) digits: u8,
    /// Extension bytes of the current size line, or trailer bytes so far.
    pub(super) extra: usize,
    /// Where the trailer section (after the last chunk's size line) began
    /// in the input of the last `feed`, if it did.
    pub(super) trailers_from: Option<usize>,
}

impl ChunkedEnd {
    /// How many of the first `taken` bytes of the last `feed`'s input come
    /// before the trailer section: the chunks themselves and the last
    /// chunk's size line (`0\r\n`).
    pub fn body_bytes_in_last_feed(&self, taken: usize) -> usize {
        match self.trailers_from {
            Some(from) => from.min(taken),
            None if self.in_trailers() => 0,
            None => taken,
        }
    }

    pub(super) fn in_trailers(&self) -> bool {
        matches!(
            self.state,
            ChunkState::TrailerStart
                | ChunkState::TrailerLine
                | ChunkState::TrailerLf
                | ChunkState::EndLf
                | ChunkState::Done
        )
    }

    /// `Some(n)`: the body ends after `n` bytes of `input`.
    pub fn feed(&mut self, input: &[u8]) -> Result<Option<usize>, ChunkError> {
        self.trailers_from = None;
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size => match (b as char).to_digit(16) {
                    Some(d) => {
                        if self.digits == 16 {
                            return Err(ChunkError::SizeOverflow);
                        }
                        self.size = self.size << 4 | u64::from(d);
                        self.digits += 1;
                    }
                    None if self.digits == 0 => return Err(ChunkError::SizeLine),
                    None => {
                        self.state = ChunkState::SizeWhitespace;
                        continue;
                    }
                },
                ChunkState::SizeWhitespace => match b {
                    b' ' | b'\t' => self.count_extra(MAX_CHUNK_LINE_EXTRA)?,
                    b';' => self.state = ChunkState::Extension,
                    b'\r' => self.state = ChunkState::SizeLf,
                    _ => return Err(ChunkError::SizeLine),
                },
                ChunkState::Extension => match b {
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' | 0 => return Err(ChunkError::SizeLine),
                    _ => self.count_extra(MAX_CHUNK_LINE_EXTRA)?,
                },
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::SizeLine);
                    }
                    self.digits = 0;
                    // Extensions are bounded per line; the trailer section,
                    // which follows the last size line, as a whole.
                    self.extra = 0;
                    self.state = if self.size == 0 {
                        self.trailers_from = Some(i + 1);
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    };
                }
                ChunkState::Data => {
                    let available = (input.len() - i) as u64;
                    let take = self.size.min(available);
                    self.size -= take;
                    i += take as usize;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::DataEnd);
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::DataEnd);
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart => {
                    if b == b'\r' {
                        self.state = ChunkState::EndLf;
                    } else {
                        self.state = ChunkState::TrailerLine;
                        continue;
                    }
                }
                ChunkState::TrailerLine => match b {
                    b'\r' => self.state = ChunkState::TrailerLf,
                    b'\n' | 0 => return Err(ChunkError::Trailer),
                    _ => self.count_extra(MAX_TRAILER_BYTES)?,
                },
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Trailer);
                    }
                    self.state = ChunkState::TrailerStart;
                }
                ChunkState::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Trailer);
                    }
                    self.state = ChunkState::Done;
                    return Ok(Some(i + 1));
                }
                ChunkState::Done => return Ok(Some(i)),
            }
            i += 1;
        }
        Ok((self.state == ChunkState::Done).then_some(0))
    }

    /// Counts one byte of an extension or the trailer section against `bound`.
    pub(super) fn count_extra(&mut self, bound: usize) -> Result<(), ChunkError> {
        self.extra += 1;
        if self.extra > bound {
            return Err(ChunkError::TooLong);
        }
        Ok(())
    }
}

/// A status code's three digits (httparse has checked it has three).
pub(super) fn status_digits(status: u16) -> [u8; 3] {
    let digit = |n: u16| b'0' + (n % 10) as u8;
    [digit(status / 100), digit(status / 10), digit(status)]
}
