//! Linearizability checker for the password-attempt counter of one vault account.
//!
//! A chaos test records every operation that concurrent clients issued against one account —
//! login starts (`Ke1`), login finishes (`Ke3`, with the right or a wrong password) and
//! read-only `Status` queries — with the times each was called and returned and the reply it
//! got. [`check`] decides whether some total order of those operations, consistent with real
//! time (an op that returned before another was called comes first), explains every reply
//! under the vault's guess rule, with attempt limit `L`:
//!
//! ```text
//! state: Active { attempts_left } | Destroyed           start: Active { L }
//! Ke1:              Active{0} -> Destroyed    (Destroyed)
//!                   Active{n} -> Active{n-1}  (Ke2 { attempts_left: n-1 })
//! Ke3 right:        Active{_} -> Active{L}    (Recovered)
//! Ke3 wrong:        Active{0} -> Destroyed    (Destroyed)
//!                   Active{n} -> Active{n}    (Wrong { attempts_left: n })
//! Status:           Active{n} -> Active{n}    (Left(n))
//! anything:         Destroyed -> Destroyed    (Destroyed)
//! ```
//!
//! The search is the Wing–Gong algorithm over a linked list of call/return entries, with
//! Lowe's memoization as in Porcupine: a cache of the (set of linearized ops, model state)
//! pairs already explored without success, so the cost grows with the number of concurrently
//! open ops, not with the length of the history.
//!
//! Unknown outcomes are handled as in Porcupine's nondeterministic models: the model state is
//! the *set* of states the account may be in.
//!
//! - An op that returned without a reply takes a set `S` to `S ∪ step(S)`: it may or may not
//!   have taken effect, with whatever reply, somewhere between its call and return.
//! - An op that never returned ("ghost") returns at +∞: it may take effect at any time after its
//!   call, or never. Ghosts are kept out of the entry list; at each point of the search, after
//!   the ops that did return, the search also tries placing a ghost there, taking `S` to
//!   `step(S)`; a ghost never placed is one that never took effect.
//!
//! Three refinements keep a few dozen ghosts from making the search exponential in them:
//!
//! - Called ghosts of the same kind are interchangeable, so the search only places the
//!   earliest-called unplaced one of each kind, and the cache records how many of each kind
//!   are placed rather than which.
//! - A ghost is only placed where `step(S)` is not a subset of `S`; elsewhere leaving it out
//!   is no worse.
//! - A cached failure also rules out every configuration it covers: the same returned ops
//!   placed, no fewer ghosts of each kind left, and a subset of its possible states.
//!
//! Unknown `Status` ops cannot affect anything and are ignored.

use std::collections::HashMap;
use std::fmt;

/// The largest attempt limit the checker supports.
const MAX_LIMIT: u8 = 100;

/// An operation on the account's attempt counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A login start; spends one guess.
    Ke1,
    /// A login finish, verified with the right or a wrong password.
    Ke3 { right: bool },
    /// A read-only query of the attempts left.
    Status,
}

/// A reply the vault gives to an [`Op`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `Ke1` spent a guess; this many are left.
    Ke2 { attempts_left: u8 },
    /// The right password: the guesses are back to the limit.
    Recovered,
    /// A wrong password; this many guesses are left.
    Wrong { attempts_left: u8 },
    /// The record is (now) destroyed.
    Destroyed,
    /// `Status`: this many guesses are left.
    Left(u8),
}

/// One operation as a client saw it. `ret: None` or `reply: None` means the outcome is unknown
/// (an error, timeout, or connection loss during chaos): it may or may not have taken effect,
/// at any time after `call`; and if `ret` is Some but `reply` is None the effect (if any) happened
/// between call and ret. (A `reply` without a `ret` is ignored.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub op: Op,
    pub call: u64,
    pub ret: Option<u64>,
    pub reply: Option<Reply>,
}

impl Event {
    /// The reply, if the outcome is known.
    fn outcome(&self) -> Option<Reply> {
        self.ret.and(self.reply)
    }
}

/// Why a history is not linearizable: the longest linearizable prefix the search found and the
/// ops that could not be placed after it.
#[derive(Debug, Clone)]
pub struct Violation {
    limit: u8,
    total: usize,
    /// The longest linearizable prefix, in linearization order, as (event index, event).
    prefix: Vec<(usize, Event)>,
    /// The states the account may be in after `prefix`.
    states: StateSet,
    /// The unplaced ops that were candidates to come next; none of them fits.
    candidates: Vec<(usize, Event)>,
    /// The candidate that returned first, so must be placed before any op called later.
    blocking: usize,
}

