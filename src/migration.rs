//! The migration report: every forwarded request counted by caller, account, API family and
//! generation, with that generation's support state, for `GET /migration` and the
//! `hubspot_proxy_deprecated_api_requests_total` metric.

pub(crate) mod calendar;
pub(crate) mod caller;
pub(crate) mod generation;
pub(crate) mod table;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue};
use prometheus::{IntCounter, IntCounterVec};
use serde_json::{json, Value};

use crate::metrics::api_family;
use calendar::Date;
use generation::{Generation, State, Support, SUNSET};

/// Distinct caller names kept; later ones count as [`OTHER`]. Names come from clients, so this
/// bounds the report's memory whatever they send.
pub(crate) const MAX_CALLERS: usize = 1000;
pub(crate) const OTHER: &str = "other";
pub(crate) const ANONYMOUS: &str = "anonymous";

/// Fixes the date support states are computed for; a testing aid (timestamps stay real).
pub(crate) const TODAY_ENV: &str = "HUBSPOT_AUTH_PROXY_TODAY";

/// Where "today" comes from: the system clock, or a fixed date so tests do not rot.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Today {
    System,
    Fixed(Date),
}

impl Today {
    /// `HUBSPOT_AUTH_PROXY_TODAY=YYYY-MM-DD`, else the system clock.
    pub(crate) fn from_env() -> Result<Today, String> {
        match std::env::var(TODAY_ENV) {
            Err(_) => Ok(Today::System),
            Ok(text) => Date::parse(text.trim())
                .map(Today::Fixed)
                .ok_or_else(|| format!("{TODAY_ENV}={text:?} is not a YYYY-MM-DD date")),
        }
    }

