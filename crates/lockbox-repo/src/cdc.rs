//! Content-defined chunking of a file as it is read: the same cut points as fastcdc's
//! `StreamCDC` (so repositories keep deduplicating across versions), with fewer copies. In a
//! repository whose layout says so, a dense file (media, archives: a known extension, or
//! random-looking bytes at its start) is cut at the largest chunk size instead: such files are
//! written once and never edited in place, so content-defined cuts buy them no sharing, and
//! the rolling hash was the walk's largest cost.
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

/// Bytes at a file's start whose byte entropy decides whether it is dense.
const SAMPLE: usize = 64 << 10;
/// Bits per byte from which a sample counts as dense. Random bytes give 7.997 over
/// [`SAMPLE`]; compressed media 7.9 and more; text, databases and executables 6 and less.
const DENSE_BITS: f64 = 7.8;

/// A reusable chunker: one buffer for every file of a backup.
pub(crate) struct Chunker {
    sizes: Sizes,
    seed: u64,
    /// Dense files are cut at `chunk_max` (the repository's layout says so).
    dense_fixed: bool,
    buf: Vec<u8>,
}

impl Chunker {
    pub(crate) fn new(sizes: Sizes, seed: u64, dense_fixed: bool) -> Self {
        Chunker {
            sizes,
            seed,
            dense_fixed,
            buf: Vec::new(),
        }
    }

    /// Reads `data` to its end and hands each chunk to `each`, in order. `media` says the
    /// file's name marks it as already compressed (dense, where the layout cuts those fixed).
    pub(crate) fn cut<E: From<std::io::Error>>(
        &mut self,
        data: &mut dyn Read,
        media: bool,
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
        let mut fixed = None;
        loop {
            let eof = fill(data, &mut self.buf, &mut len)?;
            if len == 0 {
                return Ok(());
            }
            // The first piece read decides, so the same file always cuts the same way.
            let fixed = *fixed.get_or_insert_with(|| {
                self.dense_fixed && (media || dense(&self.buf[..len.min(SAMPLE)]))
            });
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
                let end = match fixed {
                    true => len.min(start + max),
                    false => cdc.cut(start, len - start).1,
                };
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

/// Whether a file's first bytes look random: a whole [`SAMPLE`] of at least [`DENSE_BITS`]
/// bits per byte. A shorter file is never dense (it is one chunk or two either way).
fn dense(head: &[u8]) -> bool {
    if head.len() < SAMPLE {
        return false;
    }
    let mut counts = [0u32; 256];
    for &b in head {
        counts[usize::from(b)] += 1;
    }
    let n = head.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    bits >= DENSE_BITS
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
    use lockbox_store::test_support::random_bytes;
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
            let mut chunker = Chunker::new(sizes, seed, false);
            for (i, len) in lens.into_iter().enumerate() {
                let data = bytes(seed.wrapping_add(i as u64), len);
                prop_assert_eq!(cut_all(&mut chunker, &data, step, false), stream_cdc(&data, sizes, seed));
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
        let mut chunker = Chunker::new(sizes, 9, false);
        for len in lens {
            for data in [vec![0u8; len], bytes(len as u64, len)] {
                let want = stream_cdc(&data, sizes, 9);
                for step in [1 << 12, max, usize::MAX] {
                    assert_eq!(
                        cut_all(&mut chunker, &data, step, false),
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
                    .cut::<std::io::Error>(&mut reader, false, |c| {
                        got.push(c.to_vec());
                        Ok(())
                    })
                    .unwrap();
                assert_eq!(got, want, "interrupted reads, len {len}");
            }
        }
    }

    fn cut_all(chunker: &mut Chunker, data: &[u8], step: usize, media: bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        chunker
            .cut::<std::io::Error>(&mut Trickle { data, step }, media, |c| {
                out.push(c.to_vec());
                Ok(())
            })
            .unwrap();
        out
    }

    /// In a layout that cuts dense files fixed: random-looking data (or a media name) is cut
    /// at the largest size from the file's start, whatever the read sizes; other data is cut by
    /// content as before; and a layout without it cuts everything by content.
    #[test]
    fn dense_files_are_cut_at_the_largest_size_where_the_layout_says_so() {
        let sizes = Sizes::default();
        let max = sizes.chunk_max as usize;
        let mut fixed = Chunker::new(sizes, 5, true);
        for len in [SAMPLE, 3 * max + 17, 2 * PIECE + 1] {
            let data = random_bytes(len);
            for step in [1 << 12, usize::MAX] {
                let chunks = cut_all(&mut fixed, &data, step, false);
                let lens: Vec<usize> = chunks.iter().map(Vec::len).collect();
                let mut want = vec![max; len / max];
                want.extend(Some(len % max).filter(|&r| r > 0));
                assert_eq!(lens, want, "len {len} step {step}");
                assert_eq!(chunks.concat(), data);
            }
            assert_eq!(
                cut_all(&mut Chunker::new(sizes, 5, false), &data, usize::MAX, false),
                stream_cdc(&data, sizes, 5),
                "a layout without fixed cuts"
            );
        }
        let text: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| format!("{i}\tmessage about lunch\n").into_bytes())
            .take(3 * max)
            .collect();
        assert_eq!(
            cut_all(&mut fixed, &text, usize::MAX, false),
            stream_cdc(&text, sizes, 5),
            "text is cut by content"
        );
        let named = cut_all(&mut fixed, &text, usize::MAX, true);
        assert!(
            named.iter().take(2).all(|c| c.len() == max),
            "a media name cuts fixed"
        );
        assert!(
            !dense(&random_bytes(SAMPLE - 1)),
            "shorter than a sample is never dense"
        );
        assert!(!dense(&bytes(3, SAMPLE)), "long runs are not dense");
    }

    #[test]
    fn an_empty_file_has_no_chunks_and_a_read_error_stops_the_cut() {
        let mut chunker = Chunker::new(Sizes::default(), 1, false);
        assert!(cut_all(&mut chunker, &[], 10, false).is_empty());
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let err = chunker
            .cut::<std::io::Error>(&mut Broken, false, |_| Ok(()))
            .unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
    }
}
