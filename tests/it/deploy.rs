//! What ships under deploy/ and config/: every file parses, and the manifests agree with the proxy.

use std::path::{Path, PathBuf};

use crate::support::*;
use hubspot_auth_proxy::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn files_under(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo(dir)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == ext) {
                out.push(p);
            }
        }
    }
    out
}

fn yaml_docs(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_yaml_json_and_toml_file_parses() {
    let yamls = files_under("deploy", "yaml")
        .into_iter()
        .chain(files_under("deploy", "yml"));
    let mut count = 0;
    for p in yamls {
        let docs = YamlLoader::load_from_str(&std::fs::read_to_string(&p).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(!docs.is_empty(), "{}", p.display());
        count += 1;
    }
    assert!(count >= 5, "found {count} YAML files");
    for p in files_under("deploy", "json") {
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&p).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
    for p in files_under("config", "toml")
        .into_iter()
        .chain(files_under("deploy", "toml"))
    {
        let config = Config::parse(&std::fs::read_to_string(&p).unwrap())
            .unwrap_or_else(|e| panic!("{}: {} {}", p.display(), e.key, e.message));
        assert!(
            config.validate().is_empty(),
            "{}: {:?}",
            p.display(),
            config.validate()
        );
    }
}

/// The TOML config embedded in the ConfigMap.
fn configmap_config() -> Config {
    configmap_config_at("deploy/kubernetes/configmap.yaml")
}

fn configmap_config_at(path: &str) -> Config {
    let docs = yaml_docs(path);
    let toml = docs[0]["data"]["config.toml"].as_str().unwrap();
    let config = Config::parse(toml).unwrap();
    assert!(config.validate().is_empty());
    config
}

fn probe_port(container: &Yaml, probe: &str) -> (String, i64) {
    let get = &container[probe]["httpGet"];
    (
        get["path"].as_str().unwrap().to_string(),
        get["port"].as_i64().unwrap(),
    )
}

#[test]
fn kubernetes_sidecar_matches_the_config() {
    let config = configmap_config();
    let admin_port = i64::from(config.server.admin_listen.port());
    assert!(
        config.server.enable_quit,
        "the Job example needs /quitquitquit"
    );
    assert!(
        config.server.listen.ip().is_loopback(),
        "a sidecar's proxy port stays on loopback"
    );

    let deployment = &yaml_docs("deploy/kubernetes/deployment.yaml")[0];
    assert_eq!(deployment["kind"].as_str(), Some("Deployment"));
    let pod = &deployment["spec"]["template"];
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"].as_str(), Some("hubspot-auth-proxy"));
    assert_eq!(
        sidecar["restartPolicy"].as_str(),
        Some("Always"),
        "native sidecar"
    );
    assert_eq!(
        probe_port(sidecar, "readinessProbe"),
        ("/readyz".into(), admin_port)
    );
    assert_eq!(
        probe_port(sidecar, "livenessProbe"),
        ("/healthz".into(), admin_port)
    );
    assert_eq!(
        sidecar["ports"][0]["containerPort"].as_i64(),
        Some(admin_port)
    );
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(admin_port.to_string().as_str())
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));

    // The token file the config names is where the Secret volume is mounted.
    let token_file = config.accounts[0]
        .token
        .as_ref()
        .unwrap()
        .file()
        .unwrap()
        .to_path_buf();
    let mounts = sidecar["volumeMounts"].as_vec().unwrap();
    let secret_mount = mounts
        .iter()
        .find(|m| m["name"].as_str() == Some("hubspot-token"))
        .unwrap();
    assert_eq!(
        token_file.parent().unwrap(),
        Path::new(secret_mount["mountPath"].as_str().unwrap())
    );
    assert_eq!(token_file.file_name().unwrap(), "token");
    let volumes = pod["spec"]["volumes"].as_vec().unwrap();
    assert!(volumes
        .iter()
        .any(|v| v["secret"]["secretName"].as_str() == Some("hubspot-token")));
    let config_mount = mounts
        .iter()
        .find(|m| m["name"].as_str() == Some("config"))
        .unwrap();
    let args: Vec<&str> = sidecar["args"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(
        args[2],
        format!(
            "{}/config.toml",
            config_mount["mountPath"].as_str().unwrap()
        )
    );
    // The app is pointed at the proxy's listen port.
    let app_env = &pod["spec"]["containers"][0]["env"][0];
    assert_eq!(
        app_env["value"].as_str().unwrap(),
        format!("http://{}", config.server.listen)
    );

    // The Job ends its sidecar through /quitquitquit on the admin port.
    let job = &yaml_docs("deploy/kubernetes/job.yaml")[0];
    assert_eq!(job["kind"].as_str(), Some("Job"));
    let script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
        .as_str()
        .unwrap();
    assert!(script.contains(&format!(
        "-X POST http://127.0.0.1:{admin_port}/quitquitquit"
    )));
}

#[test]
fn dockerfile_stages_are_consistent() {
    let text = read("deploy/Dockerfile");
    let mut stages: Vec<String> = Vec::new();
    let mut last_user = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("FROM ") {
            let name = rest.split_whitespace().collect::<Vec<_>>();
            assert_eq!(
                name.get(1).map(|s| s.to_ascii_uppercase()),
                Some("AS".into()),
                "every stage is named: {line}"
            );
            stages.push(name[2].to_string());
            last_user = None;
        }
        if let Some(from) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("--from="))
        {
            assert!(
                stages[..stages.len() - 1].iter().any(|s| s == from),
                "COPY --from={from} names no earlier stage"
            );
        }
        if let Some(user) = line.strip_prefix("USER ") {
            last_user = Some(user.to_string());
        }
        if let Some(src) = line
            .strip_prefix("COPY ")
            .filter(|l| !l.starts_with("--from"))
        {
            let path = src.split_whitespace().next().unwrap();
            assert!(repo(path).exists(), "COPY source {path} is not in the repo");
        }
    }
    assert_eq!(stages, ["build", "runtime"]);
    let user = last_user.expect("the final stage sets USER");
    assert!(
        !user.starts_with("0") && !user.starts_with("root"),
        "runs as root: {user}"
    );
    assert!(text.contains("FROM scratch AS runtime"));
    assert!(text.contains("EXPOSE 8080 9090"));
    assert!(text.contains("HEALTHCHECK") && text.contains("\"healthcheck\""));
    assert!(text.contains("--target x86_64-unknown-linux-musl"));
    // The baked-in config listens where EXPOSE says.
    let config = Config::parse(&read("deploy/container.toml")).unwrap();
    assert_eq!(
        (
            config.server.listen.port(),
            config.server.admin_listen.port()
        ),
        (8080, 9090)
    );
}

