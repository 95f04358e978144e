//! Byte spans of values inside a JSON text, for surgical edits.
//!
//! krepair changes `config.json` by replacing two values (`mean` and
//! `variance`) of one layer config and nothing else, so every other byte of
//! the file (key order, spacing, number spellings such as Python's `1e-07`)
//! stays exactly as Keras wrote it. serde_json validates and interprets the
//! document; this module only finds where a value sits in the text.

use std::ops::Range;

/// One step of a path into a JSON document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    /// A key of an object.
    Key(String),
    /// An index into an array.
    Index(usize),
}

impl std::fmt::Display for Seg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seg::Key(k) => write!(f, "/{k}"),
            Seg::Index(i) => write!(f, "/{i}"),
        }
    }
}

/// Render a path as a JSON-pointer-like string (for messages).
pub fn path_string(path: &[Seg]) -> String {
    path.iter().map(|s| s.to_string()).collect()
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

type SpanResult<T> = Result<T, String>;

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> SpanResult<u8> {
        self.b
            .get(self.i)
            .copied()
            .ok_or_else(|| "unexpected end of JSON".to_string())
    }

    fn expect(&mut self, c: u8) -> SpanResult<()> {
        self.ws();
        if self.peek()? != c {
            return Err(format!("expected `{}` at byte {}", c as char, self.i));
        }
        self.i += 1;
        Ok(())
    }

    /// Skip a string starting at the current `"`; return its span,
    /// quotes included.
    fn skip_string(&mut self) -> SpanResult<Range<usize>> {
        self.ws();
        let start = self.i;
        self.expect(b'"')?;
        loop {
            // Jump to the next quote or backslash.
            match self.b[self.i..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\')
            {
                None => return Err("unexpected end of JSON".to_string()),
                Some(k) => self.i += k,
            }
            if self.b[self.i] == b'"' {
                self.i += 1;
                return Ok(start..self.i);
            }
            self.i = (self.i + 2).min(self.b.len());
        }
    }

    /// Does the string at `span` (quotes included) decode to `key`?
    fn string_is(&self, span: Range<usize>, key: &str) -> SpanResult<bool> {
        let raw = &self.b[span];
        let inner = &raw[1..raw.len() - 1];
        if !inner.contains(&b'\\') {
            return Ok(inner == key.as_bytes());
        }
        let text = std::str::from_utf8(raw).map_err(|e| e.to_string())?;
        Ok(serde_json::from_str::<String>(text).map_err(|e| e.to_string())? == key)
    }

    /// Skip one value; return its span (without surrounding whitespace).
    /// An object or array is skipped by matching its brackets (strings
    /// skipped whole), not parsed: every text given here has already been
    /// parsed by serde_json, and a configuration of thousands of layers is
    /// skipped at a few instructions a byte.
    fn value(&mut self) -> SpanResult<Range<usize>> {
        self.ws();
        let start = self.i;
        match self.peek()? {
            b'"' => {
                self.skip_string()?;
            }
            open @ (b'{' | b'[') => {
                // In valid JSON the other kind of bracket nests inside
                // these ones: counting this kind alone finds the match.
                // Two tight loops, one outside strings and one inside (a
                // few instructions a byte: the walk to a layer of a model
                // of thousands skips megabytes).
                let close = if open == b'{' { b'}' } else { b']' };
                let (b, mut i, mut depth) = (self.b, self.i, 0usize);
                loop {
                    let Some(&c) = b.get(i) else {
                        return Err("unexpected end of JSON".to_string());
                    };
                    i += 1;
                    if c == b'"' {
                        while let Some(&c) = b.get(i) {
                            i += 1;
                            if c == b'\\' {
                                i += 1;
                            } else if c == b'"' {
                                break;
                            }
                        }
                    } else if c == open {
                        depth += 1;
                    } else if c == close {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                }
                self.i = i;
            }
            _ => {
                // A number, true, false, null (or NaN/Infinity, which
                // serde_json has already refused).
                while self.i < self.b.len()
                    && !matches!(
                        self.b[self.i],
                        b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'
                    )
                {
                    self.i += 1;
                }
                if self.i == start {
                    return Err(format!("expected a value at byte {start}"));
                }
            }
        }
        Ok(start..self.i)
    }

    /// Find the span of member `key` of the object starting here. Fails
    /// if the key is missing or appears twice.
    fn member(&mut self, key: &str) -> SpanResult<Range<usize>> {
        self.find_member(key, false)
    }

    /// Where the value of member `key` of the object starting here
    /// starts, in a text whose every object names each key once: the
    /// first match is the only one, and neither it nor the members after
    /// it are skipped (the walk to a layer of a large model then reads only
    /// what comes before the layer, not the megabytes after it).
    fn member_start(&mut self, key: &str) -> SpanResult<usize> {
        self.find_member(key, true).map(|span| span.start)
    }

    /// Member `key` of the object starting here: with `first`, the empty
    /// span where the first match's value starts; otherwise the whole
    /// span of the value, after making sure no other member has that key.
    fn find_member(&mut self, key: &str, first: bool) -> SpanResult<Range<usize>> {
        self.expect(b'{')?;
        let mut found = None;
        self.ws();
        if self.peek()? == b'}' {
            return Err(format!("key `{key}` not found"));
        }
        loop {
            let k = self.skip_string()?;
            self.expect(b':')?;
            let is_key = self.string_is(k, key)?;
            self.ws();
            if first && is_key {
                return Ok(self.i..self.i);
            }
            let span = self.value()?;
            if is_key {
                if found.is_some() {
                    return Err(format!("key `{key}` appears twice"));
                }
                found = Some(span);
            }
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => break,
                c => return Err(format!("unexpected `{}` at byte {}", c as char, self.i)),
            }
        }
        found.ok_or_else(|| format!("key `{key}` not found"))
    }

    /// Where element `index` of the array starting here starts (the
    /// element itself is not skipped).
    fn element_start(&mut self, index: usize) -> SpanResult<usize> {
        self.expect(b'[')?;
        for _ in 0..index {
            self.value()?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                _ => return Err(format!("index {index} out of range")),
            }
        }
        self.ws();
        if self.peek()? == b']' {
            return Err(format!("index {index} out of range"));
        }
        Ok(self.i)
    }

    fn element(&mut self, index: usize) -> SpanResult<Range<usize>> {
        self.i = self.element_start(index)?;
        self.value()
    }
}

