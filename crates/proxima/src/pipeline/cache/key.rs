//! What a cache key is a digest of: a value's serde tree, written in a form made only to be
//! hashed. It is the tree JSON would write — objects, arrays, strings, numbers, booleans, null —
//! with every string's length written before it instead of its characters escaped, and a tag
//! before every value instead of punctuation. Two values get the same bytes only when their JSON
//! would be the same, and writing them costs a copy per string. serde_json reads every character
//! of a string to find ones to escape: after SHA-256 itself, the largest part of a request's
//! digest (`bench/results/cache-key-2026-12-07.md`).

use ring::digest;
use serde::ser::{self, Serialize};

use crate::cache::Digest;

/// SHA-256 of the values written to it, each in the tagged form above. What is written is
/// gathered and taken into the digest 8 KiB or more at a time, the rest at the end: each call
/// into the digest costs more than hashing a few bytes.
#[derive(Clone)]
pub(super) struct Hasher {
    digest: digest::Context,
    pending: Vec<u8>,
}

impl Default for Hasher {
    fn default() -> Hasher {
        Hasher {
            digest: digest::Context::new(&digest::SHA256),
            pending: Vec::with_capacity(1024),
        }
    }
}

impl Hasher {
    /// Feeds a value; each is whole and tagged, so consecutive ones cannot run together.
    pub(super) fn value(&mut self, value: &impl Serialize) {
        // Writing into a vector cannot fail, and none of the views hashed refuse to serialise.
        let _ = value.serialize(&mut Tree(&mut self.pending));
        if self.pending.len() >= 8192 {
            self.settle();
        }
    }

    /// Takes what was written into the digest: before a clone, so that both share it.
    pub(super) fn settle(&mut self) {
        self.digest.update(&self.pending);
        self.pending.clear();
    }

    /// Feeds raw bytes, to set a digest apart from another over the same values.
    pub(super) fn update(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    pub(super) fn finish(mut self) -> Digest {
        self.settle();
        let mut out = [0u8; 32];
        out.copy_from_slice(self.digest.finish().as_ref());
        out
    }
}

// A value's first byte says what it is; what follows is fixed by it.
const NULL: u8 = b'n';
const TRUE: u8 = b't';
const FALSE: u8 = b'f';
/// An integer; signed and unsigned ones differ in type, not value, so both are written wide.
const INT: u8 = b'i';
/// An unsigned integer past `i128` (no value of ours comes near).
const BIG: u8 = b'I';
const FLOAT: u8 = b'd';
/// A string: its length in bytes (LEB128), then its bytes.
const STRING: u8 = b's';
const ARRAY: u8 = b'[';
const OBJECT: u8 = b'{';
/// Ends an array or an object. No value starts with it, so a reader always knows whether
/// another element follows.
const END: u8 = b'.';

/// Writes one value's tree into the vector.
struct Tree<'a>(&'a mut Vec<u8>);

impl Tree<'_> {
    fn string(&mut self, bytes: &[u8]) {
        self.0.push(STRING);
        let mut len = bytes.len() as u64;
        loop {
            let low = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                self.0.push(low);
                break;
            }
            self.0.push(low | 0x80);
        }
        self.0.extend_from_slice(bytes);
    }

    fn int(&mut self, value: i128) {
        self.0.push(INT);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// `{"variant": ...`: how JSON writes an enum variant with content. The caller writes the
    /// content and the end.
    fn variant(&mut self, variant: &str) {
        self.0.push(OBJECT);
        self.string(variant.as_bytes());
    }
}

/// Writing into a vector cannot fail; this is made only by a value whose own serialisation
/// fails, and none of the views hashed does.
#[derive(Debug)]
pub(super) struct Unwritable(String);

impl std::fmt::Display for Unwritable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unwritable {}

impl ser::Error for Unwritable {
    fn custom<T: std::fmt::Display>(msg: T) -> Unwritable {
        Unwritable(msg.to_string())
    }
}

type Done = Result<(), Unwritable>;

/// serde's methods for the integer types that fit in an `i128`: each is written as one.
macro_rules! integers {
    ($($method:ident: $type:ty),* $(,)?) => {$(
        fn $method(self, v: $type) -> Done {
            self.int(v.into());
            Ok(())
        }
    )*};
}

