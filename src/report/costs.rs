//! Estimated cost: the price table, and running totals rendered into
//! `/metrics` as float counters (the metrics crate counts whole numbers
//! only, and a fraction of a cent per request matters here).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex, RwLock};

use metrics::SharedString;

use crate::config::Price;
use crate::report::usage::Reported;

pub const COST_SPENT_TOTAL: &str = "sluice_cost_spent_total";
pub const COST_SAVED_TOTAL: &str = "sluice_cost_saved_total";

/// The configured prices, longest pattern first.
#[derive(Debug, Default)]
pub struct Prices {
    patterns: Vec<(glob::Pattern, Price)>,
    /// Each named model's price, once looked up.
    resolved: RwLock<HashMap<SharedString, Option<Price>>>,
}

impl Prices {
    pub fn new(table: &BTreeMap<String, Price>) -> Prices {
        let mut patterns: Vec<(glob::Pattern, Price)> = table
            .iter()
            .filter_map(|(model, price)| Some((glob::Pattern::new(model).ok()?, *price)))
            .collect();
        patterns.sort_by_key(|(pattern, _)| std::cmp::Reverse(pattern.as_str().len()));
        Prices {
            patterns,
            resolved: RwLock::new(HashMap::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The price of `model`, whose label is `label` (remembered by label
    /// unless it is the catch-all `other`).
    pub fn of(&self, model: &str, label: &SharedString) -> Option<Price> {
        if self.patterns.is_empty() {
            return None;
        }
        let named = &**label != super::labels::OTHER;
        if named
            && let Some(price) = self
                .resolved
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(label)
        {
            return *price;
        }
        let price = self
            .patterns
            .iter()
            .find(|(pattern, _)| pattern.matches(model))
            .map(|(_, price)| *price);
        if named {
            self.resolved
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(label.clone(), price);
        }
        price
    }
}

/// What `usage` costs at `price`: prompt tokens (cached ones at their own
/// price) and completion tokens.
pub fn cost(price: &Price, usage: &Reported) -> f64 {
    let cached = usage.cached.min(usage.prompt);
    let fresh = usage.prompt - cached;
    let cached_price = price.cached_input.unwrap_or(price.input);
    (fresh as f64 * price.input
        + cached as f64 * cached_price
        + usage.completion as f64 * price.output)
        / 1_000_000.0
}

/// What `tokens` prompt tokens cost at `price`.
pub fn prompt_cost(price: &Price, tokens: u64) -> f64 {
    tokens as f64 * price.input / 1_000_000.0
}

type Series = (&'static str, SharedString, SharedString, &'static str);

/// Running totals by metric, model, client and reason ("" for none).
static TOTALS: LazyLock<Mutex<BTreeMap<Series, f64>>> = LazyLock::new(Default::default);

/// Adds `amount` to a cost series.
pub fn add(
    metric: &'static str,
    model: &SharedString,
    client: &SharedString,
    reason: &'static str,
    amount: f64,
) {
    if !(amount.is_finite() && amount > 0.0) {
        return;
    }
    let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    *totals
        .entry((metric, model.clone(), client.clone(), reason))
        .or_insert(0.0) += amount;
}

/// The cost series in Prometheus' text format (nothing before the first
/// priced request).
pub fn render(out: &mut String) {
    let totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let mut last = "";
    for ((metric, model, client, reason), value) in totals.iter() {
        if *metric != last {
            let help = match *metric {
                COST_SPENT_TOTAL => {
                    "Estimated cost of the usage upstreams reported, from [usage.prices], by model and client."
                }
                _ => {
                    "Estimated cost not spent upstream, from [usage.prices], by model, client and reason (cache, coalesced, pruned, compressed)."
                }
            };
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
            last = metric;
        }
        let _ = write!(
            out,
            "{metric}{{model=\"{}\",client=\"{}\"",
            escape(model),
            escape(client)
        );
        if !reason.is_empty() {
            let _ = write!(out, ",reason=\"{reason}\"");
        }
        let _ = writeln!(out, "}} {value}");
    }
}

/// A label value escaped for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: f64, output: f64, cached: Option<f64>) -> Price {
        Price {
            input,
            output,
            cached_input: cached,
        }
    }

    #[test]
    fn the_longest_matching_pattern_prices_a_model() {
        let mut table = BTreeMap::new();
        table.insert("gpt-4o*".to_owned(), price(2.5, 10.0, None));
        table.insert("gpt-4o-mini*".to_owned(), price(0.15, 0.6, None));
        let prices = Prices::new(&table);
        let label = SharedString::from(std::sync::Arc::<str>::from("gpt-4o-mini"));
        assert_eq!(
            prices.of("gpt-4o-mini", &label).map(|p| p.input),
            Some(0.15)
        );
        // Remembered by label.
        assert_eq!(
            prices.of("gpt-4o-mini", &label).map(|p| p.input),
            Some(0.15)
        );
        let other = SharedString::const_str(super::super::labels::OTHER);
        assert_eq!(prices.of("gpt-4o-2024", &other).map(|p| p.input), Some(2.5));
        assert_eq!(prices.of("llama", &other), None);
    }

    #[test]
    fn cached_prompt_tokens_have_their_own_price() {
        let usage = Reported {
            prompt: 1_000_000,
            completion: 500_000,
            cached: 400_000,
            total: 1_500_000,
        };
        let full = cost(&price(2.0, 8.0, Some(1.0)), &usage);
        assert!(
            (full - (0.6 * 2.0 + 0.4 * 1.0 + 0.5 * 8.0)).abs() < 1e-9,
            "{full}"
        );
        let no_cached_price = cost(&price(2.0, 8.0, None), &usage);
        assert!((no_cached_price - (2.0 + 4.0)).abs() < 1e-9);
    }

    #[test]
    fn rendering_escapes_and_types_the_series() {
        let model = SharedString::from(std::sync::Arc::<str>::from("m\"x"));
        let client = SharedString::const_str("team-render");
        add(COST_SAVED_TOTAL, &model, &client, "cache", 0.25);
        add(COST_SAVED_TOTAL, &model, &client, "cache", 0.5);
        add(COST_SAVED_TOTAL, &model, &client, "cache", f64::NAN);
        let mut out = String::new();
        render(&mut out);
        assert!(
            out.contains("# TYPE sluice_cost_saved_total counter"),
            "{out}"
        );
        assert!(
            out.contains(
                "sluice_cost_saved_total{model=\"m\\\"x\",client=\"team-render\",reason=\"cache\"} 0.75"
            ),
            "{out}"
        );
    }
}
