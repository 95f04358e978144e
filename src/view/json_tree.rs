//! A read-only JSON tree that borrows from its text, and the one trait
//! ([`Json`]) the config readers in [`crate::view::config`] are written against.
//!
//! A repair or dry run only reads config.json: it finds the layers it cares
//! about and never rewrites the tree (edits are spliced into the text,
//! [`crate::view::json_span`]). `serde_json::Value` with `preserve_order` costs
//! an `IndexMap` (a hash table and an entry vector) per object and an
//! owned `String` per key and string: about thirteen times the text's size
//! and, on a config of 3,000 layers, most of the run's time in allocating
//! and freeing. [`Node`] keeps strings as slices of the text and each
//! array or object as one slice in an arena, allocated once at its final
//! length; freeing the tree is freeing the arena.
//!
//! It reads exactly what `Value` reads: the same parser (serde_json, with
//! its nesting limit and error messages), the same numbers, and duplicate
//! keys resolved as `Value` resolves them (the first position, the last
//! value). The migration, which rewrites the tree, keeps using `Value`;
//! both implement [`Json`].

use std::cell::{Cell, RefCell};
use std::fmt;

use bumpalo::Bump;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// A JSON value whose strings borrow from the text it was parsed from and
/// whose arrays and objects live in an arena ([`parse`]): building it
/// allocates no more than a bump of a pointer a container, and freeing it
/// is freeing the arena's few chunks.
#[derive(Clone, Debug, PartialEq)]
pub enum Node<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as serde_json reads it.
    Number(Number),
    /// A string (in the text, or in the arena where the JSON escaped a
    /// character).
    String(&'a str),
    /// An array.
    Array(&'a [Node<'a>]),
    /// An object's members in text order, each key once.
    Object(&'a [(&'a str, Node<'a>)]),
}

/// Parse `text` into a [`Node`] whose containers are allocated in
/// `arena` (the whole text must be one JSON value, as for
/// `serde_json::from_str`: the same errors, the same nesting limit).
pub fn parse<'a>(text: &'a str, arena: &'a Bump) -> serde_json::Result<Node<'a>> {
    parse_checked(text, arena).map(|(node, _)| node)
}

