#!/usr/bin/env python3
"""Helper for scripts/bench.sh: the parts that are awkward in bash.

Subcommands:
  prefill PREFIX COUNT SIZE      RESP SET commands for PREFIX%012d (redis-benchmark's
                                 __rand_int__ format), piped into `redis-cli --pipe`
  idle PORT N STATE_FILE         hold N idle client connections to 127.0.0.1:PORT; writes
                                 "opened" to STATE_FILE, then on SIGUSR1 sends one PING on
                                 each and writes "pinged"; exits on SIGTERM (sockets close)
  report OUT_DIR                 results.csv (+ memory.csv, meta.txt) -> summary.md, chart.png
  apps OUT_DIR                   apps.csv (pub/sub and blocking-pop runs of keyway-load)
                                 -> apps.md
  profile OUT_DIR                strace.csv / callgrind.csv -> profile.md
  predixy-conf NUTCRACKER_YML LOG  predixy's config for the same listen address and servers:
                                 1 worker thread, one StandaloneServerPool group per server
  callgrind FILE                 self cost (Ir) of a callgrind dump, by function and by area:
                                 "TOTAL<TAB>top functions<TAB>areas"

Only the standard library, except `report`, which needs matplotlib for the chart.
"""

import csv
import os
import signal
import socket
import statistics
import sys
import time

# Display order and labels of the targets; bench.sh uses the same ids.
TARGETS = [
    ("direct", "direct Redis"),
    ("nc_default", "nutcracker (default -v 5)"),
    ("nc_v4", "nutcracker -v 4"),
    ("kw_1t", "Keyway 1 thread"),
    ("kw_2t", "Keyway 2 threads"),
    ("kw_acl", "Keyway 1 thread, ACL users"),
    ("ku_1t", "Keyway io_uring 1 thread"),
    ("ku_2t", "Keyway io_uring 2 threads"),
    ("px", "predixy 1 thread"),
    ("kb_1t", "baseline Keyway 1 thread"),
    ("kb_2t", "baseline Keyway 2 threads"),
    ("kw_tls", "Keyway 1 thread, TLS from clients"),
    ("kw_btls", "Keyway 1 thread, TLS to backends"),
    ("kw_sc4", "Keyway 1 thread, server_connections 4"),
    ("kw_cl", "Keyway 1 thread, Redis Cluster pool"),
]
LABEL = dict(TARGETS)
PROXIES = [t for t, _ in TARGETS if t != "direct"]

# Targets that each price one feature: Keyway 1 thread (kw_1t) with that feature on, everything
# else as kw_1t. The summary's price table holds each one's ratios to kw_1t.
PRICES = [
    ("kw_acl", "ACL users: a default user with three key patterns and `+@all -@admin`, so "
     "every request runs the whole check"),
    ("kw_tls", "redis-benchmark `--tls` to Keyway's TLS listener, plaintext backends (the "
     "client's own TLS work shares the machine)"),
    ("kw_btls", "plaintext clients, Keyway to the backends' TLS ports"),
    ("kw_sc4", "`server_connections: 4` instead of 1, the same 4 backends"),
    ("kw_cl", "a Redis Cluster pool of 3 masters (no replicas; slot map, CRC16) instead of "
     "the ketama pool of 4 servers: other backends, so it prices the pool kind, not one "
     "switch"),
    ("ku_1t", "client I/O through io_uring (`--io uring`, `URING=1`) instead of epoll"),
]


# --------------------------------------------------------------------------- prefill
def prefill(prefix, count, size):
    """Writes SET commands as RESP so that keys exist on a backend before any GET runs."""
    value = ("v" * size).encode()
    out = sys.stdout.buffer
    chunk = []
    for i in range(count):
        key = f"{prefix}{i:012d}".encode()
        chunk.append(
            b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value)
        )
        if len(chunk) == 1000:
            out.write(b"".join(chunk))
            chunk.clear()
    out.write(b"".join(chunk))
    out.flush()


