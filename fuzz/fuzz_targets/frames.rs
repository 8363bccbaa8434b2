//! The exec stream's frame codec (`operator/src/broker/frames.rs`) on arbitrary client messages: parsing
//! never panics, a parsed frame encodes back to the very message, the size limit is exact, and the
//! control documents a frame carries parse (or not) without panicking and round-trip.
#![no_main]

use aexec_operator::broker::frames::{
    self, ControlError, Frame, FrameError, MAX_CLIENT_FRAME, MAX_CONTROL_JSON,
};
use libfuzzer_sys::fuzz_target;

fn check(msg: &[u8], max: usize) {
    let parsed = frames::parse(msg, max);
    if msg.len() > max {
        assert_eq!(
            parsed,
            Err(FrameError::TooLarge {
                len: msg.len(),
                max
            })
        );
        return;
    }
    let frame = match parsed {
        Ok(frame) => frame,
        Err(FrameError::Empty) => return assert!(msg.is_empty()),
        Err(FrameError::UnknownChannel(c)) => return assert!(c == msg[0] && (5..255).contains(&c)),
        Err(FrameError::BadClose(n)) => return assert!(n == msg.len() && msg[0] == 255 && n != 2),
        Err(e @ FrameError::TooLarge { .. }) => panic!("{e} for a message within the limit"),
    };
    let encoded = match frame {
        Frame::Stdin(p) => frames::encode(0, p),
        Frame::Stdout(p) => frames::encode(1, p),
        Frame::Stderr(p) => frames::encode(2, p),
        Frame::Status(p) => frames::encode(3, p),
        Frame::Resize(p) => frames::encode(4, p),
        Frame::Close(stream) => vec![255, stream],
        Frame::Empty(c) => {
            assert!(c <= 4, "channel {c} is not a known channel");
            vec![c]
        }
    };
    assert_eq!(
        encoded, msg,
        "{frame:?} does not encode back to its message"
    );
    match frame {
        Frame::Stdin(p)
        | Frame::Stdout(p)
        | Frame::Stderr(p)
        | Frame::Status(p)
        | Frame::Resize(p) => {
            assert!(!p.is_empty(), "a data frame with no payload is Empty")
        }
        _ => {}
    }
    if let Frame::Resize(doc) = frame {
        check_resize(doc);
    }
    if let Frame::Status(doc) = frame {
        check_status(doc);
    }
}

fn check_resize(doc: &[u8]) {
    match frames::parse_resize(doc) {
        Ok(size) => {
            assert!(
                size.cols > 0 && size.rows > 0,
                "zero-sized terminal {size:?}"
            );
            assert_eq!(frames::parse_resize(&frames::resize_doc(size)), Ok(size));
        }
        Err(ControlError::TooLarge(n)) => assert!(n == doc.len() && n > MAX_CONTROL_JSON),
        Err(_) => {}
    }
}

fn check_status(doc: &[u8]) {
    if let Ok(outcome) = frames::exit_code(doc) {
        let again = frames::status_doc(&outcome);
        if again.len() <= MAX_CONTROL_JSON {
            assert_eq!(frames::exit_code(&again), Ok(outcome));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, MAX_CLIENT_FRAME);
    // A limit the input can exceed: the first byte picks it.
    let small = usize::from(data.first().copied().unwrap_or(0));
    check(data, small);
});
