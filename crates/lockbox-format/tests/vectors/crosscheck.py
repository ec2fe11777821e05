#!/usr/bin/env python3
"""Independent check of the lockbox v1 stream vectors (docs/format.md), written from the spec.

A decoder that follows docs/format.md §4 rule by rule, built on Python's hmac/hashlib (HKDF,
header MAC) and `cryptography` (AES-256-GCM). For every tests/vectors/*.txt:

* positive vectors: the stream decodes to the recorded plaintext, every recorded intermediate
  value (per-backup key, subkeys, key check, chunk tag, header MAC, first nonce and GCM tag)
  equals the one computed here, and re-encoding the recorded inputs gives the stream;
* negative vectors (`error = ...`): decoding fails, with the recorded error class, after
  releasing exactly the recorded plaintext.

Prints one line per vector and exits 1 if any vector does not match.
Run: python3 crates/lockbox-format/tests/vectors/crosscheck.py
"""
import hashlib
import hmac
import pathlib
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"\x89LBX\r\n\x1a\n"
HEADER_LEN = 100
REORDER_WINDOW = 16
MAX_INDEX = 2**64 - 2


class Reject(Exception):
    """Decoding failed; the message is the error, spelled as the Rust decoder's Debug form."""


def hkdf(ikm, salt, info, n):
    prk = hmac.new(salt if salt is not None else b"\0" * 32, ikm, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:n]


def stream_keys(k, backup_id):
    bk = hkdf(k, backup_id, b"lockbox/v1/backup", 32)
    return {
        "per_backup_key": bk,
        "payload_key": hkdf(bk, None, b"lockbox/v1/payload", 32),
        "header_mac_key": hkdf(bk, None, b"lockbox/v1/header-mac", 32),
        "key_check": hkdf(bk, None, b"lockbox/v1/key-check", 16),
        "chunk_tag": hkdf(bk, None, b"lockbox/v1/chunk-tag", 4),
    }


def nonce(i, last):
    return i.to_bytes(11, "big") + bytes([1 if last else 0])


def header_mac(keys, h):
    return hmac.new(keys["header_mac_key"], h[:52], hashlib.sha256).digest()


def encode(k, backup_id, created, chunk_size, plain):
    keys = stream_keys(k, backup_id)
    log2 = chunk_size.bit_length() - 1
    h = MAGIC + bytes([1, log2, 0, 0]) + created.to_bytes(8, "big") + backup_id
    h += keys["key_check"]
    h += header_mac(keys, h)
    aead = AESGCM(keys["payload_key"])
    out = h
    full = len(plain) // chunk_size  # full chunks are non-final, always
    for i in range(full):
        data = plain[i * chunk_size:(i + 1) * chunk_size]
        out += keys["chunk_tag"] + aead.encrypt(nonce(i, False), data, None)
    rest = plain[full * chunk_size:]
    padded = rest + b"\x80" + b"\0" * (chunk_size - len(rest) - 1)
    return out + keys["chunk_tag"] + aead.encrypt(nonce(full, True), padded, None)


def parse_header(k, stream):
    """§4 rule 1. Returns (keys, chunk_size)."""
    n = min(len(stream), len(MAGIC))
    if stream[:n] != MAGIC[:n]:
        raise Reject("NotLockbox")
    if len(stream) > 8 and stream[8] != 1:
        raise Reject(f"UnsupportedVersion({stream[8]})")
    if len(stream) < HEADER_LEN:
        raise Reject("Truncated")
    h = stream[:HEADER_LEN]
    keys = stream_keys(k, h[20:52])
    check_ok = hmac.compare_digest(h[52:68], keys["key_check"])
    mac_ok = hmac.compare_digest(h[68:100], header_mac(keys, h))
    if not check_ok and not mac_ok:
        raise Reject("WrongKey")
    if not (check_ok and mac_ok):
        raise Reject("HeaderCorrupt")
    if h[10:12] != b"\0\0":
        raise Reject('InvalidHeader("reserved bytes are not zero")')
    if not 10 <= h[9] <= 24:
        raise Reject('InvalidHeader("chunk size out of range")')
    return keys, 1 << h[9]


def try_open(aead, i, last, sealed):
    try:
        return aead.decrypt(nonce(i, last), sealed, None)
    except InvalidTag:
        return None


