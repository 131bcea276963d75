use loom_agent::prelude::*;

/// Get the weather for a city.
#[tool(readonly, concurrency_safe)]
fn get_weather(city: String) -> String {
    city
}

fn main() {}
