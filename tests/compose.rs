//! The compose stack, checked without Docker: `docker-compose.yml`, the `Dockerfile`, and every
//! file they reference (Keyway, Sentinel, Prometheus and Grafana configs, the dashboard).
//!
//! What `docker compose config` would catch (missing files, dangling `depends_on`, stray `$`)
//! plus what it would not: the ports Keyway listens on are published and bound to 0.0.0.0, every
//! backend in Keyway's config is a service, Prometheus scrapes Keyway's admin port, Grafana's
//! dashboard uses only metrics in [`METRICS`] (with their labels) and charts all of them, and
//! every Keyway config passes `keyway -t`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

/// Every metric Keyway serves on the admin port's `/metrics`, with its labels. The dashboard is
/// checked against this list both ways; a metric renamed in the code must be renamed here and
/// in `conf/grafana/dashboards/`.
const METRICS: &[(&str, &[&str])] = &[
    ("keyway_requests_total", &["pool", "backend"]),
    ("keyway_responses_total", &["pool", "backend"]),
    ("keyway_errors_total", &["pool", "backend", "kind"]),
    ("keyway_request_duration_seconds_bucket", &["pool", "le"]),
    ("keyway_request_bytes_total", &["pool", "backend"]),
    ("keyway_response_bytes_total", &["pool", "backend"]),
    ("keyway_client_connections", &["pool"]),
    ("keyway_backend_connections", &["pool", "backend"]),
    ("keyway_backend_up", &["pool", "backend"]),
    ("keyway_backend_ejected", &["pool", "backend"]),
    ("keyway_reloads_total", &["result"]),
    ("keyway_config_generation", &[]),
    ("keyway_sentinel_switches_total", &["pool", "backend"]),
];

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// The services the stack is made of.
const SERVICES: &[&str] = &[
    "keyway",
    "etcd",
    "fleet-publish",
    "keyway-a",
    "keyway-b",
    "redis-1",
    "redis-2",
    "redis-3",
    "redis-4",
    "redis-master",
    "redis-replica",
    "sentinel-1",
    "sentinel-2",
    "sentinel-3",
    "memcached",
    "prometheus",
    "grafana",
];

// ---------------------------------------------------------------------------------------------
// Reading the compose file

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_yaml_ng::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

fn compose() -> Value {
    yaml(&root().join("docker-compose.yml"))
}

fn services(doc: &Value) -> BTreeMap<String, Value> {
    doc["services"]
        .as_mapping()
        .expect("docker-compose.yml has a `services` mapping")
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().expect("service names are strings").to_owned(),
                v.clone(),
            )
        })
        .collect()
}

fn service(doc: &Value, name: &str) -> Value {
    services(doc)
        .remove(name)
        .unwrap_or_else(|| panic!("no service `{name}`"))
}

/// A scalar as text (compose accepts numbers where it means strings).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `command` / `entrypoint` as an argument list (the string form is split on whitespace, as
/// compose does when there is no quoting).
fn args(svc: &Value, key: &str) -> Vec<String> {
    match &svc[key] {
        Value::Null => Vec::new(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|i| text(i).unwrap_or_else(|| panic!("`{key}` item {i:?} is not a scalar")))
            .collect(),
        other => panic!("`{key}` is neither a string nor a list: {other:?}"),
    }
}

/// The value of a command-line option: `-c X`, `-cX`, `--conf-file X`, `--conf-file=X`.
fn option(args: &[String], short: &str, long: &str) -> Option<String> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == short || arg == long {
            return iter.next().cloned();
        }
        if let Some(v) = arg.strip_prefix(&format!("{long}=")) {
            return Some(v.to_owned());
        }
        if short.len() == 2 && arg.len() > 2 && arg.starts_with(short) && !arg.starts_with("--") {
            return Some(arg[2..].to_owned());
        }
    }
    None
}

/// A bind mount: host path (resolved against the compose file's folder), container path,
/// read-only or not.
#[derive(Debug, Clone)]
struct Mount {
    host: PathBuf,
    target: String,
    read_only: bool,
}

/// The service's bind mounts, short (`./a:/b:ro`) and long (`type: bind`) syntax. Named
/// volumes are skipped.
fn mounts(svc: &Value) -> Vec<Mount> {
    let Some(volumes) = svc["volumes"].as_sequence() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for v in volumes {
        match v {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                assert!(
                    (2..=3).contains(&parts.len()),
                    "volume `{s}`: expected SOURCE:TARGET[:MODE]"
                );
                let source = parts[0];
                if !(source.starts_with('.') || source.starts_with('/') || source.starts_with('~'))
                {
                    continue; // a named volume
                }
                let mode = parts.get(2).copied().unwrap_or("rw");
                out.push(Mount {
                    host: root().join(source),
                    target: parts[1].to_owned(),
                    read_only: mode.split(',').any(|m| m == "ro"),
                });
            }
            Value::Mapping(_) => {
                if v["type"].as_str() != Some("bind") {
                    continue;
                }
                out.push(Mount {
                    host: root().join(v["source"].as_str().expect("bind mount has a source")),
                    target: v["target"]
                        .as_str()
                        .expect("bind mount has a target")
                        .to_owned(),
                    read_only: v["read_only"].as_bool().unwrap_or(false),
                });
            }
            other => panic!("unexpected volume entry {other:?}"),
        }
    }
    out
}

/// The host path behind a container path, if a bind mount covers it.
fn host_path(svc: &Value, container_path: &str) -> Option<(PathBuf, Mount)> {
    mounts(svc).into_iter().find_map(|m| {
        let target = m.target.trim_end_matches('/');
        if container_path == target {
            Some((m.host.clone(), m))
        } else {
            container_path
                .strip_prefix(&format!("{target}/"))
                .map(|rest| (m.host.join(rest), m))
        }
    })
}