# --------------------------------------------------------------------------- predixy
def predixy_conf(path, log):
    """predixy's config for a nutcracker.yml of one pool: the same listen address and servers.

    Only what the benchmark's configs hold is read (listen, and `host:port:weight` server
    lines); the keys are prefilled on every backend, so placement (predixy hashes with crc16
    and modula, not ketama) does not change what a request finds.
    """
    listen, servers = None, []
    with open(path) as f:
        for line in f:
            text = line.strip()
            if text.startswith("listen:"):
                listen = text.split(":", 1)[1].strip()
            elif text.startswith("- "):
                host, port = text[2:].strip().split(" ")[0].split(":")[:2]
                servers.append(f"{host}:{port}")
    if not listen or not servers:
        sys.exit(f"predixy-conf: {path} has no listen address or no servers")
    out = [
        "Name keyway-bench",
        f"Bind {listen}",
        "WorkerThreads 1",
        f"Log {log}",
        "ClientTimeout 300",
        "LogVerbSample 0",
        "LogDebugSample 0",
        "LogInfoSample 0",
        "LogNoticeSample 1",
        "LogWarnSample 1",
        "LogErrorSample 1",
        "Authority {",
        "    Auth {",
        "        Mode write",
        "    }",
        "}",
        "StandaloneServerPool {",
        "    Hash crc16",
        "    Distribution modula",
        "    RefreshMethod fixed",
        "    ServerTimeout 0",
    ]
    for i, server in enumerate(servers):
        out += [f"    Group s{i} {{", f"        + {server}", "    }"]
    out.append("}")
    print("\n".join(out))


# --------------------------------------------------------------------------- idle
def idle(port, n, state_file, ca=None):
    """Holds n client connections open; they stay idle apart from the one PING on SIGUSR1.
    With `ca` (a CA file), each is a TLS connection, handshaken when opened."""
    tls = None
    if ca:
        import ssl

        tls = ssl.create_default_context(cafile=ca)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        if tls:
            s = tls.wrap_socket(s, server_hostname="127.0.0.1")
        socks.append(s)
    want_ping = []
    signal.signal(signal.SIGUSR1, lambda *_: want_ping.append(True))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    write_state(state_file, "opened")
    while not want_ping:
        time.sleep(0.05)
    for s in socks:
        s.sendall(b"*1\r\n$4\r\nPING\r\n")  # RESP: nutcracker rejects inline commands
    for s in socks:
        buf = b""
        while not buf.endswith(b"\r\n"):
            part = s.recv(64)
            if not part:
                raise SystemExit("idle: connection closed by the proxy")
            buf += part
        if buf != b"+PONG\r\n":
            raise SystemExit(f"idle: unexpected reply {buf!r}")
    write_state(state_file, "pinged")
    while True:
        time.sleep(3600)


