//! The tokio adapters: round trips with odd write/read sizes and the same error guarantees.
#![cfg(feature = "tokio")]

mod common;

use common::*;
use lockbox_format::{AsyncDecryptReader, AsyncEncryptWriter, FormatError};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

async fn encrypt_async(plain: &[u8], write_size: usize, shutdown: bool) -> Vec<u8> {
    let mut w = AsyncEncryptWriter::new(Vec::new(), &key(), params(CS), &mut FixedRng(1)).unwrap();
    for piece in plain.chunks(write_size) {
        w.write_all(piece).await.unwrap();
    }
    w.flush().await.unwrap();
    if shutdown {
        w.shutdown().await.unwrap();
        assert_eq!(w.summary().unwrap().plaintext_len, plain.len() as u64);
        w.into_inner()
    } else {
        let (out, summary) = w.finish().await.unwrap();
        assert_eq!(summary.plaintext_len, plain.len() as u64);
        out
    }
}

/// Reads through a duplex pipe so the reader sees short reads and Pending.
async fn decrypt_async(stream: Vec<u8>, read_size: usize) -> (Vec<u8>, std::io::Result<()>) {
    let (mut tx, rx) = tokio::io::duplex(777);
    let feeder = tokio::spawn(async move {
        tx.write_all(&stream).await.unwrap();
    });
    let mut r = AsyncDecryptReader::new(rx, &key());
    let mut out = Vec::new();
    let mut buf = vec![0; read_size];
    let result = loop {
        match r.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    feeder.await.unwrap();
    (out, result)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn async_round_trip(
        len in prop_oneof![Just(0), Just(1), Just(CS - 1), Just(CS), Just(CS + 1), Just(2 * CS), 0..CS * 6],
        write_size in 1usize..3000,
        read_size in 1usize..3000,
        shutdown in any::<bool>(),
    ) {
        let plain = data(len);
        let (stream, (out, r)) = rt().block_on(async {
            let stream = encrypt_async(&plain, write_size, shutdown).await;
            let decoded = decrypt_async(stream.clone(), read_size).await;
            (stream, decoded)
        });
        prop_assert!(stream == encrypt(&plain), "same bytes as the sans-IO encoder");
        prop_assert!(r.is_ok());
        prop_assert!(out == plain);
    }
}

#[test]
fn async_reader_reports_truncation_not_eof() {
    let stream = encrypt(&data(3 * CS));
    let cut = stream[..stream.len() - SEG].to_vec();
    let (out, r) = rt().block_on(decrypt_async(cut, 4096));
    let e = r.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(FormatError::from_io(&e), Some(&FormatError::Truncated));
    assert!(
        out == data(2 * CS),
        "the segment held at EOF was not released"
    );
}

#[test]
fn async_reader_header_and_wrong_key() {
    let stream = encrypt(&data(10));
    rt().block_on(async {
        let mut r = AsyncDecryptReader::new(&stream[..], &key());
        assert_eq!(r.header().await.unwrap().chunk_size, CS);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data(10));
        assert_eq!(r.summary().unwrap().chunks, 1);

        let other = lockbox_format::BackupKey::from_bytes([9; 32]);
        let mut r = AsyncDecryptReader::new(&stream[..], &other);
        let e = r.header().await.unwrap_err();
        assert_eq!(FormatError::from_io(&e), Some(&FormatError::WrongKey));
    });
}

#[test]
fn async_writer_dropped_without_finish_is_truncated() {
    let stream = rt().block_on(async {
        let mut buf = Vec::new();
        {
            let mut w =
                AsyncEncryptWriter::new(&mut buf, &key(), params(CS), &mut FixedRng(1)).unwrap();
            w.write_all(&data(3 * CS)).await.unwrap();
            w.flush().await.unwrap();
        }
        buf
    });
    assert_eq!(decode(&stream), Err(FormatError::Truncated));
}
