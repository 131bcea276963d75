use loom_agent::prelude::*;

/// Get the weather for a city.
#[tool(blocking)]
async fn get_weather(city: String) -> String {
    city
}

fn main() {}
