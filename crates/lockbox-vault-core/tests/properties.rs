//! Model-based property test of the guess limit through the real handlers and real OPAQUE
//! messages: arbitrary interleavings of concurrent logins (honest, wrong-password, forged KE3),
//! stale reads rejected by compare-and-swap, writes lost before they are durable, crashes
//! (sessions lost, store kept), replays of old KE1/KE3, retries of the last KE1/KE3 (a lost
//! reply), expiry, re-enrollment, password change and deletion. A repeated KE1 or KE3 may get
//! its earlier reply again, byte for byte, and nothing else: never a second evaluation.
//!
//! A guess is any OPRF evaluation under the key a live record's logins use, whichever request
//! obtained it: every released KE2, and every RegistrationResponse from which the model (which
//! knows the real password) derives the live record's masking key, the key that unmasks any of
//! its KE2s offline. An evaluation obtained before a record existed counts against it as soon
//! as it is live; only the one the record was registered from does not.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use lockbox_crypto::BackupKey;
use lockbox_vault_core::client::{
    ClientEnrollment, ClientError, ClientRecovery, EnrollmentUpload, RecoveryOpening,
};
use lockbox_vault_core::{
    AttemptLimit, KsfParams, Outcome, PendingReply, Record, Reply, Request, SessionId, VaultError,
    Write,
};
use proptest::prelude::*;
use proptest::sample::Index;
use rand_core::OsRng;

const PW: &[u8] = b"the right password";
const LIMIT: u8 = 3;

#[derive(Debug, Clone)]
enum Op {
    Ke1 { honest: bool },
    StaleKe1(Index),
    Commit(Index),
    Lose(Index),
    Ke3 { client: Index, forge: bool },
    ReplayKe1(Index),
    ReplayKe3(Index),
    RetryKe1,
    RetryKe3,
    CrossAccountKe3(Index),
    Delete(Index),
    ChangePassword(Index),
    RegStart,
    RegFinish(Index),
    Crash { commit_inflight: bool },
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => any::<bool>().prop_map(|honest| Op::Ke1 { honest }),
        1 => any::<Index>().prop_map(Op::StaleKe1),
        8 => any::<Index>().prop_map(Op::Commit),
        1 => any::<Index>().prop_map(Op::Lose),
        6 => (any::<Index>(), proptest::bool::weighted(0.25)).prop_map(|(client, forge)| Op::Ke3 { client, forge }),
        1 => any::<Index>().prop_map(Op::ReplayKe1),
        1 => any::<Index>().prop_map(Op::ReplayKe3),
        2 => Just(Op::RetryKe1),
        2 => Just(Op::RetryKe3),
        1 => any::<Index>().prop_map(Op::CrossAccountKe3),
        1 => any::<Index>().prop_map(Op::Delete),
        1 => any::<Index>().prop_map(Op::ChangePassword),
        2 => Just(Op::RegStart),
        1 => any::<Index>().prop_map(Op::RegFinish),
        1 => any::<bool>().prop_map(|commit_inflight| Op::Crash { commit_inflight }),
        1 => prop_oneof![Just(1_000u64), Just(61_000)].prop_map(Op::Tick),
    ]
}

/// Why a write was requested, to check the transition it makes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cause {
    Ke1,
    Ke3,
    Enroll { started_at: u64 },
    Delete,
}

enum Client {
    /// KE1 sent, KE2 not yet released.
    Waiting(Option<ClientRecovery>),
    /// Holds a released KE2.
    HasKe2 {
        session: SessionId,
        ke2: Vec<u8>,
        ksf: KsfParams,
        client: Option<ClientRecovery>,
    },
    /// KE3 sent.
    Sent {
        opening: Option<RecoveryOpening>,
    },
    Authenticated(SessionId),
    Done,
}

struct InFlight {
    request: Request,
    /// Model time when the request was handled (a session can only expire after a tick).
    queued_at: u64,
    write: Write,
    pending: PendingReply,
    cause: Cause,
    client: Option<usize>,
    enrollment: Option<Enrolling>,
}