fn host_file(svc: &Value, container_path: &str) -> PathBuf {
    let (path, _) = host_path(svc, container_path)
        .unwrap_or_else(|| panic!("no bind mount covers {container_path}"));
    assert!(
        path.is_file(),
        "{container_path} → {} is not a file",
        path.display()
    );
    path
}

/// Container ports the service publishes (`"H:C"`, `"IP:H:C"`, `"C"`, ranges, `/udp`, long form).
fn published_ports(svc: &Value) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for p in svc["ports"].as_sequence().into_iter().flatten() {
        let container = match p {
            Value::Mapping(_) => text(&p["target"]).expect("long-form port has a target"),
            _ => {
                let s = text(p).expect("port is a scalar");
                s.rsplit(':').next().unwrap_or_default().to_owned()
            }
        };
        let container = container.split('/').next().unwrap_or_default();
        let (lo, hi) = container.split_once('-').unwrap_or((container, container));
        let (lo, hi): (u16, u16) = (
            lo.parse().unwrap_or_else(|_| panic!("bad port {p:?}")),
            hi.parse().unwrap_or_else(|_| panic!("bad port {p:?}")),
        );
        out.extend(lo..=hi);
    }
    out
}

/// `depends_on` as name → condition (the list form means `service_started`).
fn depends_on(svc: &Value) -> BTreeMap<String, String> {
    match &svc["depends_on"] {
        Value::Null => BTreeMap::new(),
        Value::Sequence(names) => names
            .iter()
            .map(|n| (text(n).unwrap(), "service_started".to_owned()))
            .collect(),
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let condition = v["condition"].as_str().unwrap_or("service_started");
                (k.as_str().unwrap().to_owned(), condition.to_owned())
            })
            .collect(),
        other => panic!("bad depends_on {other:?}"),
    }
}

fn split_host_port(addr: &str) -> (String, u16) {
    let (host, port) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("`{addr}` is not host:port"));
    let port = port
        .parse()
        .unwrap_or_else(|_| panic!("`{addr}`: bad port"));
    (host.trim_matches(|c| c == '[' || c == ']').to_owned(), port)
}

/// The keyway service's command line.
fn keyway_command(doc: &Value) -> Vec<String> {
    let command = args(&service(doc, "keyway"), "command");
    assert!(!command.is_empty(), "the keyway service sets its command");
    command
}

/// The Keyway configs the keyway service runs with (the container's `-c` file, on the host).
fn keyway_configs(doc: &Value) -> Vec<PathBuf> {
    let command = keyway_command(doc);
    let conf = option(&command, "-c", "--conf-file").expect("keyway's command passes -c");
    vec![host_file(&service(doc, "keyway"), &conf)]
}

fn keyway_pools(config: &Path) -> Vec<(String, Value)> {
    let doc = yaml(config);
    doc.as_mapping()
        .unwrap_or_else(|| panic!("{} is not a mapping of pools", config.display()))
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

/// A nutcracker `servers` line: `host:port:weight [name]` → (host, port).
fn server_address(line: &str) -> (String, u16) {
    let addr = line.split_whitespace().next().unwrap_or_default();
    let mut parts = addr.rsplitn(3, ':');
    let _weight = parts.next();
    let port = parts.next().unwrap_or_default();
    let host = parts.next().unwrap_or_default();
    (
        host.to_owned(),
        port.parse()
            .unwrap_or_else(|_| panic!("server `{line}`: bad port")),
    )
}

fn is_sentinel(svc: &Value) -> bool {
    let mut all = args(svc, "entrypoint");
    all.extend(args(svc, "command"));
    all.iter()
        .any(|a| a.contains("--sentinel") || a.contains("redis-sentinel"))
}

fn image(svc: &Value) -> String {
    svc["image"].as_str().unwrap_or_default().to_owned()
}

// ---------------------------------------------------------------------------------------------
// The compose file itself

#[test]
fn stack_has_every_service_each_with_an_image_or_a_build() {
    let doc = compose();
    let services = services(&doc);
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = SERVICES.iter().copied().collect();
    assert_eq!(names, expected, "services in docker-compose.yml");
    for (name, svc) in &services {
        assert!(svc.is_mapping(), "service `{name}` is not a mapping");
        let has_image = svc["image"].as_str().is_some_and(|i| !i.is_empty());
        let has_build = !svc["build"].is_null();
        assert!(
            has_image || has_build,
            "service `{name}` has neither image nor build"
        );
    }
    assert!(
        !service(&doc, "keyway")["build"].is_null(),
        "keyway is built from the Dockerfile"
    );
}

#[test]
fn bind_mounts_and_build_contexts_exist() {
    let doc = compose();
    let mut checked = 0;
    for (name, svc) in services(&doc) {
        for m in mounts(&svc) {
            assert!(
                m.host.exists(),
                "service `{name}`: bind mount source {} does not exist",
                m.host.display()
            );
            assert!(
                m.target.starts_with('/'),
                "service `{name}`: target {} is not absolute",
                m.target
            );
            checked += 1;
        }
        let build = &svc["build"];
        if build.is_null() {
            continue;
        }
        let (context, dockerfile) = match build {
            Value::String(context) => (context.clone(), "Dockerfile".to_owned()),
            _ => (
                build["context"].as_str().unwrap_or(".").to_owned(),
                build["dockerfile"]
                    .as_str()
                    .unwrap_or("Dockerfile")
                    .to_owned(),
            ),
        };
        let context = root().join(context);
        assert!(
            context.is_dir(),
            "service `{name}`: build context {} is not a folder",
            context.display()
        );
        let dockerfile = context.join(dockerfile);
        assert!(
            dockerfile.is_file(),
            "service `{name}`: {} does not exist",
            dockerfile.display()
        );
    }
    assert!(
        checked >= 8,
        "expected the stack's config mounts, found {checked}"
    );
}

/// Absolute container paths in commands, entrypoints and environment values that fall under a
/// bind mount must exist on the host: catches a `-c` or `--config.file` pointing past its mount.
#[test]
fn container_paths_in_commands_resolve_to_mounted_files() {
    let doc = compose();
    let mut resolved = BTreeSet::new();
    for (name, svc) in services(&doc) {
        let mut words = args(&svc, "command");
        words.extend(args(&svc, "entrypoint"));
        if let Some(env) = svc["environment"].as_mapping() {
            words.extend(env.values().filter_map(text));
        }
        for word in words {
            for token in word.split(|c: char| c.is_whitespace() || c == '=' || c == ';') {
                if !token.starts_with('/') {
                    continue;
                }
                if let Some((host, _)) = host_path(&svc, token) {
                    assert!(
                        host.exists(),
                        "service `{name}` uses {token}, which is {} on the host: missing",
                        host.display()
                    );
                    resolved.insert(format!("{name}:{token}"));
                }
            }
        }
    }
    for expected in [
        "keyway:/etc/keyway/keyway.yml",
        "prometheus:/etc/prometheus/prometheus.yml",
        "sentinel-1:/usr/local/etc/redis/sentinel.conf.template",
    ] {
        assert!(
            resolved.contains(expected),
            "{expected} not resolved; resolved: {resolved:?}"
        );
    }
}

/// Compose substitutes `$NAME` and `${NAME}` everywhere; a shell `$` must be written `$$`.
#[test]
fn compose_file_has_no_accidental_interpolation() {
    let text = read(&root().join("docker-compose.yml"));
    for (n, line) in text.lines().enumerate() {
        let code = line.split(" #").next().unwrap_or_default();
        if code.trim_start().starts_with('#') {
            continue;
        }
        let bytes = code.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'$' {
                match bytes.get(i + 1) {
                    Some(b'$') => i += 1,
                    Some(b'{') => {}
                    _ => panic!(
                        "docker-compose.yml:{}: `$` is interpolated by compose; write `$$`: {line}",
                        n + 1
                    ),
                }
            }
            i += 1;
        }
    }
}

