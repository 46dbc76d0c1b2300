//! `demo`: the HubSpot stand-in and the real proxy in one process, offline, with ready-to-paste
//! `curl` lines. Nothing here is reachable from `serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{Config, ConfigError};
use crate::sandbox::Sandbox;
use crate::settings::Settings;

const STATIC_TOKEN: &str = "pat-na1-00000000-demo-4000-8000-000000000000";
const CLIENT_ID: &str = "demo-client-id";
const CLIENT_SECRET: &str = "demo-client-secret";
const REFRESH_TOKEN: &str = "na1-demo-refresh-token";
/// The key an old script would send; the demo maps its hash to the `main` account.
pub(crate) const LEGACY_KEY: &str = "demo-legacy-api-key";
/// Short, so a refresh shows in the log within a minute.
const DEMO_TOKEN_SECS: u64 = 60;

pub(crate) struct DemoArgs {
    pub(crate) listen: SocketAddr,
    pub(crate) admin_listen: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    #[error("cannot start the HubSpot stand-in: {0}")]
    Sandbox(std::io::Error),
    #[error("cannot prepare the demo's state directory {0}: {1}")]
    StateDir(PathBuf, std::io::Error),
    #[error("{0} (try --port 0 --admin-port 0 for free ports)")]
    Start(#[from] crate::StartError),
    #[error("demo config: {0}")]
    Config(String),
}

pub(crate) struct Demo {
    pub(crate) sandbox: Sandbox,
    pub(crate) proxy: crate::Running,
    pub(crate) state_dir: StateDir,
}

/// The demo's scratch directory (its rotating refresh token), removed when dropped.
pub(crate) struct StateDir(PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) async fn start(args: &DemoArgs) -> Result<Demo, DemoError> {
    let sandbox = Sandbox::start().await.map_err(DemoError::Sandbox)?;
    sandbox.accept_token(STATIC_TOKEN);
    sandbox.oauth().set_client(CLIENT_ID, CLIENT_SECRET);
    sandbox.oauth().add_refresh_token(REFRESH_TOKEN);
    sandbox.oauth().set_expires_in(DEMO_TOKEN_SECS);
    sandbox.oauth().set_rotation(true);

    let state_dir =
        std::env::temp_dir().join(format!("hubspot-auth-proxy-demo-{}", std::process::id()));
    std::fs::create_dir_all(&state_dir).map_err(|e| DemoError::StateDir(state_dir.clone(), e))?;
    let refresh_file = state_dir.join("marketing.refresh");
    std::fs::write(&refresh_file, REFRESH_TOKEN)
        .map_err(|e| DemoError::StateDir(state_dir.clone(), e))?;

    let config = Config::parse(&config_text(args, &sandbox, &refresh_file))
        .map_err(|e| DemoError::Config(format!("{}: {}", e.key, e.message)))?;
    let settings = Settings::from_config(config).map_err(|e| match e {
        ConfigError::Invalid { problems, .. } if !problems.is_empty() => {
            DemoError::Config(problems[0].to_string())
        }
        other => DemoError::Config(other.to_string()),
    })?;
    let proxy = crate::start(settings).await?;
    Ok(Demo {
        sandbox,
        proxy,
        state_dir: StateDir(state_dir),
    })
}

fn config_text(args: &DemoArgs, sandbox: &Sandbox, refresh_file: &std::path::Path) -> String {
    use sha2::Digest;
    let key_hash = hex::encode(sha2::Sha256::digest(LEGACY_KEY.as_bytes()));
    format!(
        r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"
shutdown_grace_secs = 5

[upstream]
base_url = "{upstream}"

[legacy]
hapikey = "translate"
keys = [{{ sha256 = "{key_hash}", account = "main" }}]

[[accounts]]
name = "main"
token = {{ value = "{STATIC_TOKEN}" }}

[[accounts]]
name = "marketing"
[accounts.oauth]
client_id = "{CLIENT_ID}"
client_secret = {{ value = "{CLIENT_SECRET}" }}
refresh_token = {{ file = "{refresh}" }}
"#,
        listen = args.listen,
        admin = args.admin_listen,
        upstream = sandbox.url(),
        refresh = refresh_file.display(),
    )
}

impl Demo {
    /// Ready-to-paste commands, each exercising one capability against this demo.
    pub(crate) fn curl_lines(&self) -> Vec<(&'static str, String)> {
        let proxy = format!("http://{}", self.proxy.proxy_addr());
        let admin = format!("http://{}", self.proxy.admin_addr());
        vec![
            ("CRM v3 call, static private-app token added by the proxy", format!("curl -s '{proxy}/crm/v3/objects/contacts?limit=2'")),
            ("legacy script with ?hapikey= (the key is stripped, the bearer added)", format!("curl -s '{proxy}/contacts/v1/lists/all/contacts/all?hapikey={LEGACY_KEY}&count=1'")),
            ("choose the OAuth account (token refreshed by the proxy)", format!("curl -s -H 'X-Auth-Proxy-Account: marketing' '{proxy}/crm/v3/objects/contacts/101'")),
            ("create a contact", format!("curl -s -X POST -H 'Content-Type: application/json' -d '{{\"properties\":{{\"email\":\"new@example.com\",\"firstname\":\"New\"}}}}' '{proxy}/crm/v3/objects/contacts'")),
            ("metrics", format!("curl -s '{admin}/metrics'")),
            ("each account's token and HubSpot rate-limit budget", format!("curl -s '{admin}/status'")),
            ("which callers still use which HubSpot API generation, and until when", format!("curl -s -H 'X-Auth-Proxy-Caller: nightly-sync' '{proxy}/contacts/v1/lists/all/contacts/all?count=1' >/dev/null; curl -s '{admin}/migration'")),
        ]
    }
}
