use loom_agent::prelude::*;

/// Get the weather for a city.
#[tool]
fn get_weather(city: &str) -> String {
    city.to_string()
}

fn main() {}
