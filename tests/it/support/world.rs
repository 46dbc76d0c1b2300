//! The one world builder: a HubSpot stand-in (plain, or TLS with h2 or http/1.1), token files in
//! a scratch directory, and the proxy configured in front of it, in-process unless the test
//! asks for the binary.
//!
//! ```ignore
//! let w = World::build().server("workers = 2").second_account().start().await;
//! let w = World::build().over(Transport::TlsH2).run(Run::process()).start().await;
//! ```

use super::{
    sandbox_with, static_config, trust_sandbox, Run, Sandbox, Scratch, TestProxy, Transport,
};
use super::{TOKEN_A, TOKEN_B};

pub struct World {
    pub sandbox: Sandbox,
    pub scratch: Scratch,
    pub proxy: TestProxy,
}

type Edit = Box<dyn FnOnce(String) -> String + Send>;
type Prepare = Box<dyn FnOnce(&Sandbox) + Send>;

/// What `World::build()` stands up; every part has the default most tests want.
pub struct WorldBuilder {
    transport: Transport,
    server: Vec<String>,
    rate_limit: Option<String>,
    second_account: bool,
    tail: Vec<String>,
    edits: Vec<Edit>,
    run: Run,
    upstream: Option<String>,
    trust: bool,
    recycle_after: Option<usize>,
    prepare: Vec<Prepare>,
}

impl World {
    /// One static account `main` holding TOKEN_A, accepted by a plain-HTTP stand-in; shaping
    /// off; the proxy in-process.
    pub fn build() -> WorldBuilder {
        WorldBuilder {
            transport: Transport::Plain,
            server: Vec::new(),
            rate_limit: None,
            second_account: false,
            tail: Vec::new(),
            edits: Vec::new(),
            run: Run::InProcess,
            upstream: None,
            trust: true,
            recycle_after: None,
            prepare: Vec::new(),
        }
    }
}

impl WorldBuilder {
    /// The stand-in serves over `transport`; the proxy trusts its CA.
    pub fn over(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The stand-in recycles each connection after `n` requests (GOAWAY on h2, close on 1.1).
    pub fn recycle_after(mut self, n: usize) -> Self {
        self.recycle_after = Some(n);
        self
    }

    /// Sets up the stand-in before the proxy starts (portals, OAuth clients, limits).
    pub fn stand_in(mut self, prepare: impl FnOnce(&Sandbox) + Send + 'static) -> Self {
        self.prepare.push(Box::new(prepare));
        self
    }

    /// Lines for account `main`'s table (`hub_id = 222`).
    pub fn main_account(self, lines: &str) -> Self {
        let lines = lines.to_string();
        self.edit(move |c| {
            c.replacen(
                "name = \"main\"\n",
                &format!("name = \"main\"\n{lines}\n"),
                1,
            )
        })
    }

    /// Lines for `[server]`.
    pub fn server(mut self, lines: &str) -> Self {
        self.server.push(lines.to_string());
        self
    }

    /// `[accounts.rate_limit]` lines for `main`, instead of `per_ten_seconds = 0`.
    pub fn rate_limit(mut self, lines: &str) -> Self {
        self.rate_limit = Some(lines.to_string());
        self
    }

    /// A second static account, `marketing`, holding TOKEN_B (also accepted by the stand-in).
    pub fn second_account(mut self) -> Self {
        self.second_account = true;
        self
    }

    /// Appended to the config: `[[clients]]`, `[legacy]`, more accounts.
    pub fn tail(mut self, text: &str) -> Self {
        self.tail.push(text.to_string());
        self
    }

    /// Applied to the finished config text, in order.
    pub fn edit(mut self, edit: impl FnOnce(String) -> String + Send + 'static) -> Self {
        self.edits.push(Box::new(edit));
        self
    }

    /// `[upstream] timeout_secs` (5 unless set).
    pub fn upstream_timeout_secs(self, secs: u64) -> Self {
        self.edit(move |c| c.replacen("timeout_secs = 5", &format!("timeout_secs = {secs}"), 1))
    }

    /// Points the proxy at `url` instead of the stand-in (which still runs, unused).
    pub fn upstream(mut self, url: impl Into<String>) -> Self {
        self.upstream = Some(url.into());
        self
    }

    /// Leaves a TLS stand-in's CA out of the config: the proxy does not trust it.
    pub fn untrusted(mut self) -> Self {
        self.trust = false;
        self
    }

    /// How the proxy runs: `Run::process()` for signals, exit codes, logs and process env.
    pub fn run(mut self, run: Run) -> Self {
        self.run = run;
        self
    }

    pub async fn start(self) -> World {
        let options = hubspot_auth_proxy::sandbox::Options {
            recycle_after: self.recycle_after,
            ..self.transport.options()
        };
        let sandbox = sandbox_with(options).await;
        sandbox.accept_token(TOKEN_A);
        for prepare in self.prepare {
            prepare(&sandbox);
        }
        let scratch = Scratch::new();
        let token = scratch.write("token", &format!("{TOKEN_A}\n"));
        let upstream = self.upstream.clone().unwrap_or_else(|| sandbox.url());
        let mut config = static_config(&upstream, &token, &self.server.join("\n"));
        if let Some(rate_limit) = &self.rate_limit {
            config = config.replacen("per_ten_seconds = 0", rate_limit, 1);
        }
        if self.second_account {
            sandbox.accept_token(TOKEN_B);
            let b = scratch.write("b", TOKEN_B);
            config.push_str(&format!(
                "\n[[accounts]]\nname = \"marketing\"\ntoken = {{ file = \"{}\" }}\n[accounts.rate_limit]\nper_ten_seconds = 0\n",
                b.display()
            ));
        }
        for tail in &self.tail {
            config.push('\n');
            config.push_str(tail);
            config.push('\n');
        }
        for edit in self.edits {
            config = edit(config);
        }
        if self.trust && self.upstream.is_none() {
            config = trust_sandbox(config, &sandbox, &scratch);
        }
        let proxy = TestProxy::run(&config, self.run).await;
        World {
            sandbox,
            scratch,
            proxy,
        }
    }
}

/// One OAuth account, `marketing`, against `upstream`: its client secret from the environment
/// variable `HSAP_TEST_CLIENT_SECRET` (so the test runs the binary with it set), its refresh
/// token from `refresh_file`; `oauth_extra` in `[accounts.oauth]`, `tail` after the account.
pub fn oauth_config(
    upstream: &str,
    client_id: &str,
    refresh_file: &std::path::Path,
    oauth_extra: &str,
    tail: &str,
) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[upstream]
base_url = "{upstream}"
timeout_secs = 10
[[accounts]]
name = "marketing"
[accounts.oauth]
client_id = "{client_id}"
client_secret = {{ env = "HSAP_TEST_CLIENT_SECRET" }}
refresh_token = {{ file = "{}" }}
token_timeout_secs = 2
{oauth_extra}
[accounts.rate_limit]
per_ten_seconds = 0
{tail}
"#,
        refresh_file.display()
    )
}

/// A stand-in whose token endpoint knows `client_id`/`client_secret` and the refresh token
/// `refresh`, and grants access tokens lasting `expires_in` seconds.
pub async fn oauth_stand_in(
    client_id: &str,
    client_secret: &str,
    refresh: &str,
    expires_in: u64,
) -> Sandbox {
    let sandbox = Sandbox::start().await.unwrap();
    sandbox.oauth().set_client(client_id, client_secret);
    sandbox.oauth().add_refresh_token(refresh);
    sandbox.oauth().set_expires_in(expires_in);
    sandbox
}
