//! Why a client command did not succeed, and the exit status each reason stands for.

use forge_client::{Error, StatusCode};
use serde_json::Value;
use std::fmt;
use std::process::ExitCode;

/// Exit status of a request the server refused, and of an invocation whose overlay failed.
pub const EXIT_REFUSED: u8 = 1;
/// Exit status of a usage error (bad flags, unreadable file) and of a server that could not be
/// reached or did not answer as expected.
pub const EXIT_USAGE: u8 = 2;

/// Why a command did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// The request went wrong: refused by the server, or no (sensible) answer.
    Client(Error),
    /// Bad input, found before anything was sent.
    Usage(String),
    /// The server could not be started, or did not behave as the command expects (`demo`).
    Server(String),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Client(error)
    }
}

impl Failure {
    /// Prints the failure on stderr and gives the exit status it stands for.
    pub fn report(&self) -> ExitCode {
        match self {
            Failure::Client(Error::Refused { status, error, retry_after }) => {
                eprintln!("error: {} ({}, HTTP {})", error.message, error.code.as_str(), status.as_u16());
                if let Some(seconds) = retry_after {
                    eprintln!("hint: the server is busy; retry in {seconds} s");
                } else if *status == StatusCode::UNAUTHORIZED {
                    eprintln!("hint: pass a valid token with --token or FORGE_TOKEN");
                }
                ExitCode::from(EXIT_REFUSED)
            }
            Failure::Client(unreachable @ Error::Unreachable { connect: true, .. }) => {
                eprintln!("error: {unreachable} (is it running? set --url or FORGE_URL)");
                ExitCode::from(EXIT_USAGE)
            }
            other => {
                eprintln!("error: {other}");
                ExitCode::from(EXIT_USAGE)
            }
        }
    }

    /// `details.state` of a refusal that names the overlay's state (e.g. one that is not active).
    pub fn refused_state(&self) -> Option<&str> {
        match self {
            Failure::Client(error) => error.refusal()?.details.get("state").and_then(Value::as_str),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Client(error) => error.fmt(f),
            Failure::Usage(message) | Failure::Server(message) => f.write_str(message),
        }
    }
}
