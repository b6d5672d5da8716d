//! Image references from configuration (`docker_image`, `container_registry`): parsing never
//! panics, and whatever is accepted prints to text that parses back to the same reference.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netiso_runtime::ImageReference;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reference) = text.parse::<ImageReference>() {
        let printed = reference.to_string();
        let again: ImageReference = printed
            .parse()
            .unwrap_or_else(|error| panic!("own rendering rejected: {error}: {printed}"));
        assert_eq!(again, reference);
    }
    let (image, registry) = text.split_once('\n').unwrap_or((text, ""));
    let _ = ImageReference::with_default_registry(image, Some(registry));
});