/// What an enrollment in flight brings: the key it wraps, the evaluation it was registered
/// from, and the masking key of the record it creates.
struct Enrolling {
    key: BackupKey,
    evaluation: usize,
    masking_key: Vec<u8>,
}

/// Why a re-run request may legitimately fail.
#[derive(Debug, Clone, Copy)]
struct Excuses {
    moved_on: bool,
    ticked: bool,
}

struct Model {
    h: Harness,
    clients: Vec<Client>,
    in_flight: Vec<InFlight>,
    snapshots: Vec<Option<Record>>,
    ke1s: Vec<Vec<u8>>,
    ke3s: Vec<(SessionId, Vec<u8>)>,
    /// The KE2 reply released for each KE1: all a repeat of that KE1 may ever get.
    released_ke2: BTreeMap<Vec<u8>, Reply>,
    /// The reply to each processed (session, KE3): all a repeat of it may ever get.
    ke3_outcomes: BTreeMap<(SessionId, Vec<u8>), Reply>,
    registrations: Vec<Registration>,
    keys: BTreeMap<u64, BackupKey>,
    /// Masking key of every RegistrationResponse obtained, finished with the real password.
    evaluations: Vec<Vec<u8>>,
    /// Masking key of the live record of each generation.
    masking_keys: BTreeMap<u64, Vec<u8>>,
    guesses_since_success: BTreeMap<u64, u32>,
    destroyed: BTreeSet<u64>,
}

/// A registration the vault answered, finished on the device, not yet uploaded.
struct Registration {
    session: SessionId,
    upload: EnrollmentUpload,
    key: BackupKey,
    started_at: u64,
    evaluation: usize,
}

/// Layout of a RegistrationUpload (opaque-ke 4.0.1): client public key (32) ‖ masking key (64)
/// ‖ envelope (96).
fn masking_key(upload: &EnrollmentUpload) -> Vec<u8> {
    upload.upload[32..96].to_vec()
}

fn alice() -> lockbox_vault_core::AccountId {
    acct("alice")
}

impl Model {
    fn new() -> Self {
        let mut h = Harness::new();
        let key = BackupKey::generate(&mut OsRng);
        let (session, pending) = h.register_start(&alice(), PW);
        let upload = pending.finish(&key, LIMIT);
        let first_masking_key = masking_key(&upload);
        h.run(upload.into_request(alice(), session)).unwrap();
        h.enroll(
            &acct("mallory"),
            b"m",
            &BackupKey::generate(&mut OsRng),
            LIMIT,
        );
        let snapshots = vec![h.store.get(&alice()).cloned()];
        Self {
            h,
            clients: vec![],
            in_flight: vec![],
            snapshots,
            ke1s: vec![],
            ke3s: vec![],
            released_ke2: BTreeMap::new(),
            ke3_outcomes: BTreeMap::new(),
            registrations: vec![],
            keys: BTreeMap::from([(1, key)]),
            evaluations: vec![first_masking_key.clone()],
            masking_keys: BTreeMap::from([(1, first_masking_key)]),
            guesses_since_success: BTreeMap::new(),
            destroyed: BTreeSet::new(),
        }
    }

    fn current(&self) -> Option<&Record> {
        self.h.store.get(&alice())
    }

    /// `AccountBusy` is only for an account that really holds its quota of live sessions.
    fn check_busy(&self) {
        let quota = self.h.vault.config().max_sessions_per_account;
        assert!(self.h.vault.sessions().open_for(&alice()) >= quota);
    }

    fn expect_no_write(&self, result: &Result<Outcome, VaultError>) {
        if let Ok(Outcome::WriteThenReply { .. }) = result {
            panic!("expected no write, got {result:?}");
        }
    }

    fn queue(
        &mut self,
        outcome: Outcome,
        request: Request,
        cause: Cause,
        client: Option<usize>,
        enrollment: Option<Enrolling>,
    ) -> Option<Reply> {
        match outcome {
            Outcome::Reply(reply) => Some(reply),
            Outcome::WriteThenReply { write, pending } => {
                self.in_flight.push(InFlight {
                    request,
                    queued_at: self.h.now,
                    write,
                    pending,
                    cause,
                    client,
                    enrollment,
                });
                None
            }
        }
    }

