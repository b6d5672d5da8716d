//! Trove's payload encryption (`trove/common/crypto_utils.py`): AES-256-CBC keyed with the
//! lowercase hex MD5 of `instance_rpc_encr_key`, PKCS#7 padding, `base64(IV ‖ ciphertext)`.

use aes::Aes256;
use aes::cipher::block_padding::{NoPadding, Pkcs7};
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use md5::{Digest, Md5};
use netiso_config::pyjson;
use serde_json::Value;

use crate::error::CryptoError;

const BLOCK: usize = 16;

/// Lenient base64 decoding: padding optional, like Python's non-validating `b64decode`.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The AES key derived from an instance's `instance_rpc_encr_key`.
#[derive(Clone)]
pub struct InstanceKey {
    aes_key: [u8; 32],
}

impl std::fmt::Debug for InstanceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InstanceKey(<redacted>)")
    }
}

impl InstanceKey {
    /// Derives the AES key from the key string Trove injects in `guest_info.conf`.
    ///
    /// Trove generates 32 alphanumeric characters; anything else is refused so that a
    /// truncated or mangled configuration fails loudly instead of garbling every message.
    pub fn new(key_string: &str) -> Result<Self, CryptoError> {
        if key_string.len() != 32 || !key_string.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(CryptoError::BadKey);
        }
        let digest = Md5::digest(key_string.as_bytes());
        let mut aes_key = [0u8; 32];
        for (pair, byte) in aes_key.chunks_exact_mut(2).zip(digest.iter()) {
            let hex = format!("{byte:02x}");
            pair.copy_from_slice(hex.as_bytes());
        }
        Ok(Self { aes_key })
    }

    /// Encrypts `json.dumps(value)` with a random IV.
    pub fn encrypt_value(&self, value: &Value) -> String {
        let mut iv = [0u8; BLOCK];
        fill_random(&mut iv);
        self.encrypt_value_with_iv(value, &iv)
    }

    /// Encrypts with a given IV; used by the test vectors.
    pub fn encrypt_value_with_iv(&self, value: &Value, iv: &[u8; BLOCK]) -> String {
        let plaintext = pyjson::dumps(value);
        let cipher = cbc::Encryptor::<Aes256>::new(&self.aes_key.into(), iv.into());
        let ciphertext = cipher.encrypt_padded_vec_mut::<Pkcs7>(plaintext.as_bytes());
        let mut wire = Vec::with_capacity(BLOCK + ciphertext.len());
        wire.extend_from_slice(iv);
        wire.extend_from_slice(&ciphertext);
        STANDARD.encode(wire)
    }

    /// Decrypts a wire string back to its JSON value.
    ///
    /// Padding is stripped by its last byte without validation, as Trove does, so the only
    /// integrity check is that the plaintext parses as JSON.
    pub fn decrypt_value(&self, wire: &str) -> Result<Value, CryptoError> {
        self.decrypt(wire, false)
    }

    /// Decrypts like [`decrypt_value`](Self::decrypt_value) but also requires well-formed
    /// PKCS#7 padding, which Trove's encryptor always writes. Used on received requests: a
    /// sender without the key then forges a value that decrypts with probability about
    /// 2^-120 instead of about 1 in 6000 (a random block whose last byte strips all but one
    /// digit). Every failure is reported alike to the sender, so this is no padding oracle.
    pub fn decrypt_value_strict(&self, wire: &str) -> Result<Value, CryptoError> {
        self.decrypt(wire, true)
    }

    fn decrypt(&self, wire: &str, strict: bool) -> Result<Value, CryptoError> {
        let raw = decode_wire(wire)?;
        let (iv, ciphertext) = raw.split_at(BLOCK);
        let mut iv_block = [0u8; BLOCK];
        iv_block.copy_from_slice(iv);
        let cipher = cbc::Decryptor::<Aes256>::new(&self.aes_key.into(), &iv_block.into());
        let plain = cipher
            .decrypt_padded_vec_mut::<NoPadding>(ciphertext)
            .map_err(|_| CryptoError::BadLength(raw.len()))?;
        let pad = usize::from(plain.last().copied().unwrap_or(0));
        if strict
            && (pad == 0
                || pad > BLOCK
                || !plain[plain.len() - pad..]
                    .iter()
                    .all(|&b| usize::from(b) == pad))
        {
            return Err(CryptoError::BadPadding);
        }
        // Python's `data[:-n]` is empty for n == 0 and for n beyond the length.
        let keep = if pad == 0 || pad > plain.len() {
            0
        } else {
            plain.len() - pad
        };
        serde_json::from_slice(&plain[..keep]).map_err(|err| CryptoError::NotJson(err.to_string()))
    }
}