/// How many ops of the prefix `Display` shows, unless asked for all with `{:#}`.
const PREFIX_TAIL: usize = 12;

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "history of {} ops is not linearizable (attempt limit {})",
            self.total, self.limit
        )?;
        let elided = if f.alternate() {
            0
        } else {
            self.prefix.len().saturating_sub(PREFIX_TAIL)
        };
        write!(f, "longest linearizable prefix: {} ops", self.prefix.len())?;
        if elided > 0 {
            write!(f, " ({elided} earlier ones elided; use {{:#}} to show all)")?;
        }
        writeln!(f)?;
        for (index, event) in &self.prefix[elided..] {
            writeln!(f, "  {}", Shown(*index, event))?;
        }
        writeln!(f, "possible states after it: {}", self.states)?;
        writeln!(f, "none of these ops can be linearized next:")?;
        for (index, event) in &self.candidates {
            let note = if *index == self.blocking {
                "  <- returned first, so it must be placed before anything called later"
            } else {
                ""
            };
            writeln!(f, "  {}{note}", Shown(*index, event))?;
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}

/// An event with its index in the history, for messages.
struct Shown<'a>(usize, &'a Event);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Shown(index, event) = *self;
        write!(f, "#{index} {:?} -> ", event.op)?;
        match event.outcome() {
            Some(reply) => write!(f, "{reply:?}")?,
            None => write!(f, "unknown")?,
        }
        match event.ret {
            Some(ret) => write!(f, " [call {}, ret {ret}]", event.call),
            None => write!(f, " [call {}, never returned]", event.call),
        }
    }
}

/// Checks that `events`, the history of one account with attempt limit `limit`, is
/// linearizable with respect to the vault's guess rule (see the module docs).
///
/// # Errors
/// A [`Violation`] explaining where every possible linearization gets stuck.
///
/// # Panics
/// If `limit` is not in `1..=100`, or an event returned before it was called.
pub fn check(limit: u8, events: &[Event]) -> Result<(), Violation> {
    assert!(
        (1..=MAX_LIMIT).contains(&limit),
        "attempt limit {limit} is outside 1..={MAX_LIMIT}"
    );
    Search::new(limit, events)
        .run()
        .map_err(|stuck| stuck.into_violation(limit, events))
}

// ---------------------------------------------------------------------------------------------
// The model.

/// The state of the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active(u8),
    Destroyed,
}

impl State {
    /// The vault's guess rule: the next state and the reply to `op`.
    fn step(self, limit: u8, op: Op) -> (State, Reply) {
        match (self, op) {
            (State::Destroyed, _) | (State::Active(0), Op::Ke1 | Op::Ke3 { right: false }) => {
                (State::Destroyed, Reply::Destroyed)
            }
            (State::Active(n), Op::Ke1) => (
                State::Active(n - 1),
                Reply::Ke2 {
                    attempts_left: n - 1,
                },
            ),
            (State::Active(_), Op::Ke3 { right: true }) => (State::Active(limit), Reply::Recovered),
            (State::Active(n), Op::Ke3 { right: false }) => {
                (self, Reply::Wrong { attempts_left: n })
            }
            (State::Active(n), Op::Status) => (self, Reply::Left(n)),
        }
    }

    /// This state's bit in a [`StateSet`].
    fn bit(self) -> u32 {
        match self {
            State::Active(n) => u32::from(n),
            State::Destroyed => DESTROYED_BIT,
        }
    }

    fn from_bit(bit: u32) -> State {
        if bit == DESTROYED_BIT {
            State::Destroyed
        } else {
            State::Active(u8::try_from(bit).expect("active states have bits below 101"))
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Active(n) => write!(f, "Active {{ attempts_left: {n} }}"),
            State::Destroyed => write!(f, "Destroyed"),
        }
    }
}

/// The bit of `State::Destroyed`; `State::Active(n)` has bit `n`.
const DESTROYED_BIT: u32 = 127;

/// A set of [`State`]s, as a bitset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StateSet(u128);

impl StateSet {
    fn single(state: State) -> Self {
        StateSet(1 << state.bit())
    }

    fn insert(&mut self, state: State) {
        self.0 |= 1 << state.bit();
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn is_subset(self, of: StateSet) -> bool {
        self.0 & !of.0 == 0
    }

    fn iter(self) -> impl Iterator<Item = State> {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let bit = rest.trailing_zeros();
            rest &= rest - 1;
            Some(State::from_bit(bit))
        })
    }

    /// The states reachable by applying `op` to one of these states and getting `reply`, or
    /// any reply if it is `None`.
    fn applied(self, limit: u8, op: Op, reply: Option<Reply>) -> StateSet {
        let mut next = StateSet(0);
        for state in self.iter() {
            let (after, got) = state.step(limit, op);
            if reply.is_none_or(|seen| seen == got) {
                next.insert(after);
            }
        }
        next
    }

    /// The states reachable by an op with the given outcome; with an unknown outcome, the op
    /// may also not have taken effect at all.
    fn after(self, limit: u8, op: Op, outcome: Option<Reply>) -> StateSet {
        let applied = self.applied(limit, op, outcome);
        match outcome {
            Some(_) => applied,
            None => StateSet(applied.0 | self.0),
        }
    }
}

