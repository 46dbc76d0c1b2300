#!/usr/bin/env bash
# Micro benchmarks of the hot-path pieces (criterion, benches/hot_path.rs), written into the
# "micro" section of bench/results.md.   bench/micro.sh   (about 4 minutes with the build)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo bench --locked --bench hot_path -- --warm-up-time 1 --measurement-time 3 >&2
python3 - <<'PY' | python3 bench/section.py micro
import datetime, json, pathlib
rows = [
    ("hapikey", "absent", "`?hapikey=` check, query without a key"),
    ("hapikey", "present_strip", "`?hapikey=` found and stripped from the query"),
    ("headers", "to_upstream_and_bearer", "header rewrite: hop-by-hop, client Host dropped, bearer (7 client headers)"),
    ("headers", "to_upstream_with_connection_list", "same, with a `Connection` list naming a header"),
    ("headers", "from_upstream_keep_alive", "answer headers: hop-by-hop dropped (`Connection: keep-alive`, 7 headers)"),
    ("route", "default", "account selection: default account"),
    ("route", "named_header", "account selection: `X-Auth-Proxy-Account`"),
    ("route", "hapikey_mapped", "account selection: legacy key hashed and mapped, query rewritten"),
    ("metrics", "observe_request", "metric recording: request count and duration"),
    ("metrics", "api_family", "metric recording: API family counter from the path"),
]
print(f"## Micro benchmarks\n\nMeasured {datetime.date.today()} with `bench/micro.sh` "
      "(criterion, `cargo bench --bench hot_path`; median, 95 % interval).\n")
print("| piece | median | interval |\n|---|---|---|")
for group, name, label in rows:
    e = json.loads(pathlib.Path(f"target/criterion/{group}/{name}/new/estimates.json").read_text())["median"]
    ci = e["confidence_interval"]
    print(f"| {label} | {e['point_estimate']:.0f} ns | {ci['lower_bound']:.0f}-{ci['upper_bound']:.0f} ns |")
PY
echo "wrote the micro section of bench/results.md" >&2
