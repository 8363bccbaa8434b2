//! The session record: everything the operator knows about a session when it ends, signed with
//! the operator's key and stored as `record.json` next to the recording's segments, so the
//! evidence outlives the `ExecSession` object (which is deleted after its retention, and lives
//! in etcd, which is not write-once).
//!
//! # Envelope
//!
//! `record.json` is a DSSE envelope (the in-toto/sigstore "Dead Simple Signing Envelope"):
//!
//! ```json
//! {"payloadType": "application/vnd.aexec.session-record+json; version=1",
//!  "payload": "<base64 of the record's JSON>",
//!  "signatures": [{"keyid": "<key id>", "sig": "<base64 of the Ed25519 signature>"}]}
//! ```
//!
//! The signed bytes are DSSE's pre-authentication encoding of the payload type and the payload
//! bytes exactly as stored (after base64 decoding):
//!
//! ```text
//! "DSSEv1" SP len(type) SP type SP len(payload) SP payload
//! ```
//!
//! with lengths in ASCII decimal. A verifier checks the signature over those bytes before it
//! parses the payload, and never serializes anything again, so no canonical JSON form is needed:
//! the operator writes the payload once (`serde_json`, fields in declaration order) and every
//! verifier checks exactly those bytes.
//!
//! # Keys
//!
//! Ed25519. A key's id is the first 8 bytes of the SHA-256 of its raw 32-byte public key, in
//! lowercase hex ([`key_id`]): computed from the key, never taken from a file, so a public key
//! cannot be passed off under another key's id. Private keys are PKCS#8 PEM (`PRIVATE KEY`, what
//! Helm's `genPrivateKey "ed25519"` and `openssl genpkey -algorithm ed25519` write); public keys
//! are SPKI PEM (`PUBLIC KEY`), several to a file, with any text between the blocks.
//!
//! Pure: no storage, no clock, no cluster.

use base64::Engine as _;
use ed25519_dalek::{
    Signature,
    pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePublicKey as _, spki::der::pem},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chain::{self, Manifest, Verifier};

/// The Ed25519 implementation, for callers that make keys (tests, tools).
pub use ed25519_dalek;

/// The record's file name, next to `manifest.json`.
pub const RECORD_NAME: &str = "record.json";
/// `format` of every record this module writes.
pub const RECORD_FORMAT: &str = "aexec-session-record/v1";
/// The DSSE payload type of a session record.
pub const PAYLOAD_TYPE: &str = "application/vnd.aexec.session-record+json; version=1";
/// The largest `record.json` read: a session of 10 hours cut every 2 s lists 18,000 segments,
/// about 2.5 MiB.
pub const MAX_RECORD_BYTES: usize = 16 << 20;
/// The only signature algorithm.
pub const ALGORITHM: &str = "Ed25519";

// ---- the record

/// A person as the API server authenticated them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Person {
    pub username: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// Which session this is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordSession {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// When the ExecSession was created (RFC 3339).
    pub created: String,
}

/// What was asked, and where it ran.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordSpec {
    pub pod: String,
    /// The pod's UID pinned at validation (none if the session never got that far).
    #[serde(default, rename = "podUID", skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The container asked for, or resolved at validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub command: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a copy (`kubectl aexec cp`): which way, and the paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<RecordCopy>,
    /// For a debug session (`kubectl aexec debug`): the ephemeral container's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_image: Option<String>,
}

/// What a copy moved, as its session asked.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordCopy {
    /// `Download` or `Upload`.
    pub direction: String,
    /// The path in the container.
    pub path: String,
    /// The local path, as the requester gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
}

/// The policy that governed the session and what it decided.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordPolicy {
    /// The ExecPolicy's name; none when the operator's default policy applied (or none was
    /// evaluated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The decision, as the session's `Approved` condition gave it (`AutoApproved`,
    /// `Approved`, `Denied`, `WaitingForApproval`, ...); empty when never decided.
    pub decision: String,
    /// What the decision said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_approvals: Option<i32>,
}