def write_state(path, state):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(state + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- report
def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def fmt(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def paired_ratio(rows, workload, a, b, metric):
    """Median over rounds of target a's metric / target b's, each pair from the same round
    (measured minutes apart at most), so that the machine's slow drifts cancel."""
    by_round = {(r["workload"], r["target"], r["round"]): r for r in rows}
    values = []
    for (w, t, rnd), row in by_round.items():
        other = by_round.get((w, b, rnd))
        if w != workload or t != a or other is None:
            continue
        x, y = num(row.get(metric)), num(other.get(metric))
        if x is not None and y:
            values.append(x / y)
    return median(values)


def ratio(r):
    if r is None:
        return "–"
    return f"**{r:.2f}**" if r < 1.0 else f"{r:.2f}"


def medians(rows):
    """(workload, target) -> {metric: median over rounds}, workloads in first-seen order."""
    order, groups = [], {}
    for r in rows:
        key = (r["workload"], r["target"])
        if r["workload"] not in order:
            order.append(r["workload"])
        groups.setdefault(key, []).append(r)
    med = {}
    for key, rs in groups.items():
        med[key] = {
            m: median([num(r.get(m)) for r in rs])
            for m in ("ops_per_sec", "p50_ms", "p99_ms", "cpu_s_per_mreq", "kernel_share")
        }
        med[key]["rounds"] = len(rs)
        ops = [num(r["ops_per_sec"]) for r in rs if num(r["ops_per_sec"])]
        med[key]["spread"] = (
            (max(ops) - min(ops)) / statistics.median(ops) if len(ops) > 1 else None
        )
    return order, med


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def report(out_dir):
    rows = read_csv(os.path.join(out_dir, "results.csv"))
    if not rows:
        raise SystemExit("report: no rows in results.csv")
    order, med = medians(rows)
    present = [t for t, _ in TARGETS if any((w, t) in med for w in order)]

    def m(w, t, metric):
        return med.get((w, t), {}).get(metric)

    def pr(w, a, b, metric):
        return paired_ratio(rows, w, a, b, metric)

    md = ["# Keyway side-by-side benchmark", ""]
    meta_path = os.path.join(out_dir, "meta.txt")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            md += [f"- {line.rstrip()}" for line in f if line.strip()]
        md.append("")
    rounds = max(v["rounds"] for v in med.values())
    md += [
        f"Medians of {rounds} interleaved round(s) (every workload runs on every target in turn, "
        "the targets' order turning by one each round, then the next round). Ratios are the "
        "median of the per-round ratios (both figures from the same round); below 1.00 (above "
        "for CPU) they are **bold**: Keyway behind.",
        "",
        "## Throughput (ops/s, median)",
        "",
    ]
    hdr = ["workload"] + [LABEL[t] for t in present] + [
        "kw1t / nc -v4",
        "kw1t / nc default",
        "kw1t / direct",
        "kw2t / kw1t",
    ] + (["kw1t / predixy"] if "px" in present else [])
    body = []
    for w in order:
        body.append(
            [w]
            + [fmt(m(w, t, "ops_per_sec")) for t in present]
            + [
                ratio(pr(w, "kw_1t", "nc_v4", "ops_per_sec")),
                ratio(pr(w, "kw_1t", "nc_default", "ops_per_sec")),
                ratio(pr(w, "kw_1t", "direct", "ops_per_sec")),
                ratio(pr(w, "kw_2t", "kw_1t", "ops_per_sec")),
            ]
            + ([ratio(pr(w, "kw_1t", "px", "ops_per_sec"))] if "px" in present else [])
        )
    md += [table(hdr, body), ""]

    if rounds > 1:
        md += [
            "Round-to-round spread of ops/s, (max − min) / median: how far apart the rounds "
            "were. Ratios smaller than the spread are within noise (other processes on the "
            "machine compete for the same cores; see the load average above).",
            "",
        ]
        hdr = ["workload"] + [LABEL[t] for t in present]
        body = [
            [w] + [
                "–" if m(w, t, "spread") is None else f"{100.0 * m(w, t, 'spread'):.0f}%"
                for t in present
            ]
            for w in order
        ]
        md += [table(hdr, body), ""]

    md += ["## Latency p50 / p99 (ms, median over rounds)", ""]
    hdr = ["workload"] + [LABEL[t] for t in present]
    body = [
        [w] + [f"{fmt(m(w, t, 'p50_ms'), 3)} / {fmt(m(w, t, 'p99_ms'), 3)}" for t in present]
        for w in order
    ]
    md += [table(hdr, body), ""]

    md += [
        "## CPU seconds per million requests (that process only: utime+stime from /proc)",
        "",
        "For direct Redis this is the one backend's CPU; for a proxy, the proxy's alone "
        "(its backends' CPU is not included).",
        "",
    ]
    hdr = ["workload"] + [LABEL[t] for t in present] + ["kw1t / nc -v4"]
    hdr += ["kw1t / predixy"] if "px" in present else []
    body = [
        [w]
        + [fmt(m(w, t, "cpu_s_per_mreq"), 2) for t in present]
        + [cpu_ratio(pr(w, "kw_1t", "nc_v4", "cpu_s_per_mreq"))]
        + ([cpu_ratio(pr(w, "kw_1t", "px", "cpu_s_per_mreq"))] if "px" in present else [])
        for w in order
    ]
    md += [table(hdr, body), ""]

    md += [
        "Share of that CPU spent in the kernel (stime / (utime + stime), median): the reads, "
        "writes and wake-ups every proxy pays, whatever its own code costs.",
        "",
    ]
    hdr = ["workload"] + [LABEL[t] for t in present]
    body = [
        [w]
        + [
            "–" if m(w, t, "kernel_share") is None else f"{100.0 * m(w, t, 'kernel_share'):.0f}%"
            for t in present
        ]
        for w in order
    ]
    md += [table(hdr, body), ""]

    hop = [w for w in order if "_c1" in w]
    if hop and "direct" in present:
        md += ["## Added latency per hop (1 client, unpipelined: proxy p50 − direct p50, µs)", ""]
        hdr = ["workload"] + [LABEL[t] for t in present if t != "direct"]
        body = []
        for w in hop:
            d = m(w, "direct", "p50_ms")
            body.append(
                [w]
                + [
                    fmt(None if m(w, t, "p50_ms") is None or d is None
                        else (m(w, t, "p50_ms") - d) * 1000.0)
                    for t in present
                    if t != "direct"
                ]
            )
        md += [table(hdr, body), ""]

    if "kb_1t" in present:
        md += [
            "## This build against the baseline build (median of per-round ratios)",
            "",
            "ops/s: above 1.00 is faster; CPU and p99: below 1.00 is better. **Bold**: this build "
            "behind by more than 3%.",
            "",
        ]
        hdr = ["workload"]
        for t in ("1t", "2t"):
            hdr += [f"ops/s {t}", f"CPU {t}", f"p99 {t}"]
        body = []
        for w in order:
            cells = [w]
            for t in ("1t", "2t"):
                a, b = f"kw_{t}", f"kb_{t}"
                cells += [
                    regress(pr(w, a, b, "ops_per_sec"), higher_is_better=True),
                    regress(pr(w, a, b, "cpu_s_per_mreq"), higher_is_better=False),
                    regress(pr(w, a, b, "p99_ms"), higher_is_better=False),
                ]
            body.append(cells)
        md += [table(hdr, body), ""]

    priced = [(t, what) for t, what in PRICES if t in present]
    if priced and "kw_1t" in present:
        md += [
            "## The price of each feature (against Keyway 1 thread, median of per-round "
            "ratios)",
            "",
        ]
        md += [f"- `{t}`: {what}." for t, what in priced]
        md += [
            "",
            "ops/s: below 1.00 is the throughput lost; CPU: Keyway's CPU per request, above "
            "1.00 is the extra work; p99: above 1.00 is the added tail latency.",
            "",
        ]
        hdr = ["workload"]
        for t, _ in priced:
            hdr += [f"ops/s {t}", f"CPU {t}", f"p99 {t}"]
        metrics = ("ops_per_sec", "cpu_s_per_mreq", "p99_ms")
        body = [
            [w] + [fmt(pr(w, t, "kw_1t", x), 2) for t, _ in priced for x in metrics]
            for w in order
        ]
        # The figure to quote: each ratio's median over the workloads.
        body.append(
            ["median of the workloads"]
            + [fmt(median([pr(w, t, "kw_1t", x) for w in order]), 2)
               for t, _ in priced for x in metrics]
        )
        md += [table(hdr, body), ""]

    mem = read_csv(os.path.join(out_dir, "memory.csv"))
    if mem:
        md += [
            "## Memory per idle client connection (VmRSS delta / connections)",
            "",
            "`connected`: after the connections are accepted; `after PING`: after one "
            "PING/PONG on each (buffers a real client would have touched).",
            "",
        ]
        hdr = ["target", "connections", "RSS before (KiB)", "KiB/conn connected",
               "KiB/conn after PING"]
        body = [
            [LABEL.get(r["target"], r["target"]), r["connections"], r["rss_before_kib"],
             fmt(num(r["kib_per_conn_connected"]), 2), fmt(num(r["kib_per_conn_pinged"]), 2)]
            for r in mem
        ]
        md += [table(hdr, body), ""]

    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    chart(out_dir, order, med)


def regress(r, higher_is_better):
    """A this-build / baseline ratio, bold when this build is more than 3% behind."""
    if r is None:
        return "–"
    behind = r < 0.97 if higher_is_better else r > 1.03
    return f"**{r:.2f}**" if behind else f"{r:.2f}"


def cpu_ratio(r):
    if r is None:
        return "–"
    return f"**{r:.2f}**" if r > 1.0 else f"{r:.2f}"


def chart(out_dir, order, med):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = [t for t, _ in TARGETS if any((w, t) in med for w in order)]
    colors = {
        "direct": "#9e9e9e",
        "nc_default": "#f4a582",
        "nc_v4": "#ca0020",
        "kw_1t": "#0571b0",
        "kw_2t": "#92c5de",
        "kw_acl": "#5e3c99",
        "px": "#7b3294",
        "ku_1t": "#008837",
        "ku_2t": "#a6dba0",
        "kb_1t": "#4dac26",
        "kb_2t": "#b8e186",
        "kw_tls": "#1a9850",
        "kw_btls": "#d9ef8b",
        "kw_sc4": "#e66101",
        "kw_cl": "#fdb863",
    }
    n = len(targets)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(10, 1.1 * len(order) + 3), 6.5))
    for i, t in enumerate(targets):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(order))]
        ys = [(med.get((w, t), {}).get("ops_per_sec") or 0) / 1000.0 for w in order]
        ax.bar(xs, ys, width, label=LABEL[t], color=colors[t])
    ax.set_yscale("log")
    ax.set_ylabel("thousand ops/s (median, log scale)")
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(order, rotation=30, ha="right")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_axisbelow(True)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_title("Keyway vs nutcracker vs direct Redis: throughput per workload")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "chart.png"), dpi=110)


