//! The two verifiers of the hash chain: the witness, which countersigns only manifests that
//! extend the chain it has seen, and the device, which accepts only manifests both pinned keys
//! signed that extend the chain it has seen.

use super::{
    FleetPublicKey, HASH_LEN, Manifest, ManifestError, SignedManifest, WitnessKey,
    WitnessPublicKey, chain_hash,
};

/// A manifest signed by the fleet key only: what the fleet operator hands the witness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSigned(SignedManifest);

impl FleetSigned {
    pub(crate) fn new(signed: SignedManifest) -> Self {
        Self(signed)
    }

    /// Reads a fleet-signed manifest file. Signatures are checked by the witness, not here.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let signed = SignedManifest::from_bytes(bytes)?;
        if signed.fleet_signature.is_empty() {
            return Err(ManifestError::Unsigned);
        }
        if !signed.witness_key.is_empty() || !signed.witness_signature.is_empty() {
            return Err(ManifestError::AlreadyCountersigned);
        }
        Ok(Self(signed))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }

    pub fn signed(&self) -> &SignedManifest {
        &self.0
    }
}

/// The newest manifest a device (or the witness) has accepted: its sequence and chain hash.
/// The device persists it after every accepted update, where its storage cannot roll it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HighWater {
    pub sequence: u64,
    pub hash: [u8; HASH_LEN],
}

const HIGH_WATER_MAGIC: &[u8; 4] = b"LBHW";
const WITNESS_MAGIC: &[u8; 4] = b"LBWS";
const HIGH_WATER_LEN: usize = 4 + 8 + HASH_LEN;

impl HighWater {
    /// `"LBHW" ‖ sequence (u64 big-endian) ‖ hash`: 44 bytes.
    pub fn to_bytes(&self) -> [u8; HIGH_WATER_LEN] {
        let mut out = [0u8; HIGH_WATER_LEN];
        out[..4].copy_from_slice(HIGH_WATER_MAGIC);
        out[4..12].copy_from_slice(&self.sequence.to_be_bytes());
        out[12..].copy_from_slice(&self.hash);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        match bytes.split_first_chunk::<4>() {
            Some((magic, rest)) if magic == HIGH_WATER_MAGIC => Self::from_fields(rest),
            _ => Err(ManifestError::BadState("not a high-water mark")),
        }
    }

    fn from_fields(rest: &[u8]) -> Result<Self, ManifestError> {
        let Some((sequence, hash)) = rest.split_first_chunk::<8>() else {
            return Err(ManifestError::BadState("truncated"));
        };
        let hash: [u8; HASH_LEN] = hash
            .try_into()
            .map_err(|_| ManifestError::BadState("the hash must be 32 bytes"))?;
        let sequence = u64::from_be_bytes(*sequence);
        if sequence == 0 {
            return Err(ManifestError::BadState("sequence 0 is not a manifest"));
        }
        Ok(Self { sequence, hash })
    }
}

/// How a manifest relates to the chain head before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// It is the head itself (same sequence, same hash).
    Same,
    /// It is the next link.
    Next,
}

/// Where `m` (whose chain hash is `hash`) stands relative to `head` (`None`: the empty chain,
/// which manifest 1 with its zero previous hash extends).
fn link(
    head: Option<&HighWater>,
    m: &Manifest,
    hash: &[u8; HASH_LEN],
) -> Result<Link, ManifestError> {
    let (seq, head_hash) = head.map_or((0, [0; HASH_LEN]), |h| (h.sequence, h.hash));
    let got = m.sequence();
    if got < seq {
        Err(ManifestError::Rollback { highest: seq, got })
    } else if got == seq {
        if *hash == head_hash {
            Ok(Link::Same)
        } else {
            Err(ManifestError::ChainBroken { sequence: got })
        }
    } else if seq.checked_add(1) == Some(got) {
        if *m.previous_hash() == head_hash {
            Ok(Link::Next)
        } else {
            Err(ManifestError::ChainBroken { sequence: got })
        }
    } else {
        Err(ManifestError::Gap {
            expected: seq + 1,
            got,
        })
    }
}

fn check_unexpired(m: &Manifest, now_ms: u64) -> Result<(), ManifestError> {
    if now_ms >= m.expires_at_ms() {
        return Err(ManifestError::Expired {
            expires_at_ms: m.expires_at_ms(),
        });
    }
    Ok(())
}

/// The independent auditor's state: the last manifest it countersigned, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Witness {
    last: Option<HighWater>,
}