/// The ciphertext blocks of a wire string without its IV, as the receiver decodes them.
///
/// A replay detector keys on these: the IV can be altered to change the first plaintext block
/// at will (CBC without a MAC), and the text form can be padded with characters the lenient
/// decoder skips, but the blocks after the IV cannot change without garbling the plaintext.
pub fn ciphertext_body(wire: &str) -> Result<Vec<u8>, CryptoError> {
    let mut raw = decode_wire(wire)?;
    Ok(raw.split_off(BLOCK))
}

/// Base64-decodes a wire string the way Python's non-validating `b64decode` does and checks
/// that it holds an IV and whole blocks.
fn decode_wire(wire: &str) -> Result<Vec<u8>, CryptoError> {
    let is_alphabet = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/');
    // What Trove and we send: the alphabet and its padding, decoded in place. Anything else
    // is filtered first, as Python discards what is not in the alphabet.
    let trimmed = wire.trim_end_matches('=');
    let raw = if trimmed.bytes().all(is_alphabet) {
        LENIENT.decode(trimmed.as_bytes())
    } else {
        let filtered: Vec<u8> = wire.bytes().filter(|&b| is_alphabet(b)).collect();
        LENIENT.decode(&filtered)
    }
    .map_err(|err| CryptoError::NotBase64(err.to_string()))?;
    if raw.len() < 2 * BLOCK || raw.len() % BLOCK != 0 {
        return Err(CryptoError::BadLength(raw.len()));
    }
    Ok(raw)
}

fn fill_random(buf: &mut [u8]) {
    if let Err(err) = getrandom::fill(buf) {
        // The OS random source failing is unrecoverable; an all-zero IV would weaken every message.
        panic!("operating system random source failed: {err}");
    }
}

