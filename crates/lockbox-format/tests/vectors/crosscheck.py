#!/usr/bin/env python3
"""Independent check of the lockbox v1 stream vectors (docs/format.md), written from the spec.

Decodes every tests/vectors/*.txt with Python's hmac/hashlib (HKDF, header MAC) and
`cryptography` (AES-256-GCM), checks the plaintext, then re-encodes the recorded inputs and
checks the bytes match. Run: python3 crates/lockbox-format/tests/vectors/crosscheck.py
"""
import hashlib
import hmac
import pathlib
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"\x89LBX\r\n\x1a\n"


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
        "payload": hkdf(bk, None, b"lockbox/v1/payload", 32),
        "header_mac": hkdf(bk, None, b"lockbox/v1/header-mac", 32),
        "key_check": hkdf(bk, None, b"lockbox/v1/key-check", 16),
        "chunk_tag": hkdf(bk, None, b"lockbox/v1/chunk-tag", 4),
    }


def nonce(i, last):
    return i.to_bytes(11, "big") + bytes([1 if last else 0])


def encode(k, backup_id, created, chunk_size, plain):
    keys = stream_keys(k, backup_id)
    log2 = chunk_size.bit_length() - 1
    h = MAGIC + bytes([1, log2, 0, 0]) + created.to_bytes(8, "big") + backup_id
    h += keys["key_check"]
    h += hmac.new(keys["header_mac"], h[:52], hashlib.sha256).digest()
    aead = AESGCM(keys["payload"])
    out, i = h, 0
    full = len(plain) // chunk_size  # full chunks are non-final, always
    for i in range(full):
        data = plain[i * chunk_size:(i + 1) * chunk_size]
        out += keys["chunk_tag"] + aead.encrypt(nonce(i, False), data, None)
    rest = plain[full * chunk_size:]
    padded = rest + b"\x80" + b"\0" * (chunk_size - len(rest) - 1)
    return out + keys["chunk_tag"] + aead.encrypt(nonce(full, True), padded, None)


def decode(k, stream):
    h = stream[:100]
    assert h[:8] == MAGIC and h[8] == 1 and h[10:12] == b"\0\0"
    backup_id = h[20:52]
    keys = stream_keys(k, backup_id)
    assert hmac.compare_digest(h[52:68], keys["key_check"]), "key check"
    mac = hmac.new(keys["header_mac"], h[:52], hashlib.sha256).digest()
    assert hmac.compare_digest(h[68:100], mac), "header mac"
    cs = 1 << h[9]
    seg = 4 + cs + 16
    body = stream[100:]
    assert len(body) > 0 and len(body) % seg == 0
    aead = AESGCM(keys["payload"])
    n = len(body) // seg
    plain = b""
    for i in range(n):
        s = body[i * seg:(i + 1) * seg]
        assert s[:4] == keys["chunk_tag"]
        last = i == n - 1
        p = aead.decrypt(nonce(i, last), s[4:], None)
        if last:
            p = p.rstrip(b"\0")
            assert p.endswith(b"\x80")
            p = p[:-1]
        plain += p
    return plain, int.from_bytes(h[12:20], "big"), cs, backup_id


def main():
    d = pathlib.Path(__file__).parent
    files = sorted(d.glob("*.txt"))
    assert files, "no vectors"
    for f in files:
        v = dict(l.split(" = ", 1) for l in f.read_text().splitlines() if " = " in l)
        k, stream = bytes.fromhex(v["key"]), bytes.fromhex(v["stream"])
        plain, created, cs, backup_id = decode(k, stream)
        assert plain.hex() == v["plaintext"], f.name
        assert backup_id == bytes.fromhex(v["rng"]) and created == int(v["created_unix_ms"])
        assert cs == int(v["chunk_size"])
        assert encode(k, backup_id, created, cs, plain) == stream, f.name
        print(f"ok {f.name}: {len(plain)} plaintext bytes, {len(stream)} stream bytes")
    print(f"{len(files)} passed, 0 failed")


if __name__ == "__main__":
    sys.exit(main())
