use loom_agent::prelude::*;

struct Weather;

/// Get the weather for a city.
#[tool]
fn get_weather(city: String) -> Weather {
    let _ = city;
    Weather
}

fn main() {}