impl fmt::Display for StateSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, state) in self.iter().enumerate() {
            let sep = if k == 0 { "" } else { " or " };
            write!(f, "{sep}{state}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The history, prepared for the search.

/// An op that returned, as the search sees it.
#[derive(Debug, Clone, Copy)]
struct KnownOp {
    /// Its index in the caller's history.
    event: usize,
    op: Op,
    call: u64,
    ret: u64,
    outcome: Option<Reply>,
}

/// An op that never returned, so may take effect at any time after its call, or never.
#[derive(Debug, Clone, Copy)]
struct Ghost {
    /// Its index in the caller's history.
    event: usize,
    op: Op,
    call: u64,
}

/// How many kinds of ghosts (never-returned ops) there are: `Ke1`, `Ke3` right and wrong.
const CLASSES: usize = 3;

/// The class of a ghost running `op`, unless it cannot affect anything.
fn ghost_class(op: Op) -> Option<usize> {
    match op {
        Op::Ke1 => Some(0),
        Op::Ke3 { right: true } => Some(1),
        Op::Ke3 { right: false } => Some(2),
        Op::Status => None,
    }
}

/// The ops of `events` that returned, and the ghosts of each class sorted by call time;
/// without unknown `Status` ops, which cannot have affected anything.
fn prepare(events: &[Event]) -> (Vec<KnownOp>, [Vec<Ghost>; CLASSES]) {
    let mut known = Vec::new();
    let mut ghosts: [Vec<Ghost>; CLASSES] = Default::default();
    for (index, event) in events.iter().enumerate() {
        if let Some(ret) = event.ret {
            assert!(
                ret >= event.call,
                "event #{index} returned at {ret}, before its call at {}",
                event.call
            );
        }
        let affects = event.op != Op::Status || event.outcome().is_some();
        match (event.ret, ghost_class(event.op)) {
            (Some(ret), _) if affects => {
                known.push(KnownOp {
                    event: index,
                    op: event.op,
                    call: event.call,
                    ret,
                    outcome: event.outcome(),
                });
            }
            (None, Some(class)) => ghosts[class].push(Ghost {
                event: index,
                op: event.op,
                call: event.call,
            }),
            _ => {}
        }
    }
    for same_class in &mut ghosts {
        same_class.sort_by_key(|ghost| (ghost.call, ghost.event));
    }
    (known, ghosts)
}

/// A node of the [`EntryList`].
#[derive(Debug, Clone, Copy)]
enum Node {
    Sentinel,
    Call(usize),
    Return(usize),
}

/// The call and return entries of the known ops, sorted by time (calls before returns at
/// equal times), as a doubly-linked list from which an op's two entries can be removed and
/// then restored in LIFO order. Node 0 is the head sentinel and the last node the tail one.
struct EntryList {
    nodes: Vec<Node>,
    next: Vec<usize>,
    prev: Vec<usize>,
    call_node: Vec<usize>,
    ret_node: Vec<usize>,
}

impl EntryList {
    fn new(ops: &[KnownOp]) -> Self {
        let mut entries: Vec<(u64, bool, usize)> = ops
            .iter()
            .enumerate()
            .flat_map(|(index, op)| [(op.call, false, index), (op.ret, true, index)])
            .collect();
        entries.sort_unstable();
        let mut nodes = vec![Node::Sentinel];
        let mut call_node = vec![0; ops.len()];
        let mut ret_node = vec![0; ops.len()];
        for (_, is_return, op) in entries {
            if is_return {
                ret_node[op] = nodes.len();
                nodes.push(Node::Return(op));
            } else {
                call_node[op] = nodes.len();
                nodes.push(Node::Call(op));
            }
        }
        nodes.push(Node::Sentinel);
        let tail = nodes.len() - 1;
        EntryList {
            next: (0..nodes.len()).map(|k| (k + 1).min(tail)).collect(),
            prev: (0..nodes.len()).map(|k| k.saturating_sub(1)).collect(),
            nodes,
            call_node,
            ret_node,
        }
    }

    fn first(&self) -> usize {
        self.next[0]
    }

    fn next(&self, node: usize) -> usize {
        self.next[node]
    }

    fn node(&self, node: usize) -> Node {
        self.nodes[node]
    }

    fn is_empty(&self) -> bool {
        self.first() == self.nodes.len() - 1
    }

    /// Removes `op`'s entries.
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        self.unlink(self.ret_node[op]);
    }

    /// Restores the entries of `op`, the op lifted most recently.
    fn unlift(&mut self, op: usize) {
        self.relink(self.ret_node[op]);
        self.relink(self.call_node[op]);
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        self.prev[next] = node;
    }
}

/// A set of ops, by index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: usize) -> Self {
        Bitset(vec![0; len.div_ceil(64)])
    }

    fn set(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }

    fn clear(&mut self, index: usize) {
        self.0[index / 64] &= !(1 << (index % 64));
    }
}

// ---------------------------------------------------------------------------------------------
// The search.

/// What the search tries next.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// The known ops whose call entries come from this node of the list on, up to the first
    /// return entry.
    Entry(usize),
    /// The next ghost of this class and the ones after it, if called by `deadline`, the time
    /// of the first return entry in the list.
    Ghost { class: usize, deadline: u64 },
}

/// An op placed in the linearization.
#[derive(Debug, Clone, Copy)]
enum Placed {
    Known(usize),
    Ghost { class: usize, rank: usize },
}