impl Witness {
    /// A witness that has countersigned nothing yet: it accepts only manifest 1.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn last(&self) -> Option<&HighWater> {
        self.last.as_ref()
    }

    /// Verifies the fleet signature and countersigns only a manifest that extends this witness's
    /// chain and has not expired, then advances. Countersigning the last manifest again (same
    /// bytes) is allowed and changes nothing, so a lost output file can be made again.
    pub fn countersign(
        &mut self,
        key: &WitnessKey,
        fleet: &FleetPublicKey,
        signed: FleetSigned,
        now_ms: u64,
    ) -> Result<SignedManifest, ManifestError> {
        let mut signed = signed.0;
        fleet.check(&signed.fleet_key, &signed.fleet_signature, &signed.body)?;
        let manifest = Manifest::from_body(&signed.body)?;
        let hash = chain_hash(&signed.body);
        link(self.last.as_ref(), &manifest, &hash).map_err(|e| self.refusal(e, &manifest))?;
        check_unexpired(&manifest, now_ms)?;
        signed.witness_key = key.public_key().to_bytes().to_vec();
        signed.witness_signature = key.sign(&signed.body).to_vec();
        self.last = Some(HighWater {
            sequence: manifest.sequence(),
            hash,
        });
        Ok(signed)
    }

    fn refusal(&self, e: ManifestError, m: &Manifest) -> ManifestError {
        match e {
            ManifestError::ChainBroken { sequence } => {
                ManifestError::WitnessRefusesFork { sequence }
            }
            _ => ManifestError::WitnessRefusesSequence {
                expected: self.last.map_or(1, |h| h.sequence.saturating_add(1)),
                got: m.sequence(),
            },
        }
    }

    /// `"LBWS"`, then nothing (no manifest countersigned yet) or sequence (u64 big-endian) ‖ hash.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = WITNESS_MAGIC.to_vec();
        if let Some(h) = &self.last {
            out.extend_from_slice(&h.to_bytes()[4..]);
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        match bytes.split_first_chunk::<4>() {
            Some((magic, [])) if magic == WITNESS_MAGIC => Ok(Self::new()),
            Some((magic, rest)) if magic == WITNESS_MAGIC => Ok(Self {
                last: Some(HighWater::from_fields(rest)?),
            }),
            _ => Err(ManifestError::BadState("not a witness state")),
        }
    }
}

/// What a device pins (compiled into the app): both public keys and its fleet id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub fleet: FleetPublicKey,
    pub witness: WitnessPublicKey,
    pub fleet_id: String,
}

/// The newest manifest of an accepted chain, and the high-water mark the caller must persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedManifest {
    manifest: Manifest,
    high_water: HighWater,
    signed: SignedManifest,
}

impl VerifiedManifest {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn high_water(&self) -> HighWater {
        self.high_water
    }
    /// The manifest as received, for a cache that is verified again when read back.
    pub fn signed(&self) -> &SignedManifest {
        &self.signed
    }
    pub fn into_manifest(self) -> Manifest {
        self.manifest
    }
}

/// What `lockbox fleet verify-log` reports for a log that verifies from manifest 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSummary {
    pub entries: usize,
    pub head: HighWater,
    pub newest_issued_at_ms: u64,
    pub newest_expires_at_ms: u64,
}

impl Pin {
    /// Both signatures by the pinned keys over the body, then the body (canonical, valid, this
    /// fleet's). Nothing of the body is parsed before both signatures verify.
    fn open(&self, signed: &SignedManifest) -> Result<(Manifest, HighWater), ManifestError> {
        self.fleet
            .check(&signed.fleet_key, &signed.fleet_signature, &signed.body)?;
        self.witness
            .check(&signed.witness_key, &signed.witness_signature, &signed.body)?;
        let manifest = Manifest::from_body(&signed.body)?;
        if manifest.fleet_id() != self.fleet_id {
            return Err(ManifestError::WrongFleet {
                expected: self.fleet_id.clone(),
                got: manifest.fleet_id().to_owned(),
            });
        }
        let high = HighWater {
            sequence: manifest.sequence(),
            hash: chain_hash(&signed.body),
        };
        Ok((manifest, high))
    }

    /// Accepts `chain`, every manifest after the device's mark `high` up to the newest, in
    /// order (`high = None`: a device that has seen none, so the chain starts at manifest 1).
    /// Each must be signed by both pinned keys and extend the one before; the first may be the
    /// manifest at `high` itself. Only the newest must be unexpired at `now_ms`.
    pub fn accept(
        &self,
        high: Option<&HighWater>,
        chain: &[SignedManifest],
        now_ms: u64,
    ) -> Result<VerifiedManifest, ManifestError> {
        let mut head = high.copied();
        let mut newest = None;
        for signed in chain {
            let (manifest, mark) = self.open(signed)?;
            link(head.as_ref(), &manifest, &mark.hash)?;
            head = Some(mark);
            newest = Some((manifest, mark, signed));
        }
        let (manifest, high_water, signed) = newest.ok_or(ManifestError::EmptyChain)?;
        check_unexpired(&manifest, now_ms)?;
        Ok(VerifiedManifest {
            manifest,
            high_water,
            signed: signed.clone(),
        })
    }
}

/// Audits a whole published log: from manifest 1, each one signed by both pinned keys and the
/// next link of the one before, with no repeats. Expiry is not checked (this is history).
/// A failure says at which entry (0-based) the log breaks and why.
pub fn verify_log(pin: &Pin, log: &[SignedManifest]) -> Result<LogSummary, ManifestError> {
    let mut head: Option<HighWater> = None;
    let mut newest = None;
    for (index, signed) in log.iter().enumerate() {
        let step = pin.open(signed).and_then(|(manifest, mark)| {
            match link(head.as_ref(), &manifest, &mark.hash)? {
                Link::Next => Ok((manifest, mark)),
                Link::Same => Err(ManifestError::Repeated {
                    sequence: mark.sequence,
                }),
            }
        });
        let (manifest, mark) = step.map_err(|cause| ManifestError::LogBroken {
            index,
            cause: Box::new(cause),
        })?;
        head = Some(mark);
        newest = Some(manifest);
    }
    match (head, newest) {
        (Some(head), Some(m)) => Ok(LogSummary {
            entries: log.len(),
            head,
            newest_issued_at_ms: m.issued_at_ms(),
            newest_expires_at_ms: m.expires_at_ms(),
        }),
        _ => Err(ManifestError::EmptyChain),
    }
}