# --------------------------------------------------------------------------- profile
def profile(out_dir):
    md = ["# Keyway profile modes", ""]
    meta_path = os.path.join(out_dir, "meta.txt")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            md += [f"- {line.rstrip()}" for line in f if line.strip()]
        md.append("")
    st = read_csv(os.path.join(out_dir, "strace.csv"))
    if st:
        md += [
            "## Syscalls per request (`strace -f -c -p PID`, unpipelined GET, 16 B values)",
            "",
            "All threads of the process; strace slows the process down, so only the counts "
            "mean anything, not the times.",
            "",
        ]
        hdr = ["target", "clients", "requests", "syscalls", "syscalls/request",
               "top syscalls per request"]
        body = [
            [LABEL.get(r["target"], r["target"]), r["clients"], r["requests"], r["syscalls"],
             fmt(num(r["syscalls_per_req"]), 2), r["top"]]
            for r in st
        ]
        md += [table(hdr, body), ""]
    cg = read_csv(os.path.join(out_dir, "callgrind.csv"))
    if cg:
        md += [
            "## Instructions per request (`valgrind --tool=callgrind`, counters zeroed after a "
            "warm-up)",
            "",
            "Valgrind runs the threads of a process one at a time. The last column is the "
            "target's count over nutcracker -v 4's for the same workload.",
            "",
        ]
        nc = {r["workload"]: num(r["ir_per_req"]) for r in cg if r["target"] == "nc_v4"}
        hdr = ["workload", "target", "clients", "requests", "Ir", "Ir/request", "/ nc -v4"]
        body = []
        # By workload, in the order they ran; the targets in theirs within each.
        order = {}
        for r in cg:
            order.setdefault(r["workload"], len(order))
        for r in sorted(cg, key=lambda r: order[r["workload"]]):
            base = nc.get(r["workload"])
            ratio = num(r["ir_per_req"]) / base if base and r["target"] != "nc_v4" else None
            body.append([r["workload"], LABEL.get(r["target"], r["target"]), r["clients"],
                         r["requests"], fmt(num(r["ir"])), fmt(num(r["ir_per_req"])),
                         fmt(ratio, 2) if ratio is not None else "–"])
        md += [table(hdr, body), ""]
        md += ["Self cost (exclusive Ir) by area and by function:", ""]
        hdr = ["workload", "target", "areas", "top functions"]
        body = [[r["workload"], LABEL.get(r["target"], r["target"]), r["areas"], r["top"]]
                for r in cg]
        md += [table(hdr, body), ""]
    with open(os.path.join(out_dir, "profile.md"), "w") as f:
        f.write("\n".join(md) + "\n")


