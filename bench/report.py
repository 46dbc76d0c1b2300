"""bench/run.sh's bookkeeping: turns wrk's output into one JSON line per run, and the runs into
the tables of bench/results.md.

    python3 bench/report.py wrk FILE SETUP TARGET CONNS ROUND FWD_TICKS UPSTREAM_TICKS
    python3 bench/report.py report OUT_DIR   # reads OUT_DIR/*.jsonl, prints markdown
"""
import collections
import datetime
import json
import os
import re
import statistics
import subprocess
import sys

TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")
PEERS = ("nginx", "haproxy", "caddy")
LABELS = {
    "direct": "upstream directly (ceiling)",
    "nginx": "nginx 1.22",
    "haproxy": "HAProxy 2.6",
    "caddy": "Caddy 2.6",
    "floor": "featureless forwarder (floor)",
    "hyper": "hyper floor (no features, our stack)",
    "ours": "hubspot-auth-proxy",
}
SETUPS = {
    "plain": "plaintext h1 upstream",
    "tls": "TLS upstream offering h2 (HubSpot's shape)",
}


def wrk(path, setup, target, conns, rnd, fwd_ticks, up_ticks):
    text = open(path).read()
    run = {"setup": setup, "target": target, "conns": int(conns), "round": int(rnd)}
    if "Requests/sec" not in text or "99%" not in text:
        sys.stderr.write(f"wrk failed, see {path}:\n{text}\n")
        run.update(rps=0, p50=0, p99=0, requests=0, non2xx=0, errors=1)
        print(json.dumps(run))
        return

    def ms(value):
        m = re.match(r"([\d.]+)(us|ms|s)", value)
        n = float(m.group(1))
        return n / 1000 if m.group(2) == "us" else n * 1000 if m.group(2) == "s" else n

    requests = int(re.search(r"(\d+) requests in", text).group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    run.update(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        p50=ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)),
        p99=ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)),
        requests=requests,
        non2xx=int(m2.group(1)) if (m2 := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0,
        errors=sum(int(x) for x in m.groups()) if m else 0,
        # The direct run has no forwarder (FWD_TICKS is empty).
        cpu_fwd=int(fwd_ticks) * TICK_US / requests if fwd_ticks and requests else None,
        cpu_upstream=int(up_ticks) * TICK_US / requests if requests else None,
    )
    print(json.dumps(run))


def lines_of(path):
    try:
        return [json.loads(line) for line in open(path) if line.strip()]
    except FileNotFoundError:
        return []


def best_peers(med, setup, conns):
    """The peer with the most req/s and the one with the least CPU per request, or None if no
    peer ran in this cell."""
    peers = [t for t in PEERS if med(setup, t, conns, "rps")]
    if not peers:
        return None
    best = max(peers, key=lambda t: med(setup, t, conns, "rps"))
    cheapest = min(peers, key=lambda t: med(setup, t, conns, "cpu_fwd") or 1e9)
    return best, cheapest


def stack_allows(med):
    """The hyper floor against the best peer: what any proxy built on hyper's server and client
    can reach here, whatever its features cost (bench/NOTES.md §10)."""
    lines = ["", "What the stack allows: `bench/hyper_floor.rs` does the same job on hyper, tokio and "
             "rustls with no features at all: a proxy built on hyper's server and client connections does at least "
             "this much work per request.", "",
             "| setup | conns | hyper floor req/s vs best peer | CPU µs/req hyper floor / best peer "
             "| ours req/s vs hyper floor | CPU µs/req ours / hyper floor |",
             "|---|---|---|---|---|---|"]
    for setup in SETUPS:
        for conns in (32, 256):
            hyper, ours = med(setup, "hyper", conns, "rps"), med(setup, "ours", conns, "rps")
            peers = best_peers(med, setup, conns)
            if not hyper or not ours or not peers:
                continue
            best, cheapest = peers
            cpu = {t: med(setup, t, conns, "cpu_fwd") for t in ("hyper", "ours", cheapest)}
            lines.append(
                f"| {SETUPS[setup]} | {conns} | {hyper / med(setup, best, conns, 'rps'):.2f} ({LABELS[best]}) "
                f"| {cpu['hyper']:.1f} / {cpu[cheapest]:.1f} ({LABELS[cheapest]}) "
                f"| {ours / hyper:.2f} | {cpu['ours']:.1f} / {cpu['hyper']:.1f} |")
    return lines


