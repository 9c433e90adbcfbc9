//! `demo`: placeholder until it lands.

use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct DemoArgs {}

pub fn demo(_: DemoArgs) -> ExitCode {
    ExitCode::FAILURE
}
