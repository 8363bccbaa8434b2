//! The watch protocol's messages (`operator/src/broker/moderation.rs`): what a watcher sends
//! (`parse_control`), the mode in its query (`parse_mode`) and the notices the broker writes
//! (`notice_message`). On arbitrary input nothing panics; a control message is accepted only as
//! exactly `leave` or `terminate` (what a generic JSON parser reads agrees, and nothing else
//! rides along); a mode is one of the two, named in the query; every notice is JSON that reads
//! back as the text it carries.
#![no_main]

use aexec_crds::WatchMode;
use aexec_operator::broker::moderation::{
    Control, MAX_CONTROL, notice_message, parse_control, parse_mode,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_control(text) {
        Ok(c) => {
            assert!(text.len() <= MAX_CONTROL);
            let v: Value = serde_json::from_str(text).expect("accepted, so JSON");
            let obj = v.as_object().expect("an object");
            assert_eq!(obj.len(), 1, "only the type: {text}");
            let want = match c {
                Control::Leave => "leave",
                Control::Terminate => "terminate",
            };
            assert_eq!(obj["type"], want);
        }
        Err(e) => assert!(!e.is_empty()),
    }
    match parse_mode(Some(text)) {
        Ok(WatchMode::Observer) => {
            let named = text.split('&').find_map(|kv| kv.strip_prefix("mode="));
            assert!(
                named.is_none_or(|m| m.eq_ignore_ascii_case("observer")),
                "{text}"
            );
        }
        Ok(WatchMode::Moderator) => assert!(text.to_ascii_lowercase().contains("mode=moderator")),
        Err(e) => assert!(e.contains("use observer or moderator")),
    }
    let v: Value = serde_json::from_str(&notice_message(text)).expect("a notice is JSON");
    assert_eq!(v["type"], "notice");
    assert_eq!(v["message"], text);
});
