//! Reading the ledger back: usage summed over a time range, grouped by
//! key, model, upstream, endpoint, day or hour (`sluice usage`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Row;

use super::writer::{Db, Target};

/// What rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Key,
    Model,
    Upstream,
    Endpoint,
    Day,
    Hour,
}

impl Group {
    pub fn parse(name: &str) -> Option<Group> {
        Some(match name.trim() {
            "key" => Group::Key,
            "model" => Group::Model,
            "upstream" => Group::Upstream,
            "endpoint" => Group::Endpoint,
            "day" => Group::Day,
            "hour" => Group::Hour,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Group::Key => "key",
            Group::Model => "model",
            Group::Upstream => "upstream",
            Group::Endpoint => "endpoint",
            Group::Day => "day",
            Group::Hour => "hour",
        }
    }

    /// The column, as text in both databases.
    fn column(self) -> &'static str {
        match self {
            Group::Key => "key",
            Group::Model => "model",
            Group::Upstream => "upstream",
            Group::Endpoint => "endpoint",
            Group::Day => "CAST(time_ms / 86400000 AS TEXT)",
            Group::Hour => "CAST(time_ms / 3600000 AS TEXT)",
        }
    }

    /// A group value as shown: days and hours as UTC times.
    fn show(self, value: Option<String>) -> String {
        let bucket = |unit: u64, keep: usize| {
            let n = value.as_deref().and_then(|v| v.parse::<u64>().ok())?;
            let at = UNIX_EPOCH.checked_add(Duration::from_secs(n.checked_mul(unit)?))?;
            let text = humantime::format_rfc3339_seconds(at).to_string();
            Some(text.get(..keep).unwrap_or(&text).to_owned())
        };
        match self {
            Group::Day => bucket(86_400, 10),
            Group::Hour => bucket(3_600, 13).map(|h| format!("{h}:00Z")),
            _ => value,
        }
        .unwrap_or_default()
    }
}

/// One group's sums.
#[derive(Debug, Clone, PartialEq)]
pub struct Sums {
    /// The group's values, in the order of the query's `group_by`.
    pub groups: Vec<String>,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cost: f64,
    pub tokens_saved: i64,
}

/// Sums the records that ended in `since..until`, by `group_by`.
pub async fn usage(
    url: &str,
    since: SystemTime,
    until: SystemTime,
    group_by: &[Group],
) -> Result<Vec<Sums>, String> {
    let target = Target::parse(url)?;
    let db = Db::connect(&target).await.map_err(|e| e.to_string())?;
    let millis = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    };
    let columns: Vec<&str> = group_by.iter().map(|g| g.column()).collect();
    let mut sql = String::from("SELECT ");
    for column in &columns {
        sql.push_str(column);
        sql.push_str(", ");
    }
    sql.push_str(
        "COUNT(*), CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT), \
         CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT), \
         CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT), SUM(cost), \
         CAST(COALESCE(SUM(tokens_saved), 0) AS BIGINT) \
         FROM usage_records WHERE time_ms >= $1 AND time_ms < $2",
    );
    if !columns.is_empty() {
        let list = columns.join(", ");
        sql.push_str(&format!(" GROUP BY {list} ORDER BY {list}"));
    }
    let n = columns.len();
    macro_rules! run {
        ($pool:expr) => {{
            let rows = sqlx::query(&sql)
                .bind(millis(since))
                .bind(millis(until))
                .fetch_all($pool)
                .await
                .map_err(|e| e.to_string())?;
            rows.iter()
                .map(|row| {
                    let groups = group_by
                        .iter()
                        .enumerate()
                        .map(|(i, g)| Ok(g.show(row.try_get::<Option<String>, _>(i)?)))
                        .collect::<Result<Vec<_>, sqlx::Error>>()?;
                    Ok(Sums {
                        groups,
                        requests: row.try_get(n)?,
                        prompt_tokens: row.try_get(n + 1)?,
                        completion_tokens: row.try_get(n + 2)?,
                        cached_tokens: row.try_get(n + 3)?,
                        cost: row.try_get::<Option<f64>, _>(n + 4)?.unwrap_or(0.0),
                        tokens_saved: row.try_get(n + 5)?,
                    })
                })
                .collect::<Result<Vec<Sums>, sqlx::Error>>()
                .map_err(|e| e.to_string())
        }};
    }
    match &db {
        Db::Sqlite(pool) => run!(pool),
        Db::Postgres(pool) => run!(pool),
    }
}

/// `sums` as an aligned text table with a header.
pub fn table(group_by: &[Group], sums: &[Sums]) -> String {
    let mut header: Vec<String> = group_by.iter().map(|g| g.name().to_owned()).collect();
    header.extend(
        [
            "requests",
            "prompt",
            "completion",
            "cached",
            "cost",
            "saved",
        ]
        .map(str::to_owned),
    );
    let mut lines = vec![header];
    for s in sums {
        let mut line = s.groups.clone();
        line.extend([
            s.requests.to_string(),
            s.prompt_tokens.to_string(),
            s.completion_tokens.to_string(),
            s.cached_tokens.to_string(),
            format!("{:.4}", s.cost),
            s.tokens_saved.to_string(),
        ]);
        lines.push(line);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i < group_by.len() {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_parse_and_buckets_show_as_utc() {
        assert_eq!(Group::parse("model"), Some(Group::Model));
        assert_eq!(Group::parse("week"), None);
        // 2026-12-08 is day 20,795 since the epoch.
        assert_eq!(Group::Day.show(Some("20795".into())), "2026-12-08");
        assert_eq!(Group::Hour.show(Some("499082".into())), "2026-12-08T02:00Z");
        assert_eq!(Group::Key.show(None), "");
    }

    #[test]
    fn table_aligns_columns() {
        let sums = [Sums {
            groups: vec!["search-svc".into()],
            requests: 12,
            prompt_tokens: 3400,
            completion_tokens: 120,
            cached_tokens: 0,
            cost: 0.0125,
            tokens_saved: 40,
        }];
        let text = table(&[Group::Key], &sums);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("key"));
        assert!(lines[1].starts_with("search-svc"));
        assert!(lines[1].contains("3400") && lines[1].ends_with("40"));
    }
}