/// An approval, a denial or a withdrawal.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordDecision {
    pub user: Person,
    /// RFC 3339.
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The limits the session ran under (copied from the policy at approval).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    pub recording_required: bool,
}

/// One thing that happened, in order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimelineEntry {
    /// RFC 3339.
    pub time: String,
    /// `Requested`, `Decided`, `Approved`, `Denied`, `Withdrawn`, `Attached`, `Deleted`, `Ended`.
    pub event: String,
    pub detail: String,
}

/// How the session ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordEnd {
    /// The final phase (`Succeeded`, `Failed`, `Terminated`, `Denied`, `Expired`, `Withdrawn`).
    pub phase: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When the requester attached (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the session ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// The ExecSession was deleted before this record was written (it ended because of it, or
    /// had ended already).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// One segment of the recording.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordSegment {
    pub index: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// The recording, as sealed when the session ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordRecording {
    /// Where it was stored (`s3://...`, `file://...`), for people; verification reads the
    /// files next to the record.
    pub uri: String,
    /// `asciicast-v3`.
    pub format: String,
    /// The chain head the broker computed while recording (the value it wrote into the
    /// session's status): every segment's bytes and their order hang on it.
    pub head: String,
    /// SHA-256 (hex) of `manifest.json` as stored; none when it could not be read (`problem`
    /// says why), and then only `head` is signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    pub total_bytes: u64,
    /// The manifest's segments (none with a `problem`).
    #[serde(default)]
    pub segments: Vec<RecordSegment>,
    /// Sealed after an interruption (a crash, a lost broker, a shutdown, a deletion).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What was wrong with the stored recording when the record was written (the manifest
    /// could not be read, or disagreed with the head the broker computed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Who wrote the record, and when.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordWritten {
    /// The operator replica.
    pub by: String,
    /// RFC 3339.
    pub at: String,
}

/// Everything about one session, as the operator knew it when the session ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionRecord {
    /// [`RECORD_FORMAT`].
    pub format: String,
    pub session: RecordSession,
    pub spec: RecordSpec,
    pub requester: Person,
    pub policy: RecordPolicy,
    #[serde(default)]
    pub approvals: Vec<RecordDecision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial: Option<RecordDecision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawal: Option<RecordDecision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RecordLimits>,
    pub timeline: Vec<TimelineEntry>,
    pub end: RecordEnd,
    /// None when the session never ran (denied, expired, withdrawn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordRecording>,
    /// The operator replica that relayed the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    pub written: RecordWritten,
}

impl SessionRecord {
    /// The directory of the session's files in the store: `<namespace>/<name>-<uid>`.
    pub fn prefix(&self) -> String {
        format!(
            "{}/{}-{}",
            self.session.namespace, self.session.name, self.session.uid
        )
    }

    /// Checks `manifest.json` (as stored) against the record: its SHA-256, when the record has
    /// one, then that it is a valid manifest of this session whose chain ends at the signed
    /// head. Returns the manifest, to check the segments against ([`Verifier`]).
    pub fn check_manifest(&self, manifest_bytes: &[u8]) -> Result<Manifest, RecordError> {
        let rec = self.recording.as_ref().ok_or(RecordError::NoRecording)?;
        if let Some(recorded) = &rec.manifest_sha256 {
            let actual = hex::encode(Sha256::digest(manifest_bytes));
            if !actual.eq_ignore_ascii_case(recorded) {
                return Err(RecordError::ManifestAltered {
                    actual,
                    recorded: recorded.clone(),
                });
            }
        }
        let manifest: Manifest = serde_json::from_slice(manifest_bytes)
            .map_err(|e| RecordError::Manifest(e.to_string()))?;
        let s = &manifest.session;
        if s.namespace != self.session.namespace
            || s.name != self.session.name
            || s.uid != self.session.uid
        {
            return Err(RecordError::OtherSession {
                manifest: format!("{}/{} ({})", s.namespace, s.name, s.uid),
                record: format!(
                    "{}/{} ({})",
                    self.session.namespace, self.session.name, self.session.uid
                ),
            });
        }
        Verifier::new(&manifest, Some(&rec.head))?;
        if rec.manifest_sha256.is_some() {
            let listed: Vec<RecordSegment> = manifest
                .segments
                .iter()
                .map(|m| RecordSegment {
                    index: m.index,
                    bytes: m.bytes,
                    sha256: m.sha256.clone(),
                })
                .collect();
            if listed != rec.segments || manifest.total_bytes != rec.total_bytes {
                return Err(RecordError::Segments);
            }
        }
        Ok(manifest)
    }
}

