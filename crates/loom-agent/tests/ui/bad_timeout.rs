use loom_agent::prelude::*;

/// Get the weather for a city.
#[tool(timeout_secs = "30s")]
fn get_weather(city: String) -> String {
    city
}

fn main() {}