    fn login_start(
        &mut self,
        ke1: Vec<u8>,
        client: Option<ClientRecovery>,
        stored: Option<Record>,
    ) {
        let request = Request::LoginStart {
            account: alice(),
            ke1: ke1.clone(),
        };
        let result = self
            .h
            .vault
            .handle(stored.as_ref(), request.clone(), &mut OsRng, self.h.now);
        self.ke1s.push(ke1);
        match result {
            Ok(Outcome::Reply(reply)) => self.repeated_ke2(&request, &reply),
            Ok(outcome) => {
                self.clients.push(Client::Waiting(client));
                let idx = self.clients.len() - 1;
                if let Some(reply) = self.queue(outcome, request, Cause::Ke1, Some(idx), None) {
                    panic!("KE1 answered without a write: {reply:?}");
                }
            }
            Err(VaultError::Destroyed | VaultError::ReplayedKe1) => {}
            Err(VaultError::AccountBusy) => self.check_busy(),
            Err(e) => panic!("KE1: {e:?}"),
        }
    }

    /// A KE1 answered without a write must be a repeat: the very reply released for it before
    /// (same session, same KE2 bytes, same attempts left), so it is no new evaluation.
    fn repeated_ke2(&self, request: &Request, reply: &Reply) {
        let Request::LoginStart { ke1, .. } = request else {
            panic!("not a KE1: {request:?}")
        };
        assert_eq!(
            self.released_ke2.get(ke1),
            Some(reply),
            "a KE1 was answered without a write by anything but its released KE2"
        );
    }

    fn ke3_key(request: &Request) -> (SessionId, Vec<u8>) {
        let Request::LoginFinish { session, ke3, .. } = request else {
            panic!("not a KE3: {request:?}")
        };
        (SessionId::parse(session).unwrap(), ke3.clone())
    }

    /// A KE3 sent again (a retry after a lost reply, or a relay's replay): it may only get the
    /// reply its first processing got, and must write nothing and open no session.
    fn repeat_ke3(&mut self, session: SessionId, ke3: Vec<u8>) {
        let sessions = self.h.vault.sessions().len();
        let request = Request::LoginFinish {
            account: alice(),
            session: session.as_bytes().to_vec(),
            ke3: ke3.clone(),
        };
        let r = self.h.handle(request);
        self.expect_no_write(&r);
        match r {
            Ok(Outcome::Reply(reply)) => assert_eq!(
                self.ke3_outcomes.get(&(session, ke3)),
                Some(&reply),
                "a repeated KE3 got another answer than its first"
            ),
            Err(VaultError::NoSession | VaultError::SessionExpired) => {}
            other => panic!("repeated KE3: {other:?}"),
        }
        assert!(
            self.h.vault.sessions().len() <= sessions,
            "a repeat opened a session"
        );
    }