// ---- keys

/// A key's id: the first 8 bytes of the SHA-256 of its raw public key, lowercase hex.
pub fn key_id(key: &ed25519_dalek::VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// A public key that verifies records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    id: String,
    key: ed25519_dalek::VerifyingKey,
}

impl PublicKey {
    /// From one SPKI PEM block (`PUBLIC KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|e| KeyError::Public(e.to_string()))?;
        Ok(PublicKey::from(key))
    }

    /// The key's id ([`key_id`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key as SPKI PEM.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(pem::LineEnding::LF)
            .unwrap_or_default()
    }
}

impl From<ed25519_dalek::VerifyingKey> for PublicKey {
    fn from(key: ed25519_dalek::VerifyingKey) -> Self {
        PublicKey {
            id: key_id(&key),
            key,
        }
    }
}

/// The public keys a verifier trusts (all published keys: old records stay verifiable after a
/// rotation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRing {
    keys: Vec<PublicKey>,
}

impl KeyRing {
    pub fn new(keys: Vec<PublicKey>) -> Self {
        let mut ring = KeyRing::default();
        for k in keys {
            ring.add(k);
        }
        ring
    }

    /// Adds a key (once).
    pub fn add(&mut self, key: PublicKey) {
        if !self.keys.iter().any(|k| k.id == key.id) {
            self.keys.push(key);
        }
    }

    /// Every `PUBLIC KEY` PEM block of `text`; text around the blocks (comments) is ignored.
    /// No block at all is an error: a file of the wrong kind must not verify nothing.
    pub fn from_pem_bundle(text: &str) -> Result<Self, KeyError> {
        let mut ring = KeyRing::default();
        for block in pem_blocks(text, "PUBLIC KEY")? {
            ring.add(PublicKey::from_pem(&block)?);
        }
        if ring.keys.is_empty() {
            return Err(KeyError::NoPublicKey);
        }
        Ok(ring)
    }

    pub fn get(&self, id: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Every key as PEM, each preceded by a comment line naming its id.
    pub fn to_pem_bundle(&self) -> String {
        self.keys
            .iter()
            .map(|k| {
                format!(
                    "# aexec session-record signing key {}\n{}",
                    k.id,
                    k.to_pem()
                )
            })
            .collect()
    }
}

/// The PEM blocks labelled `label` in `text`, each from its BEGIN line to its END line.
/// Written here rather than taken from a PEM crate because those read one document, and a key
/// file holds several blocks with comments between them.
fn pem_blocks(text: &str, label: &str) -> Result<Vec<String>, KeyError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        match &mut current {
            None if line == begin => current = Some(format!("{line}\n")),
            None => {}
            Some(block) => {
                block.push_str(line);
                block.push('\n');
                if line == end {
                    blocks.extend(current.take());
                } else if line.starts_with("-----") {
                    return Err(KeyError::Pem(format!(
                        "a {label} block is not closed before {line:?}"
                    )));
                }
            }
        }
    }
    if current.is_some() {
        return Err(KeyError::Pem(format!(
            "the last {label} block has no END line"
        )));
    }
    Ok(blocks)
}

