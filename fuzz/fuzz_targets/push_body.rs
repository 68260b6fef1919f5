//! The push body decoder on arbitrary bytes: it never panics, and what it accepts
//! serialises to a body it accepts again as the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_runtime::protocol::decode_push_request;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode_push_request(data) {
        let again = serde_json::to_vec(&request).expect("a decoded request serialises");
        let decoded = decode_push_request(&again).expect("a re-encoded request decodes");
        assert_eq!(decoded, request);
    }
});
