//! The one deserialization helper the file format's leaf files share ([`from_str_with`]): it
//! imports nothing of the crate, so the forwarded-identity settings ([`super::forward`]) can
//! use it without importing the rest of the format.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// Reads a string and converts it *inside* the visitor: serde_yaml_ng marks an error raised
/// there with the string's own line, column and path (an error raised after the string has
/// been returned is marked with the enclosing mapping's position instead).
pub fn from_str_with<'de, D, T, F>(d: D, expecting: &'static str, convert: F) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(&str) -> Result<T, String>,
{
    struct StrVisitor<F>(F, &'static str);
    impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for StrVisitor<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.1)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(StrVisitor(convert, expecting))
}