#[test]
fn systemd_unit_is_hardened_and_uses_credentials() {
    let unit = read("deploy/systemd/hubspot-auth-proxy.service");
    for line in [
        "DynamicUser=yes",
        "LoadCredential=hubspot-token:",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=hubspot-auth-proxy",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "missing {line}");
    }
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert!(exec.contains(" serve --config "));
}

#[test]
fn example_config_passes_check_with_the_documented_env() {
    for config in ["config/example.toml", "config/minimal.toml"] {
        let out = std::process::Command::new(BIN)
            .args(["check", "--config"])
            .arg(repo(config))
            .env("HUBSPOT_TOKEN", TOKEN_A)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{config}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every `hubspot_proxy_*` metric the dashboard queries is exported by a proxy that has seen traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_queries_only_real_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/hubspot-auth-proxy.json")).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr
                .match_indices("hubspot_proxy_")
                .chain(expr.match_indices("process_"))
            {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names.insert(name);
            }
        }
    }
    assert!(names.len() >= 12, "{names:?}");

    let sandbox = Sandbox::start().await.unwrap();
    sandbox.accept_token(TOKEN_A);
    sandbox.oauth().set_client("c", "s");
    sandbox.oauth().add_refresh_token("r");
    let scratch = Scratch::new();
    let token = scratch.write("token", TOKEN_A);
    let refresh = scratch.write("refresh", "r");
    let config = format!(
        "{}\n[[accounts]]\nname = \"oauth\"\n[accounts.oauth]\nclient_id = \"c\"\nclient_secret = {{ value = \"s\" }}\nrefresh_token = {{ file = \"{}\" }}\n",
        static_config(&sandbox.url(), &token, ""),
        refresh.display()
    );
    let proxy = TestProxy::start(&config).await;
    let c = client();
    eventually(std::time::Duration::from_secs(5), "oauth token", || {
        (sandbox.oauth().token_calls() > 0).then_some(())
    })
    .await;
    c.get(proxy.url("/crm/v3/objects/contacts?hapikey=k"))
        .send()
        .await
        .unwrap();
    c.post(proxy.url("/__sandbox/status/429"))
        .send()
        .await
        .unwrap();
    let text = proxy.metrics().await;
    // The fleet row's series exist only with [fleet]: tests/fleet_budget.rs checks those.
    for name in names
        .into_iter()
        .filter(|n| !n.starts_with("hubspot_proxy_fleet_"))
    {
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .fold(name.clone(), |n, s| {
                n.strip_suffix(s).map(String::from).unwrap_or(n)
            });
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which /metrics does not export"
        );
    }
}

#[test]
fn kubernetes_fleet_sidecars_share_the_redis_service_and_compose_runs_two_replicas() {
    let config = configmap_config_at("deploy/kubernetes/fleet/configmap.yaml");
    let fleet = config
        .fleet
        .as_ref()
        .expect("[fleet] in the fleet ConfigMap");
    let redis = yaml_docs("deploy/kubernetes/fleet/redis.yaml");
    let service = redis
        .iter()
        .find(|d| d["kind"].as_str() == Some("Service"))
        .unwrap();
    let host = format!(
        "redis://{}:{}/",
        service["metadata"]["name"].as_str().unwrap(),
        service["spec"]["ports"][0]["port"].as_i64().unwrap()
    );
    assert!(
        fleet.redis_url.starts_with(&host),
        "{} vs {host}",
        fleet.redis_url
    );
    let deployment = &yaml_docs("deploy/kubernetes/fleet/deployment.yaml")[0];
    assert!(deployment["spec"]["replicas"].as_i64().unwrap() > 1);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["initContainers"][0]["restartPolicy"].as_str(),
        Some("Always"),
        "native sidecar"
    );
    let configmaps: Vec<&str> = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|v| v["configMap"]["name"].as_str())
        .collect();
    let fleet_map = &yaml_docs("deploy/kubernetes/fleet/configmap.yaml")[0];
    assert_eq!(
        configmaps,
        [fleet_map["metadata"]["name"].as_str().unwrap()]
    );

    let compose = &yaml_docs("deploy/docker-compose.fleet.yml")[0];
    let services = compose["services"].as_hash().unwrap();
    let proxies = services
        .keys()
        .filter(|k| k.as_str().unwrap().starts_with("proxy-"))
        .count();
    assert_eq!(proxies, 2);
    assert!(services.contains_key(&Yaml::String("redis".into())));
    let config = Config::parse(&read("deploy/fleet.toml")).unwrap();
    assert_eq!(
        config.fleet.unwrap().redis_url,
        "redis://redis:6379/0",
        "the compose service name"
    );
}