# --------------------------------------------------------------------------- callgrind
def callgrind_self_cost(path):
    """Self Ir per function, read straight from a callgrind dump.

    callgrind_annotate mixes in inclusive costs when the counters were zeroed mid-run, so the
    format is parsed here: a cost line belongs to the current fn=, except the line right
    after calls=, which is the inclusive cost of that call."""
    names, objects = {}, {}
    cost, obj_of = {}, {}
    ob = fn = None
    skip_next = False

    def name(table, value):
        # "(id) name" defines an id, "(id)" refers to one, plain "name" has no id.
        if value.startswith("("):
            ident, _, rest = value.partition(")")
            rest = rest.strip()
            if rest:
                table[ident] = rest
            return table.get(ident, ident)
        return value

    with open(path, errors="replace") as f:
        for line in f:
            c = line[:1]
            if c.isdigit() or c in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2 and fn is not None:
                    cost[fn] = cost.get(fn, 0) + int(parts[1])
                    obj_of.setdefault(fn, ob)
            elif line.startswith("fn="):
                fn = name(names, line[3:].strip())
            elif line.startswith("ob="):
                ob = name(objects, line[3:].strip())
            elif line.startswith(("cfn=", "cfi=", "cfl=")):
                if line.startswith("cfn="):
                    name(names, line[4:].strip())
            elif line.startswith("cob="):
                name(objects, line[4:].strip())
            elif line.startswith("calls="):
                skip_next = True
    return cost, obj_of