/// [`parse`], and whether every object of the text names each of its keys
/// once (then [`crate::view::json_span::Members`] may stop at the first match).
pub fn parse_checked<'a>(text: &'a str, arena: &'a Bump) -> serde_json::Result<(Node<'a>, bool)> {
    let elems = RefCell::new(Vec::new());
    let members = RefCell::new(Vec::new());
    let duplicates = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let node = Seed {
        arena,
        elems: &elems,
        members: &members,
        duplicates: &duplicates,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok((node, !duplicates.get()))
}

/// The read-only view of a JSON value that the config readers need,
/// implemented by [`Node`] and by `serde_json::Value` (so the migration's
/// rewritten tree is read by the same code).
pub trait Json: Sized {
    /// The value of `key`, if this is an object that has it.
    fn get(&self, key: &str) -> Option<&Self>;
    /// The string, if this is one.
    fn as_str(&self) -> Option<&str>;
    /// The elements, if this is an array.
    fn as_array(&self) -> Option<&[Self]>;
    /// The members of an object in order (none for anything else).
    fn members(&self) -> impl DoubleEndedIterator<Item = (&str, &Self)>;
    /// The boolean, if this is one.
    fn as_bool(&self) -> Option<bool>;
    /// The number as an i64, if it is an integer that fits.
    fn as_i64(&self) -> Option<i64>;
    /// The number as a u64, if it is a non-negative integer that fits.
    fn as_u64(&self) -> Option<u64>;
    /// Is this `null`?
    fn is_null(&self) -> bool;
    /// Is this a number?
    fn is_number(&self) -> bool;
    /// Is this an object?
    fn is_object(&self) -> bool;
    /// Is this an array?
    fn is_array(&self) -> bool {
        self.as_array().is_some()
    }
    /// An owned `serde_json::Value` of the same JSON.
    fn to_value(&self) -> Value;
}

impl Json for Value {
    fn get(&self, key: &str) -> Option<&Self> {
        Value::get(self, key)
    }
    fn as_str(&self) -> Option<&str> {
        Value::as_str(self)
    }
    fn as_array(&self) -> Option<&[Self]> {
        Value::as_array(self).map(Vec::as_slice)
    }
    fn members(&self) -> impl DoubleEndedIterator<Item = (&str, &Self)> {
        self.as_object()
            .into_iter()
            .flat_map(|o| o.iter().map(|(k, v)| (k.as_str(), v)))
    }
    fn as_bool(&self) -> Option<bool> {
        Value::as_bool(self)
    }
    fn as_i64(&self) -> Option<i64> {
        Value::as_i64(self)
    }
    fn as_u64(&self) -> Option<u64> {
        Value::as_u64(self)
    }
    fn is_null(&self) -> bool {
        Value::is_null(self)
    }
    fn is_number(&self) -> bool {
        Value::is_number(self)
    }
    fn is_object(&self) -> bool {
        Value::is_object(self)
    }
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl<'a> Json for Node<'a> {
    fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Node::Object(m) => m.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }
    fn as_array(&self) -> Option<&[Self]> {
        match self {
            Node::Array(a) => Some(a),
            _ => None,
        }
    }
    fn members(&self) -> impl DoubleEndedIterator<Item = (&str, &Self)> {
        let m: &[(&'a str, Node<'a>)] = match self {
            Node::Object(m) => m,
            _ => &[],
        };
        m.iter().map(|(k, v)| (*k, v))
    }
    fn as_bool(&self) -> Option<bool> {
        match self {
            Node::Bool(b) => Some(*b),
            _ => None,
        }
    }
    fn as_i64(&self) -> Option<i64> {
        match self {
            Node::Number(n) => n.as_i64(),
            _ => None,
        }
    }
    fn as_u64(&self) -> Option<u64> {
        match self {
            Node::Number(n) => n.as_u64(),
            _ => None,
        }
    }
    fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }
    fn is_number(&self) -> bool {
        matches!(self, Node::Number(_))
    }
    fn is_object(&self) -> bool {
        matches!(self, Node::Object(_))
    }
    fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => Value::Number(n.clone()),
            Node::String(s) => Value::String(s.to_string()),
            Node::Array(a) => Value::Array(a.iter().map(Node::to_value).collect()),
            Node::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

/// What the parser threads through the nesting: the arena, and one stack
/// each of array elements and object members still being read (a
/// container's children are gathered on the stack, then copied into the
/// arena at their final length: no container is ever grown in place).
#[derive(Clone, Copy)]
struct Seed<'a, 's> {
    arena: &'a Bump,
    elems: &'s RefCell<Vec<Node<'a>>>,
    members: &'s RefCell<Vec<(&'a str, Node<'a>)>>,
    /// Set once an object names a key twice.
    duplicates: &'s Cell<bool>,
}

/// Objects with more members than this find duplicate keys with a sort
/// instead of comparing every pair.
const SMALL_OBJECT: usize = 16;

/// Does `m` name a key twice?
fn has_duplicate_keys(m: &[(&str, Node)]) -> bool {
    if m.len() <= SMALL_OBJECT {
        (1..m.len()).any(|j| m[..j].iter().any(|(k, _)| *k == m[j].0))
    } else {
        let mut keys: Vec<&str> = m.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        keys.windows(2).any(|w| w[0] == w[1])
    }
}

/// Resolve duplicate keys as `serde_json::Value` (an `IndexMap`) does: a
/// key keeps the position of its first occurrence and the value of its
/// last.
fn dedup_keys<'a>(m: &[(&'a str, Node<'a>)]) -> Vec<(&'a str, Node<'a>)> {
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut out: Vec<(&'a str, Node<'a>)> = Vec::with_capacity(m.len());
    for (k, v) in m {
        match first.get(k) {
            Some(&i) => out[i].1 = v.clone(),
            None => {
                first.insert(k, out.len());
                out.push((k, v.clone()));
            }
        }
    }
    out
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for Seed<'a, '_> {
    type Value = Node<'a>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node<'a>, D::Error> {
        d.deserialize_any(self)
    }
}

/// A key: borrowed from the text where serde_json can (no escapes),
/// otherwise copied into the arena.
struct Key<'a>(&'a Bump);

impl<'de: 'a, 'a> DeserializeSeed<'de> for Key<'a> {
    type Value = &'a str;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'a str, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for Key<'a> {
    type Value = &'a str;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<&'a str, E> {
        Ok(s)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<&'a str, E> {
        Ok(self.0.alloc_str(s))
    }
}

