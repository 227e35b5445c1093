//! Deterministic identifiers.
//!
//! Event and incident ids are content hashes, so the same input gives the same ids
//! on replay, after a restart, and on every engine instance. Parts are length-prefixed
//! so that `("ab", "c")` and `("a", "bc")` never collide.
//!
//! An event id is always `evt_` and 32 hex digits (128 bits), so the correlator
//! keeps it as an [`EventId`] (16 bytes) rather than a string. Join keys and alert
//! identities are kept as 64-bit [`key_hash`]es: XXH3-64, a published algorithm, so
//! checkpointed state stays readable across releases and toolchains.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An incident id: `inc_` and 128 bits of XXH3 over the parts. The parts are rule
/// ids and event ids (themselves BLAKE3 digests of what sources sent), so a fast
/// non-cryptographic hash is enough here, and incidents open on the hot path.
pub fn incident(parts: &[&str]) -> String {
    let mut h = twox_hash::XxHash3_128::new();
    for part in parts {
        h.write(&(part.len() as u64).to_le_bytes());
        h.write(part.as_bytes());
    }
    IdText(prefixed_hex(b"inc_", h.finish_128()))
        .as_str()
        .to_owned()
}

/// A 128-bit hex id over the given parts, with a short type prefix: BLAKE3, since
/// event ids are derived from what sources send and must not collide on purpose.
pub fn derive(prefix: &str, parts: &[&str]) -> String {
    let digest = digest(prefix, parts);
    format!("{prefix}_{}", hex::encode(digest.to_be_bytes()))
}

fn digest(prefix: &str, parts: &[&str]) -> u128 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(prefix.as_bytes());
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let bytes = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&bytes.as_bytes()[..16]);
    u128::from_be_bytes(first)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Eight lowercase hex digits (the first the most significant) as a number, eight
/// bytes at a time (SWAR): every event pushed is parsed, and a loop of table
/// lookups was 4 % of the correlation operator's instructions.
fn parse_hex8(digits: [u8; 8]) -> Option<u32> {
    let x = u64::from_be_bytes(digits);
    if x & HIGH != 0 {
        return None;
    }
    // With every byte below 0x80, adding `0x80 - lo` sets a byte's high bit exactly
    // when it is at least `lo`, and adding `0x7f - hi` when it is above `hi`; no
    // sum carries into the next byte.
    let at_least = |lo: u8| x + u64::from(0x80 - lo) * ONES;
    let above = |hi: u8| x + u64::from(0x7f - hi) * ONES;
    let digit = at_least(b'0') & !above(b'9') & HIGH;
    let letter = at_least(b'a') & !above(b'f') & HIGH;
    if digit | letter != HIGH {
        return None;
    }
    // Each byte's value (`a` is 0x61: its low nibble 1, plus 9), then the eight
    // nibbles packed pairwise into 32 bits.
    let v = (x & 0x0f0f_0f0f_0f0f_0f0f) + (letter >> 7) * 9;
    let v = (v | (v >> 4)) & 0x00ff_00ff_00ff_00ff;
    let v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
    let v = (v | (v >> 16)) & 0x0000_0000_ffff_ffff;
    Some(v as u32)
}

/// `value` as 32 lowercase hex digits after a four-byte prefix (`evt_`, `inc_`).
fn prefixed_hex(prefix: &[u8; 4], value: u128) -> [u8; 36] {
    let mut text = [0u8; 36];
    text[..4].copy_from_slice(prefix);
    // Cannot fail: 16 bytes are 32 digits, the room left.
    let _ = hex::encode_to_slice(value.to_be_bytes(), &mut text[4..]);
    text
}

/// An id's text on the stack: `evt_` or `inc_` and 32 hex digits.
#[derive(Clone, Copy)]
pub struct IdText([u8; 36]);

impl fmt::Debug for IdText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl IdText {
    pub fn as_str(&self) -> &str {
        // ASCII by construction.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// An event id as a number: `evt_<32 hex digits>`, as two 64-bit halves (so records
/// holding one keep 8-byte alignment). Orders like its text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    hi: u64,
    lo: u64,
}

impl EventId {
    /// Parses a canonical event id (`evt_` and 32 lowercase hex digits).
    pub fn parse(text: &str) -> Option<EventId> {
        let hex: &[u8; 32] = text.strip_prefix("evt_")?.as_bytes().try_into().ok()?;
        let word = |i: usize| {
            let mut digits = [0u8; 8];
            digits.copy_from_slice(&hex[8 * i..8 * i + 8]);
            parse_hex8(digits).map(u64::from)
        };
        Some(EventId {
            hi: (word(0)? << 32) | word(1)?,
            lo: (word(2)? << 32) | word(3)?,
        })
    }

