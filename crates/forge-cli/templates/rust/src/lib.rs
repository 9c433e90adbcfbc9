//! {{name}}: a Forge overlay. `process` greets whoever `{"name": ...}` names.

use forge_sdk::Error;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Args {
    name: Option<String>,
}

#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

fn process(args: Args) -> Result<Greeting, Error> {
    forge_sdk::log::info("greeting");
    let name = args.name.unwrap_or_else(|| "world".to_owned());
    Ok(Greeting { greeting: format!("Hello, {name}!") })
}

forge_sdk::entry_point!(process);
