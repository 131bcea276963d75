use loom_agent::prelude::*;

struct Weather;

impl Weather {
    /// Get the weather for a city.
    #[tool]
    fn get_weather(&self, city: String) -> String {
        city
    }
}

fn main() {}
