//! Manifest parsing and validation, as registration runs it on what an author submits: the text of
//! `overlay.toml` (TOML, or JSON when it is an object) through `OverlayManifest::parse`, and a JSON
//! value through `OverlayManifest::from_value` (the JSON body of `POST /api/v1/overlays`). Stored
//! manifests (`from_stored`) are read back from our own database, but must not panic either.
#![no_main]

use forge_model::OverlayManifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(manifest) = OverlayManifest::parse(text) {
        // A manifest that passed is written back as `overlay.toml` (`to_toml` must never panic)
        // and parses again to the same manifest.
        let again = OverlayManifest::parse(&manifest.to_toml()).expect("a valid manifest's TOML parses again");
        assert_eq!(again, manifest, "TOML round trip changed the manifest");
        let stored = serde_json::to_value(&manifest).expect("a manifest serializes");
        let read_back = OverlayManifest::from_stored(stored.clone()).expect("a stored manifest reads back");
        assert_eq!(read_back, manifest, "stored round trip changed the manifest");
        let json = OverlayManifest::from_value(stored).expect("a valid manifest's JSON validates again");
        assert_eq!(json, manifest, "JSON round trip changed the manifest");
        let _ = manifest.http_host_patterns();
        let _ = manifest.mount_grants();
        let _ = manifest.privileged_capabilities();
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = OverlayManifest::from_value(value.clone());
        let _ = OverlayManifest::from_stored(value);
    }
});
