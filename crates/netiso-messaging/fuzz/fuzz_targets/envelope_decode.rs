//! Any body a broker may deliver: envelope, request, reply and failure parsing must return
//! errors, never panic, and what parses must survive a write/read round trip.
//! Seeds: `fuzz/seeds/envelope_decode` (`cargo fuzz run envelope_decode fuzz/seeds/envelope_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netiso_messaging::envelope::{self, RemoteFailure, Reply, Request};

fuzz_target!(|body: &[u8]| {
    let Ok(message) = envelope::unwrap(body) else {
        return;
    };
    if let Ok(request) = Request::from_message(message.clone()) {
        let again = envelope::unwrap(&envelope::wrap(&request.to_message()))
            .and_then(Request::from_message)
            .expect("a written request reads back");
        assert_eq!(again.method, request.method);
        assert_eq!(again.msg_id, request.msg_id);
    }
    if let Ok(reply) = Reply::from_message(message)
        && let Some(failure) = &reply.failure
    {
        let _ = RemoteFailure::from_json(failure);
    }
});