/// A step of the linearization being built.
#[derive(Debug, Clone, Copy)]
struct Frame {
    placed: Placed,
    /// The possible states before it.
    before: StateSet,
    /// What to try instead of it.
    resume: Cursor,
}

/// A point of the search, given the known ops linearized so far.
#[derive(Debug, Clone, Copy)]
struct Config {
    /// How many ghosts of each class are placed.
    placed: [usize; CLASSES],
    /// The states the account may be in.
    states: StateSet,
}

impl Config {
    /// Whether every linearizable completion of `other` gives one of `self`: `self` has at
    /// least as many ghosts of each class left (which may be left out) and at least the same
    /// possible states.
    fn covers(&self, other: &Config) -> bool {
        let more_left = self.placed.iter().zip(&other.placed).all(|(a, b)| a <= b);
        more_left && other.states.is_subset(self.states)
    }
}

/// Where the deepest branch of the search got stuck, with ops as indices into the history.
struct Stuck {
    /// How many known ops it placed.
    depth: usize,
    prefix: Vec<usize>,
    states: StateSet,
    candidates: Vec<usize>,
    blocking: usize,
}

impl Stuck {
    fn into_violation(self, limit: u8, events: &[Event]) -> Violation {
        let with_events =
            |indices: Vec<usize>| indices.into_iter().map(|i| (i, events[i])).collect();
        Violation {
            limit,
            total: events.len(),
            prefix: with_events(self.prefix),
            states: self.states,
            candidates: with_events(self.candidates),
            blocking: self.blocking,
        }
    }
}

/// The Wing–Gong search with Lowe's memoization.
struct Search {
    limit: u8,
    ops: Vec<KnownOp>,
    ghosts: [Vec<Ghost>; CLASSES],
    list: EntryList,
    /// The known ops linearized so far.
    linearized: Bitset,
    /// How many ghosts of each class are linearized (always the earliest-called ones).
    placed: [usize; CLASSES],
    /// The states the account may be in after the linearized ops.
    state: StateSet,
    stack: Vec<Frame>,
    /// The configurations explored without success, by their `linearized` ops.
    failed: HashMap<Bitset, Vec<Config>>,
    deepest: Option<Stuck>,
}

impl Search {
    fn new(limit: u8, events: &[Event]) -> Self {
        let (ops, ghosts) = prepare(events);
        Search {
            limit,
            list: EntryList::new(&ops),
            linearized: Bitset::new(ops.len()),
            ops,
            ghosts,
            placed: [0; CLASSES],
            state: StateSet::single(State::Active(limit)),
            stack: Vec::new(),
            failed: HashMap::new(),
            deepest: None,
        }
    }

    fn run(mut self) -> Result<(), Stuck> {
        let mut cursor = Cursor::Entry(self.list.first());
        while !self.list.is_empty() {
            cursor = match cursor {
                Cursor::Entry(node) => self.try_entry(node),
                Cursor::Ghost { class, deadline } if class < CLASSES => {
                    self.try_ghost(class, deadline)
                }
                Cursor::Ghost { .. } => {
                    self.note_stuck();
                    match self.backtrack() {
                        Some(resume) => resume,
                        None => return Err(self.deepest.expect("note_stuck recorded it")),
                    }
                }
            };
        }
        Ok(())
    }

    /// Tries to linearize the op whose entry is `node` next; at the first return entry, moves
    /// on to the ghosts.
    fn try_entry(&mut self, node: usize) -> Cursor {
        match self.list.node(node) {
            Node::Call(op) => {
                let resume = Cursor::Entry(self.list.next(node));
                let known = self.ops[op];
                let next = self.state.after(self.limit, known.op, known.outcome);
                self.linearized.set(op);
                if self.push(Placed::Known(op), next, resume) {
                    self.list.lift(op);
                    Cursor::Entry(self.list.first())
                } else {
                    self.linearized.clear(op);
                    resume
                }
            }
            Node::Return(op) => Cursor::Ghost {
                class: 0,
                deadline: self.ops[op].ret,
            },
            Node::Sentinel => unreachable!("a non-empty list has a return before its tail"),
        }
    }

    /// Tries to linearize the next ghost of `class` next. Only the earliest-called unplaced
    /// ghost of a class is tried, as they are interchangeable; and only if it changes the
    /// possible states for the better, as leaving it out is otherwise no worse.
    fn try_ghost(&mut self, class: usize, deadline: u64) -> Cursor {
        let resume = Cursor::Ghost {
            class: class + 1,
            deadline,
        };
        let rank = self.placed[class];
        let Some(ghost) = self.ghosts[class].get(rank).filter(|g| g.call <= deadline) else {
            return resume;
        };
        let next = self.state.applied(self.limit, ghost.op, None);
        if next.is_subset(self.state) {
            return resume;
        }
        self.placed[class] += 1;
        if self.push(Placed::Ghost { class, rank }, next, resume) {
            Cursor::Entry(self.list.first())
        } else {
            self.placed[class] -= 1;
            resume
        }
    }

