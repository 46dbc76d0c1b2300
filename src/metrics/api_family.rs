//! The bounded `api` label: a path's family and version (`crm/v3`, `contacts/v1`, `oauth`),
//! drawn from a fixed list so that no client can grow the metric series count.

/// HubSpot's top-level API families. Anything else counts as `other`.
const FAMILIES: &[&str] = &[
    "account-info",
    "analytics",
    "app-webhooks",
    "appinstalls",
    "automation",
    "broadcast",
    "business-units",
    "calling",
    "cms",
    "comments",
    "commerce",
    "communication-preferences",
    "companies",
    "contacts",
    "content",
    "conversations",
    "crm",
    "crm-associations",
    "crm-objects",
    "deals",
    "email",
    "engagements",
    "events",
    "extensions",
    "feedback-surveys",
    "filemanager",
    "files",
    "form-integrations",
    "forms",
    "hubdb",
    "integrations",
    "integrators",
    "lists",
    "marketing",
    "media-bridge",
    "meetings",
    "oauth",
    "owners",
    "payments",
    "properties",
    "reports",
    "scheduler",
    "settings",
    "social",
    "transactional",
    "visitor-identification",
    "webhooks",
];

/// Version slots: none, v1..v5, and date-based versions such as `2026-03`.
const VERSIONS: &[&str] = &["", "v1", "v2", "v3", "v4", "v5", "dated"];

/// How many distinct labels exist: families plus `other`, times versions.
pub(crate) const SLOTS: usize = (FAMILIES.len() + 1) * VERSIONS.len();

/// The slot for a path, without allocating.
pub(crate) fn classify(path: &str) -> usize {
    let mut segments = path.trim_start_matches('/').split('/');
    let family = segments
        .next()
        .and_then(|f| FAMILIES.binary_search(&f).ok())
        .unwrap_or(FAMILIES.len());
    // The version sits at the 2nd segment (`/crm/v3/…`) or the 3rd (`/crm/objects/2026-03/…`).
    let version = if family == FAMILIES.len() {
        0
    } else {
        segments
            .take(2)
            .map(version_slot)
            .find(|&v| v != 0)
            .unwrap_or(0)
    };
    family * VERSIONS.len() + version
}

fn version_slot(segment: &str) -> usize {
    // A beta release (`2026-09-beta`) is the same dated API as its release.
    let bytes = segment.strip_suffix("-beta").unwrap_or(segment).as_bytes();
    match bytes {
        [b'v', d @ b'1'..=b'5'] => usize::from(d - b'0'),
        // 2026-03 style date versions.
        [y1, y2, y3, y4, b'-', m1, m2]
            if [y1, y2, y3, y4, m1, m2].iter().all(|b| b.is_ascii_digit()) =>
        {
            6
        }
        _ => 0,
    }
}

/// Whether the slot's family is one of HubSpot's (not `other`).
pub(crate) fn is_known(slot: usize) -> bool {
    slot / VERSIONS.len() < FAMILIES.len()
}

/// The label text for a slot.
pub(crate) fn label(slot: usize) -> String {
    let (family, version) = (slot / VERSIONS.len(), slot % VERSIONS.len());
    let family = FAMILIES.get(family).copied().unwrap_or("other");
    match VERSIONS[version] {
        "" => family.to_string(),
        v => format!("{family}/{v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(path: &str) -> String {
        label(classify(path))
    }

    #[test]
    fn families_and_versions() {
        assert!(
            FAMILIES.windows(2).all(|w| w[0] < w[1]),
            "FAMILIES must stay sorted"
        );
        assert_eq!(api("/crm/v3/objects/contacts"), "crm/v3");
        assert_eq!(api("/contacts/v1/lists/all/contacts/all"), "contacts/v1");
        assert_eq!(api("/oauth/v1/token"), "oauth/v1");
        assert_eq!(api("/oauth/2026-03/token"), "oauth/dated");
        assert_eq!(api("/marketing/v3/emails/"), "marketing/v3");
        assert_eq!(api("/webhooks/v3/123/settings"), "webhooks/v3");
        assert_eq!(api("/crm/objects/x"), "crm");
        assert_eq!(api("/crm/objects/2026-03/contacts"), "crm/dated");
        assert_eq!(api("/crm/objects/2026-09-beta/contacts"), "crm/dated");
        assert_eq!(api("/integrators/timeline/v3/x"), "integrators/v3");
        assert_eq!(api("/crm/objects/contacts/v3"), "crm", "4th segment");
        assert_eq!(api("/"), "other");
        assert_eq!(api("/random-thing/v3/x"), "other");
        assert_eq!(api("/crm/v9/x"), "crm");
    }

    #[test]
    fn every_slot_has_a_distinct_label() {
        let labels: std::collections::HashSet<_> = (0..SLOTS).map(label).collect();
        assert_eq!(labels.len(), SLOTS);
    }

    /// The label bound the metrics rely on: 10,000 distinct client paths land in at most
    /// `SLOTS` labels, and a path outside HubSpot's families is always `other`.
    #[test]
    fn ten_thousand_random_paths_stay_within_the_slots() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000u64 {
            let n = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
            let path = format!("/{:x}/v{}/{:x}/{i}", n, n % 9, n.wrapping_mul(31));
            let slot = classify(&path);
            assert!(slot < SLOTS, "{path} -> {slot}");
            assert_eq!(label(slot), "other", "{path}");
            // Known families with random tails stay bounded too.
            let family = FAMILIES[(n % FAMILIES.len() as u64) as usize];
            seen.insert(classify(&format!("/{family}/v{}/{n:x}/{i}", n % 9)));
        }
        assert!(seen.len() <= SLOTS);
        assert!(seen.iter().all(|&slot| slot < SLOTS && is_known(slot)));
    }

    proptest::proptest! {
        #[test]
        fn any_path_has_a_slot(path in "\\PC{0,64}") {
            proptest::prop_assert!(classify(&path) < SLOTS);
        }
    }
}
