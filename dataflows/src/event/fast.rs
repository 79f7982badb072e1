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

/// Bytes that end a plain string: the closing quote, an escape, a control character.
const STOPS: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

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
        let mut end = start;
        while end < self.bytes.len() && !STOPS[usize::from(self.bytes[end])] {
            end += 1;
        }
        if self.bytes.get(end) != Some(&b'"') {
            return None;
        }
        self.at = end + 1;
        Some(&self.text[start..end])
    }

    /// An object key: one of the event's own fields is recognised by its
    /// bytes at once, anything else is scanned as a string.
    fn key(&mut self) -> Option<&'a str> {
        self.ws();
        const KNOWN: [&str; 8] = [
            "app_id", "user_id", "event", "ts", "item_id", "event_id", "value", "props",
        ];
        let rest = &self.bytes[self.at..];
        if rest.first() == Some(&b'"') {
            for k in KNOWN {
                let n = k.len();
                if rest.len() > n + 1 && &rest[1..=n] == k.as_bytes() && rest[n + 1] == b'"' {
                    self.at += n + 2;
                    return Some(k);
                }
            }
        }
        self.string()
    }

    /// A flat object (string keys, and string, number, `true`, `false` or
    /// `null` values, no escapes) as its raw text; `None` for anything else,
    /// which `serde_json` then judges.
    fn flat_object(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.at;
        self.eat(b'{')?;
        if self.peek()? != b'}' {
            loop {
                self.string()?;
                self.eat(b':')?;
                match self.peek()? {
                    b'"' => {
                        self.string()?;
                    }
                    b't' | b'f' | b'n' => {
                        let rest = &self.bytes[self.at..];
                        let word: &[u8] = match rest[0] {
                            b't' => b"true",
                            b'f' => b"false",
                            _ => b"null",
                        };
                        if !rest.starts_with(word) {
                            return None;
                        }
                        self.at += word.len();
                    }
                    _ => {
                        self.number()?;
                    }
                }
                match self.peek()? {
                    b',' => self.at += 1,
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        self.eat(b'}')?;
        Some(&self.text[start..self.at])
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
            let key = s.key()?;
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
                        // A flat object is checked here, anything else by serde_json.
                        let mut probe = Scanner { at: s.at, ..s };
                        match probe.flat_object() {
                            Some(raw) => {
                                s.at = probe.at;
                                Some(raw)
                            }
                            None => {
                                let raw = s.value()?;
                                Some(serde_json::from_str::<&RawValue>(raw).ok()?.get())
                            }
                        }
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

/// `props.NAME` from a flat props object: `Some(Some(text))` for a string
/// (its text) or another scalar (its JSON text), `Some(None)` for `null` or
/// an absent name, and `None` when the object is not flat (the caller then
/// asks `serde_json`). With duplicate names the last wins, as in `serde_json`.
pub(super) fn flat_prop<'a>(raw: &'a str, name: &str) -> Option<Option<&'a str>> {
    let mut s = Scanner {
        text: raw,
        bytes: raw.as_bytes(),
        at: 0,
    };
    s.eat(b'{')?;
    let mut found = None;
    if s.peek()? != b'}' {
        loop {
            let key = s.string()?;
            s.eat(b':')?;
            let value = match s.peek()? {
                b'"' => Some(s.string()?),
                b'n' => {
                    if !s.null() {
                        return None;
                    }
                    None
                }
                b't' | b'f' => {
                    let word = if s.bytes[s.at] == b't' {
                        "true"
                    } else {
                        "false"
                    };
                    if !s.bytes[s.at..].starts_with(word.as_bytes()) {
                        return None;
                    }
                    s.at += word.len();
                    Some(word)
                }
                _ => Some(s.number()?),
            };
            if key == name {
                found = value;
            }
            match s.peek()? {
                b',' => s.at += 1,
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.eat(b'}')?;
    Some(found)
}
