//! Golden vectors in tests/vectors/*.txt. Positive ones are checked both ways (encoding the
//! recorded inputs gives the recorded stream, decoding it gives the recorded plaintext) and
//! record the intermediate values of docs/format.md §1–§3. Negative ones (`neg_*.txt`) are
//! damaged streams: decoding must fail with the recorded error after releasing exactly the
//! recorded plaintext. `tests/vectors/crosscheck.py`, an independent implementation (Python
//! `cryptography` + `hmac`) run by scripts/test, checks all of them.
//!
//! To regenerate after a deliberate format change (which also needs a new version):
//! `LOCKBOX_WRITE_VECTORS=1 cargo test -p lockbox-format --test vectors`.

use std::path::PathBuf;

use lockbox_crypto::{BackupId, CryptoRng, RngCore, hkdf_expand, labels};
use lockbox_format::{BackupKey, Decoder, Encoder, EncoderParams, FormatError, HEADER_LEN};

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
        base("many_chunks", text(17 * 1024 + 10)),
    ]
}

fn vector(name: &str) -> Vector {
    vectors().into_iter().find(|v| v.name == name).unwrap()
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

/// The intermediate values of a stream, in the order its file records them.
fn intermediates(v: &Vector, stream: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let keys = BackupKey::from_bytes(v.key).stream_keys(&BackupId(v.rng));
    let mut per_backup_key = [0u8; 32];
    hkdf_expand(&v.key, Some(&v.rng), labels::BACKUP, &mut per_backup_key);
    // The library does not expose BK; deriving a subkey from ours shows it is the same one.
    let mut payload = [0u8; 32];
    hkdf_expand(&per_backup_key, None, labels::PAYLOAD, &mut payload);
    assert_eq!(&payload, keys.payload.expose(), "per-backup key");
    assert_eq!(&stream[52..68], &keys.key_check);
    let segments = stream[HEADER_LEN..].chunks(lockbox_format::segment_len(v.chunk_size));
    assert!(segments.into_iter().all(|s| s[..4] == keys.chunk_tag));
    let one_chunk = stream.len() == HEADER_LEN + lockbox_format::segment_len(v.chunk_size);
    let gcm_tag_at = HEADER_LEN + 4 + v.chunk_size;
    vec![
        ("per_backup_key", per_backup_key.to_vec()),
        ("payload_key", keys.payload.expose().to_vec()),
        ("header_mac_key", keys.header_mac.expose().to_vec()),
        ("key_check", keys.key_check.to_vec()),
        ("chunk_tag", keys.chunk_tag.to_vec()),
        ("header_mac", stream[68..HEADER_LEN].to_vec()),
        (
            "chunk_0_nonce",
            [&[0u8; 11][..], &[u8::from(one_chunk)]].concat(),
        ),
        (
            "chunk_0_gcm_tag",
            stream[gcm_tag_at..gcm_tag_at + 16].to_vec(),
        ),
    ]
}

fn render(v: &Vector, stream: &[u8]) -> String {
    let mut text = format!(
        "# lockbox stream format v1 test vector (see docs/format.md)\n\
         name = {}\nkey = {}\nrng = {}\ncreated_unix_ms = {}\nchunk_size = {}\n\
         plaintext = {}\n",
        v.name,
        hex::encode(v.key),
        hex::encode(v.rng),
        v.created_unix_ms,
        v.chunk_size,
        hex::encode(&v.plaintext),
    );
    for (name, value) in intermediates(v, stream) {
        text += &format!("{name} = {}\n", hex::encode(value));
    }
    text + &format!("stream = {}\n", hex::encode(stream))
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

/// A damaged stream and what decoding it must give.
struct Negative {
    name: &'static str,
    change: &'static str,
    key: [u8; 32],
    stream: Vec<u8>,
    /// Bytes of the base plaintext released (verified) before the error.
    released: usize,
    error: FormatError,
}

const CS: usize = 1024;
const SEG: usize = 4 + CS + 16;

fn seg(i: usize) -> std::ops::Range<usize> {
    HEADER_LEN + i * SEG..HEADER_LEN + (i + 1) * SEG
}

/// Builds a stream from the header and the listed segments of `base`.
fn respliced(base: &[u8], order: &[usize]) -> Vec<u8> {
    let mut s = base[..HEADER_LEN].to_vec();
    for &i in order {
        s.extend_from_slice(&base[seg(i)]);
    }
    s
}

fn flipped(base: &[u8], at: usize, mask: u8) -> Vec<u8> {
    let mut s = base.to_vec();
    s[at] ^= mask;
    s
}

/// The negative vectors: damage done to `multi_chunk` (three chunks: 1024, 1024 and 952
/// bytes) and, for the reorder window, to `many_chunks` (eighteen chunks).
fn negatives() -> Vec<Negative> {
    let v = vector("multi_chunk");
    let (key, s) = (v.key, encode(&v));
    let many = encode(&vector("many_chunks"));
    let other = encode(&Vector {
        rng: std::array::from_fn(|i| 0xB0 ^ i as u8),
        ..vector("multi_chunk")
    });
    let mut wrong_key = key;
    wrong_key[0] ^= 1;
    let mut foreign = s.clone();
    foreign[seg(1)].copy_from_slice(&other[seg(1)]);
    let mut window_edge = many.clone();
    window_edge[seg(0)].copy_from_slice(&many[seg(16)]);
    let mut outside = many.clone();
    outside[seg(0)].copy_from_slice(&many[seg(17)]);
    let mut trailing = s.clone();
    trailing.push(0);
    let neg = |name, change, key, stream, released, error| Negative {
        name,
        change,
        key,
        stream,
        released,
        error,
    };
    let ooo = |index, belongs_at| FormatError::ChunkOutOfOrder { index, belongs_at };
    use FormatError::*;
    vec![
        neg(
            "neg_not_lockbox",
            "byte 0 set to 0x88",
            key,
            flipped(&s, 0, 1),
            0,
            NotLockbox,
        ),
        neg(
            "neg_unsupported_version",
            "version byte set to 2",
            key,
            flipped(&s, 8, 3),
            0,
            UnsupportedVersion(2),
        ),
        neg(
            "neg_truncated_in_header",
            "cut after 60 bytes",
            key,
            s[..60].to_vec(),
            0,
            Truncated,
        ),
        neg(
            "neg_flipped_header_byte",
            "bit 0 of byte 15 (created_unix_ms) flipped",
            key,
            flipped(&s, 15, 1),
            0,
            HeaderCorrupt,
        ),
        neg(
            "neg_flipped_key_check",
            "bit 2 of byte 60 (key_check) flipped",
            key,
            flipped(&s, 60, 4),
            0,
            HeaderCorrupt,
        ),
        neg(
            "neg_flipped_backup_id",
            "bit 0 of byte 20 (backup_id) flipped",
            key,
            flipped(&s, 20, 1),
            0,
            WrongKey,
        ),
        neg(
            "neg_wrong_key",
            "decoded under the key with bit 0 of byte 0 flipped",
            wrong_key,
            s.clone(),
            0,
            WrongKey,
        ),
        neg(
            "neg_truncated_at_boundary",
            "final segment removed",
            key,
            respliced(&s, &[0, 1]),
            CS,
            Truncated,
        ),
        neg(
            "neg_truncated_mid_segment",
            "last byte removed",
            key,
            s[..s.len() - 1].to_vec(),
            2 * CS,
            Truncated,
        ),
        neg(
            "neg_trailing_data",
            "one 0x00 byte appended",
            key,
            trailing,
            2 * CS,
            TrailingData,
        ),
        neg(
            "neg_reordered",
            "segments 0 and 1 swapped",
            key,
            respliced(&s, &[1, 0, 2]),
            0,
            ooo(0, 1),
        ),
        neg(
            "neg_duplicated",
            "segment 0 repeated",
            key,
            respliced(&s, &[0, 0, 1, 2]),
            CS,
            ooo(1, 0),
        ),
        neg(
            "neg_final_moved_forward",
            "segment 1 removed",
            key,
            respliced(&s, &[0, 2]),
            CS,
            ooo(1, 2),
        ),
        neg(
            "neg_foreign_chunk",
            "segment 1 from another backup under the same key",
            key,
            foreign,
            CS,
            ForeignChunk { index: 1 },
        ),
        neg(
            "neg_flipped_ciphertext",
            "bit 0 of byte 40 of segment 1 flipped",
            key,
            flipped(&s, seg(1).start + 40, 1),
            CS,
            ChunkCorrupt { index: 1 },
        ),
        neg(
            "neg_flipped_gcm_tag",
            "bit 7 of the last byte of segment 2 flipped",
            key,
            flipped(&s, seg(2).end - 1, 0x80),
            2 * CS,
            ChunkCorrupt { index: 2 },
        ),
        neg(
            "neg_flipped_chunk_tag",
            "bit 4 of byte 0 of segment 2 (chunk tag) flipped",
            key,
            flipped(&s, seg(2).start, 0x10),
            2 * CS,
            ChunkCorrupt { index: 2 },
        ),
        neg(
            "neg_reorder_window_edge",
            "many_chunks: segment 16 copied over segment 0",
            key,
            window_edge,
            0,
            ooo(0, 16),
        ),
        neg(
            "neg_reorder_outside_window",
            "many_chunks: segment 17 copied over segment 0",
            key,
            outside,
            0,
            ChunkCorrupt { index: 0 },
        ),
    ]
}

fn render_negative(n: &Negative, base_plaintext: &[u8]) -> String {
    format!(
        "# lockbox stream format v1 negative test vector: decoding must fail (see docs/format.md §4)\n\
         name = {}\nchange = {}\nkey = {}\nreleased = {}\nerror = {:?}\nstream = {}\n",
        n.name,
        n.change,
        hex::encode(n.key),
        hex::encode(&base_plaintext[..n.released]),
        n.error,
        hex::encode(&n.stream),
    )
}

#[test]
fn negative_vectors_fail_with_their_recorded_error() {
    let write = std::env::var_os("LOCKBOX_WRITE_VECTORS").is_some();
    let base = vector("multi_chunk").plaintext;
    let negatives = negatives();
    for n in negatives {
        if write {
            std::fs::write(path(n.name), render_negative(&n, &base)).unwrap();
        }
        let text = std::fs::read_to_string(path(n.name)).unwrap();
        assert_eq!(
            text,
            render_negative(&n, &base),
            "{}: vector changed",
            n.name
        );

        let stream = hex::decode(field(&text, "stream")).unwrap();
        let key: [u8; 32] = hex::decode(field(&text, "key"))
            .unwrap()
            .try_into()
            .unwrap();
        let mut dec = Decoder::new(&BackupKey::from_bytes(key));
        let mut out = Vec::new();
        let result = dec
            .update(&stream, &mut out)
            .and_then(|()| dec.finish(&mut out));
        let err = result.expect_err(n.name);
        assert_eq!(format!("{err:?}"), field(&text, "error"), "{}", n.name);
        assert_eq!(hex::encode(&out), field(&text, "released"), "{}", n.name);
    }
}

#[test]
fn no_stray_vector_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut known: Vec<String> = vectors().iter().map(|v| v.name.to_owned()).collect();
    known.extend(negatives().iter().map(|n| n.name.to_owned()));
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name.strip_suffix(".txt") {
            assert!(
                known.iter().any(|k| k == stem),
                "{name} is not generated by this test"
            );
        }
    }
}