    /// Checks a durable transition against the rules, then applies it.
    fn apply(
        &mut self,
        prior: Option<&Record>,
        next: &Record,
        cause: Cause,
        enrollment: Option<&Enrolling>,
    ) {
        let (pg, ng) = (prior.map_or(0, Record::generation), next.generation());
        match (cause, prior.and_then(Record::attempts), next.attempts()) {
            (Cause::Ke1, Some((a, l)), Some((b, l2))) => assert!(
                b + 1 == a && l == l2 && pg == ng,
                "KE1 must spend exactly one attempt"
            ),
            (Cause::Ke1 | Cause::Ke3, Some((0, _)), None) => {
                assert_eq!(ng, pg + 1, "destruction bumps the generation")
            }
            (Cause::Ke3, Some((_, l)), Some((b, _))) => {
                assert!(b == l && pg == ng, "success restores the full limit")
            }
            (Cause::Delete, Some(_), None) => assert_eq!(ng, pg + 1),
            (Cause::Enroll { started_at }, _, Some((b, l))) => {
                assert!(
                    b == l && ng == pg + 1 && started_at == pg,
                    "enrollment only from the generation it started at"
                )
            }
            other => panic!("illegal transition {other:?} by {cause:?}"),
        }
        if next.is_destroyed() {
            self.destroyed.insert(pg);
        }
        if cause == Cause::Ke3 && !next.is_destroyed() {
            // A durable reset is a success even if its reply died in a crash.
            self.guesses_since_success.insert(ng, 0);
        }
        self.h.store.insert(alice(), next.clone());
        self.snapshots.push(Some(next.clone()));
        if let Some(e) = enrollment {
            // Evaluations obtained before this record existed are guesses against it if they
            // were made under its key; the one it was registered from is its owner's.
            self.masking_keys.insert(ng, e.masking_key.clone());
            let earlier = (self.evaluations.iter().enumerate())
                .filter(|&(i, mk)| i != e.evaluation && *mk == e.masking_key)
                .count();
            for _ in 0..earlier {
                self.guess(ng, "an earlier RegistrationResponse");
            }
        }
    }

    /// Counts one guess against the live record of generation `g`.
    fn guess(&mut self, g: u64, what: &str) {
        let n = self.guesses_since_success.entry(g).or_default();
        *n += 1;
        assert!(
            *n <= u32::from(LIMIT),
            "more guesses than the limit between two successes: {n} (the last by {what})"
        );
    }

    /// A RegistrationResponse left the vault: finish it with the real password, as an attacker
    /// would with a candidate, and count it if it yields the live record's masking key.
    fn evaluated(&mut self, upload: &EnrollmentUpload) -> usize {
        let mk = masking_key(upload);
        let live = self
            .current()
            .filter(|r| !r.is_destroyed())
            .map(Record::generation);
        if let Some(g) = live.filter(|g| self.masking_keys.get(g) == Some(&mk)) {
            self.guess(g, "a RegistrationResponse");
        }
        self.evaluations.push(mk);
        self.evaluations.len() - 1
    }

    fn commit(&mut self, i: usize) {
        let f = self.in_flight.remove(i);
        if self.current() != f.write.prior() {
            // CAS failed: the reply never leaves; the shell gives back the consumed session and
            // re-runs the request on the fresh record.
            let handled_at = f.write.prior().map_or(0, Record::generation);
            self.h.vault.abandon(f.pending, f.write.rejected()).unwrap();
            let excuses = Excuses {
                moved_on: self.current().map_or(0, Record::generation) != handled_at,
                ticked: self.h.now != f.queued_at,
            };
            return self.rerun(f.request, f.cause, f.client, f.enrollment, excuses);
        }
        let prior = self.current().cloned();
        self.apply(
            prior.as_ref(),
            &f.write.record().clone(),
            f.cause,
            f.enrollment.as_ref(),
        );
        let generation = f.write.record().generation();
        let reply = self
            .h
            .vault
            .release(f.pending, f.write.committed())
            .unwrap();
        match &f.request {
            Request::LoginStart { ke1, .. } => {
                self.released_ke2.insert(ke1.clone(), reply.clone());
            }
            Request::LoginFinish { .. } => {
                let key = Self::ke3_key(&f.request);
                self.ke3_outcomes.insert(key, reply.clone());
            }
            _ => {}
        }
        match reply {
            Reply::LoginStarted {
                session,
                ke2,
                ksf,
                attempts_left,
            } => {
                assert!(
                    !self.destroyed.contains(&generation),
                    "KE2 after destruction"
                );
                assert_eq!(self.current().unwrap().attempts().unwrap().0, attempts_left);
                self.guess(generation, "a KE2");
                let c = f.client.unwrap();
                let Client::Waiting(client) = std::mem::replace(&mut self.clients[c], Client::Done)
                else {
                    panic!()
                };
                self.clients[c] = Client::HasKe2 {
                    session,
                    ke2,
                    ksf,
                    client,
                };
            }
            Reply::Recovered {
                session,
                sealed_wrapped_key,
                ..
            } => {
                assert!(
                    !self.destroyed.contains(&generation),
                    "wrapped key after destruction"
                );
                let c = f.client.unwrap();
                let Client::Sent { opening, .. } =
                    std::mem::replace(&mut self.clients[c], Client::Authenticated(session))
                else {
                    panic!()
                };
                let opening = opening.expect("only a client that knows the password can succeed");
                assert_eq!(
                    opening.open(&sealed_wrapped_key).unwrap(),
                    self.keys[&generation]
                );
            }
            Reply::Enrolled { generation: g } => {
                assert_eq!(g, generation);
                self.keys.insert(g, f.enrollment.unwrap().key);
            }
            Reply::Destroyed | Reply::Deleted => assert!(self.current().unwrap().is_destroyed()),
            other => panic!("unexpected released reply {other:?}"),
        }
    }

