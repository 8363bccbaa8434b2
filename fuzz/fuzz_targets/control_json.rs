//! The resize and status JSON documents (`operator/src/broker/frames.rs`): `parse_resize` and
//! `exit_code` on arbitrary bytes never panic; what they accept agrees with what a generic JSON
//! parser reads in the same document (when it reads it: fields the code ignores are skipped
//! without checking their UTF-8 or number ranges, which is harmless); and every size and outcome
//! written by `resize_doc` and `status_doc` reads back as itself.
#![no_main]

use aexec_operator::broker::frames::{self, ControlError, MAX_CONTROL_JSON, Outcome, TermSize};
use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check_resize(doc: &[u8]) {
    match frames::parse_resize(doc) {
        Ok(size) => {
            assert!(size.cols > 0 && size.rows > 0);
            if let Ok(v) = serde_json::from_slice::<Value>(doc) {
                assert_eq!(v["Width"].as_u64(), Some(u64::from(size.cols)));
                assert_eq!(v["Height"].as_u64(), Some(u64::from(size.rows)));
            }
        }
        Err(ControlError::TooLarge(n)) => assert!(n > MAX_CONTROL_JSON),
        Err(ControlError::BadResize(msg)) => assert!(!msg.is_empty()),
        Err(e @ ControlError::BadStatus(_)) => panic!("resize refused as a status: {e}"),
    }
}

fn check_status(doc: &[u8]) {
    match frames::exit_code(doc) {
        Ok(outcome) => {
            let v: Value = serde_json::from_slice(doc).unwrap_or(Value::Null);
            match &outcome {
                _ if v.is_null() => {}
                Outcome::Exited(0) if v["status"] == "Success" => {}
                Outcome::Exited(_) => {
                    assert_eq!(v["status"], "Failure");
                    assert_eq!(v["reason"], "NonZeroExitCode");
                }
                Outcome::Failed(_) => {
                    assert_eq!(v["status"], "Failure");
                    assert_ne!(v["reason"], "NonZeroExitCode");
                }
            }
            round_trip(outcome);
        }
        Err(ControlError::TooLarge(n)) => assert!(n > MAX_CONTROL_JSON),
        Err(ControlError::BadStatus(msg)) => assert!(!msg.is_empty()),
        Err(e @ ControlError::BadResize(_)) => panic!("status refused as a resize: {e}"),
    }
}

/// The status document written for an outcome reads back as that outcome (when it is within the
/// size limit: `status_doc` adds fields, so a message just under the limit can push it over).
fn round_trip(outcome: Outcome) {
    let doc = frames::status_doc(&outcome);
    if doc.len() <= MAX_CONTROL_JSON {
        assert_eq!(frames::exit_code(&doc), Ok(outcome));
    }
}

fuzz_target!(|data: &[u8]| {
    check_resize(data);
    check_status(data);

    // Documents we write ourselves read back exactly.
    let mut u = Unstructured::new(data);
    if let Ok((cols, rows)) = <(u16, u16)>::arbitrary(&mut u) {
        let size = TermSize {
            cols: cols.max(1),
            rows: rows.max(1),
        };
        assert_eq!(frames::parse_resize(&frames::resize_doc(size)), Ok(size));
    }
    let outcome = match u.int_in_range(0u8..=1) {
        Ok(0) => i32::arbitrary(&mut u).map(Outcome::Exited),
        _ => String::arbitrary(&mut u).map(Outcome::Failed),
    };
    if let Ok(outcome) = outcome {
        round_trip(outcome);
    }
});
