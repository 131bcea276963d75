//! Token prices and cost. The table is one data file (`prices.json`), read once.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use loom_core::message::Usage;

/// Prices in US dollars per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Input tokens at the normal rate.
    pub input: f64,
    /// Input tokens read from the prompt cache (the input rate when absent).
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Input tokens written to the prompt cache (the input rate when absent).
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// Output tokens.
    pub output: f64,
}

impl Price {
    /// A price with input and output rates.
    pub fn new(input: f64, output: f64) -> Self {
        Price { input, output, cached_input: None, cache_write: None }
    }

    /// The cost of a usage, in US dollars.
    pub fn cost(&self, u: &Usage) -> f64 {
        let per = |tokens: u64, rate: f64| tokens as f64 * rate / 1_000_000.0;
        per(u.input_tokens, self.input)
            + per(u.cached_input_tokens, self.cached_input.unwrap_or(self.input))
            + per(u.cache_write_tokens, self.cache_write.unwrap_or(self.input))
            + per(u.output_tokens, self.output)
    }
}

/// One row of the data file: the price, and the context window when the file gives it.
#[derive(Clone, Copy, Debug, Deserialize)]
struct Row {
    #[serde(flatten)]
    price: Price,
    #[serde(default)]
    context_window: Option<u32>,
}

fn table() -> &'static HashMap<String, Row> {
    static TABLE: OnceLock<HashMap<String, Row>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let raw: HashMap<String, serde_json::Value> =
            serde_json::from_str(include_str!("prices.json")).unwrap_or_default();
        raw.into_iter()
            .filter(|(k, _)| !k.starts_with('_'))
            .filter_map(|(k, v)| serde_json::from_value::<Row>(v).ok().map(|p| (k, p)))
            .collect()
    })
}

/// The table's row for a model: by exact name, or by name plus a dated snapshot suffix or
/// `-latest`, the longest matching key winning. Gateway prefixes such as `openai/` are ignored.
fn row_for(model: &str) -> Option<&'static Row> {
    let name = model.rsplit('/').next().unwrap_or(model);
    let table = table();
    if let Some(row) = table.get(name) {
        return Some(row);
    }
    let mut best: Option<(&str, &Row)> = None;
    for (key, row) in table {
        if let Some(rest) = name.strip_prefix(key.as_str()).and_then(|r| r.strip_prefix('-'))
            && is_snapshot_suffix(rest)
            && best.is_none_or(|(k, _)| key.len() > k.len())
        {
            best = Some((key, row));
        }
    }
    best.map(|(_, row)| row)
}

/// The price of a model from the table: by exact name, or by name plus a dated snapshot suffix
/// (`gpt-4o-2024-08-06`, `claude-sonnet-4-20250514`) or `-latest`. Gateway prefixes such as
/// `openai/` are ignored. `None` for models not in the table.
pub fn price_for(model: &str) -> Option<Price> {
    row_for(model).map(|row| row.price)
}

/// The context window of a model from the same table (input and output tokens), matched the way
/// [`price_for`] matches. `None` for models not in the table.
///
/// ```
/// assert_eq!(loom_providers::pricing::context_window_for("gpt-4o-2024-08-06"), Some(128_000));
/// assert_eq!(loom_providers::pricing::context_window_for("my-model"), None);
/// ```
pub fn context_window_for(model: &str) -> Option<u32> {
    row_for(model).and_then(|row| row.context_window)
}

fn is_snapshot_suffix(rest: &str) -> bool {
    if rest == "latest" {
        return true;
    }
    let digits: String = rest.chars().filter(|c| *c != '-').collect();
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) && digits.len() >= 6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_snapshot_names_match_and_unknown_do_not() {
        assert_eq!(price_for("gpt-4o").map(|p| p.output), Some(10.0));
        assert_eq!(price_for("gpt-4o-2024-08-06").map(|p| p.input), Some(2.5));
        assert_eq!(price_for("gpt-4o-mini-2024-07-18").map(|p| p.input), Some(0.15));
        assert_eq!(price_for("claude-sonnet-4-20250514").map(|p| p.output), Some(15.0));
        assert_eq!(price_for("openai/gpt-4o").map(|p| p.input), Some(2.5));
        assert_eq!(price_for("claude-opus-4-7"), None, "no guessing for an unknown model");
        assert_eq!(price_for("llama3"), None);
    }

    #[test]
    fn every_model_in_the_table_has_a_context_window() {
        for (name, row) in table() {
            assert!(row.context_window.is_some_and(|w| w >= 8_192), "{name} has no context window");
        }
        assert_eq!(context_window_for("claude-sonnet-4-20250514"), Some(200_000));
        assert_eq!(context_window_for("gemini-2.5-pro"), Some(1_048_576));
    }

    #[test]
    fn cost_uses_each_bucket() {
        let p = Price { input: 3.0, cached_input: Some(0.3), cache_write: Some(3.75), output: 15.0 };
        let u = Usage {
            input_tokens: 1_000_000,
            cached_input_tokens: 1_000_000,
            cache_write_tokens: 1_000_000,
            output_tokens: 1_000_000,
            cost_usd: 0.0,
        };
        assert!((p.cost(&u) - (3.0 + 0.3 + 3.75 + 15.0)).abs() < 1e-9);
    }
}
