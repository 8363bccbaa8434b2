//! The session record (`recording/src/record.rs`), as read from a store an attacker may write:
//! `Envelope::parse`, `Envelope::verify`, `Envelope::unverified`, `parse_payload`,
//! `SessionRecord::check_manifest` and `KeyRing::from_pem_bundle` never panic on any bytes; an
//! envelope that parses has exactly one signature of the right payload type; only the fuzz
//! key's own signatures verify, and then over exactly the payload it signed; a record that
//! parses serializes back to itself; any payload signed by the key verifies exactly when it is
//! a valid record, and one changed byte of it fails on the signature.
#![no_main]

use aexec_fuzz::seeds::record_key;
use aexec_recording::record::{
    Envelope, KeyRing, PAYLOAD_TYPE, RecordError, SessionRecord, open, parse_payload,
};
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = record_key();
    let ring = KeyRing::new(vec![key.public()]);

    // Any bytes as record.json.
    if let Ok(env) = Envelope::parse(data) {
        assert_eq!(env.signatures.len(), 1);
        assert_eq!(env.payload_type, PAYLOAD_TYPE);
        let unverified = env.unverified();
        match env.verify(&ring) {
            Ok(v) => {
                // Verified: the key is ours, and the content is what the envelope holds.
                assert_eq!(v.key_id, key.id());
                let u = unverified.expect("a verified record parses unverified too");
                assert_eq!(u.record, v.record);
            }
            Err(RecordError::UnknownKey { keyid, .. }) => assert_ne!(keyid, key.id()),
            Err(_) => {}
        }
        if let Ok(u) = env.unverified() {
            roundtrip(&u.record);
            // Signed by the key, any record that parsed verifies as itself.
            let signed = key.sign(&u.record).expect("sign");
            assert_eq!(
                open(&signed, &ring).expect("own signature").record,
                u.record
            );
            // A manifest of any bytes is checked without a panic.
            let _ = u.record.check_manifest(data);
        }
    }

    // Any bytes as the signed payload.
    let signed = key.sign_payload(data).expect("sign");
    let opened = open(&signed, &ring);
    assert_eq!(opened.is_ok(), parse_payload(data).is_ok());
    if let Ok(v) = &opened {
        roundtrip(&v.record);
    }
    if let Some(first) = data.first() {
        let mut env = Envelope::parse(&signed).expect("our own envelope parses");
        let mut changed = data.to_vec();
        changed[0] = first ^ 1;
        env.payload = base64::engine::general_purpose::STANDARD.encode(&changed);
        assert!(matches!(
            env.verify(&ring),
            Err(RecordError::BadSignature { .. })
        ));
    }

    // Any text as a file of pinned public keys.
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(keys) = KeyRing::from_pem_bundle(text)
    {
        assert!(!keys.keys().is_empty());
        assert_eq!(
            KeyRing::from_pem_bundle(&keys.to_pem_bundle()).expect("our own bundle"),
            keys
        );
    }
});

/// A parsed record serializes to JSON that parses back to it.
fn roundtrip(record: &SessionRecord) {
    let bytes = serde_json::to_vec(record).expect("serialize");
    assert_eq!(&parse_payload(&bytes).expect("reparse"), record);
}
