//! What a registry sends the containerd adapter (outside input): manifests, indexes and image
//! configs. Parsing never panics; whatever is accepted keeps the invariants the pull relies on
//! (sha256 digests, sizes that are not negative, one chain id per diff id). Raw bytes cover
//! malformed documents; well-formed documents with arbitrary values cover the field checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netiso_runtime::containerd::oci::ImageDefaults;
use netiso_runtime::containerd::pull::{
    Blob, chain_ids, diff_ids, media_type_of, parse_manifest, select_platform,
};
use serde_json::json;

const OSES: [&str; 3] = ["linux", "windows", ""];
const ARCHES: [&str; 4] = ["amd64", "arm64", "s390x", ""];
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn check_blob(blob: &Blob) {
    assert!(is_sha256_digest(&blob.digest), "accepted {blob:?}");
    assert!(blob.size >= 0, "accepted {blob:?}");
}

fn check(document: &[u8]) {
    if let Ok(manifest) = parse_manifest(document) {
        check_blob(&manifest.config);
        manifest.layers.iter().for_each(check_blob);
    }
    if let Ok(chosen) = select_platform(document) {
        check_blob(&chosen);
    }
    if let Ok(ids) = diff_ids(document) {
        assert!(ids.iter().all(|id| is_sha256_digest(id)));
        let chain = chain_ids(&ids);
        assert_eq!(chain.len(), ids.len());
        assert_eq!(chain.first(), ids.first());
        assert!(chain.iter().all(|id| is_sha256_digest(id)));
    }
    if let Ok(defaults) = ImageDefaults::from_config(document) {
        assert!(defaults.user.as_deref() != Some(""));
        assert!(defaults.working_dir.as_deref() != Some(""));
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(document) {
        let _ = media_type_of(&value);
    }
}

type Input = (Vec<u8>, String, i64, u8, u8, bool, Vec<String>);

fuzz_target!(|input: Input| {
    let (raw, text, size, os, arch, real_digest, strings) = input;
    check(&raw);
    let digest = if real_digest { DIGEST } else { text.as_str() };
    let blob = json!({"mediaType": text, "digest": digest, "size": size});
    let documents = [
        json!({"mediaType": text, "config": blob, "layers": [blob, blob]}),
        json!({"manifests": [{
            "mediaType": text, "digest": digest, "size": size,
            "platform": {
                "os": OSES[usize::from(os) % OSES.len()],
                "architecture": ARCHES[usize::from(arch) % ARCHES.len()],
            },
        }]}),
        json!({
            "rootfs": {"type": "layers", "diff_ids": [digest, DIGEST]},
            "config": {
                "Entrypoint": strings, "Cmd": [text], "Env": strings,
                "WorkingDir": text, "User": text,
            },
        }),
    ];
    for document in documents {
        check(document.to_string().as_bytes());
    }
});
