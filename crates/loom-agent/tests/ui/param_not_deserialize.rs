use loom_agent::prelude::*;

struct City {
    name: String,
}

/// Get the weather for a city.
#[tool]
fn get_weather(city: City) -> String {
    city.name
}

fn main() {}