/// A private key that signs records.
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("SigningKey").field("id", &self.id).finish()
    }
}

impl SigningKey {
    /// From PKCS#8 PEM (`PRIVATE KEY`, version 1 or 2).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim())
            .map_err(|e| KeyError::Private(e.to_string()))?;
        Ok(SigningKey::from(key))
    }

    /// The key's id ([`key_id`] of its public key).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::from(self.key.verifying_key())
    }

    /// Signs `record`: the bytes of `record.json`.
    pub fn sign(&self, record: &SessionRecord) -> Result<Vec<u8>, RecordError> {
        let payload =
            serde_json::to_vec(record).map_err(|e| RecordError::Payload(e.to_string()))?;
        self.sign_payload(&payload)
    }

    /// Signs payload bytes as they are (for tests of what verifiers refuse).
    pub fn sign_payload(&self, payload: &[u8]) -> Result<Vec<u8>, RecordError> {
        use ed25519_dalek::Signer as _;
        let sig = self.key.sign(&pae(PAYLOAD_TYPE, payload));
        let b64 = base64::engine::general_purpose::STANDARD;
        let envelope = Envelope {
            payload_type: PAYLOAD_TYPE.to_owned(),
            payload: b64.encode(payload),
            signatures: vec![EnvelopeSignature {
                keyid: self.id.clone(),
                sig: b64.encode(sig.to_bytes()),
            }],
        };
        let mut bytes = serde_json::to_vec_pretty(&envelope)
            .map_err(|e| RecordError::Payload(e.to_string()))?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}

impl From<ed25519_dalek::SigningKey> for SigningKey {
    fn from(key: ed25519_dalek::SigningKey) -> Self {
        SigningKey {
            id: key_id(&key.verifying_key()),
            key,
        }
    }
}

// ---- the envelope

/// DSSE's pre-authentication encoding: the bytes a signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// `record.json` as stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    pub payload_type: String,
    /// Base64 (standard alphabet, padded) of the record's JSON.
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an [`Envelope`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    pub keyid: String,
    /// Base64 of the 64-byte Ed25519 signature.
    pub sig: String,
}

/// A record whose signature was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRecord {
    /// The key that signed it.
    pub key_id: String,
    pub record: SessionRecord,
}

/// A record read without checking its signature (for listings, which say so), with what its
/// envelope claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnverifiedRecord {
    /// The key id the envelope names.
    pub key_id: String,
    pub record: SessionRecord,
}

impl Envelope {
    /// Parses `record.json` strictly: bounded, exactly one signature, the right payload type.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge {
                bytes: bytes.len(),
                max: MAX_RECORD_BYTES,
            });
        }
        let env: Envelope =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Envelope(e.to_string()))?;
        if env.payload_type != PAYLOAD_TYPE {
            return Err(RecordError::PayloadType(
                env.payload_type.chars().take(100).collect(),
            ));
        }
        if env.signatures.len() != 1 {
            return Err(RecordError::Signatures(env.signatures.len()));
        }
        Ok(env)
    }

    /// The key id of the (only) signature.
    pub fn key_id(&self) -> &str {
        self.signatures.first().map_or("", |s| s.keyid.as_str())
    }

    fn payload_bytes(&self) -> Result<Vec<u8>, RecordError> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.payload)
            .map_err(|e| RecordError::Envelope(format!("the payload is not base64: {e}")))
    }

    /// Checks the signature with the key it names, which must be in `keys`, then parses the
    /// record.
    pub fn verify(&self, keys: &KeyRing) -> Result<VerifiedRecord, RecordError> {
        let signature = self.signatures.first().ok_or(RecordError::Signatures(0))?;
        let key = keys
            .get(&signature.keyid)
            .ok_or_else(|| RecordError::UnknownKey {
                keyid: signature.keyid.chars().take(64).collect(),
                known: keys.ids().join(", "),
            })?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&signature.sig)
            .map_err(|e| RecordError::Envelope(format!("the signature is not base64: {e}")))?;
        let sig = Signature::from_slice(&raw).map_err(|_| RecordError::BadSignature {
            keyid: key.id.clone(),
        })?;
        let payload = self.payload_bytes()?;
        // Strict: refuses small-order keys and non-canonical signatures, so one record has
        // exactly one valid signature per key.
        key.key
            .verify_strict(&pae(&self.payload_type, &payload), &sig)
            .map_err(|_| RecordError::BadSignature {
                keyid: key.id.clone(),
            })?;
        Ok(VerifiedRecord {
            key_id: key.id.clone(),
            record: parse_payload(&payload)?,
        })
    }

    /// The record without checking the signature: only for showing what a store holds, never
    /// for a verdict.
    pub fn unverified(&self) -> Result<UnverifiedRecord, RecordError> {
        Ok(UnverifiedRecord {
            key_id: self.key_id().to_owned(),
            record: parse_payload(&self.payload_bytes()?)?,
        })
    }
}