#[test]
fn dependencies_name_services_with_valid_conditions_and_no_cycle() {
    let doc = compose();
    let services = services(&doc);
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, svc) in &services {
        for (dep, condition) in depends_on(svc) {
            let target = services
                .get(&dep)
                .unwrap_or_else(|| panic!("`{name}` depends on unknown service `{dep}`"));
            assert!(
                [
                    "service_started",
                    "service_healthy",
                    "service_completed_successfully"
                ]
                .contains(&condition.as_str()),
                "`{name}` → `{dep}`: unknown condition {condition}"
            );
            if condition == "service_healthy" {
                assert!(
                    !target["healthcheck"].is_null(),
                    "`{name}` waits for `{dep}` to be healthy, but `{dep}` has no healthcheck"
                );
            }
            graph.entry(name.clone()).or_default().push(dep);
        }
    }
    fn visit(n: &str, g: &BTreeMap<String, Vec<String>>, path: &mut Vec<String>) {
        assert!(
            !path.iter().any(|p| p == n),
            "depends_on cycle: {path:?} → {n}"
        );
        path.push(n.to_owned());
        for d in g.get(n).into_iter().flatten() {
            visit(d, g, path);
        }
        path.pop();
    }
    for name in services.keys() {
        visit(name, &graph, &mut Vec::new());
    }
    let keyway = depends_on(&services["keyway"]);
    assert!(
        keyway.len() >= 4,
        "keyway waits for its backends: {keyway:?}"
    );
}

