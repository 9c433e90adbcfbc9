//! Files through WASI preopens, with nothing but `std::fs`: `read_file` returns a file's text,
//! `write_files` creates or replaces files (stopping at the first that fails), `list_dir` names a
//! directory's entries. (Entry points on WASI must not take C library names such as `read` or
//! `write`: the export would replace the libc function `std::fs` calls.) Built for `wasm32-wasip1`; the host
//! preopens the operator mounts the manifest names at their guest paths (docs/abi.md).
//!
//! A path the host does not grant (outside every mount, `..` out of one, a symlink leading out,
//! a write to a read-only mount) fails like any I/O error: the entry point answers
//! `{"error": "..."}` so the caller sees what the guest saw.

use serde::{Deserialize, Serialize};
use std::fs;

#[derive(Deserialize)]
struct ReadArgs {
    path: String,
}

#[derive(Deserialize)]
struct WriteArgs {
    files: Vec<NewFile>,
}

#[derive(Deserialize)]
struct NewFile {
    path: String,
    content: String,
}

/// Either the answer or the I/O error the guest got, as text.
#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Answer<T> {
    Ok(T),
    Error(String),
}

impl<T> From<std::io::Result<T>> for Answer<T> {
    fn from(result: std::io::Result<T>) -> Self {
        match result {
            Ok(value) => Answer::Ok(value),
            Err(error) => Answer::Error(error.to_string()),
        }
    }
}

fn read_file(args: ReadArgs) -> Result<Answer<String>, forge_sdk::Error> {
    Ok(fs::read_to_string(&args.path).into())
}

/// Answers the bytes written.
fn write_files(args: WriteArgs) -> Result<Answer<usize>, forge_sdk::Error> {
    let written = args
        .files
        .iter()
        .try_fold(0, |total, file| fs::write(&file.path, &file.content).map(|()| total + file.content.len()));
    Ok(written.into())
}

fn list_dir(args: ReadArgs) -> Result<Answer<Vec<String>>, forge_sdk::Error> {
    let names = fs::read_dir(&args.path).and_then(|entries| {
        let mut names = entries
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    });
    Ok(names.into())
}

forge_sdk::entry_point!(read_file);
forge_sdk::entry_point!(write_files);
forge_sdk::entry_point!(list_dir);
