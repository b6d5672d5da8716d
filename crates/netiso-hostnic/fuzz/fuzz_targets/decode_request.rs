//! Plugin request decoding: any path and body must give a request or a 400/404 error, never a
//! panic. The first byte picks the endpoint (or an unknown path), the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netiso_hostnic::decode_request;
use netiso_hostnic::protocol::Endpoint;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let endpoints = Endpoint::ALL;
    let path = endpoints
        .get(usize::from(selector) % (endpoints.len() + 1))
        .map_or("/NetworkDriver.Unknown", |endpoint| endpoint.path());
    match decode_request(path, body) {
        Ok(request) => {
            assert_eq!(request.endpoint().path(), path);
            let _ = request.network_id();
        }
        Err(err) => {
            let status = err.http_status();
            assert!(status == 400 || status == 404);
            assert!(!err.to_string().is_empty());
        }
    }
});