    pub(crate) fn date(self, now: SystemTime) -> Date {
        match self {
            Today::System => Date::of(now),
            Today::Fixed(date) => date,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Slot {
    api: usize,
    generation: Generation,
}

struct Tally {
    count: u64,
    first_seen: SystemTime,
    last_seen: SystemTime,
    /// The deprecated-requests counter for this slot, resolved once per state it passes through.
    metric: Option<(State, IntCounter)>,
}

type PerCaller = HashMap<(Arc<str>, Slot), Tally>;

pub(crate) struct Report {
    today: Today,
    deprecated: IntCounterVec,
    /// One short critical section per forwarded request: two hash lookups and an increment.
    /// Allocation happens only for a caller or slot seen for the first time.
    tallies: Mutex<HashMap<Arc<str>, PerCaller>>,
}

impl Report {
    pub(crate) fn new(today: Today, deprecated: IntCounterVec) -> Report {
        Report {
            today,
            deprecated,
            tallies: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one forwarded request and returns its generation's support state today. `api` is
    /// the path's `api_family::classify` slot, which the request path has already computed.
    pub(crate) fn record(
        &self,
        caller: &str,
        account: &Arc<str>,
        path: &str,
        api: usize,
    ) -> Support {
        let now = SystemTime::now();
        let slot = Slot {
            api,
            generation: Generation::of_path(path),
        };
        let support = slot.generation.support(self.today.date(now));
        let mut tallies = self.tallies.lock().expect("report lock");
        let name = if tallies.len() < MAX_CALLERS || tallies.contains_key(caller) {
            caller
        } else {
            OTHER
        };
        if !tallies.contains_key(name) {
            tallies.insert(Arc::from(name), HashMap::new());
        }
        let per_caller = tallies.get_mut(name).expect("inserted above");
        let tally = per_caller
            .entry((account.clone(), slot))
            .or_insert_with(|| Tally {
                count: 0,
                first_seen: now,
                last_seen: now,
                metric: None,
            });
        tally.count += 1;
        tally.last_seen = now;
        // Paths outside HubSpot's families (which HubSpot answers 404) are in the report but
        // not the metric: a client inventing paths must not add series.
        if support.state.needs_migration() && api_family::is_known(slot.api) {
            self.count_deprecated(tally, account, slot, support.state);
        }
        support
    }

    fn count_deprecated(&self, tally: &mut Tally, account: &str, slot: Slot, state: State) {
        match &tally.metric {
            Some((seen, counter)) if *seen == state => counter.inc(),
            _ => {
                let counter = self.deprecated.with_label_values(&[
                    account,
                    &api_family::label(slot.api),
                    &slot.generation.label(),
                    state.as_str(),
                ]);
                counter.inc();
                tally.metric = Some((state, counter));
            }
        }
    }

    /// The report as `GET /migration` serves it: states as of today, most urgent first.
    pub(crate) fn to_json(&self) -> Value {
        let now = SystemTime::now();
        let today = self.today.date(now);
        let mut rows: Vec<(Support, Value)> = Vec::new();
        {
            let tallies = self.tallies.lock().expect("report lock");
            for (caller, per_caller) in tallies.iter() {
                for ((account, slot), tally) in per_caller {
                    let support = slot.generation.support(today);
                    rows.push((support, item(caller, account, *slot, support, tally)));
                }
            }
        }
        rows.sort_by(|(a, x), (b, y)| {
            urgency(a)
                .cmp(&urgency(b))
                .then_with(|| y["count"].as_u64().cmp(&x["count"].as_u64()))
                .then_with(|| x["caller"].as_str().cmp(&y["caller"].as_str()))
        });
        json!({
            "generated_at": calendar::rfc3339(now),
            "today": today.to_string(),
            "items": rows.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        })
    }
}

/// Sorts unsupported first, then by the fewest days left, then what has no end date.
fn urgency(support: &Support) -> (u8, i64) {
    let rank = match support.state {
        State::Unsupported => 0,
        State::Deprecated => 1,
        State::Supported | State::Current => 2,
    };
    (rank, support.unsupported_from.map_or(i64::MAX, Date::days))
}

fn item(caller: &str, account: &str, slot: Slot, support: Support, tally: &Tally) -> Value {
    json!({
        "caller": caller,
        "account": account,
        "api": api_family::label(slot.api),
        "generation": slot.generation.label(),
        "state": support.state.as_str(),
        "unsupported_from": support.unsupported_from.map(|d| d.to_string()),
        "count": tally.count,
        "first_seen": calendar::rfc3339(tally.first_seen),
        "last_seen": calendar::rfc3339(tally.last_seen),
    })
}

/// `Deprecation` (RFC 9745, a structured date `@<unix seconds>`), `Sunset` (RFC 8594, an
/// HTTP-date) and a `Link` to the migration guide, for answers to deprecated calls.
pub(crate) fn add_deprecation_headers(headers: &mut HeaderMap, support: &Support) {
    if !support.state.needs_migration() {
        return;
    }
    if let Some(since) = support.deprecated_from {
        let unix = since.days() * 86_400;
        if let Ok(value) = HeaderValue::try_from(format!("@{unix}")) {
            headers.insert("deprecation", value);
        }
    }
    if let Some(end) = support.unsupported_from {
        if let Ok(value) = HeaderValue::try_from(httpdate::fmt_http_date(end.start())) {
            headers.insert("sunset", value);
        }
    }
    let link = format!("<{}>; rel=\"deprecation\"", SUNSET.migration_guide);
    if let Ok(value) = HeaderValue::try_from(link) {
        headers.append(http::header::LINK, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the request path does: classify the family once, then record.
    fn record(r: &Report, caller: &str, account: &Arc<str>, path: &str) -> Support {
        r.record(caller, account, path, api_family::classify(path))
    }

    fn report(today: &str) -> Report {
        let vec = IntCounterVec::new(
            prometheus::Opts::new("t", "t"),
            &["account", "api", "generation", "state"],
        )
        .unwrap();
        Report::new(Today::Fixed(Date::parse(today).unwrap()), vec)
    }

    #[test]
    fn counts_per_caller_account_and_generation() {
        let r = report("2027-04-01");
        let main: Arc<str> = Arc::from("main");
        for _ in 0..3 {
            record(
                &r,
                "nightly-sync",
                &main,
                "/contacts/v1/lists/all/contacts/all",
            );
        }
        let s = record(&r, "web", &main, "/crm/v4/associations/x");
        assert_eq!(s.state, State::Unsupported);
        record(&r, "web", &main, "/crm/objects/2027-03/contacts");
        let json = r.to_json();
        let items = json["items"].as_array().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0]["generation"], "legacy-v4", "unsupported first");
        assert_eq!(items[0]["unsupported_from"], "2027-03-30");
        assert_eq!(items[1]["caller"], "nightly-sync");
        assert_eq!(items[1]["api"], "contacts/v1");
        assert_eq!(items[1]["count"], 3);
        assert_eq!(items[1]["state"], "deprecated");
        assert_eq!(items[2]["state"], "current");
        assert_eq!(items[2]["api"], "crm/dated");
        assert_eq!(
            r.deprecated
                .with_label_values(&["main", "contacts/v1", "legacy-v1", "deprecated"])
                .get(),
            3
        );
        assert_eq!(
            r.deprecated
                .with_label_values(&["main", "crm/dated", "2027-03", "current"])
                .get(),
            0
        );
    }

    #[test]
    fn invented_families_stay_out_of_the_metric() {
        let r = report("2027-04-01");
        let main: Arc<str> = Arc::from("main");
        record(&r, "web", &main, "/not-hubspot/v1/x");
        let labels = ["main", "other", "legacy-v1", "deprecated"];
        assert_eq!(r.deprecated.with_label_values(&labels).get(), 0);
        assert_eq!(r.to_json()["items"][0]["count"], 1, "still in the report");
    }

    #[test]
    fn callers_are_bounded_then_other() {
        let r = report("2027-04-01");
        let main: Arc<str> = Arc::from("main");
        for i in 0..MAX_CALLERS + 50 {
            record(&r, &format!("c{i}"), &main, "/crm/v3/x");
        }
        record(&r, "c0", &main, "/crm/v3/x");
        let json = r.to_json();
        let items = json["items"].as_array().unwrap();
        assert_eq!(items.len(), MAX_CALLERS + 1);
        let other = items.iter().find(|i| i["caller"] == OTHER).unwrap();
        assert_eq!(other["count"], 50);
        let first = items.iter().find(|i| i["caller"] == "c0").unwrap();
        assert_eq!(first["count"], 2, "a known caller keeps its name");
    }

    #[test]
    fn deprecation_headers_only_for_deprecated_states() {
        let mut headers = HeaderMap::new();
        add_deprecation_headers(
            &mut headers,
            &Generation::Legacy(1).support(Date::new(2027, 4, 1)),
        );
        assert_eq!(headers["deprecation"], "@1772323200"); // 2026-03-01T00:00:00Z
        assert_eq!(headers["sunset"], "Wed, 01 Sep 2027 00:00:00 GMT");
        assert!(headers["link"]
            .to_str()
            .unwrap()
            .ends_with("rel=\"deprecation\""));
        let mut none = HeaderMap::new();
        let current = Generation::Dated {
            year: 2027,
            month: 3,
            beta: false,
        };
        add_deprecation_headers(&mut none, &current.support(Date::new(2027, 4, 1)));
        assert!(none.is_empty());
    }
}