def open_segment(keys, aead, j, final, segment):
    """§4 rule 3: the plaintext of segment j opened with expected flag `final`, or Reject."""
    sealed = segment[4:]
    plain = try_open(aead, j, final, sealed)
    if not hmac.compare_digest(segment[:4], keys["chunk_tag"]):
        raise Reject(f"ChunkCorrupt {{ index: {j} }}" if plain is not None
                     else f"ForeignChunk {{ index: {j} }}")
    if plain is not None:
        if not final:
            return plain
        stripped = plain.rstrip(b"\0")
        if not stripped.endswith(b"\x80"):
            raise Reject(f"ChunkCorrupt {{ index: {j} }}")
        return stripped[:-1]
    if try_open(aead, j, not final, sealed) is not None:
        raise Reject("Truncated" if final else "TrailingData")
    for d in range(1, REORDER_WINDOW + 1):
        for i in (j - d, j + d):
            if i < 0:
                continue
            if any(try_open(aead, i, last, sealed) is not None for last in (False, True)):
                raise Reject(f"ChunkOutOfOrder {{ index: {j}, belongs_at: {i} }}")
    raise Reject(f"ChunkCorrupt {{ index: {j} }}")


def decode(k, stream):
    """Returns (released plaintext, error or None), as §4 prescribes."""
    released = bytearray()
    try:
        keys, cs = parse_header(k, stream)
        aead = AESGCM(keys["payload_key"])
        seg = 4 + cs + 16
        body = stream[HEADER_LEN:]
        j = 0
        while True:
            left = len(body) - j * seg
            if left < seg:  # nothing after the header, or a partial segment (§4 rule 2)
                raise Reject("Truncated")
            if j > MAX_INDEX:
                raise Reject("CounterOverflow")
            final = left == seg
            released += open_segment(keys, aead, j, final, body[j * seg:(j + 1) * seg])
            if final:
                return bytes(released), None
            j += 1
    except Reject as e:
        return bytes(released), str(e)


def intermediates(k, stream, chunk_size, plain):
    """The intermediate values recorded with a positive vector, computed here."""
    keys = stream_keys(k, stream[20:52])
    one_chunk = len(plain) < chunk_size
    first = plain[:chunk_size] if not one_chunk else (
        plain + b"\x80" + b"\0" * (chunk_size - len(plain) - 1))
    sealed = AESGCM(keys["payload_key"]).encrypt(nonce(0, one_chunk), first, None)
    return dict(keys, header_mac=header_mac(keys, stream[:HEADER_LEN]),
                chunk_0_nonce=nonce(0, one_chunk), chunk_0_gcm_tag=sealed[-16:])


def check_positive(v, k, stream):
    plain, error = decode(k, stream)
    if error is not None:
        yield f"does not decode: {error}"
        return
    if plain.hex() != v["plaintext"]:
        yield "decoded plaintext differs from the recorded one"
    if stream[20:52].hex() != v["rng"] or int.from_bytes(stream[12:20], "big") != int(v["created_unix_ms"]):
        yield "backup id or created_unix_ms differs from the recorded inputs"
    cs = int(v["chunk_size"])
    for name, value in intermediates(k, stream, cs, plain).items():
        if v.get(name) != value.hex():
            yield f"{name}: recorded {v.get(name)}, computed {value.hex()}"
    if encode(k, bytes.fromhex(v["rng"]), int(v["created_unix_ms"]), cs, plain) != stream:
        yield "re-encoding the recorded inputs gives another stream"


def check_negative(v, k, stream):
    released, error = decode(k, stream)
    if error is None:
        yield f"decodes without error, but must fail with {v['error']}"
        return
    if error != v["error"]:
        yield f"fails with {error}, recorded {v['error']}"
    if released.hex() != v["released"]:
        yield f"released {len(released)} bytes, recorded {len(v['released']) // 2}"


def main():
    d = pathlib.Path(__file__).parent
    files = sorted(d.glob("*.txt"))
    if not files:
        print("crosscheck: no vectors found", file=sys.stderr)
        return 1
    failed = 0
    for f in files:
        v = dict(l.split(" = ", 1) for l in f.read_text().splitlines() if " = " in l)
        k, stream = bytes.fromhex(v["key"]), bytes.fromhex(v["stream"])
        negative = "error" in v
        problems = list((check_negative if negative else check_positive)(v, k, stream))
        for p in problems:
            print(f"MISMATCH {f.name}: {p}")
        if problems:
            failed += 1
        else:
            print(f"ok {f.name}: " + (f"fails with {v['error']}" if negative
                                       else f"{len(v['plaintext']) // 2} plaintext bytes"))
    print(f"crosscheck: {len(files) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