/// Parses the record's JSON strictly (unknown fields are refused) and checks its format.
pub fn parse_payload(payload: &[u8]) -> Result<SessionRecord, RecordError> {
    let record: SessionRecord =
        serde_json::from_slice(payload).map_err(|e| RecordError::Payload(e.to_string()))?;
    if record.format != RECORD_FORMAT {
        return Err(RecordError::Format(
            record.format.chars().take(100).collect(),
        ));
    }
    Ok(record)
}

/// Reads and verifies `record.json` in one step.
pub fn open(bytes: &[u8], keys: &KeyRing) -> Result<VerifiedRecord, RecordError> {
    Envelope::parse(bytes)?.verify(keys)
}

/// Why a key cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not an Ed25519 private key in PKCS#8 PEM (\"PRIVATE KEY\"): {0}")]
    Private(String),
    #[error("not an Ed25519 public key in SPKI PEM (\"PUBLIC KEY\"): {0}")]
    Public(String),
    #[error("malformed PEM: {0}")]
    Pem(String),
    #[error(
        "no public key found: expected one or more \"-----BEGIN PUBLIC KEY-----\" blocks (kubectl aexec keys prints them)"
    )]
    NoPublicKey,
}

/// Why a record does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the session record is {bytes} bytes, more than the {max} allowed")]
    TooLarge { bytes: usize, max: usize },
    #[error("the session record is not a signed envelope: {0}")]
    Envelope(String),
    #[error("the session record's payload type is {0:?}, not {PAYLOAD_TYPE:?}")]
    PayloadType(String),
    #[error("the session record carries {0} signatures; exactly one is expected")]
    Signatures(usize),
    #[error(
        "the session record is signed with key {keyid}, which is not among the trusted public keys ({known}): fetch the operator's keys (kubectl aexec keys) or pin the right file with --public-key"
    )]
    UnknownKey { keyid: String, known: String },
    #[error(
        "the session record's signature by key {keyid} does not match its content: the record was altered or forged"
    )]
    BadSignature { keyid: String },
    #[error("the session record's content is not valid: {0}")]
    Payload(String),
    #[error("the session record's format is {0:?}; this build reads {RECORD_FORMAT:?}")]
    Format(String),
    #[error("the session record says the session has no recording (it never ran)")]
    NoRecording,
    #[error(
        "manifest.json was altered: its SHA-256 is {actual}, the signed session record says {recorded}"
    )]
    ManifestAltered { actual: String, recorded: String },
    #[error("manifest.json is not valid: {0}")]
    Manifest(String),
    #[error("manifest.json belongs to {manifest}, not to the recorded session {record}")]
    OtherSession { manifest: String, record: String },
    #[error("the manifest's segments differ from the ones the signed session record lists")]
    Segments,
    #[error("{0}")]
    Chain(#[from] chain::VerifyError),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::chain::{SegmentMeta, SessionRef, StoredSegment, seal, verify};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    fn segments() -> Vec<(SegmentMeta, Vec<u8>)> {
        let mut out: Vec<(SegmentMeta, Vec<u8>)> = Vec::new();
        for i in 0..3u8 {
            let bytes = format!("[0.{i}, \"o\", \"line {i}\"]\n").into_bytes();
            let meta = SegmentMeta::compute(out.last().map(|(m, _)| m), &bytes, 0, 0).unwrap();
            out.push((meta, bytes));
        }
        out
    }

    fn manifest() -> (Manifest, Vec<u8>) {
        let metas = segments().into_iter().map(|(m, _)| m).collect();
        let m = seal(
            SessionRef {
                namespace: "prod".into(),
                name: "exec-1".into(),
                uid: "u-1".into(),
            },
            metas,
            "2026-01-02T03:04:05Z".into(),
        )
        .unwrap();
        let bytes = serde_json::to_vec_pretty(&m).unwrap();
        (m, bytes)
    }

    fn record() -> SessionRecord {
        let (m, bytes) = manifest();
        SessionRecord {
            format: RECORD_FORMAT.into(),
            session: RecordSession {
                namespace: "prod".into(),
                name: "exec-1".into(),
                uid: "u-1".into(),
                created: "2026-01-02T03:00:00Z".into(),
            },
            spec: RecordSpec {
                pod: "api-0".into(),
                command: vec!["sh".into()],
                tty: true,
                stdin: true,
                ..Default::default()
            },
            requester: Person {
                username: "alice".into(),
                groups: vec!["dev".into()],
            },
            policy: RecordPolicy {
                name: Some("prod-shell".into()),
                decision: "Approved".into(),
                ..Default::default()
            },
            approvals: vec![RecordDecision {
                user: Person {
                    username: "bob".into(),
                    groups: vec![],
                },
                time: "2026-01-02T03:01:00Z".into(),
                comment: Some("ok".into()),
            }],
            timeline: vec![TimelineEntry {
                time: "2026-01-02T03:00:00Z".into(),
                event: "Requested".into(),
                detail: "by alice".into(),
            }],
            end: RecordEnd {
                phase: "Succeeded".into(),
                message: "the command exited with code 0".into(),
                exit_code: Some(0),
                ..Default::default()
            },
            recording: Some(RecordRecording {
                uri: "s3://b/prod/exec-1-u-1/manifest.json".into(),
                format: "asciicast-v3".into(),
                head: m.head.clone(),
                manifest_sha256: Some(hex::encode(Sha256::digest(&bytes))),
                total_bytes: m.total_bytes,
                segments: m
                    .segments
                    .iter()
                    .map(|s| RecordSegment {
                        index: s.index,
                        bytes: s.bytes,
                        sha256: s.sha256.clone(),
                    })
                    .collect(),
                ..Default::default()
            }),
            broker: Some("aexec-operator-0".into()),
            written: RecordWritten {
                by: "aexec-operator-0".into(),
                at: "2026-01-02T03:05:00Z".into(),
            },
            ..Default::default()
        }
    }

    fn ring(keys: &[&SigningKey]) -> KeyRing {
        KeyRing::new(keys.iter().map(|k| k.public()).collect())
    }

    #[test]
    fn a_signed_record_verifies_and_round_trips() {
        let k = key(1);
        let bytes = k.sign(&record()).unwrap();
        let v = open(&bytes, &ring(&[&k])).unwrap();
        assert_eq!(v.key_id, k.id());
        assert_eq!(v.record, record());
        let env = Envelope::parse(&bytes).unwrap();
        assert_eq!(env.payload_type, PAYLOAD_TYPE);
        assert_eq!(env.key_id(), k.id());
        assert_eq!(env.unverified().unwrap().record, record());
        // What is signed: DSSE's encoding of the type and the payload bytes.
        assert!(pae("t", b"xy").starts_with(b"DSSEv1 1 t 2 xy"));
    }

    #[test]
    fn an_altered_record_fails_on_its_signature() {
        let k = key(1);
        let bytes = k.sign(&record()).unwrap();
        let mut env = Envelope::parse(&bytes).unwrap();
        let mut forged = record();
        forged.recording.as_mut().unwrap().head = hex::encode([9u8; 32]);
        env.payload =
            base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&forged).unwrap());
        let e = env.verify(&ring(&[&k])).unwrap_err();
        assert_eq!(
            e,
            RecordError::BadSignature {
                keyid: k.id().into()
            }
        );
        assert!(e.to_string().contains("altered or forged"), "{e}");

        // Signed by another key that claims the trusted key's id.
        let mallory = key(66);
        let mut env = Envelope::parse(&mallory.sign(&forged).unwrap()).unwrap();
        env.signatures[0].keyid = k.id().into();
        assert!(matches!(
            env.verify(&ring(&[&k])),
            Err(RecordError::BadSignature { .. })
        ));
        // Signed by a key nobody published.
        let e = open(&mallory.sign(&forged).unwrap(), &ring(&[&k])).unwrap_err();
        assert!(matches!(e, RecordError::UnknownKey { .. }), "{e}");
        assert!(e.to_string().contains(k.id()), "{e}");
    }

    #[test]
    fn rotation_old_records_verify_with_every_published_key() {
        let (old, new) = (key(1), key(2));
        let old_record = old.sign(&record()).unwrap();
        let new_record = new.sign(&record()).unwrap();
        let both = ring(&[&new, &old]);
        assert_eq!(open(&old_record, &both).unwrap().key_id, old.id());
        assert_eq!(open(&new_record, &both).unwrap().key_id, new.id());
        assert!(open(&old_record, &ring(&[&new])).is_err());
        assert_ne!(old.id(), new.id());
    }

    #[test]
    fn envelopes_are_parsed_strictly() {
        let k = key(1);
        let bytes = k.sign(&record()).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["extra"] = serde_json::json!(1);
        assert!(matches!(
            Envelope::parse(&serde_json::to_vec(&v).unwrap()),
            Err(RecordError::Envelope(_))
        ));
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["signatures"] = serde_json::json!([]);
        assert_eq!(
            Envelope::parse(&serde_json::to_vec(&v).unwrap()),
            Err(RecordError::Signatures(0))
        );
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["payloadType"] = serde_json::json!("text/plain");
        assert!(matches!(
            Envelope::parse(&serde_json::to_vec(&v).unwrap()),
            Err(RecordError::PayloadType(_))
        ));
        assert!(matches!(
            Envelope::parse(&vec![b' '; MAX_RECORD_BYTES + 1]),
            Err(RecordError::TooLarge { .. })
        ));
        // A payload of another format, even signed, is refused.
        let mut other = record();
        other.format = "aexec-session-record/v9".into();
        let e = open(&k.sign(&other).unwrap(), &ring(&[&k])).unwrap_err();
        assert!(matches!(e, RecordError::Format(_)), "{e}");
        // Unknown fields inside the signed payload too.
        let mut v = serde_json::to_value(record()).unwrap();
        v["trusted"] = serde_json::json!(true);
        let e = open(
            &k.sign_payload(&serde_json::to_vec(&v).unwrap()).unwrap(),
            &ring(&[&k]),
        )
        .unwrap_err();
        assert!(matches!(e, RecordError::Payload(_)), "{e}");
    }

    #[test]
    fn the_manifest_and_segments_are_checked_against_the_signed_head() {
        let r = record();
        let (m, bytes) = manifest();
        let checked = r.check_manifest(&bytes).unwrap();
        assert_eq!(checked, m);
        let segs = segments();
        let stored: Vec<StoredSegment<'_>> = segs
            .iter()
            .map(|(m, b)| StoredSegment {
                index: m.index,
                bytes: b,
                sidecar: Some(m),
            })
            .collect();
        verify(&checked, &stored, Some(&r.recording.as_ref().unwrap().head)).unwrap();

        // The same manifest written differently (pretty vs compact): its digest differs.
        let compact = serde_json::to_vec(&m).unwrap();
        assert!(matches!(
            r.check_manifest(&compact),
            Err(RecordError::ManifestAltered { .. })
        ));
        // Rewritten consistently (one segment changed, the chain recomputed): without the
        // manifest's digest, the head still differs from the signed one.
        let mut forged: Vec<SegmentMeta> = Vec::new();
        for (i, (meta, b)) in segs.iter().enumerate() {
            let mut b = b.clone();
            if i == 1 {
                b[8] ^= 0x20;
            }
            forged.push(
                SegmentMeta::compute(forged.last(), &b, meta.first_event_at_micros, 0).unwrap(),
            );
        }
        let forged = seal(m.session.clone(), forged, m.sealed_at.clone()).unwrap();
        let mut r2 = r.clone();
        r2.recording.as_mut().unwrap().manifest_sha256 = None;
        let e = r2
            .check_manifest(&serde_json::to_vec(&forged).unwrap())
            .unwrap_err();
        assert!(
            matches!(
                e,
                RecordError::Chain(chain::VerifyError::UnexpectedHead { .. })
            ),
            "{e}"
        );
        // Another session's manifest.
        let mut other = m.clone();
        other.session.uid = "u-2".into();
        let e = r2
            .check_manifest(&serde_json::to_vec(&other).unwrap())
            .unwrap_err();
        assert!(matches!(e, RecordError::OtherSession { .. }), "{e}");
        // A record without a recording.
        let mut none = r.clone();
        none.recording = None;
        assert_eq!(none.check_manifest(&bytes), Err(RecordError::NoRecording));
    }

    #[test]
    fn keys_from_pem() {
        // RFC 8410's example key (PKCS#8 version 1, as Go and so Helm write it) and its public
        // key.
        let private = "-----BEGIN PRIVATE KEY-----\n\
            MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
            -----END PRIVATE KEY-----\n";
        let public = "-----BEGIN PUBLIC KEY-----\n\
            MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n\
            -----END PUBLIC KEY-----\n";
        let k = SigningKey::from_pkcs8_pem(private).unwrap();
        let p = PublicKey::from_pem(public).unwrap();
        assert_eq!(k.public(), p);
        assert_eq!(p.to_pem(), public);
        assert_eq!(k.id().len(), 16);
        assert!(format!("{k:?}").contains(k.id()));
        assert!(!format!("{k:?}").contains("MC4C"));

        // A bundle with comments and two keys; the same key twice counts once.
        let other = key(5).public();
        let bundle = format!(
            "# pinned 2026-01\n{public}\nsome note\n{}{public}",
            other.to_pem()
        );
        let ring = KeyRing::from_pem_bundle(&bundle).unwrap();
        assert_eq!(ring.ids(), vec![p.id(), other.id()]);
        let again = KeyRing::from_pem_bundle(&ring.to_pem_bundle()).unwrap();
        assert_eq!(again, ring);

        assert_eq!(
            KeyRing::from_pem_bundle("nothing here"),
            Err(KeyError::NoPublicKey)
        );
        assert!(matches!(
            KeyRing::from_pem_bundle(private),
            Err(KeyError::NoPublicKey)
        ));
        assert!(matches!(
            KeyRing::from_pem_bundle("-----BEGIN PUBLIC KEY-----\nAAAA\n"),
            Err(KeyError::Pem(_))
        ));
        assert!(matches!(
            KeyRing::from_pem_bundle(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
            ),
            Err(KeyError::Public(_))
        ));
        assert!(matches!(
            SigningKey::from_pkcs8_pem(public),
            Err(KeyError::Private(_))
        ));
    }
}