    /// Moves to the possible states `next` after `placed` (already counted in `linearized` or
    /// `placed`), unless there are none or they are covered by a failure.
    fn push(&mut self, placed: Placed, next: StateSet, resume: Cursor) -> bool {
        let config = Config {
            placed: self.placed,
            states: next,
        };
        if next.is_empty() || self.is_failed(&config) {
            return false;
        }
        self.stack.push(Frame {
            placed,
            before: self.state,
            resume,
        });
        self.state = next;
        true
    }

    /// Whether `config`, with the current `linearized` ops, is covered by a failed one.
    fn is_failed(&self, config: &Config) -> bool {
        self.failed
            .get(&self.linearized)
            .is_some_and(|failed| failed.iter().any(|old| old.covers(config)))
    }

    /// Records that the current configuration has no linearizable completion, undoes the
    /// last step and returns what to try instead of it; `None` if there is no step to undo.
    fn backtrack(&mut self) -> Option<Cursor> {
        let frame = *self.stack.last()?;
        let config = Config {
            placed: self.placed,
            states: self.state,
        };
        let failed = self.failed.entry(self.linearized.clone()).or_default();
        failed.retain(|old| !config.covers(old));
        failed.push(config);
        self.stack.pop();
        match frame.placed {
            Placed::Known(op) => {
                self.list.unlift(op);
                self.linearized.clear(op);
            }
            Placed::Ghost { class, .. } => self.placed[class] -= 1,
        }
        self.state = frame.before;
        Some(frame.resume)
    }

    /// Records the current configuration, where nothing can be placed next, if it has placed
    /// more known ops than any before.
    fn note_stuck(&mut self) {
        let depth = self.stack.len() - self.placed.iter().sum::<usize>();
        if self.deepest.as_ref().is_some_and(|d| d.depth >= depth) {
            return;
        }
        let mut candidates = Vec::new();
        let mut node = self.list.first();
        let blocking = loop {
            match self.list.node(node) {
                Node::Call(op) => candidates.push(self.ops[op].event),
                Node::Return(op) => break self.ops[op].event,
                Node::Sentinel => unreachable!("a non-empty list has a return before its tail"),
            }
            node = self.list.next(node);
        };
        self.deepest = Some(Stuck {
            depth,
            prefix: self
                .stack
                .iter()
                .map(|frame| self.event(frame.placed))
                .collect(),
            states: self.state,
            candidates,
            blocking,
        });
    }

