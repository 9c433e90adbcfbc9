//! `serve` and `token`: placeholder until the server lands.

use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Args)]
pub struct ServeArgs {}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Mint a token offline.
    Create,
}

pub fn serve(_: ServeArgs) -> ExitCode {
    eprintln!("serve is not built yet");
    ExitCode::FAILURE
}

pub fn token(_: TokenCommand) -> ExitCode {
    eprintln!("token is not built yet");
    ExitCode::FAILURE
}
