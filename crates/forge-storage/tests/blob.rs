//! The blob store on a local directory (runs by default) and on an S3-compatible server
//! (`#[ignore]`d: run with `--include-ignored`; endpoint from `FORGE_TEST_S3_ENDPOINT`, default
//! `http://127.0.0.1:9000`, e.g. `moto_server -p 9000`). Each S3 case creates a bucket of its own and
//! fails, never passes, when the server is absent.

use bytes::Bytes;
use forge_model::sha256_hex;
use forge_storage::{BlobError, BlobStore};
use std::time::{Duration, Instant};

const KEY: &str = "overlays/echo/1.0.0/abc.wasm";

use forge_storage::testing::{TestBlobs as Store, local_blobs as local, s3_blobs as s3, s3_options};

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::local()).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test]
                #[ignore = "needs an S3-compatible server (FORGE_TEST_S3_ENDPOINT)"]
                async fn $case() {
                    super::$case(super::s3().await).await;
                }
            )*
        }
    };
}

cases!(
    stored_bytes_come_back_verified,
    tampered_bytes_are_refused,
    missing_blobs_are_reported,
    delete_removes,
    bad_keys_are_refused
);

async fn stored_bytes_come_back_verified(store: Store) {
    let wasm = Bytes::from_static(b"\0asm\x01\0\0\0");
    store.blobs.put(KEY, wasm.clone()).await.unwrap();
    assert!(store.blobs.exists(KEY).await.unwrap());
    assert_eq!(store.blobs.get_verified(KEY, &sha256_hex(&wasm)).await.unwrap(), wasm);
    let upper = sha256_hex(&wasm).to_uppercase();
    assert_eq!(store.blobs.get_verified(KEY, &upper).await.unwrap(), wasm, "hex in either case");

    let replacement = Bytes::from(vec![7u8; 3 << 20]);
    store.blobs.put(KEY, replacement.clone()).await.unwrap();
    assert_eq!(store.blobs.get_verified(KEY, &sha256_hex(&replacement)).await.unwrap(), replacement);
    if let Some(dir) = &store.dir {
        let mut names = Vec::new();
        let mut stack = vec![dir.path().to_path_buf()];
        while let Some(path) = stack.pop() {
            for entry in std::fs::read_dir(path).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_dir() {
                    stack.push(entry.path());
                } else {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        assert_eq!(names, ["abc.wasm"], "the staging file of each put was renamed into place");
    }
}

async fn tampered_bytes_are_refused(store: Store) {
    let original = Bytes::from_static(b"original binary");
    let recorded = sha256_hex(&original);
    store.blobs.put(KEY, Bytes::from_static(b"swapped binary")).await.unwrap();
    match store.blobs.get_verified(KEY, &recorded).await {
        Err(BlobError::Tampered { key, expected, actual }) => {
            assert_eq!((key.as_str(), expected.as_str()), (KEY, recorded.as_str()));
            assert_eq!(actual, sha256_hex(b"swapped binary"));
        }
        other => panic!("expected Tampered, got {other:?}"),
    }
}

async fn missing_blobs_are_reported(store: Store) {
    let err = store.blobs.get_verified("overlays/none/1.0.0/x.wasm", &sha256_hex(b"")).await.unwrap_err();
    assert!(matches!(&err, BlobError::Missing { key } if key == "overlays/none/1.0.0/x.wasm"), "{err:?}");
    assert!(!store.blobs.exists("overlays/none/1.0.0/x.wasm").await.unwrap());
    store.blobs.delete("overlays/none/1.0.0/x.wasm").await.expect("deleting a missing blob succeeds");
}

async fn delete_removes(store: Store) {
    store.blobs.put(KEY, Bytes::from_static(b"x")).await.unwrap();
    store.blobs.delete(KEY).await.unwrap();
    assert!(!store.blobs.exists(KEY).await.unwrap());
    assert!(matches!(store.blobs.get_verified(KEY, &sha256_hex(b"x")).await, Err(BlobError::Missing { .. })));
}

async fn bad_keys_are_refused(store: Store) {
    for key in ["overlays//x.wasm", "../escape.wasm", "overlays/../../x", "", "x.wasm#1"] {
        let err = store.blobs.put(key, Bytes::from_static(b"x")).await.unwrap_err();
        assert!(matches!(err, BlobError::InvalidKey { .. }), "`{key}`: {err:?}");
    }
}

#[tokio::test]
async fn an_unreachable_bucket_is_unavailable_within_the_retry_budget() {
    // Port 9 (discard) on loopback: nothing listens, so every connection is refused.
    let blobs = BlobStore::open_with_options("s3://bucket", s3_options("http://127.0.0.1:9")).unwrap();
    let started = Instant::now();
    let err = blobs.get_verified(KEY, &sha256_hex(b"")).await.unwrap_err();
    assert!(matches!(err, BlobError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    assert!(matches!(blobs.exists(KEY).await, Err(BlobError::Unavailable(_))));
}

#[test]
fn locations_are_checked() {
    for bad in ["ftp://host/dir", "s3://", "s3:///prefix"] {
        assert!(matches!(BlobStore::open(bad), Err(BlobError::Config(_))), "{bad}");
    }
    assert!(matches!(
        BlobStore::open_with_options("s3://b", [("no_such_option", "x")]),
        Err(BlobError::Config(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("nested/blobs");
    BlobStore::open(plain.to_str().unwrap()).expect("a plain path, created");
    assert!(plain.is_dir());
}