impl<'de: 'a, 'a> Visitor<'de> for Seed<'a, '_> {
    type Value = Node<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Node<'a>, E> {
        Ok(Node::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Node<'a>, E> {
        Ok(Node::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Node<'a>, E> {
        Ok(Node::Number(n.into()))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Node<'a>, E> {
        // serde_json never hands over a non-finite float; `Value` reads
        // one as null, and so does this.
        Ok(Number::from_f64(f).map_or(Node::Null, Node::Number))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Node<'a>, E> {
        Ok(Node::String(s))
    }
    fn visit_str<E>(self, s: &str) -> Result<Node<'a>, E> {
        Ok(Node::String(self.arena.alloc_str(s)))
    }
    fn visit_none<E>(self) -> Result<Node<'a>, E> {
        Ok(Node::Null)
    }
    fn visit_unit<E>(self) -> Result<Node<'a>, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'a>, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'a>, A::Error> {
        let start = self.elems.borrow().len();
        while let Some(x) = seq.next_element_seed(self)? {
            self.elems.borrow_mut().push(x);
        }
        let mut stack = self.elems.borrow_mut();
        let a = self.arena.alloc_slice_clone(&stack[start..]);
        stack.truncate(start);
        Ok(Node::Array(a))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'a>, A::Error> {
        let start = self.members.borrow().len();
        while let Some(k) = map.next_key_seed(Key(self.arena))? {
            let v = map.next_value_seed(self)?;
            self.members.borrow_mut().push((k, v));
        }
        let mut stack = self.members.borrow_mut();
        let m = &stack[start..];
        let m = if has_duplicate_keys(m) {
            self.duplicates.set(true);
            self.arena.alloc_slice_clone(&dedup_keys(m))
        } else {
            self.arena.alloc_slice_clone(m)
        };
        stack.truncate(start);
        Ok(Node::Object(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Node` must read every text as `Value` does.
    fn same(text: &str) {
        let v: Value = serde_json::from_str(text).unwrap();
        let arena = Bump::new();
        let n = parse(text, &arena).unwrap();
        assert_eq!(n.to_value(), v, "{text}");
        // Key order too (Value's equality ignores it).
        assert_eq!(
            serde_json::to_string(&n.to_value()).unwrap(),
            serde_json::to_string(&v).unwrap()
        );
    }

    #[test]
    fn reads_as_value_does() {
        for t in [
            r#"{"a": 1, "b": [true, false, null, -3, 1.5, 1e-07, 18446744073709551615]}"#,
            r#"{"esc\"aped": "x\u00e9\n", "plain": "y", "k": {"z": {}, "a": []}}"#,
            r#"[0.1, 0.30000000000000004, 5e-324, 1.7976931348623157e308, -0.0]"#,
            r#""just a string""#,
            "12",
            r#"{"dup": 1, "other": 2, "dup": 3}"#,
        ] {
            same(t);
        }
        // A large object with a duplicate goes through the sort.
        let mut big: Vec<String> = (0..40).map(|i| format!("\"k{i}\": {i}")).collect();
        big.push("\"k7\": \"last\"".into());
        same(&format!("{{{}}}", big.join(", ")));
        let text = format!("{{{}}}", big.join(", "));
        let arena = Bump::new();
        let (n, unique) = parse_checked(&text, &arena).unwrap();
        assert!(!unique);
        assert_eq!(n.get("k7").and_then(Json::as_str), Some("last"));
        let (_, unique) =
            parse_checked(r#"{"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]}"#, &arena).unwrap();
        assert!(unique);
        let (_, unique) = parse_checked(r#"[{"a": {"b": 1, "b": 2}}]"#, &arena).unwrap();
        assert!(!unique);
        assert_eq!(n.members().count(), 40);
    }

    #[test]
    fn borrows_unescaped_strings() {
        let text = r#"{"name": "dense", "esc": "a\tb", "k\u0065y": 1}"#;
        let arena = Bump::new();
        let n = parse(text, &arena).unwrap();
        let Node::Object(m) = n else { panic!() };
        let within = |s: &str| text.as_bytes().as_ptr_range().contains(&s.as_ptr());
        assert!(within(m[0].0));
        assert!(matches!(m[0].1, Node::String(s) if s == "dense" && within(s)));
        assert!(matches!(m[1].1, Node::String(s) if s == "a\tb" && !within(s)));
        assert!(m[2].0 == "key" && !within(m[2].0));
    }

    #[test]
    fn errors_as_value_does() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        for t in [
            "{",
            "{\"a\" 1}",
            "[1,]",
            "nul",
            "{\"a\": NaN}",
            deep.as_str(),
            "",
        ] {
            let v = serde_json::from_str::<Value>(t).unwrap_err().to_string();
            let n = parse(t, &Bump::new()).unwrap_err().to_string();
            assert_eq!(n, v, "{t}");
        }
    }

    #[test]
    fn trait_agrees_on_both_trees() {
        let text = r#"{"s": "x", "a": [1, -2, null], "b": true, "o": {"k": 1}}"#;
        let v: Value = serde_json::from_str(text).unwrap();
        let arena = Bump::new();
        let n = parse(text, &arena).unwrap();
        fn look<J: Json>(j: &J) -> String {
            let a = j.get("a").and_then(J::as_array).unwrap();
            format!(
                "{:?} {:?} {:?} {:?} {} {} {} {:?}",
                j.get("s").and_then(J::as_str),
                a.iter().map(J::as_i64).collect::<Vec<_>>(),
                a.iter().map(J::as_u64).collect::<Vec<_>>(),
                j.get("b").and_then(J::as_bool),
                a[2].is_null(),
                a[0].is_number(),
                j.get("o").is_some_and(J::is_object),
                j.members().rev().map(|(k, _)| k).collect::<Vec<_>>(),
            )
        }
        assert_eq!(look(&n), look(&v));
    }
}
