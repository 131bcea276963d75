use loom_agent::prelude::*;

/// Get the weather for a city.
#[tool(name = weather)]
fn get_weather(city: String) -> String {
    city
}

fn main() {}
