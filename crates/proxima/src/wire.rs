//! Wire formats of the APIs Proxima speaks, each with its conversions to and from the canonical
//! model. A format is written once and used on both sides: the OpenAI chat format is what the
//! OpenAI surface reads and writes, and what the `openai` provider writes and reads.

/// Starting size of buffers that JSON bodies are written into: a typical chat answer or request
/// fits, so the buffer is not regrown (and copied) several times on the way.
pub const JSON_CAPACITY: usize = 1024;

/// The elements of a comma-separated header list (RFC 9110, 5.6.1) across every copy of the
/// header, trimmed: `Connection`, `Cache-Control`, `Accept`.
pub fn header_list(
    headers: &http::HeaderMap,
    name: http::HeaderName,
) -> impl Iterator<Item = &str> + '_ {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Reads a JSON body. The bytes are checked as UTF-8 in one pass, then read as text, which
/// serde_json reads without checking each string again as it does reading bytes (that was
/// 2,800 instructions of a plain chat call, request and answer). Bytes that are not UTF-8 are
/// read as bytes, so that the error says where.
pub fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// An object's key as a wire type reads it: borrowed from the input when it holds no escapes.
pub struct Key<'de>(pub std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Key<'de>, D::Error> {
        struct Text;
        impl<'de> serde::de::Visitor<'de> for Text {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(key.to_owned())))
            }
            fn visit_string<E>(self, key: String) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(key)))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// `Deserialize` for a wire struct that keeps the fields it does not model in its `extra` map.
/// It starts from `Default`; a key listed as `required` must be present ("missing field" as
/// serde's derive says it), the others may be left out. `#[serde(flatten)]` does the same, but
/// first copies the whole object into a buffer, and nested, each level copies again: about 600
/// of the 9,000 instructions of reading a stream chunk whole.
macro_rules! deserialize_with_extra {
    ($wire:ty, $expecting:literal, $(required [$($required:literal),+],)? { $($key:literal => $field:ident),+ $(,)? }) => {
        impl<'de> serde::Deserialize<'de> for $wire {
            fn deserialize<D>(deserializer: D) -> Result<$wire, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct Fields;
                impl<'de> serde::de::Visitor<'de> for Fields {
                    type Value = $wire;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$wire, A::Error> {
                        const REQUIRED: &[&str] = &[$($($required),+)?];
                        let mut present = [false; REQUIRED.len()];
                        let mut wire = <$wire>::default();
                        while let Some($crate::wire::Key(key)) = map.next_key()? {
                            match &*key {
                                $($key => {
                                    wire.$field = map.next_value()?;
                                    if let Some(i) = REQUIRED.iter().position(|r| *r == $key) {
                                        present[i] = true;
                                    }
                                })+
                                _ => {
                                    wire.extra.insert(key.into_owned(), map.next_value()?);
                                }
                            }
                        }
                        if let Some(i) = present.iter().position(|p| !p) {
                            return Err(serde::de::Error::missing_field(REQUIRED[i]));
                        }
                        Ok(wire)
                    }
                }
                deserializer.deserialize_map(Fields)
            }
        }
    };
}

pub mod anthropic;
pub mod conversations;
pub mod files;
pub mod gemini;
pub mod openai;
pub mod responses;
pub mod vector_stores;

#[cfg(test)]
mod tests {
    use super::from_json;
    use serde_json::Value;

    #[test]
    fn a_body_reads_as_text_the_same_as_bytes() {
        let body =
            r#"{"model":"m","messages":[{"role":"user","content":"héllo \"wörld\" \u00e9 ✓"}]}"#;
        let text: Value = from_json(body.as_bytes()).unwrap_or_default();
        let bytes: Value = serde_json::from_slice(body.as_bytes()).unwrap_or_default();
        assert_eq!(text, bytes);
        assert_eq!(text["messages"][0]["content"], "héllo \"wörld\" é ✓");
    }

    #[test]
    fn a_body_that_is_not_utf8_or_not_json_fails_where_reading_bytes_does() {
        let broken_utf8 = b"{\"content\":\"caf\xe9\"}";
        let broken_json = b"{\"content\": nope}";
        for body in [&broken_utf8[..], &broken_json[..]] {
            let ours = from_json::<Value>(body).err().map(|e| e.to_string());
            let serdes = serde_json::from_slice::<Value>(body)
                .err()
                .map(|e| e.to_string());
            assert!(ours.is_some(), "{body:?} must fail");
            assert_eq!(ours, serdes);
        }
    }
}