    /// What the shell does after a lost compare-and-swap: re-run the request on the fresh
    /// record, with the session it consumed given back. It must then succeed unless the record
    /// really moved on (new generation: re-enrolled, deleted, destroyed) or time passed.
    fn rerun(
        &mut self,
        request: Request,
        cause: Cause,
        client: Option<usize>,
        enrollment: Option<Enrolling>,
        excuses: Excuses,
    ) {
        match self.h.handle(request.clone()) {
            // The same KE1 was committed meanwhile (a replay that won the race): this copy gets
            // the KE2 released for it, and the winner's client drives that login on.
            Ok(Outcome::Reply(reply)) if cause == Cause::Ke1 => {
                self.repeated_ke2(&request, &reply);
                self.clients[client.unwrap()] = Client::Done;
            }
            Ok(outcome) => {
                if let Some(reply) = self.queue(outcome, request.clone(), cause, client, enrollment)
                {
                    self.ke3_outcomes
                        .insert(Self::ke3_key(&request), reply.clone());
                    let forged = matches!(
                        client.map(|c| &self.clients[c]),
                        Some(Client::Sent { opening: None })
                    );
                    assert!(forged, "a re-run honest KE3 was judged wrong: {reply:?}");
                    assert!(matches!(reply, Reply::Wrong { .. }), "{reply:?}");
                }
            }
            Err(VaultError::NoSession | VaultError::StaleGeneration) if excuses.moved_on => {}
            Err(VaultError::SessionExpired) if excuses.ticked => {}
            Err(VaultError::Destroyed) if self.current().is_some_and(Record::is_destroyed) => {}
            // The same KE1 bytes may have been replayed and committed meanwhile.
            Err(VaultError::ReplayedKe1) if cause == Cause::Ke1 => {}
            Err(VaultError::AccountBusy) if cause == Cause::Ke1 => self.check_busy(),
            Err(e) => panic!("re-run of {cause:?} failed without cause: {e:?} ({excuses:?})"),
        }
    }

    fn ke3(&mut self, c: usize, forge: bool) {
        if !matches!(self.clients[c], Client::HasKe2 { .. }) {
            return;
        }
        let Client::HasKe2 {
            session,
            ke2,
            ksf,
            client,
            ..
        } = std::mem::replace(&mut self.clients[c], Client::Done)
        else {
            return;
        };
        let (ke3, opening) = match (client, forge) {
            (Some(client), false) => {
                let (ke3, opening) = client.finish(&ke2, ksf, &mut OsRng).unwrap();
                (ke3, Some(opening))
            }
            _ => (forged_ke3(), None),
        };
        self.ke3s.push((session, ke3.clone()));
        let request = Request::LoginFinish {
            account: alice(),
            session: session.as_bytes().to_vec(),
            ke3,
        };
        let honest = opening.is_some();
        self.clients[c] = Client::Sent { opening };
        match self.h.handle(request.clone()) {
            Ok(outcome) => {
                let key = Self::ke3_key(&request);
                if let Some(reply) = self.queue(outcome, request, Cause::Ke3, Some(c), None) {
                    self.ke3_outcomes.insert(key, reply.clone());
                    assert!(!honest, "the right password was judged wrong");
                    assert!(matches!(reply, Reply::Wrong { .. }), "{reply:?}");
                }
            }
            Err(VaultError::NoSession | VaultError::SessionExpired) => {}
            Err(e) => panic!("KE3: {e:?}"),
        }
    }

