//! What the bench examples share (declared in each with `mod common;`; the Dockerfile copies it
//! with them).

use hubspot_auth_proxy::config::Config;
use hubspot_auth_proxy::sandbox::Sandbox;
use hubspot_auth_proxy::settings::Settings;

/// A proxy on free loopback ports in front of `sandbox`, with one account `main` holding the
/// static `token` and shaped to `per_ten_seconds`. `rest` follows in `[accounts.rate_limit]`:
/// more of its keys, then any further tables (`[fleet]`).
pub fn shaped_settings(
    sandbox: &Sandbox,
    token: &str,
    per_ten_seconds: u64,
    rest: &str,
) -> Settings {
    let config = Config::parse(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[upstream]
base_url = "{}"
[[accounts]]
name = "main"
token = {{ value = "{token}" }}
[accounts.rate_limit]
per_ten_seconds = {per_ten_seconds}
{rest}"#,
        sandbox.url()
    ))
    .expect("config");
    Settings::from_config(config).expect("settings")
}