#[test]
fn healthchecks_are_well_formed() {
    let doc = compose();
    let mut count = 0;
    for (name, svc) in services(&doc) {
        let hc = &svc["healthcheck"];
        if hc.is_null() {
            continue;
        }
        count += 1;
        let test = args(hc, "test");
        assert!(
            matches!(test.first().map(String::as_str), Some("CMD" | "CMD-SHELL"))
                && test.len() >= 2,
            "service `{name}`: healthcheck test must be [CMD, ...] or [CMD-SHELL, ...]: {test:?}"
        );
        for key in ["interval", "timeout", "start_period"] {
            if let Some(d) = hc[key].as_str() {
                let (num, unit) =
                    d.split_at(d.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len());
                assert!(
                    num.parse::<u64>().is_ok() && ["ms", "s", "m", "h"].contains(&unit),
                    "service `{name}`: healthcheck {key} `{d}` is not a duration"
                );
            }
        }
    }
    assert!(
        count >= 10,
        "most services have a healthcheck, found {count}"
    );
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

/// Dockerfile instructions with continuation lines joined and comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read(&root().join("Dockerfile"));
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (op, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((op.to_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    out
}

/// Does a `.dockerignore` pattern (`*`, `?`, `**` per path segment) match `path`, or a folder
/// above it?
fn ignore_matches(pattern: &str, path: &str) -> bool {
    fn seg(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => seg(&p[1..], s) || (!s.is_empty() && seg(p, &s[1..])),
            (Some(b'?'), Some(_)) => seg(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => seg(&p[1..], &s[1..]),
            _ => false,
        }
    }
    fn segs(p: &[&str], s: &[&str]) -> bool {
        match (p.first(), s.first()) {
            (None, _) => true, // matched a parent folder: everything below is matched too
            (Some(&"**"), _) => segs(&p[1..], s) || (!s.is_empty() && segs(p, &s[1..])),
            (Some(a), Some(b)) => seg(a.as_bytes(), b.as_bytes()) && segs(&p[1..], &s[1..]),
            (Some(_), None) => false,
        }
    }
    let p: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let s: Vec<&str> = path.trim_matches('/').split('/').collect();
    segs(&p, &s)
}

fn dockerignored(path: &str) -> bool {
    let file = root().join(".dockerignore");
    if !file.exists() {
        return false;
    }
    let mut ignored = false;
    for line in read(&file).lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_prefix('!') {
            Some(p) if ignore_matches(p, path) => ignored = false,
            None if ignore_matches(line, path) => ignored = true,
            _ => {}
        }
    }
    ignored
}

#[test]
fn dockerignore_matcher_follows_docker_rules() {
    assert!(ignore_matches("*", "src"));
    assert!(ignore_matches("target", "target/release/keyway"));
    assert!(ignore_matches("**/*.log", "a/b/c.log"));
    assert!(!ignore_matches("src", "benches"));
    assert!(!ignore_matches("conf/*.yml", "conf/compose/keyway.yml"));
}

#[test]
fn dockerfile_builds_keyway_in_two_stages_from_files_in_the_context() {
    let instructions = dockerfile();
    let froms: Vec<&str> = instructions
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, rest)| rest.as_str())
        .collect();
    assert_eq!(froms.len(), 2, "two stages: {froms:?}");
    assert!(
        froms[0].starts_with("rust:1-bookworm "),
        "build stage: {}",
        froms[0]
    );
    let build_stage = froms[0].rsplit(' ').next().unwrap();
    assert_eq!(froms[1], "debian:bookworm-slim", "runtime stage");

    let mut copied = Vec::new();
    let mut binary_copied = false;
    for (op, rest) in &instructions {
        if op != "COPY" && op != "ADD" {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        let from = words.iter().find_map(|w| w.strip_prefix("--from="));
        let paths: Vec<&str> = words
            .iter()
            .copied()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let (dest, sources) = paths.split_last().expect("COPY has a destination");
        if from.is_some() {
            assert_eq!(from, Some(build_stage), "copy from the build stage");
            binary_copied |= *dest == "/usr/local/bin/keyway";
            continue;
        }
        for source in sources {
            let path = source.trim_end_matches('/');
            assert!(
                root().join(path).exists(),
                "Dockerfile copies {path}, which does not exist"
            );
            assert!(
                !dockerignored(path),
                "Dockerfile copies {path}, which .dockerignore excludes"
            );
            copied.push(path.to_owned());
        }
    }
    assert!(
        binary_copied,
        "the runtime stage has the binary at /usr/local/bin/keyway"
    );
    for needed in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(
            copied.iter().any(|c| c == needed),
            "Dockerfile copies {needed}"
        );
    }
    // cargo refuses a manifest whose targets are missing: every [[bench]] file must be copied,
    // and so must a build script.
    let manifest = read(&root().join("Cargo.toml"));
    let mut lines = manifest.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "[[bench]]" {
            continue;
        }
        let name = lines
            .next()
            .and_then(|l| l.split_once('='))
            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
            .expect("[[bench]] starts with name = ...");
        let file = format!("benches/{name}.rs");
        assert!(root().join(&file).is_file(), "{file} exists");
        assert!(
            copied.iter().any(|c| c == "benches"),
            "Dockerfile copies benches/ for {file}"
        );
    }
    if root().join("build.rs").exists() {
        assert!(
            copied.iter().any(|c| c == "build.rs"),
            "Dockerfile copies build.rs"
        );
    }
    let cmd = &instructions
        .iter()
        .rev()
        .find(|(op, _)| op == "CMD")
        .expect("Dockerfile has CMD")
        .1;
    assert!(cmd.contains("\"keyway\""), "CMD runs keyway: {cmd}");
}

// ---------------------------------------------------------------------------------------------
// Keyway

fn keyway_test_conf(path: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .arg("-t")
        .arg("-c")
        .arg(path)
        .output()
        .expect("run keyway -t");
    let mut log = String::from_utf8_lossy(&out.stdout).into_owned();
    log.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), log)
}