/// A random 128-bit id as 32 lowercase hex characters, like Python's `uuid.uuid4().hex`.
pub fn uuid4_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "Bm2yN8q4ZtP0xW7cK3vR9aL5sD1fH6jE";
    const IV: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    /// A float must come back as the same `f64`: Python writes the shortest text that reads
    /// back exactly, and serde_json's default parser can land one unit in the last place away
    /// (hence its `float_roundtrip` feature). Found by the Trove interop property test.
    #[test]
    fn floats_survive_encryption_exactly() {
        let key = InstanceKey::new(KEY).unwrap();
        for float in [
            3.574_912_344_321_215_3e-236_f64,
            -1.073_214_392_230_405_1e-12,
            0.1,
            1e300,
        ] {
            let value = json!([float]);
            let back = key.decrypt_value(&key.encrypt_value(&value)).unwrap();
            assert_eq!(
                back[0].as_f64().unwrap().to_bits(),
                float.to_bits(),
                "{float:e}"
            );
        }
    }

    #[test]
    fn key_derivation_is_hex_md5_text() {
        let key = InstanceKey::new(KEY).unwrap();
        assert_eq!(&key.aes_key, b"f4ff1d566d00e88d380df96ebd157152");
        let other = InstanceKey::new("Qm9kZ3kxMjM0NTY3ODlhYmNkZWZnaGlq").unwrap();
        assert_eq!(&other.aes_key, b"b9872eaf8a2045ae1b156b3dbd88508c");
    }

    #[test]
    fn fixed_iv_vectors_are_byte_exact() {
        let key = InstanceKey::new(KEY).unwrap();
        for (value, wire) in [
            (
                json!("8.0.36"),
                "AAECAwQFBgcICQoLDA0OD+d4v7LIzGm/BgKClqYdolY=",
            ),
            (json!(null), "AAECAwQFBgcICQoLDA0OD/dts0X6k8HpnsA2lgA/gFE="),
            (
                json!({"service_status": "healthy"}),
                "AAECAwQFBgcICQoLDA0OD/Dy6iKKdOmIhPvKeXa+DeLhipHxFiIGX0eAKsYhg5H9",
            ),
            (
                json!("0123456789abcd"),
                "AAECAwQFBgcICQoLDA0OD/qa6A2rePSQCri4q+/89UIh6Vdz8yrieIShvHPllS1P",
            ),
            (json!(2048), "AAECAwQFBgcICQoLDA0ODykdbCH26qLtiq6h+4zD/Sc="),
        ] {
            assert_eq!(key.encrypt_value_with_iv(&value, &IV), wire, "{value}");
            assert_eq!(key.decrypt_value(wire).unwrap(), value);
        }
    }

    #[test]
    fn random_iv_vectors_decrypt() {
        let key = InstanceKey::new("Qm9kZ3kxMjM0NTY3ODlhYmNkZWZnaGlq").unwrap();
        for (wire, value) in [
            ("yw+Fcz+MS06pbVIsEyL/UuxEpL02HB4DMMZ6zk8h+bM=", json!(2048)),
            (
                "Pcs0QC5pQtOVAPAi5zamluANuilhHiKcFm/YFcbbsRo=",
                json!("8.0.36"),
            ),
            (
                "pSI/WaHNtbAaZqlXvrrDrSs9SnV2IQfUPIGOu1Qs72M=",
                json!("/dev/vdb"),
            ),
            ("xMUGNd5axDLvclTL4q+UdNGFNBj/O4DyzDeZdmPGJ+w=", json!(null)),
        ] {
            assert_eq!(key.decrypt_value(wire).unwrap(), value, "{wire}");
        }
    }

    #[test]
    fn random_iv_round_trips_and_differs() {
        let key = InstanceKey::new(KEY).unwrap();
        let value = json!({"a": [1, 2.5, "é"], "b": null});
        let first = key.encrypt_value(&value);
        let second = key.encrypt_value(&value);
        assert_ne!(first, second);
        assert_eq!(key.decrypt_value(&first).unwrap(), value);
    }

    #[test]
    fn bad_input_is_rejected_clearly() {
        let key = InstanceKey::new(KEY).unwrap();
        assert_eq!(InstanceKey::new("short").unwrap_err(), CryptoError::BadKey);
        assert_eq!(
            key.decrypt_value("AAEC").unwrap_err(),
            CryptoError::BadLength(3)
        );
        assert!(matches!(
            key.decrypt_value("***"),
            Err(CryptoError::BadLength(0))
        ));
        let other = InstanceKey::new("Qm9kZ3kxMjM0NTY3ODlhYmNkZWZnaGlq").unwrap();
        let wire = other.encrypt_value(&json!("secret"));
        assert!(matches!(
            key.decrypt_value(&wire),
            Err(CryptoError::NotJson(_))
        ));
    }

    #[test]
    fn strict_decryption_requires_pkcs7_padding() {
        let key = InstanceKey::new(KEY).unwrap();
        for (value, wire) in [
            (
                json!("8.0.36"),
                "AAECAwQFBgcICQoLDA0OD+d4v7LIzGm/BgKClqYdolY=",
            ),
            (
                json!("0123456789abcd"),
                "AAECAwQFBgcICQoLDA0OD/qa6A2rePSQCri4q+/89UIh6Vdz8yrieIShvHPllS1P",
            ),
        ] {
            assert_eq!(key.decrypt_value_strict(wire).unwrap(), value);
        }
        // A block whose plaintext is `1` followed by fifteen bytes ending in 0x0f: lenient
        // decryption strips fifteen bytes and reads the number 1, strict decryption refuses.
        let mut block = [0u8; 16];
        block[0] = b'1';
        block[15] = 15;
        let iv = [7u8; 16];
        let mut buf = block;
        let cipher = cbc::Encryptor::<Aes256>::new(&key.aes_key.into(), &iv.into());
        let ciphertext = cipher
            .encrypt_padded_mut::<NoPadding>(&mut buf, 16)
            .unwrap()
            .to_vec();
        let wire = STANDARD.encode([iv.as_slice(), &ciphertext].concat());
        assert_eq!(key.decrypt_value(&wire).unwrap(), json!(1));
        assert_eq!(
            key.decrypt_value_strict(&wire).unwrap_err(),
            CryptoError::BadPadding
        );
    }

    #[test]
    fn ciphertext_body_ignores_the_iv_and_skipped_characters() {
        let wire = "AAECAwQFBgcICQoLDA0OD+d4v7LIzGm/BgKClqYdolY=";
        let body = ciphertext_body(wire).unwrap();
        assert_eq!(body.len(), 16);
        let other_iv = "BAECAwQFBgcICQoLDA0OD+d4v7LIzGm/BgKClqYdolY=";
        assert_eq!(ciphertext_body(other_iv).unwrap(), body);
        assert_eq!(ciphertext_body(&format!("..{wire}==")).unwrap(), body);
    }

    #[test]
    fn wire_text_with_characters_outside_the_alphabet_decrypts_as_the_clean_text() {
        let key = InstanceKey::new(KEY).unwrap();
        let value = json!({"method": "rpc_ping", "args": {"n": [1, 2.5, "é"]}});
        let clean = key.encrypt_value(&value);
        let wrapped: String = clean
            .as_bytes()
            .chunks(16)
            .map(|line| format!("{}\n", std::str::from_utf8(line).unwrap()))
            .collect();
        for wire in [
            clean.clone(),
            clean.trim_end_matches('=').to_owned(),
            wrapped,
            format!("é {clean}"),
        ] {
            assert_eq!(key.decrypt_value(&wire).unwrap(), value, "{wire:?}");
        }
    }

    #[test]
    fn uuid_hex_is_32_lowercase_hex() {
        let id = uuid4_hex();
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
}
