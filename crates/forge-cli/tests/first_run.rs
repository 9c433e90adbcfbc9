//! The first run from a fresh working directory: the README's `serve` keeps its data under the
//! relative `./data`, which must be resolved against the working directory at start (the
//! compiled-module cache refuses relative paths).

mod server;

use serde_json::json;
use server::Launch;
use std::path::Path;

#[test]
fn a_relative_data_dir_serves_from_a_fresh_working_directory() {
    let fresh = tempfile::tempdir().unwrap();
    let mut server = Launch::new(Path::new("./data")).in_dir(fresh.path()).start();
    server.assert_serving();

    let admin = server.admin();
    let echo = admin.active_echo("echo", "1.0.0");
    let result = admin.invoke(echo.id, &server::call("process", json!({"x": 1}))).unwrap();
    assert!(result.success, "{result:?}");
    let data = fresh.path().join("data");
    assert!(data.join("forge.db").is_file(), "the database is in the working directory's ./data");
    assert!(data.join("compiled").is_dir(), "so is the compiled-module cache");
    assert!(server.terminate().success());
}
