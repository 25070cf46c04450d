//! The key format: `zpka_` + 43 base64url characters (32 random bytes, no padding) + `_` +
//! 8 lowercase hex characters (the first 4 bytes of SHA-256 over those 43 characters).
//!
//! Example: `zpka_q3Jc0t0yY5p5b5QmR3WJcOZ0bBkX3o8b1w9bQe6oN8c_1f2e3d4c`.
//!
//! The checksum lets the gateway refuse typos and random garbage without a store look-up
//! (and without a Redis round trip or a negative-cache entry per junk token). It is not a
//! secret and adds no security: anyone can compute it.
//!
//! Keys are stored only as `sha256(key)` in lowercase hex ([`KeyHash`]); the display id
//! (`zpka_` + the first 8 random characters) names a key in listings and logs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every key starts with.
pub const PREFIX: &str = "zpka_";
/// Random bytes per key.
const RANDOM_BYTES: usize = 32;
/// Length of the base64url (no padding) encoding of [`RANDOM_BYTES`].
const RANDOM_LEN: usize = 43;
/// Hex characters of the checksum.
const CHECKSUM_LEN: usize = 8;
/// Random characters kept in the display id.
const ID_CHARS: usize = 8;
/// The length of every well-formed key.
pub const KEY_LEN: usize = PREFIX.len() + RANDOM_LEN + 1 + CHECKSUM_LEN;

/// A key that passed the format check (prefix, length, alphabet, checksum).
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    key: &'a str,
    random: &'a str,
}

// The key is a secret: never let `{:?}` print it.
impl std::fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedKey").field("id", &self.display_id()).finish_non_exhaustive()
    }
}

impl ParsedKey<'_> {
    /// The display id: `zpka_` and the first 8 random characters (safe to log and list).
    pub fn display_id(&self) -> String {
        // `random` is checked to be ASCII, so slicing by bytes cannot split a character.
        format!("{PREFIX}{}", &self.random[..ID_CHARS])
    }

    /// The SHA-256 of the whole key, as stores index it.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.key)
    }
}

/// Checks the format of `key` (cheap: no store access). `None` for anything malformed.
pub fn parse(key: &str) -> Option<ParsedKey<'_>> {
    if key.len() != KEY_LEN {
        return None;
    }
    let rest = key.strip_prefix(PREFIX)?;
    let (random, tail) = rest.split_at_checked(RANDOM_LEN)?;
    let sum = tail.strip_prefix('_')?;
    if !random.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return None;
    }
    // Rejects non-canonical encodings (stray bits in the last character) so that one random
    // value has exactly one spelling.
    let mut buf = [0u8; RANDOM_BYTES + 1];
    if URL_SAFE_NO_PAD.decode_slice(random, &mut buf).ok()? != RANDOM_BYTES {
        return None;
    }
    if sum.len() != CHECKSUM_LEN || !sum.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    if checksum(random).as_bytes() != sum.as_bytes() {
        return None;
    }
    Some(ParsedKey { key, random })
}

/// Whether `key` is well formed (see [`parse`]).
pub fn looks_valid(key: &str) -> bool {
    parse(key).is_some()
}

/// The display id of a well-formed key (`None` when malformed, so nothing derived from a
/// stray secret of another system ends up in logs).
pub fn display_id(key: &str) -> Option<String> {
    parse(key).map(|p| p.display_id())
}

/// The checksum of the random part: the first 4 bytes of its SHA-256, lowercase hex.
pub fn checksum(random: &str) -> String {
    let digest = Sha256::digest(random.as_bytes());
    hex(&digest[..CHECKSUM_LEN / 2])
}

/// A new key from the operating system's random generator.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; RANDOM_BYTES];
    getrandom::fill(&mut bytes)?;
    let random = URL_SAFE_NO_PAD.encode(bytes);
    Ok(format!("{PREFIX}{random}_{}", checksum(&random)))
}

/// `sha256(key)`: the only form in which stores keep a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// The hash of a key (of any text; format checks are [`parse`]'s job).
    pub fn of(key: &str) -> Self {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }

    /// Reads 64 lowercase hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(KeyHash(out))
    }

    /// 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Compares in constant time (used to confirm a store match).
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash({})", self.to_hex())
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        generate().unwrap_or_else(|e| panic!("no randomness: {e}"))
    }

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = key();
        let b = key();
        assert_ne!(a, b);
        assert_eq!(a.len(), KEY_LEN);
        assert!(a.starts_with(PREFIX));
        assert!(looks_valid(&a), "{a}");
        let id = display_id(&a).unwrap_or_default();
        assert_eq!(id.len(), PREFIX.len() + ID_CHARS);
        assert!(a.starts_with(&id));
    }

    #[test]
    fn checksum_is_first_four_bytes_of_sha256_of_the_random_part() {
        let k = key();
        let random = &k[PREFIX.len()..PREFIX.len() + RANDOM_LEN];
        let digest = Sha256::digest(random.as_bytes());
        let expected: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(&k[KEY_LEN - CHECKSUM_LEN..], expected);
    }

    #[test]
    fn tampering_is_detected() {
        let k = key();
        // Flip each random character to another alphabet character: the checksum no longer
        // matches (or the encoding stops being canonical).
        for i in PREFIX.len()..PREFIX.len() + RANDOM_LEN {
            let mut bytes = k.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(bytes).unwrap_or_default();
            assert!(!looks_valid(&t), "tampered at {i}");
        }
        let mut bytes = k.clone().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
        assert!(!looks_valid(&String::from_utf8(bytes).unwrap_or_default()));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        let k = key();
        assert!(!looks_valid(""));
        assert!(!looks_valid(&k[1..]));
        assert!(!looks_valid(&format!("{k}0")));
        assert!(!looks_valid(&k.replacen("zpka_", "zpkb_", 1)));
        assert!(!looks_valid(&k.to_uppercase()));
        // The separator before the checksum is at a fixed position.
        let mut bytes = k.clone().into_bytes();
        bytes[PREFIX.len() + RANDOM_LEN] = b'-';
        assert!(!looks_valid(&String::from_utf8(bytes).unwrap_or_default()));
        // Non-ASCII of the right byte length.
        let s = format!("{PREFIX}{}é_{}", "a".repeat(RANDOM_LEN - 2), "0".repeat(CHECKSUM_LEN));
        assert_eq!(s.len(), KEY_LEN);
        assert!(!looks_valid(&s));
    }

    #[test]
    fn hashes_round_trip_and_compare() {
        let k = key();
        let h = KeyHash::of(&k);
        assert_eq!(Some(h), KeyHash::from_hex(&h.to_hex()));
        assert_eq!(h.to_hex().len(), 64);
        assert!(h.ct_eq(&h));
        assert!(!h.ct_eq(&KeyHash::of("other")));
        assert_eq!(KeyHash::from_hex(&h.to_hex().to_uppercase()), None);
        assert_eq!(parse(&k).map(|p| p.hash()), Some(h));
        assert!(!format!("{:?}", parse(&k)).contains(&k));
    }
}