#[test]
fn every_keyway_config_passes_keyway_t() {
    let doc = compose();
    let configs = keyway_configs(&doc);
    assert!(!configs.is_empty());
    for config in &configs {
        let (ok, log) = keyway_test_conf(config);
        assert!(ok, "keyway -t -c {} failed:\n{log}", config.display());
    }
    // The check has teeth: the same file with an unknown key is rejected.
    let dir = std::env::temp_dir().join(format!("keyway-compose-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.yml");
    let mut config = yaml(&configs[0]);
    let (_, first_pool) = config
        .as_mapping_mut()
        .and_then(|pools| pools.iter_mut().next())
        .expect("the config has a pool");
    first_pool
        .as_mapping_mut()
        .expect("a pool is a mapping")
        .insert("no_such_key".into(), 1.into());
    std::fs::write(&broken, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
    let (ok, log) = keyway_test_conf(&broken);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!ok, "keyway -t accepted an unknown key:\n{log}");
}

#[test]
fn keyway_service_publishes_every_port_it_listens_on() {
    let doc = compose();
    let keyway = service(&doc, "keyway");
    let published = published_ports(&keyway);
    let command = keyway_command(&doc);
    assert!(
        ["keyway", "/usr/local/bin/keyway"].contains(&command[0].as_str()),
        "the command runs keyway: {command:?}"
    );
    let mut listening = Vec::new();
    for config in keyway_configs(&doc) {
        for (pool, spec) in keyway_pools(&config) {
            let listen = spec["listen"]
                .as_str()
                .unwrap_or_else(|| panic!("pool `{pool}` has a TCP listen address"));
            listening.push((format!("pool `{pool}`"), listen.to_owned()));
        }
    }
    let admin = option(&command, "--admin", "--admin")
        .expect("keyway's command sets --admin (the default is loopback only)");
    listening.push(("--admin".to_owned(), admin));
    let stats_port = option(&command, "-s", "--stats-port").unwrap_or_else(|| "22222".into());
    let stats_addr = option(&command, "-a", "--stats-addr").unwrap_or_else(|| "0.0.0.0".into());
    listening.push(("stats".to_owned(), format!("{stats_addr}:{stats_port}")));
    assert!(listening.len() >= 4, "{listening:?}");
    for (what, addr) in listening {
        let (host, port) = split_host_port(&addr);
        assert!(
            host == "0.0.0.0" || host == "::",
            "{what} listens on {addr}: a published port cannot reach a loopback listener"
        );
        assert!(
            published.contains(&port),
            "{what} listens on port {port}, which keyway does not publish ({published:?})"
        );
    }
}

#[test]
fn keyway_backends_are_services_keyway_waits_for() {
    let doc = compose();
    let services = services(&doc);
    let deps = depends_on(&services["keyway"]);
    let mut backends = 0;
    for config in keyway_configs(&doc) {
        for (pool, spec) in keyway_pools(&config) {
            let servers = spec["servers"].as_sequence().expect("pool has servers");
            if let Some(sentinels) = spec["sentinels"].as_sequence() {
                // Sentinel pools: the sentinels are services, the servers are master names
                // the sentinels monitor.
                let monitored = sentinel_masters();
                for s in sentinels {
                    let (host, port) = split_host_port(s.as_str().unwrap());
                    let svc = services.get(&host).unwrap_or_else(|| {
                        panic!("pool `{pool}`: sentinel {host} is not a service")
                    });
                    assert!(
                        is_sentinel(svc),
                        "pool `{pool}`: {host} does not run redis-sentinel"
                    );
                    assert_eq!(port, sentinel_port(), "pool `{pool}`: sentinel {host} port");
                    assert!(deps.contains_key(&host), "keyway does not wait for {host}");
                }
                for line in servers {
                    let name = line.as_str().unwrap().split(':').next().unwrap();
                    assert!(
                        monitored.contains_key(name),
                        "pool `{pool}`: master `{name}` is not monitored in sentinel.conf"
                    );
                    backends += 1;
                }
                continue;
            }
            for line in servers {
                let line = text(line).unwrap();
                let (host, port) = server_address(&line);
                let svc = services
                    .get(&host)
                    .unwrap_or_else(|| panic!("pool `{pool}`: backend {host} is not a service"));
                let image = image(svc);
                let expected = if image.starts_with("memcached") {
                    11211
                } else if image.starts_with("redis") {
                    6379
                } else {
                    panic!(
                        "pool `{pool}`: backend {host} runs {image}, neither redis nor memcached"
                    )
                };
                assert_eq!(
                    port, expected,
                    "pool `{pool}`: {host} listens on {expected}"
                );
                let redis_pool = spec["redis"].as_bool().unwrap_or(false);
                assert_eq!(
                    redis_pool,
                    image.starts_with("redis"),
                    "pool `{pool}`: `redis:` matches backend {host} ({image})"
                );
                assert!(deps.contains_key(&host), "keyway does not wait for {host}");
                backends += 1;
            }
        }
    }
    assert!(
        backends >= 5,
        "redis-1..4 and memcached at least, found {backends}"
    );
}

// ---------------------------------------------------------------------------------------------
// Sentinel

fn sentinel_conf() -> (Value, PathBuf) {
    let doc = compose();
    let svc = service(&doc, "sentinel-1");
    let mut words = args(&svc, "entrypoint");
    words.extend(args(&svc, "command"));
    let template = words
        .iter()
        .flat_map(|w| w.split_whitespace())
        .find(|t| t.starts_with('/') && t.ends_with(".template"))
        .expect("sentinel-1 copies a config template")
        .to_owned();
    (svc.clone(), host_file(&svc, &template))
}

fn sentinel_lines() -> Vec<Vec<String>> {
    let (_, path) = sentinel_conf();
    read(&path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn sentinel_port() -> u16 {
    sentinel_lines()
        .iter()
        .find(|l| l[0] == "port")
        .map_or(26379, |l| l[1].parse().unwrap())
}

/// `sentinel monitor NAME HOST PORT QUORUM` → NAME → (HOST, PORT, QUORUM).
fn sentinel_masters() -> BTreeMap<String, (String, u16, usize)> {
    sentinel_lines()
        .iter()
        .filter(|l| l.len() >= 2 && l[0] == "sentinel" && l[1] == "monitor")
        .map(|l| {
            assert_eq!(l.len(), 6, "sentinel monitor NAME HOST PORT QUORUM: {l:?}");
            (
                l[2].clone(),
                (l[3].clone(), l[4].parse().unwrap(), l[5].parse().unwrap()),
            )
        })
        .collect()
}

#[test]
fn sentinels_monitor_mymaster_with_a_majority_quorum_on_a_writable_copy() {
    let doc = compose();
    let services = services(&doc);
    let sentinels: Vec<&String> = services
        .iter()
        .filter(|(_, s)| is_sentinel(s))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(sentinels.len(), 3, "three sentinels: {sentinels:?}");

    let masters = sentinel_masters();
    let (host, port, quorum) = masters
        .get("mymaster")
        .expect("sentinel.conf monitors mymaster")
        .clone();
    assert_eq!(quorum, 2, "quorum");
    assert!(
        quorum > sentinels.len() / 2 && quorum <= sentinels.len(),
        "quorum {quorum} of {}",
        sentinels.len()
    );
    let master = services
        .get(&host)
        .unwrap_or_else(|| panic!("monitored master {host} is not a service"));
    assert!(image(master).starts_with("redis"), "{host} runs redis");
    assert_eq!(port, 6379);
    if host.parse::<std::net::IpAddr>().is_err() {
        let lines = sentinel_lines();
        let resolve = lines
            .iter()
            .position(|l| l.len() == 3 && l[1] == "resolve-hostnames" && l[2] == "yes");
        let monitor = lines.iter().position(|l| l.len() > 1 && l[1] == "monitor");
        assert!(
            resolve.is_some() && resolve < monitor,
            "`sentinel resolve-hostnames yes` before the monitor line"
        );
    }

    let replica = args(&services["redis-replica"], "command");
    let at = replica
        .iter()
        .position(|a| a == "--replicaof")
        .expect("redis-replica sets --replicaof");
    assert_eq!(
        replica[at + 1..at + 3],
        [host.clone(), port.to_string()],
        "redis-replica replicates {host}"
    );

    // Sentinel rewrites its config: the file it runs on must not be a read-only mount.
    for name in sentinels {
        let svc = &services[name];
        let mut words = args(svc, "entrypoint");
        words.extend(args(svc, "command"));
        let script = words.join(" ");
        let runs_on = script
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .find(|w| w[0].ends_with("redis-server") || w[0].ends_with("redis-sentinel"))
            .map(|w| w[1].to_owned())
            .unwrap_or_else(|| {
                panic!("{name}: cannot find the config sentinel runs on in {script}")
            });
        if let Some((_, mount)) = host_path(svc, &runs_on) {
            assert!(
                !mount.read_only,
                "{name} runs on {runs_on}, a read-only mount sentinel cannot rewrite"
            );
        }
        assert!(
            script.contains("cp "),
            "{name} copies its config template at start"
        );
        assert!(
            depends_on(svc).contains_key(&host),
            "{name} waits for {host}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus and Grafana

#[test]
fn prometheus_scrapes_keyway_admin_metrics_every_5s() {
    let doc = compose();
    let prometheus = service(&doc, "prometheus");
    let conf = option(
        &args(&prometheus, "command"),
        "--config.file",
        "--config.file",
    )
    .unwrap_or_else(|| "/etc/prometheus/prometheus.yml".into());
    let config = yaml(&host_file(&prometheus, &conf));
    let admin = option(&keyway_command(&doc), "--admin", "--admin").expect("--admin");
    let (_, admin_port) = split_host_port(&admin);
    let wanted = format!("keyway:{admin_port}");

    let jobs = config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs");
    let job = jobs
        .iter()
        .find(|job| {
            job["static_configs"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|sc| {
                    sc["targets"]
                        .as_sequence()
                        .into_iter()
                        .flatten()
                        .any(|t| t.as_str() == Some(&wanted))
                })
        })
        .unwrap_or_else(|| panic!("no scrape job targets {wanted}"));
    assert_eq!(
        job["metrics_path"].as_str().unwrap_or("/metrics"),
        "/metrics"
    );
    assert_eq!(job["scrape_interval"].as_str(), Some("5s"));
    assert!(job["job_name"].as_str().is_some_and(|j| !j.is_empty()));
    // The published admin port takes a token (Keyway refuses an open one off loopback): the
    // scrape sends the very file Keyway reads.
    let token = option(&keyway_command(&doc), "--admin-token", "--admin-token")
        .expect("keyway's published admin port is given --admin-token");
    let keyway_token = std::fs::read_to_string(host_file(&service(&doc, "keyway"), &token))
        .expect("the token file");
    assert!(
        keyway_token.trim().len() >= 16,
        "a token of 16 characters or more"
    );
    let auth = &job["authorization"];
    assert_eq!(auth["type"].as_str().unwrap_or("Bearer"), "Bearer");
    let credentials = auth["credentials_file"]
        .as_str()
        .expect("the keyway scrape job reads the token from a credentials_file");
    let scrape_token =
        std::fs::read_to_string(host_file(&prometheus, credentials)).expect("credentials file");
    assert_eq!(
        scrape_token.trim(),
        keyway_token.trim(),
        "Prometheus sends Keyway's token"
    );
    // every other target is a service or Prometheus itself
    let services = services(&doc);
    for job in jobs {
        for sc in job["static_configs"].as_sequence().into_iter().flatten() {
            for t in sc["targets"].as_sequence().into_iter().flatten() {
                let (host, _) = split_host_port(t.as_str().unwrap());
                assert!(
                    host == "localhost" || services.contains_key(&host),
                    "scrape target {host} is not a service"
                );
            }
        }
    }
}

/// The provisioning YAML files mounted into Grafana, parsed.
fn grafana_provisioning(kind: &str) -> Vec<Value> {
    let doc = compose();
    let grafana = service(&doc, "grafana");
    let (dir, _) = host_path(&grafana, &format!("/etc/grafana/provisioning/{kind}"))
        .unwrap_or_else(|| panic!("grafana mounts provisioning/{kind}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no provisioning YAML in {}",
        dir.display()
    );
    files
        .iter()
        .map(|f| {
            let v = yaml(f);
            assert_eq!(
                v["apiVersion"].as_u64(),
                Some(1),
                "{}: apiVersion 1",
                f.display()
            );
            v
        })
        .collect()
}

/// The dashboards (path, parsed JSON) that Grafana's dashboard providers load.
fn grafana_dashboards() -> Vec<(PathBuf, Value)> {
    let doc = compose();
    let grafana = service(&doc, "grafana");
    let mut out = Vec::new();
    for file in grafana_provisioning("dashboards") {
        for provider in file["providers"].as_sequence().expect("providers") {
            assert_eq!(provider["type"].as_str().unwrap_or("file"), "file");
            let path = provider["options"]["path"]
                .as_str()
                .expect("provider options.path");
            let (dir, _) = host_path(&grafana, path)
                .unwrap_or_else(|| panic!("dashboard folder {path} is not mounted into grafana"));
            for entry in std::fs::read_dir(&dir).unwrap() {
                let p = entry.unwrap().path();
                if p.extension().is_some_and(|e| e == "json") {
                    out.push((p.clone(), yaml(&p)));
                }
            }
        }
    }
    assert!(!out.is_empty(), "no dashboard JSON found");
    out
}

/// Every `"datasource"` reference in a dashboard (its uid), with its JSON path.
fn datasources(v: &Value, path: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                datasources(item, format!("{path}[{i}]"), out);
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m {
                let key = k.as_str().unwrap_or("?");
                if key == "datasource" {
                    let uid = item["uid"].as_str().or(item.as_str()).unwrap_or_default();
                    out.push((format!("{path}.datasource"), uid.to_owned()));
                } else {
                    datasources(item, format!("{path}.{key}"), out);
                }
            }
        }
        _ => {}
    }
}

#[test]
fn grafana_datasource_and_dashboards_are_wired_together() {
    let doc = compose();
    let services = services(&doc);
    let mut uids = BTreeSet::new();
    for file in grafana_provisioning("datasources") {
        for ds in file["datasources"].as_sequence().expect("datasources") {
            assert_eq!(ds["type"].as_str(), Some("prometheus"));
            let url = ds["url"].as_str().expect("datasource url");
            let hostport = url
                .strip_prefix("http://")
                .expect("http:// url")
                .trim_end_matches('/');
            let (host, port) = split_host_port(hostport);
            assert!(
                services.contains_key(&host),
                "datasource host {host} is not a service"
            );
            assert_eq!(port, 9090);
            uids.insert(
                ds["uid"]
                    .as_str()
                    .expect("datasource uid (the dashboard refers to it)")
                    .to_owned(),
            );
        }
    }
    for (path, dash) in grafana_dashboards() {
        let name = path.display();
        assert!(
            dash["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{name}: uid"
        );
        assert!(
            dash["title"].as_str().is_some_and(|u| !u.is_empty()),
            "{name}: title"
        );
        let panels = dash["panels"].as_sequence().expect("panels");
        let mut ids = BTreeSet::new();
        let mut queries = 0;
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("?");
            assert!(
                ids.insert(panel["id"].as_u64().expect("panel id")),
                "{name}: duplicate panel id in `{title}`"
            );
            for k in ["h", "w", "x", "y"] {
                assert!(
                    panel["gridPos"][k].as_u64().is_some(),
                    "{name}: `{title}` gridPos.{k}"
                );
            }
            assert!(
                panel["gridPos"]["x"].as_u64().unwrap() + panel["gridPos"]["w"].as_u64().unwrap()
                    <= 24,
                "{name}: `{title}` wider than the grid"
            );
            if panel["type"].as_str() == Some("row") {
                continue;
            }
            let targets = panel["targets"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{name}: `{title}` has targets"));
            assert!(!targets.is_empty(), "{name}: `{title}` has no query");
            let mut refs = BTreeSet::new();
            for t in targets {
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "{name}: `{title}` target without expr"
                );
                assert!(
                    refs.insert(t["refId"].as_str().expect("refId")),
                    "{name}: `{title}` duplicate refId"
                );
                queries += 1;
            }
        }
        assert!(queries >= 10, "{name}: {queries} queries");
        // Every datasource reference (panels, targets, template variables) is provisioned.
        let mut refs = Vec::new();
        datasources(&dash, String::new(), &mut refs);
        assert!(
            refs.len() >= queries,
            "{name}: only {} datasource references",
            refs.len()
        );
        for (at, uid) in refs {
            assert!(
                uids.contains(&uid),
                "{name}{at}: datasource uid `{uid}`, provisioned: {uids:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dashboard ↔ metrics

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Every metric selector in a PromQL expression: `(name, labels in its {matchers})`.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i..].iter().collect::<String>().starts_with("keyway_")
            && (i == 0 || !is_ident(chars[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        let mut labels = Vec::new();
        if chars.get(j) == Some(&'{') {
            let mut body = String::new();
            let mut quoted = false;
            j += 1;
            while j < chars.len() && (quoted || chars[j] != '}') {
                if chars[j] == '"' && chars[j - 1] != '\\' {
                    quoted = !quoted;
                }
                body.push(if quoted || chars[j] != ',' {
                    chars[j]
                } else {
                    '\u{0}'
                });
                j += 1;
            }
            assert!(j < chars.len(), "unclosed selector in `{expr}`");
            for matcher in body.split('\u{0}').map(str::trim).filter(|m| !m.is_empty()) {
                let label: String = matcher.chars().take_while(|&c| is_ident(c)).collect();
                assert!(!label.is_empty(), "bad matcher `{matcher}` in `{expr}`");
                labels.push(label);
            }
            i = j + 1;
        }
        out.push((name, labels));
    }
    out
}

/// Labels named in `by (...)` / `without (...)` clauses.
fn grouping_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for keyword in ["by", "without"] {
        let mut rest = expr;
        while let Some(at) = rest.find(keyword) {
            let before = rest[..at].chars().next_back();
            let after = rest[at + keyword.len()..].trim_start();
            rest = &rest[at + keyword.len()..];
            if before.is_some_and(is_ident) || !after.starts_with('(') {
                continue;
            }
            let inside = &after[1..after.find(')').expect("closed grouping")];
            out.extend(
                inside
                    .split(',')
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty()),
            );
        }
    }
    out
}

/// `label_values(metric, label)` in a template variable query.
fn label_values(query: &str) -> Option<(String, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (metric, label) = inner.rsplit_once(',')?;
    let metric: String = metric.trim().chars().take_while(|&c| is_ident(c)).collect();
    Some((metric, label.trim().to_owned()))
}

/// Every string in a JSON value, with its JSON path.
fn strings<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((path, s)),
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, format!("{path}[{i}]"), out);
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m {
                strings(item, format!("{path}.{}", k.as_str().unwrap_or("?")), out);
            }
        }
        _ => {}
    }
}

#[test]
fn promql_helpers_find_metrics_and_labels() {
    let expr = r#"histogram_quantile(0.99, sum by (pool, le) (rate(keyway_request_duration_seconds_bucket{pool=~"$pool", backend!="a,b"}[5m]))) / keyway_x"#;
    assert_eq!(
        selectors(expr),
        vec![
            (
                "keyway_request_duration_seconds_bucket".to_owned(),
                vec!["pool".to_owned(), "backend".to_owned()]
            ),
            ("keyway_x".to_owned(), vec![]),
        ]
    );
    assert_eq!(grouping_labels(expr), ["pool", "le"]);
    assert_eq!(
        grouping_labels("sum without(kind) (x) + nearby(y)"),
        ["kind"]
    );
    assert_eq!(
        label_values("label_values(keyway_requests_total{job=\"k\"}, pool)"),
        Some(("keyway_requests_total".to_owned(), "pool".to_owned()))
    );
}

#[test]
fn dashboard_charts_exactly_the_keyway_metrics_with_their_labels() {
    let known: BTreeMap<&str, &[&str]> = METRICS.iter().copied().collect();
    let mut used = BTreeSet::new();
    for (file, dash) in grafana_dashboards() {
        let mut all = Vec::new();
        strings(&dash, String::new(), &mut all);
        for (path, s) in all {
            let at = format!("{}{path}", file.display());
            let found = selectors(s);
            let mut allowed: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
            for (metric, labels) in &found {
                let metric_labels = known.get(metric.as_str()).unwrap_or_else(|| {
                    panic!(
                        "{at}: `{metric}` is not a Keyway metric (see METRICS in tests/compose.rs)"
                    )
                });
                for label in labels {
                    assert!(
                        metric_labels.contains(&label.as_str())
                            || TARGET_LABELS.contains(&label.as_str()),
                        "{at}: `{metric}` has no label `{label}`"
                    );
                }
                allowed.extend(metric_labels.iter().copied());
                used.insert(metric.clone());
            }
            if found.is_empty() {
                continue;
            }
            for label in grouping_labels(s) {
                assert!(
                    allowed.contains(label.as_str()),
                    "{at}: groups by `{label}`, which none of its metrics has"
                );
            }
            if let Some((metric, label)) = label_values(s) {
                let labels = known[metric.as_str()];
                assert!(
                    labels.contains(&label.as_str()),
                    "{at}: `{metric}` has no label `{label}`"
                );
            }
        }
    }
    let missing: Vec<&str> = METRICS
        .iter()
        .map(|(m, _)| *m)
        .filter(|m| !used.contains(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics the dashboard does not chart: {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The fleet: etcd, the publish step, two instances reading from it, and the alerting rules

/// The fleet's instances: Keyway services that take their config from `--config-store`.
const FLEET: &[&str] = &["keyway-a", "keyway-b"];

#[test]
fn fleet_instances_serve_the_config_published_to_etcd() {
    let doc = compose();
    let services = services(&doc);
    let publish = args(&services["fleet-publish"], "command");
    assert_eq!(&publish[..2], ["keyway", "publish"], "{publish:?}");
    let url = option(&publish, "--config-store", "--config-store").expect("--config-store");
    let (host, _) = url
        .strip_prefix("etcd://")
        .and_then(|rest| rest.split_once('/'))
        .unwrap_or_else(|| panic!("{url} is not etcd://HOST:PORT/PREFIX"));
    let (etcd_host, etcd_port) = split_host_port(host);
    assert_eq!((etcd_host.as_str(), etcd_port), ("etcd", 2379));
    assert!(args(&services["etcd"], "command")
        .iter()
        .any(|a| a.contains("--listen-client-urls=http://0.0.0.0:2379")));
    assert_eq!(
        depends_on(&services["fleet-publish"])
            .get("etcd")
            .map(String::as_str),
        Some("service_healthy")
    );
    // What is published passes `keyway -t`, and is the file the file-configured instance runs.
    let conf = option(&publish, "-c", "--conf-file").expect("publish -c FILE");
    let published = host_file(&services["fleet-publish"], &conf);
    let (ok, log) = keyway_test_conf(&published);
    assert!(ok, "{log}");
    assert!(keyway_configs(&doc).contains(&published));

    let keyway_deps = depends_on(&services["keyway"]);
    let mut ids = BTreeSet::new();
    for name in FLEET {
        let svc = &services[*name];
        let command = args(svc, "command");
        assert_eq!(
            option(&command, "--config-store", "--config-store").as_deref(),
            Some(url.as_str()),
            "{name} reads the published prefix"
        );
        assert!(
            option(&command, "-c", "--conf-file").is_none(),
            "{name}: no -c"
        );
        ids.insert(option(&command, "--instance-id", "--instance-id").expect("--instance-id"));
        let deps = depends_on(svc);
        assert_eq!(
            deps.get("fleet-publish").map(String::as_str),
            Some("service_completed_successfully"),
            "{name} starts once the config is published"
        );
        for (backend, condition) in &keyway_deps {
            assert_eq!(
                deps.get(backend),
                Some(condition),
                "{name} waits for {backend}"
            );
        }
        let admin = option(&command, "--admin", "--admin").expect("--admin");
        let (admin_host, admin_port) = split_host_port(&admin);
        assert_eq!(admin_host, "0.0.0.0");
        let ports = published_ports(svc);
        assert!(
            ports.contains(&admin_port),
            "{name} publishes its admin port"
        );
        assert!(ports.contains(&22121), "{name} publishes pool main");
    }
    assert_eq!(ids.len(), FLEET.len(), "distinct instance ids: {ids:?}");
}

#[test]
fn prometheus_scrapes_the_fleet_and_loads_the_alerting_rules() {
    let doc = compose();
    let prometheus = service(&doc, "prometheus");
    let config = yaml(&host_file(&prometheus, "/etc/prometheus/prometheus.yml"));
    let targets: Vec<String> = config["scrape_configs"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|job| job["static_configs"].as_sequence().into_iter().flatten())
        .flat_map(|sc| sc["targets"].as_sequence().into_iter().flatten())
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    for name in FLEET {
        assert!(
            targets.contains(&format!("{name}:22223")),
            "{name} is not scraped: {targets:?}"
        );
    }
    let rules: Vec<&str> = config["rule_files"]
        .as_sequence()
        .expect("rule_files")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!rules.is_empty());
    for rule_file in rules {
        let file = host_file(&prometheus, rule_file);
        assert_eq!(
            file.canonicalize().unwrap(),
            root()
                .join("conf/prometheus/alerts.yml")
                .canonicalize()
                .unwrap(),
            "Prometheus loads the shipped rules"
        );
        assert!(yaml(&file)["groups"]
            .as_sequence()
            .is_some_and(|g| !g.is_empty()));
    }
}