    /// The id's text, `evt_` and 32 hex digits, without formatting machinery.
    pub fn text(self) -> IdText {
        IdText(prefixed_hex(b"evt_", self.as_u128()))
    }

    /// The id as one number.
    pub fn as_u128(self) -> u128 {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }

    /// The id of an event whose given id is not canonical (a foreign CloudEvent's):
    /// a hash of its source and that id.
    pub fn foreign(source: &str, given: &str) -> String {
        EventId::foreign_id(source, given).to_string()
    }

    /// [`EventId::foreign`], as a number.
    pub fn foreign_id(source: &str, given: &str) -> EventId {
        let d = digest("evt", &["foreign", source, given]);
        EventId {
            hi: (d >> 64) as u64,
            lo: d as u64,
        }
    }

    /// Whether `text` is a canonical event id.
    pub fn is_canonical(text: &str) -> bool {
        EventId::parse(text).is_some()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// Text (`evt_…`) in human-readable formats, 16 raw bytes in binary ones (two
/// varints of a hash are 20 bytes, written a bit at a time).
impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&self.hi.to_be_bytes());
            bytes[8..].copy_from_slice(&self.lo.to_be_bytes());
            s.serialize_bytes(&bytes)
        }
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventId, D::Error> {
        if d.is_human_readable() {
            let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
            EventId::parse(&text)
                .ok_or_else(|| serde::de::Error::custom(format!("not an event id: {text:?}")))
        } else {
            d.deserialize_bytes(IdBytes)
        }
    }
}

/// The binary form of an [`EventId`]: 16 bytes, high half first.
struct IdBytes;

