//! Clients of the admin listener: `status` renders `/status` as a table, and `healthcheck` lets
//! a container HEALTHCHECK probe readiness without curl in the image.

use std::time::Duration;

use serde_json::Value;

fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())
}

/// `GET {admin}/status` as JSON.
pub(crate) async fn fetch_status(admin: &str) -> Result<Value, String> {
    fetch_json(admin, "/status").await
}

/// `GET {admin}{path}` as JSON.
pub(crate) async fn fetch_json(admin: &str, path: &str) -> Result<Value, String> {
    let url = format!("{}{path}", admin.trim_end_matches('/'));
    let response = client()?
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("cannot read {url}: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("{url} did not answer JSON: {e}"))
}

/// Succeeds when `url` answers 2xx.
pub(crate) async fn healthcheck(url: &str) -> Result<(), String> {
    let response = client()?
        .get(url)
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {}", response.status()))
    }
}

/// One row per account, aligned columns.
pub(crate) fn render_table(status: &Value) -> String {
    let header = [
        "ACCOUNT",
        "KIND",
        "READY",
        "EXPIRES_IN",
        "LAST_REFRESH",
        "FAILURES",
        "LAST_ERROR",
        "RATE_10S",
        "RATE_DAILY",
        "PORTAL",
    ]
    .map(String::from);
    let mut rows = vec![header.to_vec()];
    let empty = Vec::new();
    for a in status["accounts"].as_array().unwrap_or(&empty) {
        rows.push(row(a));
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if status["draining"] == true {
        out.push_str("(draining: shutting down)\n");
    }
    out.push_str(&fleet_line(status));
    out
}

/// `fleet: redis up (shared), 3 replicas; budget in use: main 12/20 (fallback share 6)`.
fn fleet_line(status: &Value) -> String {
    let fleet = &status["fleet"];
    if fleet.is_null() {
        return String::new();
    }
    let budgets: Vec<String> = status["accounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let shared = &a["ratelimit"]["shared"];
            let share = shared["fallback_share"].as_u64()?;
            let in_use = match (shared["in_use"].as_u64(), shared["limit"].as_u64()) {
                (Some(used), Some(limit)) => format!("{used}/{limit}"),
                _ => "-".to_string(),
            };
            Some(format!(
                "{} {in_use} (fallback share {share})",
                a["name"].as_str().unwrap_or("?")
            ))
        })
        .collect();
    let mut line = format!(
        "fleet: redis {} ({}), {} replicas",
        fleet["redis"].as_str().unwrap_or("?"),
        fleet["mode"].as_str().unwrap_or("?"),
        fleet["replicas"]
    );
    if !budgets.is_empty() {
        line.push_str("; shared budget in use: ");
        line.push_str(&budgets.join(", "));
    }
    line.push('\n');
    line
}

fn row(a: &Value) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let budget = |w: &Value| match (w["remaining"].as_i64(), w["max"].as_i64()) {
        (Some(r), Some(m)) => format!("{r}/{m}"),
        _ => "-".to_string(),
    };
    let last_refresh = match (
        a["last_refresh_unix"].as_u64(),
        a["last_refresh_result"].as_str(),
    ) {
        (Some(at), Some(result)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(at);
            format!("{}s ago ({result})", now.saturating_sub(at))
        }
        _ => "-".to_string(),
    };
    vec![
        text(&a["name"]),
        text(&a["kind"]),
        if a["ready"] == true { "yes" } else { "NO" }.to_string(),
        a["token_expires_in_secs"]
            .as_u64()
            .map_or("-".to_string(), |s| format!("{s}s")),
        last_refresh,
        text(&a["consecutive_failures"]),
        text(&a["last_error"]),
        budget(&a["ratelimit"]["ten_second"]),
        budget(&a["ratelimit"]["daily"]),
        portal(&a["portal"]),
    ]
}

/// `62515 (private_app, 3 scopes)`; a mismatch says so.
fn portal(p: &Value) -> String {
    let Some(hub) = p["hub_id"].as_u64() else {
        return "-".to_string();
    };
    let kind = p["token_kind"].as_str().unwrap_or("?");
    let scopes = p["scopes"].as_array().map_or(0, Vec::len);
    match p["expected_hub_id"].as_u64() {
        Some(expected) if expected != hub => format!("{hub} WRONG (want {expected}, {kind})"),
        _ => format!("{hub} ({kind}, {scopes} scopes)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_state_follows_the_table() {
        let status = serde_json::json!({"draining": false,
            "fleet": {"redis": "down", "mode": "fallback", "replicas": 3},
            "accounts": [{"name": "main", "ratelimit": {"ten_second": {},
                "shared": {"in_use": 12, "limit": 20, "fallback_share": 6}}}]});
        let table = render_table(&status);
        assert_eq!(
            table.lines().last(),
            Some("fleet: redis down (fallback), 3 replicas; shared budget in use: main 12/20 (fallback share 6)")
        );
    }

    #[test]
    fn table_aligns_and_fills_gaps() {
        let status = serde_json::json!({"draining": false, "accounts": [
            {"name": "main", "kind": "static", "ready": true, "token_expires_in_secs": null,
             "consecutive_failures": 0, "last_error": null,
             "ratelimit": {"ten_second": {"remaining": 187, "max": 190}, "daily": {"remaining": null, "max": null}}},
            {"name": "marketing", "kind": "oauth", "ready": false, "token_expires_in_secs": 1200,
             "consecutive_failures": 3, "last_error": "invalid_grant", "ratelimit": {}},
        ]});
        let table = render_table(&status);
        assert!(!table.contains("fleet:"), "no [fleet], no fleet line");
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ACCOUNT    KIND    READY"));
        assert!(lines[1].contains("187/190") && lines[1].contains("yes"));
        assert!(
            lines[2].contains("NO")
                && lines[2].contains("1200s")
                && lines[2].contains("invalid_grant")
        );
    }
}