/// The members of objects in one text, each object's path walked once for
/// all the lookups in it that follow one another (a layer's `mean` and
/// `variance`: the walk to a layer of a large model is most of the cost).
pub struct Members<'a> {
    text: &'a str,
    /// No object of the text names a key twice (the parser said so).
    unique_keys: bool,
    /// The last object's path and where it starts.
    last: Option<(Vec<Seg>, usize)>,
}

impl<'a> Members<'a> {
    /// Lookups in `text`. With `unique_keys` (no object of the text names
    /// a key twice, as [`crate::view::json_tree::parse_checked`] reports), the
    /// walk to an object stops at each key it looks for instead of making
    /// sure no later member has the same name.
    pub fn new(text: &'a str, unique_keys: bool) -> Self {
        Members {
            text,
            unique_keys,
            last: None,
        }
    }

    /// The span of member `key` of the object at `object`, as
    /// [`value_span`] of `object` + `key` would find it.
    pub fn span(&mut self, object: &[Seg], key: &str) -> Result<Range<usize>, String> {
        let at = match &self.last {
            Some((p, start)) if p.as_slice() == object => *start,
            _ => {
                let start = if self.unique_keys {
                    value_start(self.text, object)?
                } else {
                    value_span(self.text, object)?.start
                };
                self.last = Some((object.to_vec(), start));
                start
            }
        };
        Scanner {
            b: self.text.as_bytes(),
            i: at,
        }
        .member(key)
    }
}

/// The byte range of the value at `path` in `text`.
pub fn value_span(text: &str, path: &[Seg]) -> Result<Range<usize>, String> {
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
    };
    // The root's end is not needed to look inside it.
    let mut span = if path.is_empty() {
        s.value()?
    } else {
        s.ws();
        s.i..text.len()
    };
    for seg in path {
        s.i = span.start;
        span = match seg {
            Seg::Key(k) => s.member(k)?,
            Seg::Index(i) => s.element(*i)?,
        };
    }
    Ok(span)
}