impl<'a, 'b> ser::Serializer for &'a mut Tree<'b> {
    type Ok = ();
    type Error = Unwritable;
    type SerializeSeq = Compound<'a, 'b>;
    type SerializeTuple = Compound<'a, 'b>;
    type SerializeTupleStruct = Compound<'a, 'b>;
    type SerializeTupleVariant = Compound<'a, 'b>;
    type SerializeMap = Compound<'a, 'b>;
    type SerializeStruct = Compound<'a, 'b>;
    type SerializeStructVariant = Compound<'a, 'b>;

    fn serialize_bool(self, v: bool) -> Done {
        self.0.push(if v { TRUE } else { FALSE });
        Ok(())
    }
    integers!(
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_i128: i128,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
    );
    fn serialize_u128(self, v: u128) -> Done {
        match i128::try_from(v) {
            Ok(v) => self.int(v),
            Err(_) => {
                self.0.push(BIG);
                self.0.extend_from_slice(&v.to_le_bytes());
            }
        }
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Done {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Done {
        // JSON has no NaN nor infinities: serde_json writes them as null.
        if v.is_finite() {
            self.0.push(FLOAT);
            self.0.extend_from_slice(&v.to_bits().to_le_bytes());
        } else {
            self.0.push(NULL);
        }
        Ok(())
    }
    fn serialize_char(self, v: char) -> Done {
        self.string(v.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Done {
        self.string(v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Done {
        // An array of numbers, as serde_json writes bytes.
        self.0.push(ARRAY);
        for &b in v {
            self.int(b.into());
        }
        self.0.push(END);
        Ok(())
    }
    fn serialize_none(self) -> Done {
        self.0.push(NULL);
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Done {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Done {
        self.0.push(NULL);
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Done {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Done {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Done {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Done {
        self.variant(variant);
        value.serialize(&mut *self)?;
        self.0.push(END);
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a, 'b>, Unwritable> {
        open(self, None, ARRAY)
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'a, 'b>, Unwritable> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a, 'b>, Unwritable> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'b>, Unwritable> {
        open(self, Some(variant), ARRAY)
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a, 'b>, Unwritable> {
        open(self, None, OBJECT)
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a, 'b>, Unwritable> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'b>, Unwritable> {
        open(self, Some(variant), OBJECT)
    }
}

/// Opens an array or an object (`bracket`), inside `{"variant": ...}` when given a variant.
fn open<'a, 'b>(
    tree: &'a mut Tree<'b>,
    variant: Option<&str>,
    bracket: u8,
) -> Result<Compound<'a, 'b>, Unwritable> {
    if let Some(variant) = variant {
        tree.variant(variant);
    }
    tree.0.push(bracket);
    Ok(Compound {
        tree,
        ends: 1 + usize::from(variant.is_some()),
    })
}

/// An array or an object being written; `ends` is how many are closed at its end (two for an
/// enum variant's content inside its `{"variant": ...}`).
struct Compound<'a, 'b> {
    tree: &'a mut Tree<'b>,
    ends: usize,
}

impl Compound<'_, '_> {
    fn element<T: ?Sized + Serialize>(&mut self, value: &T) -> Done {
        value.serialize(&mut *self.tree)
    }

    fn end(self) -> Done {
        for _ in 0..self.ends {
            self.tree.0.push(END);
        }
        Ok(())
    }
}

/// serde's traits for the elements of arrays (`element`) and the fields of structs (`field`):
/// each writes what it is given, and closes what it opened.
macro_rules! compound {
    ($($trait:ident::$method:ident($($kind:tt)*)),* $(,)?) => {$(
        impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = Unwritable;
            compound!(@write $method $($kind)*);
            fn end(self) -> Done {
                Compound::end(self)
            }
        }
    )*};
    (@write $method:ident element) => {
        fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Done {
            self.element(value)
        }
    };
    (@write $method:ident field) => {
        fn $method<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Done {
            self.tree.string(key.as_bytes());
            self.element(value)
        }
    };
}

compound!(
    SerializeSeq::serialize_element(element),
    SerializeTuple::serialize_element(element),
    SerializeTupleStruct::serialize_field(element),
    SerializeTupleVariant::serialize_field(element),
    SerializeStruct::serialize_field(field),
    SerializeStructVariant::serialize_field(field),
);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Unwritable;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Done {
        self.element(key)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Done {
        self.element(value)
    }
    fn end(self) -> Done {
        Compound::end(self)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn tree(value: &impl Serialize) -> Vec<u8> {
        let mut out = Vec::new();
        value.serialize(&mut Tree(&mut out)).unwrap();
        out
    }

    /// A random JSON value from a small alphabet, so that pairs of them are often equal or
    /// nearly so: strings that are each other's prefixes, keys that move between levels,
    /// numbers that are equal as JSON but not as types.
    fn next(seed: &mut u64, n: u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed % n
    }

    fn random_value(seed: &mut u64, depth: u32) -> Value {
        // Some hold the tags' own bytes: without its length, a string could end anywhere.
        const WORDS: [&str; 8] = ["", "a", "ab", "b", "asb", "s.", "a\"b", "é"];
        match next(seed, if depth == 0 { 6 } else { 8 }) {
            0 => Value::Null,
            1 => Value::Bool(next(seed, 2) == 0),
            2 => json!(next(seed, 3)),
            3 => json!(next(seed, 3) as i64 - 1),
            4 => json!([0.5, 1.0, -0.0][next(seed, 3) as usize]),
            5 => Value::String(WORDS[next(seed, 8) as usize].to_owned()),
            6 => Value::Array(
                (0..next(seed, 3))
                    .map(|_| random_value(seed, depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..next(seed, 3))
                    .map(|_| {
                        let key = WORDS[next(seed, 8) as usize].to_owned();
                        (key, random_value(seed, depth - 1))
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn two_values_are_written_alike_exactly_when_their_json_is_the_same() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        let values: Vec<Value> = (0..3000).map(|_| random_value(&mut seed, 3)).collect();
        let written: Vec<(String, Vec<u8>)> = values
            .iter()
            .map(|v| (serde_json::to_string(v).unwrap(), tree(v)))
            .collect();
        let mut same = 0;
        for (i, a) in written.iter().enumerate() {
            for b in &written[i + 1..] {
                assert_eq!(a.0 == b.0, a.1 == b.1, "{} and {}", a.0, b.0);
                same += usize::from(a.0 == b.0);
            }
        }
        // The alphabet is small enough that many pairs are equal: the test sees both sides.
        assert!(same > 1000, "only {same} equal pairs");
    }

    #[test]
    fn runs_of_values_do_not_run_together() {
        // The same characters split otherwise, or moved between levels, are other bytes.
        let pairs = [
            (json!(["ab", "c"]), json!(["a", "bc"])),
            (json!(["a", "b"]), json!(["asb"])),
            (json!([["a"], "b"]), json!([["a", "b"]])),
            (json!({"a": "b", "c": "d"}), json!({"a": "bcd"})),
            (json!({"a": {"b": 1}}), json!({"a": {}, "b": 1})),
            (json!([1, 2]), json!([12])),
            (json!(""), json!(null)),
        ];
        for (a, b) in pairs {
            assert_ne!(tree(&a), tree(&b), "{a} and {b}");
        }
    }

    #[derive(serde::Serialize)]
    enum Shape {
        Unit,
        Newtype(u32),
        Tuple(u32, u32),
        Struct { x: u32 },
    }

    #[test]
    fn enums_and_structs_are_written_as_their_json_objects() {
        #[derive(serde::Serialize)]
        struct Point {
            x: u32,
        }
        // Each derived shape is written as the value serde_json would write for it.
        let cases: [(Vec<u8>, Value); 5] = [
            (tree(&Shape::Unit), json!("Unit")),
            (tree(&Shape::Newtype(1)), json!({"Newtype": 1})),
            (tree(&Shape::Tuple(1, 2)), json!({"Tuple": [1, 2]})),
            (tree(&Shape::Struct { x: 1 }), json!({"Struct": {"x": 1}})),
            (tree(&Point { x: 1 }), json!({"x": 1})),
        ];
        for (written, json) in cases {
            assert_eq!(written, tree(&json), "{json}");
        }
        assert_eq!(tree(&Some(1u8)), tree(&1i64));
        assert_eq!(tree(&None::<u8>), tree(&()));
    }

    #[test]
    fn the_digest_of_values_is_that_of_their_written_trees() {
        let mut hasher = Hasher::default();
        hasher.value(&json!({"a": "b"}));
        hasher.value(&"c");
        let mut bytes = tree(&json!({"a": "b"}));
        bytes.extend(tree(&"c"));
        let expected = digest::digest(&digest::SHA256, &bytes);
        assert_eq!(&hasher.finish()[..], expected.as_ref());
    }
}
