use loom_agent::prelude::*;

/// Not a function.
#[tool]
struct Weather {
    city: String,
}

fn main() {}
