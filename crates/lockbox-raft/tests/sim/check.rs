//! Linearizability of one record under compare-and-set, checked against its whole history.
//!
//! Every write of the simulation appends its own op id to the value it read, so a record's
//! value *is* the list of the writes that applied to it, in order: position `p` (1-based) is the
//! write that took the record to sequence `p`. With that list (read at the end, once the
//! network healed) the checker needs no search: the order of the applied writes is known, and
//! it checks that it, and every reply a client got, fits real time.
//!
//! - The list is exactly the record's sequence long; each entry is a write to this record,
//!   once, that expected the sequence before its position, and whose reply allows it to have
//!   applied (`Applied` at that position, or an unknown outcome).
//! - A write answered `Applied { seq }` sits at position `seq`; one refused before it entered
//!   the log, or answered `Conflict`, is not in the list.
//! - Real time: a write in the list was called before anyone saw it, and a write that returned
//!   `Applied` before another write or read was called is ordered before it. A read returns a
//!   prefix of the final list, never older than what was acknowledged or read before it began.
//! - `Conflict { found }`: `found` was the sequence at some moment during the call, so it
//!   differs from what was expected, is not older than what was acknowledged before the call,
//!   and every write up to it had been called before the call returned.

use std::collections::HashMap;
use std::time::Instant;

/// What a write got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Applied(u64),
    Conflict(u64),
    /// Refused before entering the log: definitely not applied.
    NotApplied,
    /// No answer that says; it may apply, even after the call returned.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Write {
    pub op: u64,
    pub expected: u64,
    pub start: Instant,
    pub end: Instant,
    pub reply: Reply,
}

/// A linearizable read that answered: the sequence and list it saw.
#[derive(Debug, Clone)]
pub struct Read {
    pub start: Instant,
    pub end: Instant,
    pub seq: u64,
    pub list: Vec<u64>,
}

pub fn encode(list: &[u64]) -> Vec<u8> {
    list.iter().flat_map(|op| op.to_be_bytes()).collect()
}

