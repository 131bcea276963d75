use loom_agent::prelude::*;

/// Greet someone.
#[tool]
fn greet(name: impl Into<String>) -> String {
    name.into()
}

fn main() {}