    /// The index in the history of a placed op.
    fn event(&self, placed: Placed) -> usize {
        match placed {
            Placed::Known(op) => self.ops[op].event,
            Placed::Ghost { class, rank } => self.ghosts[class][rank].event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RIGHT: Op = Op::Ke3 { right: true };
    const WRONG: Op = Op::Ke3 { right: false };

    fn ke2(attempts_left: u8) -> Reply {
        Reply::Ke2 { attempts_left }
    }

    fn done(op: Op, call: u64, ret: u64, reply: Reply) -> Event {
        Event {
            op,
            call,
            ret: Some(ret),
            reply: Some(reply),
        }
    }

    fn unknown(op: Op, call: u64, ret: Option<u64>) -> Event {
        Event {
            op,
            call,
            ret,
            reply: None,
        }
    }

    /// The ops one after another, op `k` called at `2k` and returning at `2k + 1`.
    fn sequential(steps: &[(Op, Reply)]) -> Vec<Event> {
        (0u64..)
            .step_by(2)
            .zip(steps)
            .map(|(call, &(op, reply))| done(op, call, call + 1, reply))
            .collect()
    }

    fn assert_linearizable(limit: u8, events: &[Event]) {
        if let Err(violation) = check(limit, events) {
            panic!("expected a linearizable history, got:\n{violation}");
        }
    }

    fn violation(limit: u8, events: &[Event]) -> String {
        match check(limit, events) {
            Ok(()) => panic!("expected a violation in {events:#?}"),
            Err(violation) => violation.to_string(),
        }
    }

    #[test]
    fn sequential_history_passes() {
        let events = sequential(&[
            (Op::Status, Reply::Left(3)),
            (Op::Ke1, ke2(2)),
            (WRONG, Reply::Wrong { attempts_left: 2 }),
            (Op::Ke1, ke2(1)),
            (RIGHT, Reply::Recovered),
            (Op::Status, Reply::Left(3)),
            (Op::Ke1, ke2(2)),
            (Op::Ke1, ke2(1)),
            (Op::Ke1, ke2(0)),
            (Op::Status, Reply::Left(0)),
            (RIGHT, Reply::Recovered),
            (Op::Ke1, ke2(2)),
            (Op::Ke1, ke2(1)),
            (Op::Ke1, ke2(0)),
            (WRONG, Reply::Destroyed),
            (Op::Status, Reply::Destroyed),
            (Op::Ke1, Reply::Destroyed),
            (RIGHT, Reply::Destroyed),
        ]);
        assert_linearizable(3, &events);
        let exhausted = sequential(&[(Op::Ke1, ke2(0)), (Op::Ke1, Reply::Destroyed)]);
        assert_linearizable(1, &exhausted);
    }

    #[test]
    fn only_valid_order_of_overlapping_ops_is_found() {
        // Called A, B, C but only B, C, A explains the replies.
        let mut events = vec![
            done(Op::Ke1, 1, 10, ke2(8)),
            done(Op::Ke1, 2, 11, ke2(9)),
            done(Op::Status, 3, 12, Reply::Left(9)),
            done(Op::Status, 20, 21, Reply::Left(8)),
        ];
        assert_linearizable(10, &events);
        events[3].reply = Some(Reply::Left(9));
        violation(10, &events);
    }

    #[test]
    fn counter_rising_without_recovery_fails() {
        let mut events = sequential(&[
            (Op::Ke1, ke2(9)),
            (Op::Ke1, ke2(8)),
            (Op::Ke1, ke2(7)),
            (Op::Status, Reply::Left(7)),
            (WRONG, Reply::Wrong { attempts_left: 7 }),
            (Op::Status, Reply::Left(8)),
        ]);
        let message = violation(10, &events);
        assert!(
            message.contains("#5 Status -> Left(8) [call 10, ret 11]"),
            "{message}"
        );
        assert!(message.contains("possible states after it: Active { attempts_left: 7 }"));
        events[4] = done(RIGHT, 8, 9, Reply::Recovered);
        events[5].reply = Some(Reply::Left(10));
        assert_linearizable(10, &events);
    }

    #[test]
    fn double_counted_attempt_fails() {
        let events = [done(Op::Ke1, 1, 2, ke2(9)), done(Op::Ke1, 3, 4, ke2(9))];
        violation(10, &events);
        let overlapping = [done(Op::Ke1, 1, 4, ke2(9)), done(Op::Ke1, 2, 3, ke2(9))];
        violation(10, &overlapping);
        let distinct = [done(Op::Ke1, 1, 4, ke2(8)), done(Op::Ke1, 2, 3, ke2(9))];
        assert_linearizable(10, &distinct);
    }

    #[test]
    fn destroyed_record_served_again_fails() {
        let destroyed = [(Op::Ke1, ke2(0)), (Op::Ke1, Reply::Destroyed)];
        for revived in [
            (Op::Ke1, ke2(0)),
            (RIGHT, Reply::Recovered),
            (WRONG, Reply::Wrong { attempts_left: 0 }),
            (Op::Status, Reply::Left(0)),
        ] {
            violation(1, &sequential(&[destroyed[0], destroyed[1], revived]));
        }
        assert_linearizable(
            1,
            &sequential(&[destroyed[0], destroyed[1], (RIGHT, Reply::Destroyed)]),
        );
    }

    #[test]
    fn unknown_ke1_may_or_may_not_have_applied() {
        let status = |call, left| done(Op::Status, call, call + 1, Reply::Left(left));
        for ret in [Some(4), None] {
            let applied = [status(1, 10), unknown(Op::Ke1, 3, ret), status(5, 9)];
            assert_linearizable(10, &applied);
            let dropped = [status(1, 10), unknown(Op::Ke1, 3, ret), status(5, 10)];
            assert_linearizable(10, &dropped);
            let twice = [status(1, 10), unknown(Op::Ke1, 3, ret), status(5, 8)];
            violation(10, &twice);
            let before_call = [status(1, 9), unknown(Op::Ke1, 3, ret)];
            violation(10, &before_call);
        }
        // Only an op that never returned may take effect after a later op.
        let late = |ret| {
            [
                unknown(Op::Ke1, 1, ret),
                done(RIGHT, 3, 4, Reply::Recovered),
                status(5, 9),
            ]
        };
        violation(10, &late(Some(2)));
        assert_linearizable(10, &late(None));
    }

    #[test]
    fn many_pending_unknowns_stay_tractable() {
        let mut events = vec![done(Op::Status, 0, 1, Reply::Left(50))];
        events.extend((2..32).map(|call| unknown(Op::Ke1, call, None)));
        events.push(done(Op::Status, 40, 41, Reply::Left(45)));
        events.push(done(Op::Status, 50, 51, Reply::Left(20)));
        assert_linearizable(50, &events);
        let last = events.len() - 1;
        events[last].reply = Some(Reply::Left(47));
        violation(50, &events);
    }

    // --- Randomized histories from a simulated linearizable vault. ---------------------------

    /// A xorshift64 generator.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            let n = u64::try_from(n).expect("usize fits in u64");
            usize::try_from(self.next() % n).expect("below n")
        }

        fn percent(&mut self, p: u64) -> bool {
            self.next() % 100 < p
        }

        fn op(&mut self) -> Op {
            match self.below(100) {
                0..=39 => Op::Ke1,
                40..=59 => RIGHT,
                60..=74 => WRONG,
                _ => Op::Status,
            }
        }
    }

    /// The vault's guess rule, written independently of the checker's model.
    struct Vault {
        limit: u8,
        /// `None` once destroyed.
        left: Option<u8>,
    }

