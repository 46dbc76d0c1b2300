//! The Redis key layout, in one place. Every key starts with the namespace; an account's keys
//! carry its name in a hash tag (`{name}`) so they share one slot if Redis is ever sharded,
//! which the admission script needs (it touches two of them atomically).
//!
//! | key                             | type       | holds                                         | TTL                      |
//! |---------------------------------|------------|-----------------------------------------------|--------------------------|
//! | `{ns}:acct:{name}:window`       | sorted set | planned send times (ms, Redis clock), ≤ limit | last send + window + 1 s |
//! | `{ns}:acct:{name}:search`       | sorted set | the same for search requests                  | last send + window + 1 s |
//! | `{ns}:acct:{name}:limit`        | hash       | `general`: the fleet-wide effective budget    | 10 min after last change |
//! | `{ns}:acct:{name}:lease`        | string     | the refresher's lease (random holder id)      | lease TTL                |
//! | `{ns}:acct:{name}:token`        | string     | the sealed token record (AES-256-GCM)         | token lifetime           |
//! | `{ns}:acct:{name}:generation`   | string     | the last token generation written             | 30 days                  |
//! | `{ns}:replicas`                 | sorted set | replica id → heartbeat expiry (ms)            | 3 heartbeat TTLs         |
//! | `{ns}:tokens` (pub/sub channel) | —          | `"{name} {generation}"` after each new token  | —                        |
//!
//! (`{ns}` is `fleet.namespace`; in the keys the account name really is wrapped in braces.)

/// The keys of one account.
#[derive(Debug, Clone)]
pub struct AccountKeys {
    pub(crate) window: String,
    pub(crate) search: String,
    pub(crate) limit: String,
    pub(crate) lease: String,
    pub(crate) token: String,
    pub(crate) generation: String,
}

impl AccountKeys {
    pub fn new(namespace: &str, account: &str) -> AccountKeys {
        let base = format!("{namespace}:acct:{{{account}}}");
        AccountKeys {
            window: format!("{base}:window"),
            search: format!("{base}:search"),
            limit: format!("{base}:limit"),
            lease: format!("{base}:lease"),
            token: format!("{base}:token"),
            generation: format!("{base}:generation"),
        }
    }
}

pub(crate) fn replicas(namespace: &str) -> String {
    format!("{namespace}:replicas")
}

/// The pub/sub channel announcing new tokens (names and generations only, never a secret).
pub(crate) fn tokens_channel(namespace: &str) -> String {
    format!("{namespace}:tokens")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accounts_keys_share_a_hash_tag_under_the_namespace() {
        let keys = AccountKeys::new("ns", "main");
        assert_eq!(keys.window, "ns:acct:{main}:window");
        assert_eq!(keys.search, "ns:acct:{main}:search");
        assert_eq!(keys.token, "ns:acct:{main}:token");
        assert_eq!(replicas("ns"), "ns:replicas");
        assert_eq!(tokens_channel("ns"), "ns:tokens");
    }
}
