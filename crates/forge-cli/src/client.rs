//! Client commands: placeholder until the client lands.

use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum OverlayCommand {
    /// List overlays.
    List,
}

#[derive(Subcommand)]
pub enum CapsuleCommand {
    /// Search capsules.
    Search,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Create,
}

pub fn overlay(_: OverlayCommand) -> ExitCode {
    ExitCode::FAILURE
}
pub fn capsule(_: CapsuleCommand) -> ExitCode {
    ExitCode::FAILURE
}
pub fn user(_: UserCommand) -> ExitCode {
    ExitCode::FAILURE
}
