//! `hubspot-auth-proxy migration`: the `/migration` report as a table, most urgent first.

use std::time::SystemTime;

use serde_json::Value;

use super::calendar::{parse_rfc3339, Date};

/// One line per caller × account × API × generation; unsupported first, then fewest days left.
pub(crate) fn render(report: &Value, now: SystemTime) -> String {
    let empty = Vec::new();
    let mut items: Vec<&Value> = report["items"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .collect();
    if items.is_empty() {
        return "No requests forwarded since the proxy started.\n".to_string();
    }
    let today = report["today"]
        .as_str()
        .and_then(Date::parse)
        .unwrap_or_else(|| Date::of(now));
    items.sort_by_key(|i| urgency(i));
    let mut rows = vec![[
        "CALLER",
        "ACCOUNT",
        "API",
        "GENERATION",
        "STATE",
        "CALLS",
        "LAST",
    ]
    .map(String::from)];
    rows.extend(items.iter().map(|i| row(i, today, now)));
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .enumerate()
            // Counts read best right-aligned.
            .map(|(c, (cell, w))| {
                if c == 5 {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn urgency(item: &Value) -> (u8, String, std::cmp::Reverse<u64>) {
    let rank = match item["state"].as_str() {
        Some("unsupported") => 0,
        Some("deprecated") => 1,
        Some("supported") => 2,
        _ => 3,
    };
    // ISO dates sort as text; "~" sorts after every digit, so "no end date" comes last.
    let end = item["unsupported_from"].as_str().unwrap_or("~").to_string();
    (
        rank,
        end,
        std::cmp::Reverse(item["count"].as_u64().unwrap_or(0)),
    )
}

fn row(item: &Value, today: Date, now: SystemTime) -> [String; 7] {
    let text = |k: &str| item[k].as_str().unwrap_or("-").to_string();
    let state = text("state");
    let end = item["unsupported_from"].as_str().and_then(Date::parse);
    let state = match end {
        Some(end) if state == "unsupported" => format!("unsupported from {end}"),
        Some(end) => {
            let days = end.days() - today.days();
            format!("{state}, unsupported from {end} ({days} days left)")
        }
        None => state,
    };
    let last = item["last_seen"]
        .as_str()
        .and_then(parse_rfc3339)
        .map_or("-".to_string(), |at| format!("last {}", ago(now, at)));
    [
        text("caller"),
        text("account"),
        text("api"),
        text("generation"),
        state,
        calls(item["count"].as_u64().unwrap_or(0)),
        last,
    ]
}

fn ago(now: SystemTime, at: SystemTime) -> String {
    let secs = now.duration_since(at).map_or(0, |d| d.as_secs());
    match secs {
        0..60 => format!("{secs} s ago"),
        60..7200 => format!("{} min ago", secs / 60),
        7200..172_800 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

/// `1204` → `1,204`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "1 call", "1,204 calls".
fn calls(count: u64) -> String {
    match count {
        1 => "1 call".to_string(),
        n => format!("{} calls", thousands(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn most_urgent_first_with_days_left() {
        let now = Date::new(2027, 4, 1).start() + Duration::from_secs(3600);
        let report = serde_json::json!({"today": "2027-04-01", "items": [
            {"caller": "web", "account": "main", "api": "crm/dated", "generation": "2027-03",
             "state": "current", "unsupported_from": "2028-09-01", "count": 5,
             "last_seen": "2027-04-01T00:58:00Z"},
            {"caller": "nightly-sync", "account": "main", "api": "contacts/v1", "generation": "legacy-v1",
             "state": "deprecated", "unsupported_from": "2027-09-01", "count": 1204,
             "last_seen": "2027-04-01T00:58:00Z"},
            {"caller": "cron", "account": "main", "api": "crm/v4", "generation": "legacy-v4",
             "state": "unsupported", "unsupported_from": "2027-03-30", "count": 3,
             "last_seen": "2027-03-31T00:00:00Z"},
        ]});
        let table = render(&report, now);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("CALLER"));
        assert!(
            lines[1].starts_with("cron") && lines[1].contains("unsupported from 2027-03-30"),
            "{table}"
        );
        assert!(
            lines[2].contains("nightly-sync") && lines[2].contains("1,204 calls"),
            "{table}"
        );
        assert!(
            lines[2].contains("(153 days left)") && lines[2].contains("last 2 min ago"),
            "{table}"
        );
        assert!(lines[3].starts_with("web"));
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