def area(fn, ob):
    """Coarse buckets that say where a proxy's instructions go."""
    base = os.path.basename(ob or "?")
    if base.startswith("libc.so"):
        if any(k in fn for k in ("malloc", "free", "realloc", "calloc")):
            return "malloc/free"
        if fn.startswith(("__mem", "mem")):
            return "libc mem*"
        return "libc other"
    if base.startswith("ld-linux") or base.startswith("vgpreload"):
        return base
    if "TrackedFuture" in fn:
        # Keyway's session / connection task bodies are inlined into this poll.
        return "keyway tasks (TrackedFuture::poll)"
    if "keyway::" in fn:
        return "keyway"
    if "tokio_util" in fn:
        return "tokio-util"
    if "tokio" in fn:
        return "tokio"
    if fn.startswith(("core::", "alloc::", "std::", "<core::", "<alloc::", "<std::")):
        return "std/core/alloc"
    if "::" in fn:
        return "other crates"
    return base


def callgrind_summary(path):
    cost, obj_of = callgrind_self_cost(path)
    total = sum(cost.values()) or 1
    top = sorted(cost.items(), key=lambda kv: -kv[1])[:8]
    top_s = "; ".join(f"{fn.replace(',', ' ')} {100.0 * c / total:.1f}%" for fn, c in top)
    areas = {}
    for fn, c in cost.items():
        a = area(fn, obj_of.get(fn))
        areas[a] = areas.get(a, 0) + c
    area_s = "; ".join(
        f"{a} {100.0 * c / total:.1f}%" for a, c in sorted(areas.items(), key=lambda kv: -kv[1])[:6]
    )
    print(f"{total}\t{top_s}\t{area_s}")


# ---------------------------------------------------------------- application workloads
APP_TITLES = {
    "pubsub": (
        "Pub/sub: 50 subscribers on 10 channels, 4 publishers waiting for each PUBLISH reply",
        "publishes/s",
        "deliveries/s",
        "publish -> delivery",
    ),
    "blpop": (
        "Blocking pops: 20 producer/consumer pairs, each pop wakes a blocked BLPOP",
        "pops/s",
        None,
        "push -> pop",
    ),
}


def apps(out_dir):
    rows = read_csv(os.path.join(out_dir, "apps.csv"))
    if not rows:
        raise SystemExit("apps: no rows in apps.csv")
    md = ["# Keyway application workloads (keyway-load)", ""]
    meta_path = os.path.join(out_dir, "meta.txt")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            md += [f"- {line.rstrip()}" for line in f if line.strip()]
        md.append("")
    md += [
        "Medians over the rounds that succeeded; latencies in ms, CPU in seconds of the "
        "target's process per million deliveries or pops (direct: the one redis-server; "
        "Keyway: the proxy alone, its backends not counted). A run that lost, duplicated or "
        "reordered a message counts as failed, with its error.",
        "",
    ]
    workloads = []
    for r in rows:
        if r["workload"] not in workloads:
            workloads.append(r["workload"])
    for w in workloads:
        title, rate, deliver, latency = APP_TITLES.get(w, (w, "ops/s", None, "latency"))
        md += [f"## {title}", ""]
        hdr = ["target", rate] + ([deliver] if deliver else []) + [
            f"p50 {latency}",
            f"p99 {latency}",
            "CPU s / M",
            "rounds ok",
        ]
        body = []
        for t, label in TARGETS:
            rs = [r for r in rows if r["workload"] == w and r["target"] == t]
            if not rs:
                continue
            ok = [r for r in rs if r["status"] == "ok"]
            if not ok:
                why = rs[0]["status"] + (f": {rs[0]['detail']}" if rs[0]["detail"] else "")
                body.append([label, why] + [""] * (len(hdr) - 2))
                continue
            cells = [label, fmt(median([num(r["rate_per_sec"]) for r in ok]))]
            if deliver:
                cells.append(fmt(median([num(r["deliver_per_sec"]) for r in ok])))
            cells += [
                fmt(median([num(r["p50_ms"]) for r in ok]), 3),
                fmt(median([num(r["p99_ms"]) for r in ok]), 3),
                fmt(median([num(r["cpu_s_per_mop"]) for r in ok]), 2),
                f"{len(ok)} of {len(rs)}",
            ]
            body.append(cells)
        md += [table(hdr, body), ""]
    with open(os.path.join(out_dir, "apps.md"), "w") as f:
        f.write("\n".join(md))


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "prefill":
        prefill(args[0], int(args[1]), int(args[2]))
    elif cmd == "idle":
        idle(int(args[0]), int(args[1]), args[2], args[3] if len(args) > 3 else None)
    elif cmd == "report":
        report(args[0])
    elif cmd == "apps":
        apps(args[0])
    elif cmd == "profile":
        profile(args[0])
    elif cmd == "predixy-conf":
        predixy_conf(argv[2], argv[3])
    elif cmd == "callgrind":
        callgrind_summary(args[0])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
