"""Memory per idle keep-alive client connection, for any forwarder (bench/run.sh).

    python3 bench/idle.py PORT COUNT PID...

Measures the resident memory of the PIDs and their child processes (nginx's workers) summed:
idle; with COUNT client connections open, each having made one request and then left idle;
and once they have closed. Prints one JSON object:
{"idle_kib", "open_kib", "per_conn_kib", "closed_kib", "still_open", "ok"}.

Readings are taken once the figure has settled (two readings a second apart within 1 %):
jemalloc and Go's runtime hand freed pages back on a decay of several seconds, and what is
wanted is what the connections keep, not what serving their first request left behind.
"""
import json
import os
import socket
import sys
import time

REQUEST = (b"GET /crm/v3/objects/contacts HTTP/1.1\r\nHost: bench\r\n"
           b"Authorization: Bearer client-supplied\r\n\r\n")


def family(pids):
    """The PIDs and every process whose parent is among them (one level: nginx's workers)."""
    roots, found = set(pids), set(pids)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid in roots:
                found.add(int(entry))
    return found


def rss_kib(pids):
    total = 0
    for pid in family(pids):
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def settled(pids, limit_s, at_least_s=0):
    time.sleep(at_least_s)
    last = rss_kib(pids)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(1)
        now = rss_kib(pids)
        if abs(now - last) * 100 <= last:
            return now
        last = now
    return last


def answer(sock):
    """Reads one whole response (Content-Length or chunked, small); True for a 2xx."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
    if "content-length" in fields:
        while len(body) < int(fields["content-length"]):
            chunk = sock.recv(65536)
            if not chunk:
                return False
            body += chunk
    else:
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                return False
            body += chunk
    return lines[0].split()[1].startswith("2")


def main():
    port, count, pids = int(sys.argv[1]), int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
    idle = settled(pids, 15)
    conns, ok = [], 0
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(REQUEST)
        ok += answer(s)
        conns.append(s)
    opened = settled(pids, 15, at_least_s=2)
    still_open = 0
    for s in conns:
        s.setblocking(False)
        try:
            still_open += s.recv(1) != b""
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
    for s in conns:
        s.close()
    # jemalloc's decay is 10 s: a reading before then would still count what it is about to return.
    closed = settled(pids, 30, at_least_s=12)
    print(json.dumps({"idle_kib": idle, "open_kib": opened, "per_conn_kib": round((opened - idle) / count, 2),
                      "closed_kib": closed, "still_open": still_open, "ok": ok}))


if __name__ == "__main__":
    main()