def report(out):
    runs = collections.defaultdict(list)
    for run in lines_of(f"{out}/runs.jsonl"):
        runs[(run["setup"], run["target"], run["conns"])].append(run)
    rounds = max((r["round"] for rs in runs.values() for r in rs), default=0)

    def med(setup, target, conns, key):
        vals = [r[key] for r in runs.get((setup, target, conns), []) if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    def total(setup, target, conns, key):
        return sum(r[key] for r in runs.get((setup, target, conns), []))

    def fmt(v, spec):
        return "–" if v is None else format(v, spec)

    extra = {e["what"]: e for e in lines_of(f"{out}/extra.jsonl")}
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    duration = extra.get("params", {}).get("duration", "?")
    out_lines = [
        "## Load benchmark", "",
        f"Measured {datetime.date.today()} on {cpu}, {os.cpu_count()} cores, with `bench/run.sh` "
        f"({rounds} alternating rounds of {duration} s per target, wrk 1 thread; medians shown). "
        "Reproduce: `bench/run.sh` (about 17 minutes; installs nginx, HAProxy, Caddy and wrk "
        "from Debian if missing). Each forwarder injects the bearer and sets Host, with pooled "
        "upstream connections; the upstream is nginx answering 67 bytes, plain HTTP/1.1 or TLS "
        "with h2 offered in ALPN (certificates from a throwaway CA made in `bench/out`). CPU is "
        "user + system time from `/proc/PID/stat` (all threads, and nginx's workers), divided by "
        "the requests wrk counted in that round.", "",
    ]

    # The issue's table: ours against every peer, per setup.
    out_lines += [
        "| setup | conns | ours req/s vs nginx | vs HAProxy | vs Caddy | vs floor | vs hyper floor "
        "| vs best peer | p99 ours / best peer | CPU µs/req ours / best peer |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setup in SETUPS:
        for conns in (32, 256):
            ours = med(setup, "ours", conns, "rps")
            if not ours:
                continue
            ratio = {t: ours / v if (v := med(setup, t, conns, "rps")) else None for t in PEERS + ("floor", "hyper")}
            best, cheapest = best_peers(med, setup, conns)
            out_lines.append(
                f"| {SETUPS[setup]} | {conns} | {fmt(ratio['nginx'], '.2f')} | {fmt(ratio['haproxy'], '.2f')} "
                f"| {fmt(ratio['caddy'], '.2f')} | {fmt(ratio['floor'], '.2f')} | {fmt(ratio['hyper'], '.2f')} "
                f"| {ours / med(setup, best, conns, 'rps'):.2f} ({LABELS[best]}) "
                f"| {med(setup, 'ours', conns, 'p99'):.2f} / {med(setup, best, conns, 'p99'):.2f} ms "
                f"| {fmt(med(setup, 'ours', conns, 'cpu_fwd'), '.1f')} / "
                f"{fmt(med(setup, cheapest, conns, 'cpu_fwd'), '.1f')} ({LABELS[cheapest]}) |")
    out_lines.append("")
    out_lines.append("Targets (issue 18): TLS+h2: req/s >= 1.1x the best peer, p99 <= the best peer's, "
                     "CPU <= 0.9x the best peer's. Plaintext: req/s >= 1.0x the best of nginx and "
                     "HAProxy and >= 0.85x the floor, CPU <= the best peer's.")
    out_lines += stack_allows(med)

    for setup, title in SETUPS.items():
        out_lines += ["", f"### {title}", "",
                      "| target | conns | req/s | p50 ms | p99 ms | CPU µs/req forwarder | CPU µs/req upstream "
                      "| non-2xx | socket errors |",
                      "|---|---|---|---|---|---|---|---|---|"]
        for conns in (32, 256):
            for target, label in LABELS.items():
                if (setup, target, conns) not in runs:
                    continue
                out_lines.append(
                    f"| {label} | {conns} | {med(setup, target, conns, 'rps'):.0f} "
                    f"| {med(setup, target, conns, 'p50'):.3f} | {med(setup, target, conns, 'p99'):.3f} "
                    f"| {fmt(med(setup, target, conns, 'cpu_fwd'), '.1f')} "
                    f"| {fmt(med(setup, target, conns, 'cpu_upstream'), '.1f')} "
                    f"| {total(setup, target, conns, 'non2xx')} | {total(setup, target, conns, 'errors')} |")

    # Sequential requests on one keep-alive connection.
    out_lines += ["", "### Latency: one keep-alive connection, sequential requests (wrk -t1 -c1)", "",
                  "| target | setup | p50 ms | p50 added over direct | p99 ms |", "|---|---|---|---|---|"]
    for setup in SETUPS:
        direct = med(f"latency-{setup}", "direct", 1, "p50")
        for target, label in LABELS.items():
            p50 = med(f"latency-{setup}", target, 1, "p50")
            if p50 is None:
                continue
            added = "–" if target == "direct" or direct is None else f"{(p50 - direct) * 1000:.0f} µs"
            out_lines.append(f"| {label} | {setup} | {p50:.3f} | {added} | {med(f'latency-{setup}', target, 1, 'p99'):.3f} |")
    out_lines.append("\nTarget: ours adds no more p50 than nginx.")

    # h2 to the TLS upstream.
    checks = [e for e in lines_of(f"{out}/extra.jsonl") if e["what"] == "h2-check"]
    if checks:
        out_lines += ["", "### Upstream protocol in the TLS setup", "",
                      "Right after the TLS rounds: established connections from the forwarder to the "
                      "upstream (`ss`), and the protocol the upstream nginx logged (`$server_protocol`) "
                      "for 20 requests sent through it to a logged path.", "",
                      "| forwarder | upstream connections | protocol logged by the upstream |", "|---|---|---|"]
        for e in checks:
            out_lines.append(f"| {LABELS[e['target']]} | {e['connections']} | {e['protocols'] or 'none'} |")

    # Memory.
    mem = [e for e in lines_of(f"{out}/extra.jsonl") if e["what"] == "idle"]
    if mem:
        out_lines += ["", "### Memory: 1,000 idle keep-alive client connections", "",
                      "RSS of the forwarder's processes summed (nginx: master and workers), each reading "
                      "taken once it settled (`bench/idle.py`): idle before any load, with 1,000 client "
                      "connections open that each made one request and then went idle, and after they "
                      "closed.", "",
                      "| forwarder | RSS idle | RSS with 1,000 idle connections | per connection | RSS after they closed "
                      "| still open when measured | 2xx |",
                      "|---|---|---|---|---|---|---|"]
        for e in mem:
            out_lines.append(f"| {LABELS[e['target']]}{' (TLS setup)' if e.get('setup') == 'tls' else ''} "
                             f"| {e['idle_kib'] / 1024:.1f} MiB | {e['open_kib'] / 1024:.1f} MiB "
                             f"| {e['per_conn_kib']:.1f} KiB | {e['closed_kib'] / 1024:.1f} MiB "
                             f"| {e['still_open']} | {e['ok']} |")
        out_lines.append("\nTargets: <= 8 KiB per idle connection, idle RSS <= 12 MiB, <= 20 MiB after the "
                         "1,000 close.")

    # Ours alone: the 1,000-connection load and the token swaps.
    o = extra.get("ours")
    if o:
        st = [r for r in lines_of(f"{out}/swap.jsonl") if r["target"] == "static"]
        sw = [r for r in lines_of(f"{out}/swap.jsonl") if r["target"] == "swapping"]
        st_rps = statistics.median(r["rps"] for r in st) if st else 0
        sw_rps = statistics.median(r["rps"] for r in sw) if sw else 0
        r1000 = o["r1000"]
        out_lines += ["", "### hubspot-auth-proxy alone", "", "| | value | target |", "|---|---|---|",
                      f"| RSS after the load rounds | {o['rss_loaded'] / 1024:.1f} MiB | |",
                      f"| 1,000 busy connections (plaintext): req/s, p99, non-2xx, errors | {r1000['rps']:.0f}, "
                      f"{r1000['p99']:.1f} ms, {r1000['non2xx']}, {r1000['errors']} | zero non-2xx |",
                      f"| RSS peak during it / settled after | {o['rss_1000_peak'] / 1024:.1f} / "
                      f"{o['rss_1000'] / 1024:.1f} MiB | <= 20 MiB after |",
                      f"| token swapped every 100 ms: req/s vs static (32 conns, medians of {len(sw)} "
                      f"alternating pairs) | {sw_rps:.0f} vs {st_rps:.0f} "
                      f"({100 * sw_rps / st_rps if st_rps else 0:.1f}%) | >= 95% |",
                      f"| token swap runs: non-2xx, socket errors, reloads done | "
                      f"{sum(r['non2xx'] for r in sw)}, {sum(r['errors'] for r in sw)}, {o['reloads']} "
                      "| zero failures |"]
    print("\n".join(out_lines))


if __name__ == "__main__":
    if sys.argv[1] == "wrk":
        wrk(*sys.argv[2:9])
    elif sys.argv[1] == "report":
        report(sys.argv[2])
    else:
        sys.exit(__doc__)
