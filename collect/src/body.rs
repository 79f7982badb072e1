//! A request body into events: decompressed within caps, split by its
//! form, and each event checked by the worker's own decoder.
//!
//! - **Encoding** (`Content-Encoding`): none (or `identity`), `gzip` or
//!   `zstd`; anything else is [`BodyError::UnsupportedEncoding`] (415).
//! - **Caps**: the body as sent may hold at most `max_compressed` bytes,
//!   and decompressed at most `max_decompressed` (413). Decompression reads
//!   one byte past the cap and stops, so a small body that would inflate
//!   to gigabytes (a decompression bomb) costs no more than the cap.
//! - **Forms**: one JSON event, a JSON array of events, or
//!   newline-delimited JSON (`Content-Type: application/x-ndjson`, one
//!   event per non-blank line).
//! - **Checks**: each event is decoded by [`Event::decode`], the decoder
//!   the worker uses, so an event the collector accepts is one the worker
//!   accepts; a rejected one carries the dead-letter topic's reason name.

use std::borrow::Cow;
use std::io::Read;

use footprint_dataflows::event::{BadReason, Event};
use serde_json::value::RawValue;

/// How the body was compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Not compressed.
    Identity,
    /// gzip.
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Encoding {
    /// The encoding a `Content-Encoding` header names (none: identity).
    pub fn parse(header: Option<&str>) -> Result<Encoding, BodyError> {
        match header.map(|h| h.trim().to_ascii_lowercase()).as_deref() {
            None | Some("" | "identity") => Ok(Encoding::Identity),
            Some("gzip" | "x-gzip") => Ok(Encoding::Gzip),
            Some("zstd") => Ok(Encoding::Zstd),
            Some(other) => Err(BodyError::UnsupportedEncoding(other.to_owned())),
        }
    }
}

/// How the events are laid out in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// One JSON event, or a JSON array of events.
    Json,
    /// One JSON event per line.
    Ndjson,
}

impl Form {
    /// The form a `Content-Type` header names: NDJSON for
    /// `application/x-ndjson`, JSON otherwise.
    pub fn parse(content_type: Option<&str>) -> Form {
        let essence = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase());
        match essence.as_deref() {
            Some("application/x-ndjson" | "application/ndjson") => Form::Ndjson,
            _ => Form::Json,
        }
    }
}

/// Why a whole body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// A `Content-Encoding` other than gzip and zstd.
    #[error("unsupported Content-Encoding `{0}`: send gzip, zstd or none")]
    UnsupportedEncoding(String),
    /// Larger than a cap.
    #[error("the {what} body is larger than {limit} bytes")]
    TooLarge {
        /// `compressed` (as sent) or `decompressed`.
        what: &'static str,
        /// The cap.
        limit: usize,
    },
    /// The body does not decompress.
    #[error("the body is not valid {encoding}: {detail}")]
    Corrupt {
        /// `gzip` or `zstd`.
        encoding: &'static str,
        /// What the decoder said.
        detail: String,
    },
    /// A JSON array that does not parse.
    #[error("the body is not a JSON array of events: {0}")]
    NotAnArray(String),
}

impl BodyError {
    /// The HTTP status that answers it.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::UnsupportedEncoding(_) => 415,
            BodyError::TooLarge { .. } => 413,
            BodyError::Corrupt { .. } | BodyError::NotAnArray(_) => 400,
        }
    }
}

/// The body as the client meant it: decompressed, within the caps.
pub fn decompress(
    body: &[u8],
    encoding: Encoding,
    max_compressed: usize,
    max_decompressed: usize,
) -> Result<Cow<'_, [u8]>, BodyError> {
    if body.len() > max_compressed {
        return Err(BodyError::TooLarge {
            what: "compressed",
            limit: max_compressed,
        });
    }
    let (name, reader): (&'static str, Box<dyn Read + '_>) = match encoding {
        Encoding::Identity => {
            if body.len() > max_decompressed {
                return Err(BodyError::TooLarge {
                    what: "decompressed",
                    limit: max_decompressed,
                });
            }
            return Ok(Cow::Borrowed(body));
        }
        Encoding::Gzip => ("gzip", Box::new(flate2::read::MultiGzDecoder::new(body))),
        Encoding::Zstd => (
            "zstd",
            Box::new(
                zstd::stream::read::Decoder::new(body).map_err(|e| BodyError::Corrupt {
                    encoding: "zstd",
                    detail: e.to_string(),
                })?,
            ),
        ),
    };
    let mut out = Vec::new();
    reader
        .take(max_decompressed as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Corrupt {
            encoding: name,
            detail: e.to_string(),
        })?;
    if out.len() > max_decompressed {
        return Err(BodyError::TooLarge {
            what: "decompressed",
            limit: max_decompressed,
        });
    }
    Ok(Cow::Owned(out))
}

