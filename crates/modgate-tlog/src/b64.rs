//! Base64 as Go's `encoding/base64.StdEncoding` reads and writes it: standard alphabet, `=`
//! padding required, non-zero trailing bits accepted, `\r` and `\n` in the input ignored — so a
//! key, hash or signature Go accepts is accepted here and nothing more.

use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// `base64.StdEncoding.EncodeToString`.
pub(crate) fn encode(data: &[u8]) -> String {
    GO_STD.encode(data)
}

/// `base64.StdEncoding.DecodeString`; `None` where Go returns an error.
pub(crate) fn decode(s: &str) -> Option<Vec<u8>> {
    if s.contains(['\r', '\n']) {
        let cleaned: String = s.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        return GO_STD.decode(cleaned).ok();
    }
    GO_STD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_as_lenient_as_go() {
        assert_eq!(encode(b"ab"), "YWI=");
        assert_eq!(decode("YWI=").as_deref(), Some(&b"ab"[..]));
        // Go requires the padding …
        assert_eq!(decode("YWI"), None);
        // … ignores line breaks and non-zero trailing bits.
        assert_eq!(decode("YW\r\nI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(decode("YWJ=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(decode("YW I="), None);
    }
}
