//! Golden vectors in tests/vectors/*.txt, checked both ways: encoding the recorded inputs
//! gives the recorded stream, and decoding the recorded stream gives the recorded plaintext.
//! `tests/vectors/crosscheck.py` decodes and re-encodes them with an independent
//! implementation (Python `cryptography` + `hmac`).
//!
//! To regenerate after a deliberate format change (which also needs a new version):
//! `LOCKBOX_WRITE_VECTORS=1 cargo test -p lockbox-format --test vectors`.

use std::path::PathBuf;

use lockbox_crypto::{CryptoRng, RngCore};
use lockbox_format::{BackupKey, Decoder, Encoder, EncoderParams};

/// Replays fixed bytes as "randomness", to pin the backup id.
struct Replay(Vec<u8>);
impl RngCore for Replay {
    fn next_u32(&mut self) -> u32 {
        unimplemented_rng()
    }
    fn next_u64(&mut self) -> u64 {
        unimplemented_rng()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        assert!(dest.len() <= self.0.len(), "vector RNG ran dry");
        let rest = self.0.split_off(dest.len());
        dest.copy_from_slice(&self.0);
        self.0 = rest;
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for Replay {}
fn unimplemented_rng() -> ! {
    panic!("the encoder only uses fill_bytes")
}

struct Vector {
    name: &'static str,
    key: [u8; 32],
    rng: [u8; 32],
    created_unix_ms: u64,
    chunk_size: usize,
    plaintext: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let base = |name, plaintext: Vec<u8>| Vector {
        name,
        key: std::array::from_fn(|i| i as u8),
        rng: std::array::from_fn(|i| 0xA0 ^ i as u8),
        created_unix_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
        chunk_size: 1024,
        plaintext,
    };
    let text = |n: usize| -> Vec<u8> {
        b"lockbox golden vector. "
            .iter()
            .copied()
            .cycle()
            .take(n)
            .collect()
    };
    vec![
        base("empty", Vec::new()),
        base("one_byte", b"A".to_vec()),
        base("one_chunk_minus_one", text(1023)),
        base("exactly_one_chunk", text(1024)),
        base("multi_chunk", text(3000)),
    ]
}

fn encode(v: &Vector) -> Vec<u8> {
    let params = EncoderParams {
        chunk_size: v.chunk_size,
        created_unix_ms: v.created_unix_ms,
    };
    let key = BackupKey::from_bytes(v.key);
    let mut enc = Encoder::new(&key, params, &mut Replay(v.rng.to_vec())).unwrap();
    let mut out = enc.header_bytes().to_vec();
    enc.update(&v.plaintext, &mut out).unwrap();
    enc.finish(&mut out).unwrap();
    out
}

fn render(v: &Vector, stream: &[u8]) -> String {
    format!(
        "# lockbox stream format v1 test vector (see docs/format.md)\n\
         name = {}\nkey = {}\nrng = {}\ncreated_unix_ms = {}\nchunk_size = {}\n\
         plaintext = {}\nstream = {}\n",
        v.name,
        hex::encode(v.key),
        hex::encode(v.rng),
        v.created_unix_ms,
        v.chunk_size,
        hex::encode(&v.plaintext),
        hex::encode(stream),
    )
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(" = "))
        .unwrap_or_else(|| panic!("vector has no {name}"))
}

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/vectors/{name}.txt"))
}

#[test]
fn golden_vectors_both_ways() {
    let write = std::env::var_os("LOCKBOX_WRITE_VECTORS").is_some();
    for v in vectors() {
        let stream = encode(&v);
        if write {
            std::fs::write(path(v.name), render(&v, &stream)).unwrap();
        }
        let text = std::fs::read_to_string(path(v.name)).unwrap();
        assert_eq!(
            text,
            render(&v, &stream),
            "{}: encoder output changed",
            v.name
        );

        let recorded = hex::decode(field(&text, "stream")).unwrap();
        let key = BackupKey::from_bytes(
            hex::decode(field(&text, "key"))
                .unwrap()
                .try_into()
                .unwrap(),
        );
        let mut dec = Decoder::new(&key);
        let mut out = Vec::new();
        dec.update(&recorded, &mut out).unwrap();
        let summary = dec.finish(&mut out).unwrap();
        assert_eq!(hex::encode(&out), field(&text, "plaintext"), "{}", v.name);
        assert_eq!(summary.ciphertext_len, recorded.len() as u64);
    }
}