    impl Vault {
        fn apply(&mut self, op: Op) -> Reply {
            let Some(left) = self.left else {
                return Reply::Destroyed;
            };
            match op {
                Op::Status => Reply::Left(left),
                Op::Ke3 { right: true } => {
                    self.left = Some(self.limit);
                    Reply::Recovered
                }
                Op::Ke1 | Op::Ke3 { right: false } if left == 0 => {
                    self.left = None;
                    Reply::Destroyed
                }
                Op::Ke1 => {
                    self.left = Some(left - 1);
                    Reply::Ke2 {
                        attempts_left: left - 1,
                    }
                }
                Op::Ke3 { right: false } => Reply::Wrong {
                    attempts_left: left,
                },
            }
        }
    }

    /// How much chaos a simulated run has, in percent per decision.
    struct Chaos {
        clients: usize,
        ops: usize,
        /// Connection lost: the op never returns (it may still take effect later).
        lost: u64,
        /// Timed out: the op returns without a reply and never took effect.
        timeout: u64,
        /// Reply lost: the op took effect and returns without a reply.
        unreplied: u64,
        /// All clients drain and one runs a few ops alone.
        burst: u64,
    }

    #[derive(Clone, Copy)]
    enum Client {
        Idle,
        Called(usize),
        Applied(usize, Reply),
    }

    struct Sim {
        vault: Vault,
        clock: u64,
        events: Vec<Event>,
        /// Ops whose client gave up on them but that will still take effect.
        ghosts: Vec<usize>,
    }

    impl Sim {
        fn tick(&mut self) -> u64 {
            self.clock += 1;
            self.clock
        }

        fn call(&mut self, op: Op) -> usize {
            let call = self.tick();
            self.events.push(unknown(op, call, None));
            self.events.len() - 1
        }

        fn apply(&mut self, event: usize) -> Reply {
            self.tick();
            self.vault.apply(self.events[event].op)
        }

        fn finish(&mut self, event: usize, reply: Option<Reply>) {
            let ret = self.tick();
            self.events[event].ret = Some(ret);
            self.events[event].reply = reply;
        }

        fn advance(&mut self, rng: &mut Rng, chaos: &Chaos, client: Client) -> Client {
            match client {
                Client::Idle => Client::Called(self.call(rng.op())),
                Client::Called(event) if rng.percent(chaos.lost) => {
                    if rng.percent(50) {
                        self.ghosts.push(event);
                    }
                    Client::Idle
                }
                Client::Called(event) if rng.percent(chaos.timeout) => {
                    self.finish(event, None);
                    Client::Idle
                }
                Client::Called(event) => Client::Applied(event, self.apply(event)),
                Client::Applied(_, _) if rng.percent(chaos.lost) => Client::Idle,
                Client::Applied(event, reply) => {
                    let reply = (!rng.percent(chaos.unreplied)).then_some(reply);
                    self.finish(event, reply);
                    Client::Idle
                }
            }
        }

        /// Completes every client's op without chaos.
        fn drain(&mut self, clients: &mut [Client]) {
            for client in clients.iter_mut() {
                if let Client::Called(event) = *client {
                    *client = Client::Applied(event, self.apply(event));
                }
                if let Client::Applied(event, reply) = *client {
                    self.finish(event, Some(reply));
                }
                *client = Client::Idle;
            }
        }

        /// Runs `ops` one after another, with nothing else going on.
        fn burst(&mut self, ops: impl IntoIterator<Item = Op>) {
            for op in ops {
                let event = self.call(op);
                let reply = self.apply(event);
                self.finish(event, Some(reply));
            }
        }

        fn haunt(&mut self, rng: &mut Rng) {
            let ghost = self.ghosts.swap_remove(rng.below(self.ghosts.len()));
            self.apply(ghost);
        }
    }

    /// A linearizable history of `chaos.ops` ops on an account with attempt limit `limit`,
    /// starting with a sequential `Status`, `Ke1`.
    fn simulate(rng: &mut Rng, limit: u8, chaos: &Chaos) -> Vec<Event> {
        let mut sim = Sim {
            vault: Vault {
                limit,
                left: Some(limit),
            },
            clock: 0,
            events: Vec::new(),
            ghosts: Vec::new(),
        };
        sim.burst([Op::Status, Op::Ke1]);
        let mut clients = vec![Client::Idle; chaos.clients];
        while sim.events.len() < chaos.ops {
            if rng.percent(chaos.burst) {
                sim.drain(&mut clients);
                let len = 2 + rng.below(4);
                sim.burst((0..len).map(|_| rng.op()));
            } else if !sim.ghosts.is_empty() && rng.percent(5) {
                sim.haunt(rng);
            } else {
                let client = rng.below(clients.len());
                clients[client] = sim.advance(rng, chaos, clients[client]);
            }
        }
        sim.drain(&mut clients);
        sim.events
    }

    fn random_limit(rng: &mut Rng) -> u8 {
        u8::try_from(1 + rng.below(12)).expect("at most 12")
    }

