//! The fast path of [`Event::decode`](super::Event::decode): a scanner for
//! the common shape of an event, a flat JSON object whose strings hold no
//! escapes.
//!
//! It reads the object once, borrows every string from the payload, and
//! returns `None` as soon as it meets anything it does not handle (an
//! escape, a control character, a duplicate or missing field, a number that
//! is not plainly an `i64` where `ts` is, trailing bytes, …). The caller then
//! decodes with `serde_json`, which has the last word on every input: the
//! fast path only ever accepts what `serde_json` accepts, with the same
//! values. `tests/fuzz_decoder.rs` checks that on every input it generates.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::Event;

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.ws();
        (self.bytes.get(self.at) == Some(&b)).then(|| self.at += 1)
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.bytes.get(self.at).copied()
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            match *self.bytes.get(self.at)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.at += 1,
            }
        }
        let s = &self.text[start..self.at];
        self.at += 1;
        Some(s)
    }

    /// `null`.
    fn null(&mut self) -> bool {
        self.ws();
        if self.bytes[self.at..].starts_with(b"null") {
            self.at += 4;
            true
        } else {
            false
        }
    }

    fn optional_string(&mut self) -> Option<Option<&'a str>> {
        if self.null() {
            Some(None)
        } else {
            self.string().map(Some)
        }
    }

    /// The text of a JSON number token (grammar checked).
    fn number(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.at;
        let b = self.bytes;
        if b.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        match b.get(self.at)? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                while b.get(self.at).is_some_and(u8::is_ascii_digit) {
                    self.at += 1;
                }
            }
            _ => return None,
        }
        if b.get(self.at) == Some(&b'.') {
            self.at += 1;
            let digits = self.at;
            while b.get(self.at).is_some_and(u8::is_ascii_digit) {
                self.at += 1;
            }
            if self.at == digits {
                return None;
            }
        }
        if let Some(b'e' | b'E') = b.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = b.get(self.at) {
                self.at += 1;
            }
            let digits = self.at;
            while b.get(self.at).is_some_and(u8::is_ascii_digit) {
                self.at += 1;
            }
            if self.at == digits {
                return None;
            }
        }
        Some(&self.text[start..self.at])
    }

    /// An `i64` written as a plain integer.
    fn integer(&mut self) -> Option<i64> {
        let token = self.number()?;
        // serde_json reads `-0` as the float -0.0.
        if token.contains(['.', 'e', 'E']) || token == "-0" {
            return None;
        }
        token.parse().ok()
    }

    /// The extent of any JSON value, for `serde_json` to check: strings are
    /// skipped with their escapes, brackets matched, scalars run to the next
    /// delimiter. Returns its text.
    fn value(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.at;
        let b = self.bytes;
        match *b.get(self.at)? {
            b'"' => self.skip_string()?,
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match *b.get(self.at)? {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.at += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.at += 1;
                }
            }
            _ => {
                while !matches!(
                    b.get(self.at),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.at += 1;
                }
            }
        }
        Some(&self.text[start..self.at])
    }

    /// Skips a string, escapes included, from its opening quote.
    fn skip_string(&mut self) -> Option<()> {
        self.at += 1;
        loop {
            match *self.bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                b'\\' => self.at += 2,
                _ => self.at += 1,
            }
        }
    }
}

/// Decodes `text` (valid UTF-8) if it has the common shape; `None` otherwise.
pub(super) fn decode(text: &str) -> Option<Event<'_>> {
    let mut s = Scanner {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    s.eat(b'{')?;
    let (mut app_id, mut user_id, mut event, mut ts) = (None, None, None, None);
    let (mut item_id, mut event_id, mut value, mut props) = (None, None, None, None);
    if s.peek()? != b'}' {
        loop {
            let key = s.string()?;
            s.eat(b':')?;
            match key {
                "app_id" if app_id.is_none() => app_id = Some(s.string()?),
                "user_id" if user_id.is_none() => user_id = Some(s.string()?),
                "event" if event.is_none() => event = Some(s.string()?),
                "ts" if ts.is_none() => ts = Some(s.integer()?),
                "item_id" if item_id.is_none() => item_id = Some(s.optional_string()?),
                "event_id" if event_id.is_none() => event_id = Some(s.optional_string()?),
                "value" if value.is_none() => {
                    value = Some(if s.null() {
                        None
                    } else {
                        // serde_json's own float parsing, for the same bits.
                        Some(serde_json::from_str::<f64>(s.number()?).ok()?)
                    });
                }
                "props" if props.is_none() => {
                    props = Some(if s.null() {
                        None
                    } else {
                        Some(serde_json::from_str::<&RawValue>(s.value()?).ok()?)
                    });
                }
                "app_id" | "user_id" | "event" | "ts" | "item_id" | "event_id" | "value"
                | "props" => return None,
                _ => {
                    serde_json::from_str::<IgnoredAny>(s.value()?).ok()?;
                }
            }
            match s.peek()? {
                b',' => s.at += 1,
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.eat(b'}')?;
    s.ws();
    if s.at != s.bytes.len() {
        return None;
    }
    Some(Event {
        app_id: Cow::Borrowed(app_id?),
        user_id: Cow::Borrowed(user_id?),
        event: Cow::Borrowed(event?),
        ts: ts?,
        item_id: item_id.flatten().map(Cow::Borrowed),
        event_id: event_id.flatten().map(Cow::Borrowed),
        value: value.flatten(),
        props: props.flatten(),
    })
}