pub fn decode(bytes: &[u8]) -> Result<Vec<u64>, String> {
    if !bytes.len().is_multiple_of(8) {
        return Err(format!(
            "a value of {} bytes is no list of ops",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// Checks one record's history against its final `list` at sequence `seq`.
pub fn check(seq: u64, list: &[u64], writes: &[Write], reads: &[Read]) -> Result<(), String> {
    let by_op: HashMap<u64, &Write> = writes.iter().map(|w| (w.op, w)).collect();
    let position = positions(seq, list, &by_op)?;
    for w in writes {
        check_reply(w, &position, list)?;
    }
    for w in writes.iter().filter(|w| w.reply != Reply::NotApplied) {
        check_order(w, &position, writes, reads)?;
    }
    for r in reads {
        check_read(r, list, &position, writes, reads)?;
    }
    Ok(())
}

/// The position of each write in the list, checking the list itself.
fn positions(
    seq: u64,
    list: &[u64],
    by_op: &HashMap<u64, &Write>,
) -> Result<HashMap<u64, u64>, String> {
    if list.len() as u64 != seq {
        return Err(format!(
            "the record is at sequence {seq} but lists {} writes",
            list.len()
        ));
    }
    let mut position = HashMap::new();
    for (i, &op) in list.iter().enumerate() {
        let p = i as u64 + 1;
        let w = by_op
            .get(&op)
            .ok_or_else(|| format!("position {p} holds op {op}, which no client wrote here"))?;
        if position.insert(op, p).is_some() {
            return Err(format!("op {op} applied twice"));
        }
        if w.expected != p - 1 {
            return Err(format!(
                "op {op} expected sequence {} but applied at {p}",
                w.expected
            ));
        }
        match w.reply {
            Reply::Unknown => {}
            Reply::Applied(s) if s == p => {}
            other => {
                return Err(format!(
                    "op {op} applied at {p} but its caller was told {other:?}"
                ));
            }
        }
    }
    Ok(position)
}

fn check_reply(w: &Write, position: &HashMap<u64, u64>, list: &[u64]) -> Result<(), String> {
    match w.reply {
        Reply::Applied(s) if position.get(&w.op) != Some(&s) => Err(format!(
            "op {} was acknowledged at sequence {s}, which holds {:?}",
            w.op,
            s.checked_sub(1).and_then(|i| list.get(i as usize))
        )),
        Reply::Conflict(found) if found > list.len() as u64 => Err(format!(
            "op {} was told of sequence {found}, which the record never reached",
            w.op
        )),
        Reply::Conflict(found) if found == w.expected => Err(format!(
            "op {} was refused as a conflict at the very sequence it expected ({found})",
            w.op
        )),
        _ => Ok(()),
    }
}

/// The latest sequence anyone was told of before `at`: by an acknowledgement, a conflict, or
/// a read.
fn observed_before(writes: &[Write], reads: &[Read], at: Instant) -> u64 {
    let told = writes
        .iter()
        .filter(|w| w.end < at)
        .filter_map(|w| match w.reply {
            Reply::Applied(s) | Reply::Conflict(s) => Some(s),
            _ => None,
        });
    let read = reads.iter().filter(|r| r.end < at).map(|r| r.seq);
    told.chain(read).max().unwrap_or(0)
}

/// Every write at a position up to `upto` was called before `at`.
fn all_called_before(
    upto: u64,
    at: Instant,
    position: &HashMap<u64, u64>,
    writes: &[Write],
) -> Result<(), String> {
    for w in writes {
        if position.get(&w.op).is_some_and(|&p| p <= upto) && w.start >= at {
            return Err(format!(
                "something observed sequence {upto} before op {}, which is in it, was called",
                w.op
            ));
        }
    }
    Ok(())
}

fn check_order(
    w: &Write,
    position: &HashMap<u64, u64>,
    writes: &[Write],
    reads: &[Read],
) -> Result<(), String> {
    let before = observed_before(writes, reads, w.start);
    match (position.get(&w.op), w.reply) {
        (Some(&p), _) if p <= before => Err(format!(
            "op {} applied at {p}, though sequence {before} was seen before it was called",
            w.op
        )),
        (_, Reply::Conflict(found)) if found < before => Err(format!(
            "op {} saw sequence {found}, though {before} was seen before it was called",
            w.op
        )),
        (_, Reply::Conflict(found)) => all_called_before(found, w.end, position, writes),
        (_, Reply::Applied(s)) => all_called_before(s, w.end, position, writes),
        _ => Ok(()),
    }
}

fn check_read(
    r: &Read,
    list: &[u64],
    position: &HashMap<u64, u64>,
    writes: &[Write],
    reads: &[Read],
) -> Result<(), String> {
    if r.list.len() as u64 != r.seq || list.get(..r.list.len()) != Some(&r.list[..]) {
        return Err(format!(
            "a read saw sequence {} with {:?}, which is not how the record's history began",
            r.seq, r.list
        ));
    }
    let seen = observed_before(writes, reads, r.start);
    if r.seq < seen {
        return Err(format!(
            "stale read: sequence {} after {seen} was seen",
            r.seq
        ));
    }
    all_called_before(r.seq, r.end, position, writes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64) -> Instant {
        thread_local!(static ZERO: Instant = Instant::now());
        ZERO.with(|z| *z + Duration::from_millis(ms))
    }

    fn write(op: u64, expected: u64, start: u64, end: u64, reply: Reply) -> Write {
        Write {
            op,
            expected,
            start: at(start),
            end: at(end),
            reply,
        }
    }

    fn read(start: u64, end: u64, list: &[u64]) -> Read {
        Read {
            start: at(start),
            end: at(end),
            seq: list.len() as u64,
            list: list.to_vec(),
        }
    }

    #[test]
    fn a_history_that_fits_passes() {
        let writes = [
            write(1, 0, 0, 10, Reply::Applied(1)),
            write(2, 1, 20, 30, Reply::Unknown),
            write(3, 1, 25, 40, Reply::Conflict(2)),
            write(4, 0, 50, 60, Reply::NotApplied),
        ];
        let reads = [read(11, 12, &[1]), read(45, 46, &[1, 2])];
        check(2, &[1, 2], &writes, &reads).unwrap();
    }

    #[test]
    fn each_broken_rule_is_caught() {
        let ok = write(1, 0, 0, 10, Reply::Applied(1));
        // Two writes of unknown outcome that made the record's history [1, 2].
        let unknown_pair = || {
            vec![
                write(1, 0, 0, 100, Reply::Unknown),
                write(2, 1, 0, 100, Reply::Unknown),
            ]
        };
        type Case = (&'static str, u64, Vec<u64>, Vec<Write>, Vec<Read>);
        let cases: Vec<Case> = vec![
            ("lost ack", 0, vec![], vec![ok.clone()], vec![]),
            (
                "two acks, one seq",
                1,
                vec![1],
                vec![ok.clone(), write(2, 0, 1, 9, Reply::Applied(1))],
                vec![],
            ),
            (
                "refused yet applied",
                1,
                vec![1],
                vec![write(1, 0, 0, 10, Reply::NotApplied)],
                vec![],
            ),
            (
                "stale read",
                1,
                vec![1],
                vec![ok.clone()],
                vec![read(20, 21, &[])],
            ),
            (
                "read before reads",
                2,
                vec![1, 2],
                vec![ok.clone(), write(2, 1, 30, 40, Reply::Unknown)],
                vec![read(20, 25, &[1, 2])],
            ),
            (
                "read goes back",
                2,
                vec![1, 2],
                vec![ok.clone(), write(2, 1, 11, 40, Reply::Unknown)],
                vec![read(20, 25, &[1, 2]), read(26, 27, &[1])],
            ),
            (
                "applied after a later ack",
                2,
                vec![2, 1],
                vec![
                    write(1, 1, 0, 10, Reply::Applied(2)),
                    write(2, 0, 20, 30, Reply::Unknown),
                ],
                vec![],
            ),
            (
                "conflict at expected",
                1,
                vec![1],
                vec![ok.clone(), write(2, 1, 20, 30, Reply::Conflict(1))],
                vec![],
            ),
            (
                "conflict behind ack",
                1,
                vec![1],
                vec![ok.clone(), write(2, 5, 20, 30, Reply::Conflict(0))],
                vec![],
            ),
            ("phantom op", 1, vec![9], vec![], vec![]),
            (
                "read behind a conflict",
                1,
                vec![1],
                vec![
                    write(1, 0, 0, 100, Reply::Unknown),
                    write(2, 0, 10, 20, Reply::Conflict(1)),
                ],
                vec![read(30, 31, &[])],
            ),
            (
                "conflict behind a read",
                2,
                vec![1, 2],
                [
                    unknown_pair(),
                    vec![write(3, 0, 10, 20, Reply::Conflict(1))],
                ]
                .concat(),
                vec![read(0, 5, &[1, 2])],
            ),
            (
                "conflict behind a conflict",
                2,
                vec![1, 2],
                [
                    unknown_pair(),
                    vec![
                        write(3, 0, 10, 20, Reply::Conflict(2)),
                        write(4, 0, 30, 40, Reply::Conflict(1)),
                    ],
                ]
                .concat(),
                vec![],
            ),
            (
                "conflict past the end",
                1,
                vec![1],
                vec![ok.clone(), write(2, 0, 20, 30, Reply::Conflict(9))],
                vec![],
            ),
        ];
        for (name, seq, list, writes, reads) in cases {
            assert!(
                check(seq, &list, &writes, &reads).is_err(),
                "{name} was not caught"
            );
        }
    }
}