    /// The `Ke2` events `e` whose reply is forced: the op `p` just before `e` has a known reply
    /// that pins the state (`Ke2`, `Wrong`, `Left` or `Recovered`), and every other op ends
    /// before `p` is called or is called after `e` returns. Any other `Ke2` reply for such an
    /// `e` is impossible.
    fn forced_ke2s(events: &[Event]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by_key(|&i| events[i].call);
        let end = |i: usize| events[i].ret.unwrap_or(u64::MAX);
        let pins =
            |i: usize| matches!(events[i].outcome(), Some(reply) if reply != Reply::Destroyed);
        let mut latest_end = None;
        let mut forced = Vec::new();
        for (k, pair) in order.windows(2).enumerate() {
            let (p, e) = (pair[0], pair[1]);
            let alone_before = latest_end.is_none_or(|end| end < events[p].call);
            let alone_after = order.get(k + 2).is_none_or(|&n| events[n].call > end(e));
            let is_ke2 = matches!(events[e].outcome(), Some(Reply::Ke2 { .. }));
            if alone_before && alone_after && pins(p) && end(p) < events[e].call && is_ke2 {
                forced.push(e);
            }
            latest_end = latest_end.max(Some(end(p)));
        }
        forced
    }

    #[test]
    fn random_histories_pass_and_impossible_mutations_fail() {
        let chaos = Chaos {
            clients: 5,
            ops: 300,
            lost: 1,
            timeout: 2,
            unreplied: 3,
            burst: 3,
        };
        for seed in 0..40 {
            let mut rng = Rng::new(seed);
            let limit = random_limit(&mut rng);
            let mut events = simulate(&mut rng, limit, &chaos);
            if let Err(violation) = check(limit, &events) {
                panic!("seed {seed}: simulated history rejected:\n{violation}");
            }
            let forced = forced_ke2s(&events);
            assert!(!forced.is_empty(), "seed {seed}: the opening Ke1 is forced");
            let target = forced[rng.below(forced.len())];
            let Some(Reply::Ke2 { attempts_left }) = events[target].reply else {
                unreachable!("forced_ke2s returns Ke2 events");
            };
            let wrong = if attempts_left == 0 {
                1
            } else {
                attempts_left - 1
            };
            events[target].reply = Some(ke2(wrong));
            assert!(
                check(limit, &events).is_err(),
                "seed {seed}: mutated #{target} to Ke2 {{ attempts_left: {wrong} }} but it passed"
            );
        }
    }

    /// Whether some order of `events` consistent with real time explains every reply, trying
    /// every order and every choice of which unknown ops took effect.
    fn brute_force(limit: u8, events: &[Event], remaining: u32, state: State) -> bool {
        let pending = |i: usize| remaining & (1 << i) != 0;
        remaining == 0
            || (0..events.len()).filter(|&i| pending(i)).any(|i| {
                let event = events[i];
                let must_wait = (0..events.len())
                    .any(|j| pending(j) && events[j].ret.is_some_and(|ret| ret < event.call));
                let rest = remaining & !(1 << i);
                let (next, reply) = state.step(limit, event.op);
                !must_wait
                    && match event.outcome() {
                        Some(seen) => seen == reply && brute_force(limit, events, rest, next),
                        None => {
                            brute_force(limit, events, rest, next)
                                || brute_force(limit, events, rest, state)
                        }
                    }
            })
    }

    #[test]
    fn small_random_histories_agree_with_brute_force() {
        let chaos = Chaos {
            clients: 3,
            ops: 7,
            lost: 15,
            timeout: 10,
            unreplied: 15,
            burst: 5,
        };
        let mut verdicts = [0; 2];
        for seed in 0..3000 {
            let mut rng = Rng::new(seed);
            let limit = u8::try_from(1 + rng.below(3)).expect("at most 3");
            let mut events = simulate(&mut rng, limit, &chaos);
            if rng.percent(50) {
                let victim = rng.below(events.len());
                let left = u8::try_from(rng.below(4)).expect("at most 3");
                let replies = [
                    ke2(left),
                    Reply::Recovered,
                    Reply::Wrong {
                        attempts_left: left,
                    },
                ];
                let more = [Reply::Destroyed, Reply::Left(left)];
                let reply = replies.into_iter().chain(more).nth(rng.below(5));
                events[victim].reply = reply;
            }
            let all = (1 << events.len()) - 1;
            let expected = brute_force(limit, &events, all, State::Active(limit));
            assert_eq!(
                check(limit, &events).is_ok(),
                expected,
                "seed {seed}: {events:#?}"
            );
            verdicts[usize::from(expected)] += 1;
        }
        assert!(
            verdicts.iter().all(|&n| n > 300),
            "too one-sided: {verdicts:?}"
        );
    }

    #[test]
    fn long_chaotic_histories_pass() {
        let chaos = Chaos {
            clients: 8,
            ops: 2000,
            lost: 1,
            timeout: 1,
            unreplied: 1,
            burst: 1,
        };
        for seed in 100..105 {
            let mut rng = Rng::new(seed);
            let limit = random_limit(&mut rng);
            let events = simulate(&mut rng, limit, &chaos);
            let unknowns = events.iter().filter(|e| e.outcome().is_none()).count();
            assert!(
                unknowns >= 20,
                "seed {seed}: only {unknowns} unknown outcomes"
            );
            if let Err(violation) = check(limit, &events) {
                panic!("seed {seed}: simulated history rejected:\n{violation}");
            }
        }
    }
}