    /// RegisterStart (`authenticated: None`) or ChangePassword, always with the real password;
    /// the registration is finished on the device at once, as an attacker would.
    fn register_start(&mut self, authenticated: Option<SessionId>) {
        let started_at = self.current().map_or(0, Record::generation);
        let (msg, client) =
            ClientEnrollment::start(PW, alice(), self.h.identity(), &mut OsRng).unwrap();
        let request = match authenticated {
            None => Request::RegisterStart {
                account: alice(),
                registration_request: msg,
            },
            Some(session) => Request::ChangePassword {
                account: alice(),
                session: session.as_bytes().to_vec(),
                registration_request: msg,
            },
        };
        let result = self.h.handle(request);
        self.expect_no_write(&result);
        let response = match result {
            Ok(Outcome::Reply(Reply::RegistrationStarted { session, response })) => {
                (session, response)
            }
            Err(VaultError::NoSession | VaultError::SessionExpired) if authenticated.is_some() => {
                return;
            }
            Err(VaultError::AccountBusy) => return self.check_busy(),
            other => panic!("registration start: {other:?}"),
        };
        let key = BackupKey::generate(&mut OsRng);
        let limit = AttemptLimit::new(LIMIT).unwrap();
        let upload = client
            .finish(&response.1, &key, limit, KSF, &mut OsRng)
            .unwrap();
        let evaluation = self.evaluated(&upload);
        self.registrations.push(Registration {
            session: response.0,
            upload,
            key,
            started_at,
            evaluation,
        });
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Ke1 { honest } => {
                let pw: &[u8] = if honest { PW } else { b"a guess" };
                let (ke1, client) =
                    ClientRecovery::start(pw, alice(), self.h.identity(), &mut OsRng).unwrap();
                let stored = self.current().cloned();
                self.login_start(ke1, honest.then_some(client), stored);
            }
            Op::StaleKe1(i) => {
                let stored = i.get(&self.snapshots).clone();
                let (ke1, client) =
                    ClientRecovery::start(PW, alice(), self.h.identity(), &mut OsRng).unwrap();
                self.login_start(ke1, Some(client), stored);
            }
            Op::Commit(i) if !self.in_flight.is_empty() => {
                self.commit(i.index(self.in_flight.len()))
            }
            Op::Lose(i) if !self.in_flight.is_empty() => {
                self.in_flight.remove(i.index(self.in_flight.len()));
            }
            Op::Ke3 { client, forge } if !self.clients.is_empty() => {
                self.ke3(client.index(self.clients.len()), forge)
            }
            Op::ReplayKe1(i) if !self.ke1s.is_empty() => {
                let ke1 = i.get(&self.ke1s).clone();
                let stored = self.current().cloned();
                self.login_start(ke1, None, stored);
            }
            Op::ReplayKe3(i) if !self.ke3s.is_empty() => {
                let (session, ke3) = i.get(&self.ke3s).clone();
                self.repeat_ke3(session, ke3);
            }
            Op::RetryKe3 if !self.ke3s.is_empty() => {
                let (session, ke3) = self.ke3s[self.ke3s.len() - 1].clone();
                self.repeat_ke3(session, ke3);
            }
            Op::RetryKe1 if !self.ke1s.is_empty() => {
                let ke1 = self.ke1s[self.ke1s.len() - 1].clone();
                let stored = self.current().cloned();
                self.login_start(ke1, None, stored);
            }
            Op::CrossAccountKe3(i) if !self.clients.is_empty() => {
                if let Client::HasKe2 { session, .. } = i.get(&self.clients) {
                    let r = self.h.handle(Request::LoginFinish {
                        account: acct("mallory"),
                        session: session.as_bytes().to_vec(),
                        ke3: vec![0; 64],
                    });
                    self.expect_no_write(&r);
                    assert!(
                        matches!(
                            r,
                            Err(VaultError::SessionAccountMismatch
                                | VaultError::SessionExpired
                                | VaultError::NoSession)
                        ),
                        "{r:?}"
                    );
                }
            }
            Op::Delete(i) if !self.clients.is_empty() => {
                let c = i.index(self.clients.len());
                if let Client::Authenticated(session) = self.clients[c] {
                    self.clients[c] = Client::Done;
                    let request = Request::Delete {
                        account: alice(),
                        session: session.as_bytes().to_vec(),
                    };
                    match self.h.handle(request.clone()) {
                        Ok(outcome) => assert!(
                            self.queue(outcome, request, Cause::Delete, None, None)
                                .is_none()
                        ),
                        Err(VaultError::NoSession | VaultError::SessionExpired) => {}
                        Err(e) => panic!("delete: {e:?}"),
                    }
                }
            }
            Op::ChangePassword(i) if !self.clients.is_empty() => {
                let c = i.index(self.clients.len());
                if let Client::Authenticated(session) = self.clients[c] {
                    self.clients[c] = Client::Done;
                    self.register_start(Some(session));
                }
            }
            Op::RegStart => self.register_start(None),
            Op::RegFinish(i) if !self.registrations.is_empty() => {
                let r = self.registrations.remove(i.index(self.registrations.len()));
                let enrolling = Enrolling {
                    masking_key: masking_key(&r.upload),
                    key: r.key,
                    evaluation: r.evaluation,
                };
                let request = r.upload.into_request(alice(), r.session);
                let cause = Cause::Enroll {
                    started_at: r.started_at,
                };
                match self.h.handle(request.clone()) {
                    Ok(outcome) => {
                        assert!(
                            self.queue(outcome, request, cause, None, Some(enrolling))
                                .is_none()
                        )
                    }
                    Err(
                        VaultError::StaleGeneration
                        | VaultError::NoSession
                        | VaultError::SessionExpired,
                    ) => {}
                    Err(e) => panic!("register finish: {e:?}"),
                }
            }
            Op::Crash { commit_inflight } => {
                for f in std::mem::take(&mut self.in_flight) {
                    // Some writes reach the disk just before the crash; their replies never leave.
                    if commit_inflight && self.current() == f.write.prior() {
                        let prior = self.current().cloned();
                        let enrollment = f.enrollment.as_ref();
                        self.apply(prior.as_ref(), f.write.record(), f.cause, enrollment);
                        // An enrollment on disk is live even though its reply was lost.
                        if let Some(e) = f.enrollment {
                            self.keys.insert(f.write.record().generation(), e.key);
                        }
                    }
                }
                self.h.crash();
            }
            Op::Tick(ms) => self.h.now += ms,
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn guess_limit_holds_through_the_real_handlers(ops in proptest::collection::vec(op(), 1..80)) {
        let mut m = Model::new();
        for op in ops {
            m.step(op);
            if let Some((left, limit)) = m.current().and_then(|rec| rec.attempts()) {
                prop_assert!(left <= limit);
            }
        }
        // Every KE1 whose KE2 left the vault is paid for in the durable store: draining the
        // remaining writes can only lower the counter or destroy, never restore it for free.
        let mallory = m.h.store[&acct("mallory")].clone();
        prop_assert_eq!(mallory.attempts(), Some((LIMIT, LIMIT)), "no request touched another account");
    }
}

#[test]
fn client_wrong_password_error_is_distinct() {
    // Sanity for the model: a device with the wrong password gets WrongPassword, not a KE3.
    let mut h = Harness::new();
    h.enroll(&alice(), PW, &BackupKey::generate(&mut OsRng), LIMIT);
    let (_, ke2, ksf, client) = h.login_start(&alice(), b"nope").unwrap();
    assert_eq!(
        client.finish(&ke2, ksf, &mut OsRng).unwrap_err(),
        ClientError::WrongPassword
    );
}
