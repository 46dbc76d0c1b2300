//! `demo` as a newcomer runs it: start it, then follow the curl lines it prints.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// Splits a printed curl line into words, honouring single quotes as a shell would.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    words.push(current);
    words
}

/// Runs one printed `curl -s [-X M] [-H 'K: V'] [-d 'B'] 'URL'` line with reqwest.
async fn run_curl(line: &str) -> (u16, String) {
    let words = shell_words(line);
    assert_eq!(words[..2], ["curl", "-s"], "{line}");
    let (mut method, mut headers, mut body) = ("GET".to_string(), Vec::new(), None);
    let mut i = 2;
    while i < words.len() - 1 {
        match words[i].as_str() {
            "-X" => method = words[i + 1].clone(),
            "-H" => headers.push(words[i + 1].clone()),
            "-d" => body = Some(words[i + 1].clone()),
            other => panic!("unexpected curl flag {other} in {line}"),
        }
        i += 2;
    }
    let mut request = client().request(method.parse().unwrap(), words.last().unwrap());
    for h in headers {
        let (k, v) = h.split_once(": ").unwrap();
        request = request.header(k, v);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_answers_the_curl_lines_it_prints() {
    let mut child = Command::new(BIN)
        .args(["demo", "--port", "0", "--admin-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut line = String::new();
    while lines.len() < 6 {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "demo ended early; printed {lines:?}"
        );
        if line.starts_with("curl ") {
            lines.push(line.trim().to_string());
        }
    }
    let mut results = Vec::new();
    for l in &lines {
        results.push(run_curl(l).await);
    }
    for ((status, body), l) in results.iter().zip(&lines) {
        assert!(
            matches!(*status, 200 | 201),
            "{l} answered {status}: {body}"
        );
    }
    let json = |i: usize| serde_json::from_str::<serde_json::Value>(&results[i].1).unwrap();
    assert_eq!(json(0)["results"].as_array().unwrap().len(), 2, "limit=2");
    assert_eq!(
        json(1)["contacts"].as_array().unwrap().len(),
        1,
        "legacy v1 call with count=1"
    );
    assert_eq!(json(2)["id"], "101");
    assert_eq!(json(3)["properties"]["email"], "new@example.com");
    assert!(results[4].1.contains(
        "hubspot_proxy_requests_total{account=\"marketing\",method=\"GET\",status=\"200\"} 1"
    ));
    assert!(results[4].1.contains(
        "hubspot_proxy_hapikey_requests_total{account=\"main\",action=\"translated\"} 1"
    ));
    let status = json(5);
    let accounts = status["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 2);
    assert!(accounts.iter().all(|a| a["ready"] == true), "{status}");
    assert_eq!(accounts[1]["kind"], "oauth");
    assert!(
        !results[5].1.contains("demo-client-secret") && !results[5].1.contains("pat-na1-00000000")
    );

    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = eventually(Duration::from_secs(10), "demo exits on Ctrl-C", || {
        child.try_wait().unwrap()
    })
    .await;
    assert!(status.success());
}