impl<'de> serde::de::Visitor<'de> for IdBytes {
    type Value = EventId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("16 bytes of an event id")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<EventId, E> {
        let bytes: [u8; 16] = v
            .try_into()
            .map_err(|_| E::invalid_length(v.len(), &self))?;
        let (hi, lo) = bytes.split_at(8);
        let half = |b: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_be_bytes(a)
        };
        Ok(EventId {
            hi: half(hi),
            lo: half(lo),
        })
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A stable 64-bit hash of string parts, separated so `("ab","c") != ("a","bc")`.
pub fn key_hash(parts: &[&str]) -> u64 {
    use twox_hash::XxHash3_64;
    // Short keys (the usual scope + entity) are hashed in one call from the stack.
    let mut buf = [0u8; 192];
    let mut len = 0;
    for part in parts {
        let need = 4 + part.len();
        if len + need > buf.len() {
            return key_hash_long(parts);
        }
        buf[len..len + 4].copy_from_slice(&(part.len() as u32).to_le_bytes());
        buf[len + 4..len + need].copy_from_slice(part.as_bytes());
        len += need;
    }
    XxHash3_64::oneshot(&buf[..len])
}

fn key_hash_long(parts: &[&str]) -> u64 {
    let mut bytes = Vec::new();
    for part in parts {
        bytes.extend_from_slice(&(part.len() as u32).to_le_bytes());
        bytes.extend_from_slice(part.as_bytes());
    }
    twox_hash::XxHash3_64::oneshot(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_text_in_json_and_sixteen_bytes_in_postcard() {
        let id = EventId::foreign_id("test", "x");
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<EventId>(&json).expect("back"), id);
        let bytes = postcard::to_stdvec(&id).expect("postcard");
        assert_eq!(bytes.len(), 17, "a length byte and 16 bytes");
        assert_eq!(postcard::from_bytes::<EventId>(&bytes).expect("back"), id);
        // Order survives: the high half comes first, big-endian.
        let other = EventId::foreign_id("test", "y");
        let b2 = postcard::to_stdvec(&other).expect("postcard");
        assert_eq!(id.cmp(&other), bytes.cmp(&b2));
        let short = postcard::to_stdvec(&[1u8; 15][..]).expect("postcard");
        assert!(postcard::from_bytes::<EventId>(&short).is_err());
    }

    #[test]
    fn ids_are_stable_and_boundary_safe() {
        assert_eq!(derive("evt", &["a", "b"]), derive("evt", &["a", "b"]));
        assert_ne!(derive("evt", &["ab", "c"]), derive("evt", &["a", "bc"]));
        assert!(derive("inc", &["x"]).starts_with("inc_"));
        assert_eq!(derive("inc", &["x"]).len(), 4 + 32);
    }

    #[test]
    fn incident_ids_are_stable_and_boundary_safe() {
        assert_eq!(incident(&["a", "b"]), incident(&["a", "b"]));
        assert_ne!(incident(&["ab", "c"]), incident(&["a", "bc"]));
        assert!(incident(&["x"]).starts_with("inc_"));
        assert_eq!(incident(&["x"]).len(), 4 + 32);
    }

    #[test]
    fn event_ids_round_trip_as_numbers() {
        let text = derive("evt", &["alertmanager", "abc@t", "firing"]);
        let id = EventId::parse(&text).expect("canonical");
        assert_eq!(id.to_string(), text);
        assert!(EventId::parse("evt_XYZ").is_none());
        assert!(EventId::parse("my-own-id").is_none());
        assert!(EventId::parse(&format!("{text}0")).is_none());
        // Only lowercase hex digits, in both halves.
        let upper = format!("evt_{}", text[4..].to_uppercase());
        assert!(upper != text && EventId::parse(&upper).is_none());
        for at in [4, 19, 20, 35] {
            let mut bad = text.clone().into_bytes();
            bad[at] = b'g';
            assert!(EventId::parse(std::str::from_utf8(&bad).expect("ascii")).is_none());
        }
        let max = format!("evt_{}", "f".repeat(32));
        assert_eq!(EventId::parse(&max).map(|i| i.to_string()), Some(max));
        assert!(EventId::is_canonical(&EventId::foreign("x", "my-own-id")));
    }

    /// What `EventId::parse` means, written plainly.
    fn parse_reference(text: &str) -> Option<u128> {
        let hex = text.strip_prefix("evt_")?;
        let lowercase = hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        lowercase
            .then(|| u128::from_str_radix(hex, 16).ok())
            .flatten()
    }

    proptest::proptest! {
        #[test]
        fn hex_text_is_what_format_writes(value: u128) {
            let id = EventId { hi: (value >> 64) as u64, lo: value as u64 };
            proptest::prop_assert_eq!(id.to_string(), format!("evt_{value:032x}"));
            proptest::prop_assert_eq!(EventId::parse(&id.to_string()), Some(id));
        }

        #[test]
        fn parsing_agrees_with_the_plain_reading(
            value: u128,
            at in 4usize..36,
            byte in proptest::prelude::any::<u8>(),
        ) {
            let mut text = format!("evt_{value:032x}").into_bytes();
            text[at] = byte;
            // Not UTF-8 (a lone high byte) is no `&str`: nothing to parse.
            if let Ok(text) = std::str::from_utf8(&text) {
                proptest::prop_assert_eq!(
                    EventId::parse(text).map(EventId::as_u128),
                    parse_reference(text)
                );
            }
        }
    }

    #[test]
    fn every_byte_around_the_hex_digits_is_refused() {
        // The edges of each range the SWAR test checks: '/', ':', '`', 'g', and
        // the uppercase letters.
        for byte in 0u8..0x80 {
            let text = format!("evt_{}{}", char::from(byte), "0".repeat(31));
            assert_eq!(
                EventId::parse(&text).map(EventId::as_u128),
                parse_reference(&text),
                "{byte:#x}"
            );
        }
    }

    #[test]
    fn key_hashes_are_stable_and_boundary_safe() {
        assert_eq!(
            key_hash(&["prod", "checkout"]),
            key_hash(&["prod", "checkout"])
        );
        assert_ne!(key_hash(&["ab", "c"]), key_hash(&["a", "bc"]));
        let long = "x".repeat(300);
        assert_eq!(key_hash(&["prod", &long]), key_hash_long(&["prod", &long]));
        // XXH3 is a published algorithm: this value must never change, or
        // checkpoints written by earlier releases would no longer match.
        assert_eq!(key_hash(&[]), 0x2d06_8005_38d3_94c2);
    }
}