/// The events of a decompressed body, each as its own bytes.
pub fn split(body: &[u8], form: Form) -> Result<Vec<&[u8]>, BodyError> {
    match form {
        Form::Ndjson => Ok(body
            .split(|b| *b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .collect()),
        Form::Json => {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            if first != Some(&b'[') {
                // One event: the decoder says what is wrong with it, if
                // anything.
                return Ok(vec![body]);
            }
            let text =
                std::str::from_utf8(body).map_err(|e| BodyError::NotAnArray(e.to_string()))?;
            let items: Vec<&RawValue> =
                serde_json::from_str(text).map_err(|e| BodyError::NotAnArray(e.to_string()))?;
            Ok(items.into_iter().map(|r| r.get().as_bytes()).collect())
        }
    }
}

/// One event checked by the worker's decoder: the event, or why the worker
/// would send it to the dead-letter topic, with the detail.
pub fn check(event: &[u8]) -> Result<Event<'_>, (BadReason, String)> {
    Event::decode(event).map_err(|bad| (bad.reason, bad.detail))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const GOOD: &str =
        r#"{"event_id":"e1","app_id":"a","user_id":"u","event":"view","ts":1767225600000}"#;
    const GOOD2: &str = r#"{"event_id":"e2","app_id":"a","user_id":"v","event":"cart","ts":1767225600001,"value":3.5}"#;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).expect("gzip");
        e.finish().expect("gzip")
    }

    #[test]
    fn the_three_forms_give_the_same_events() {
        let one = split(GOOD.as_bytes(), Form::Json).expect("one");
        assert_eq!(one, vec![GOOD.as_bytes()]);
        let array = format!("[{GOOD}, {GOOD2}]");
        let array = split(array.as_bytes(), Form::Json).expect("array");
        let lines = format!("{GOOD}\r\n\n{GOOD2}\n");
        let lines = split(lines.as_bytes(), Form::Ndjson).expect("ndjson");
        assert_eq!(array, lines);
        assert_eq!(array, vec![GOOD.as_bytes(), GOOD2.as_bytes()]);
        for e in array {
            let ev = check(e).expect("valid");
            assert_eq!(ev.app_id, "a");
        }
    }

    #[test]
    fn gzip_and_zstd_bodies_decompress_to_the_same_bytes() {
        let body = format!("{GOOD}\n{GOOD2}\n").repeat(50);
        let z = zstd::encode_all(body.as_bytes(), 3).expect("zstd");
        for (enc, sent) in [(Encoding::Gzip, gzip(body.as_bytes())), (Encoding::Zstd, z)] {
            assert!(sent.len() < body.len());
            let got = decompress(&sent, enc, 1 << 20, 1 << 20).expect("decompress");
            assert_eq!(&*got, body.as_bytes());
        }
    }

    #[test]
    fn encodings_and_forms_are_read_from_their_headers() {
        assert_eq!(Encoding::parse(None), Ok(Encoding::Identity));
        assert_eq!(Encoding::parse(Some(" GZIP ")), Ok(Encoding::Gzip));
        assert_eq!(Encoding::parse(Some("zstd")), Ok(Encoding::Zstd));
        let br = Encoding::parse(Some("br")).expect_err("brotli");
        assert_eq!(br.status(), 415);
        assert_eq!(
            Form::parse(Some("application/x-ndjson; charset=utf-8")),
            Form::Ndjson
        );
        assert_eq!(Form::parse(Some("application/json")), Form::Json);
        assert_eq!(Form::parse(None), Form::Json);
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_cap() {
        // 64 MiB of zeros, sent as about 64 KiB of gzip, against a 1 MiB cap.
        let zeros = vec![0u8; 64 << 20];
        let bomb = gzip(&zeros);
        assert!(bomb.len() < 256 << 10, "{}", bomb.len());
        let e = decompress(&bomb, Encoding::Gzip, 1 << 20, 1 << 20).expect_err("bomb");
        assert_eq!(
            e,
            BodyError::TooLarge {
                what: "decompressed",
                limit: 1 << 20
            }
        );
        assert_eq!(e.status(), 413);
        let z = zstd::encode_all(&zeros[..], 3).expect("zstd");
        let e = decompress(&z, Encoding::Zstd, 1 << 20, 1 << 20).expect_err("zstd bomb");
        assert_eq!(e.status(), 413);
    }

    #[test]
    fn oversized_corrupt_and_malformed_bodies_are_refused_whole() {
        let big = vec![b' '; 2048];
        let e = decompress(&big, Encoding::Identity, 1024, 1 << 20).expect_err("compressed cap");
        assert_eq!(
            (e.status(), e.to_string().contains("compressed")),
            (413, true)
        );
        let e = decompress(&big, Encoding::Identity, 4096, 1024).expect_err("decompressed cap");
        assert_eq!(e.status(), 413);
        let e = decompress(b"not gzip at all", Encoding::Gzip, 1024, 1024).expect_err("corrupt");
        assert_eq!(e.status(), 400);
        let mut cut = gzip(GOOD.as_bytes());
        cut.truncate(cut.len() / 2);
        assert_eq!(
            decompress(&cut, Encoding::Gzip, 1024, 1024)
                .expect_err("cut short")
                .status(),
            400
        );
        let e = split(b"[{\"a\":1}, oops]", Form::Json).expect_err("bad array");
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn each_bad_event_gets_the_dead_letter_reason() {
        let lines = format!("{GOOD}\nnot json\n{{\"app_id\":\"a\"}}\n{GOOD2}\n");
        let events = split(lines.as_bytes(), Form::Ndjson).expect("split");
        let reasons: Vec<Option<&str>> = events
            .iter()
            .map(|e| check(e).err().map(|(r, _)| r.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![None, Some("invalid_json"), Some("missing_field"), None]
        );
    }
}
