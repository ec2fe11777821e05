//! Content-defined chunking of a file as it is read: the same cut points as fastcdc's
//! `StreamCDC` (so repositories keep deduplicating across versions), with fewer copies.
//! `StreamCDC` keeps one chunk's worth of buffer and shifts all of it down after every chunk,
//! which moved three bytes for every byte backed up; this reads in pieces of [`PIECE`] and
//! shifts only the uncut tail between pieces.

use std::io::{ErrorKind, Read};

use fastcdc::v2020::{FastCDC, Normalization};

use crate::config::Sizes;

/// Bytes read at once (at least two of the largest chunks). 4 MiB shifted less but pushed a
/// backup's peak RSS past 64 MiB; at 2 MiB the tail shifted is still under half a byte per byte
/// read, against StreamCDC's three.
const PIECE: usize = 2 << 20;

/// A reusable chunker: one buffer for every file of a backup.
pub(crate) struct Chunker {
    sizes: Sizes,
    seed: u64,
    buf: Vec<u8>,
}

impl Chunker {
    pub(crate) fn new(sizes: Sizes, seed: u64) -> Self {
        Chunker {
            sizes,
            seed,
            buf: Vec::new(),
        }
    }

    /// Reads `data` to its end and hands each chunk to `each`, in order.
    pub(crate) fn cut<E: From<std::io::Error>>(
        &mut self,
        data: &mut dyn Read,
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let (min, avg, max) = (
            self.sizes.chunk_min as usize,
            self.sizes.chunk_avg as usize,
            self.sizes.chunk_max as usize,
        );
        if self.buf.is_empty() {
            self.buf = vec![0; PIECE.max(2 * max)];
        }
        let mut len = 0;
        loop {
            let eof = fill(data, &mut self.buf, &mut len)?;
            if len == 0 {
                return Ok(());
            }
            let cdc = FastCDC::with_level_and_seed(
                &self.buf[..len],
                min,
                avg,
                max,
                Normalization::Level1,
                self.seed,
            );
            // A cut is final once the largest chunk fits in what was read, or at the end.
            let mut start = 0;
            while start < len && (eof || len - start >= max) {
                let (_, end) = cdc.cut(start, len - start);
                each(&self.buf[start..end])?;
                start = end;
            }
            if eof {
                return Ok(());
            }
            self.buf.copy_within(start..len, 0);
            len -= start;
        }
    }
}

/// Reads into `buf[*len..]` until it is full or `data` ends; true at the end.
fn fill(data: &mut dyn Read, buf: &mut [u8], len: &mut usize) -> std::io::Result<bool> {
    while *len < buf.len() {
        match data.read(&mut buf[*len..]) {
            Ok(0) => return Ok(true),
            Ok(n) => *len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hands out at most `step` bytes per read, as a pipe or a slow disk may.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn stream_cdc(data: &[u8], sizes: Sizes, seed: u64) -> Vec<Vec<u8>> {
        fastcdc::v2020::StreamCDC::with_level_and_seed(
            data,
            sizes.chunk_min as usize,
            sizes.chunk_avg as usize,
            sizes.chunk_max as usize,
            Normalization::Level1,
            seed,
        )
        .map(|c| c.unwrap().data)
        .collect()
    }

    fn ours(data: &[u8], step: usize, chunker: &mut Chunker) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        chunker
            .cut::<std::io::Error>(&mut Trickle { data, step }, |c| {
                out.push(c.to_vec());
                Ok(())
            })
            .unwrap();
        out
    }

    /// Bytes with long runs and noise, so cuts fall both early and at the largest size.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (i / 70_000) % 3 == 0 { 7 } else { x as u8 }
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The cut points are StreamCDC's, whatever the read sizes, and one chunker serves many
        /// files in a row.
        #[test]
        fn cuts_match_stream_cdc(
            seed in any::<u64>(),
            lens in proptest::collection::vec(0usize..3_000_000, 1..4),
            step in prop_oneof![Just(usize::MAX), 1usize..200_000],
            small in any::<bool>(),
        ) {
            let sizes = if small { Sizes::SMALL } else { Sizes::default() };
            let mut chunker = Chunker::new(sizes, seed);
            for (i, len) in lens.into_iter().enumerate() {
                let data = bytes(seed.wrapping_add(i as u64), len);
                prop_assert_eq!(ours(&data, step, &mut chunker), stream_cdc(&data, sizes, seed));
            }
        }
    }

    /// Reads that are interrupted every other call, as a signal may make them.
    struct Interrupted<'a> {
        inner: Trickle<'a>,
        odd: bool,
    }

    impl Read for Interrupted<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            self.odd = !self.odd;
            if self.odd {
                return Err(ErrorKind::Interrupted.into());
            }
            self.inner.read(out)
        }
    }

    /// The lengths where a cut could go wrong: around the smallest and largest chunk and the
    /// read piece, with data that cuts only at the largest size (zeros) and data that cuts
    /// early (noise).
    #[test]
    fn cuts_match_stream_cdc_at_every_boundary() {
        let sizes = Sizes::default();
        let (min, max) = (sizes.chunk_min as usize, sizes.chunk_max as usize);
        let mut lens = vec![0, 1, min - 1, min, min + 1, max - 1, max, max + 1];
        for piece in [PIECE, 2 * PIECE] {
            lens.extend([piece - 1, piece, piece + 1, piece + max]);
        }
        let mut chunker = Chunker::new(sizes, 9);
        for len in lens {
            for data in [vec![0u8; len], bytes(len as u64, len)] {
                let want = stream_cdc(&data, sizes, 9);
                for step in [1 << 12, max, usize::MAX] {
                    assert_eq!(
                        ours(&data, step, &mut chunker),
                        want,
                        "len {len} step {step}"
                    );
                }
                let mut got = Vec::new();
                let mut reader = Interrupted {
                    inner: Trickle {
                        data: &data,
                        step: max,
                    },
                    odd: false,
                };
                chunker
                    .cut::<std::io::Error>(&mut reader, |c| {
                        got.push(c.to_vec());
                        Ok(())
                    })
                    .unwrap();
                assert_eq!(got, want, "interrupted reads, len {len}");
            }
        }
    }

    #[test]
    fn an_empty_file_has_no_chunks_and_a_read_error_stops_the_cut() {
        let mut chunker = Chunker::new(Sizes::default(), 1);
        assert!(ours(&[], 10, &mut chunker).is_empty());
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let err = chunker
            .cut::<std::io::Error>(&mut Broken, |_| Ok(()))
            .unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
    }
}