/// Where the value at `path` in `text` starts, for a text in which no
/// object names a key twice (see [`Members::new`]).
fn value_start(text: &str, path: &[Seg]) -> Result<usize, String> {
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
    };
    s.ws();
    for seg in path {
        s.i = match seg {
            Seg::Key(k) => s.member_start(k)?,
            Seg::Index(i) => s.element_start(*i)?,
        };
    }
    Ok(s.i)
}

/// Apply non-overlapping replacements to `text`.
pub fn splice(text: &str, mut edits: Vec<(Range<usize>, String)>) -> String {
    edits.sort_by_key(|(r, _)| r.start);
    let mut out =
        String::with_capacity(text.len() + edits.iter().map(|e| e.1.len()).sum::<usize>());
    let mut at = 0;
    for (r, new) in edits {
        assert!(r.start >= at, "overlapping edits");
        out.push_str(&text[at..r.start]);
        out.push_str(&new);
        at = r.end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Seg {
        Seg::Key(s.into())
    }

    #[test]
    fn finds_nested_values() {
        let text = r#"{"a": [1, {"mean": null, "b": "x\"}"}], "mean": 2e-07}"#;
        let r = value_span(text, &[k("a"), Seg::Index(1), k("mean")]).unwrap();
        assert_eq!(&text[r], "null");
        let r = value_span(text, &[k("mean")]).unwrap();
        assert_eq!(&text[r], "2e-07");
        let r = value_span(text, &[k("a"), Seg::Index(1), k("b")]).unwrap();
        assert_eq!(&text[r], r#""x\"}""#);
    }

    #[test]
    fn missing_and_duplicate_keys_are_errors() {
        assert!(value_span(r#"{"a": 1}"#, &[k("b")])
            .unwrap_err()
            .contains("not found"));
        assert!(value_span(r#"{"a": 1, "a": 2}"#, &[k("a")])
            .unwrap_err()
            .contains("twice"));
        assert!(value_span(r#"[1, 2]"#, &[Seg::Index(2)]).is_err());
        assert!(value_span(r#"{"a": [1, 2"#, &[k("a"), Seg::Index(2)]).is_err());
        assert!(value_span(r#"{"a": "#, &[k("a")]).is_err());
    }

    #[test]
    fn splice_keeps_everything_else() {
        let text = r#"{"mean": null, "x": 1e-07, "variance": null}"#;
        let m = value_span(text, &[k("mean")]).unwrap();
        let v = value_span(text, &[k("variance")]).unwrap();
        let out = splice(text, vec![(v, "[1.0]".into()), (m, "[0.5]".into())]);
        assert_eq!(out, r#"{"mean": [0.5], "x": 1e-07, "variance": [1.0]}"#);
    }

    #[test]
    fn unique_keys_find_the_same_spans() {
        let text = r#" {"a": [1, {"mean": null, "b": "x\"}", "c": [[2], {"d": 3}]}], "z": {"mean": 2e-07, "v": []}}"#;
        let paths: [&[Seg]; 4] = [
            &[k("a"), Seg::Index(1)],
            &[k("z")],
            &[k("a"), Seg::Index(1), k("c"), Seg::Index(1)],
            &[],
        ];
        for object in paths {
            for key in ["mean", "b", "d", "v", "zz"] {
                let slow = Members::new(text, false).span(object, key);
                let fast = Members::new(text, true).span(object, key);
                assert_eq!(fast.ok(), slow.ok(), "{object:?} {key}");
            }
        }
        assert_eq!(
            &text[Members::new(text, true).span(&[k("z")], "mean").unwrap()],
            "2e-07"
        );
        for bad in [&[k("a"), Seg::Index(2)][..], &[k("q")], &[k("a"), k("x")]] {
            assert!(
                Members::new(text, true).span(bad, "mean").is_err(),
                "{bad:?}"
            );
        }
        // With a duplicate, only the careful walk is right (and refuses).
        let dup = r#"{"l": {"mean": null}, "l": {"mean": 1}}"#;
        assert!(Members::new(dup, false).span(&[k("l")], "mean").is_err());
    }

    #[test]
    fn escaped_keys_are_decoded() {
        let text = r#"{"me\u0061n": 3}"#;
        assert_eq!(&text[value_span(text, &[k("mean")]).unwrap()], "3");
    }
}
