//! Structured output: `agent.run_typed::<T>()` returns a validated, typed answer.
//!
//! Mirrors the `output_schema=` parameter of `agent.run` in the seeds (`output_schema=MyPydanticModel`):
//! the schema comes from a Rust type deriving `JsonSchema` and `Deserialize`. The model's answer may
//! wrap the JSON in prose or in a ```json fence; the runtime extracts it, validates it against the
//! schema (sending any violations back to the model), then deserializes it.

use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use schemars::JsonSchema;
use serde::Deserialize;

/// The weather in a city.
#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)] // the fields are read through `Debug`
struct Weather {
    /// The city.
    city: String,
    /// The temperature in degrees Celsius.
    temperature_c: f64,
    /// Short conditions, such as "sunny".
    conditions: String,
}

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    let model = ScriptedModel::new([ScriptedTurn::text(
        "Here is the weather you asked for:\n\n```json\n{\"city\": \"Tokyo\", \"temperature_c\": 22.5, \
         \"conditions\": \"sunny\"}\n```\n",
    )]);
    let agent = Agent::builder().instructions("You report the weather.").model(model).build()?;

    let weather: Weather = agent.run_typed("Weather in Tokyo?").await?;
    println!("{weather:#?}");
    println!("{} is {} at {} °C", weather.city, weather.conditions, weather.temperature_c);
    Ok(())
}
