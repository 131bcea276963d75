use loom_agent::prelude::*;

#[tool(read_only)]
fn get_weather(city: String) -> String {
    city
}

fn main() {}
