//! The deployment files under `deploy/` agree with the binary's defaults.
//!
//! Every YAML file in `deploy/kubernetes` is parsed (all documents in each
//! file); probes, ports, names and the embedded config are checked against
//! `llmgate_server::defaults`, and the Dockerfile's `EXPOSE` against the same
//! ports. A failure names the file, the object and what differs.

use std::path::{Path, PathBuf};

use llmgate_server::defaults::{
    ADMIN_PORT, HEALTH_PATH, LISTEN_PORT, METRICS_PATH, METRICS_PORT, READY_PATH,
};
use serde_yaml::Value;

/// The gateway's drain deadline as the shipped config sets it; the pod's
/// termination grace period must outlast it.
const DRAIN_DEADLINE_SECS: i64 = 30;

/// One parsed Kubernetes object and the file it came from.
struct Manifest {
    file: String,
    doc: Value,
}

impl Manifest {
    fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.doc["metadata"]["name"].as_str().unwrap_or("")
    }
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Splits a YAML stream into its documents at `---` marker lines (a marker
/// starts at column 0, so block scalars, which are indented, never contain
/// one). The root package has `serde_yaml` but not `serde`, so its
/// multi-document `Deserializer` cannot be driven here.
fn yaml_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line == "---" || line.starts_with("--- ") {
            docs.push(line[3..].to_owned() + "\n");
        } else if line == "..." {
            docs.push(String::new());
        } else {
            let cur = docs.last_mut().expect("at least one document");
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs
}

fn load_manifests() -> Vec<Manifest> {
    let dir = deploy_dir().join("kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read deploy/kubernetes: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "deploy/kubernetes holds no YAML files");

    let mut out = Vec::new();
    for path in files {
        let file = format!(
            "deploy/kubernetes/{}",
            path.file_name().unwrap().to_string_lossy()
        );
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
        for (i, part) in yaml_documents(&text).into_iter().enumerate() {
            let doc: Value = serde_yaml::from_str(&part)
                .unwrap_or_else(|e| panic!("{file}: document {i} is not valid YAML: {e}"));
            if doc.is_null() {
                continue; // an empty document (e.g. a trailing `---`)
            }
            assert!(
                doc["apiVersion"].is_string() && doc["kind"].is_string(),
                "{file}: document {i} has no apiVersion/kind"
            );
            out.push(Manifest {
                file: file.clone(),
                doc,
            });
        }
    }
    out
}

fn one<'a>(all: &'a [Manifest], kind: &str) -> &'a Manifest {
    let found: Vec<&Manifest> = all.iter().filter(|m| m.kind() == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind} under deploy/kubernetes, found {}",
        found.len()
    );
    found[0]
}

fn seq<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what} is missing or not a list"))
}

fn port_of(v: &Value) -> Option<u16> {
    v.as_u64().and_then(|p| u16::try_from(p).ok())
}

/// The `llmgate` container of the Deployment.
fn gateway_container(dep: &Manifest) -> &Value {
    let containers = seq(
        &dep.doc["spec"]["template"]["spec"]["containers"],
        "Deployment spec.template.spec.containers",
    );
    containers
        .iter()
        .find(|c| c["name"].as_str() == Some("llmgate"))
        .unwrap_or_else(|| panic!("{}: no container named `llmgate`", dep.file))
}

/// Named container ports: (name, containerPort).
fn container_ports(c: &Value) -> Vec<(String, u16)> {
    seq(&c["ports"], "container `llmgate` ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_owned(),
                port_of(&p["containerPort"]).expect("containerPort is a port number"),
            )
        })
        .collect()
}

/// `llmgate.toml` from the ConfigMap.
fn gateway_config(all: &[Manifest]) -> String {
    let cm = one(all, "ConfigMap");
    cm.doc["data"]["llmgate.toml"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: ConfigMap has no data key `llmgate.toml`", cm.file))
        .to_owned()
}

/// The string value of `key = "..."` or the number of `key = N` in a TOML
/// section, by line scanning (the root package has no TOML parser).
fn toml_value(config: &str, section: &str, key: &str) -> Option<String> {
    let header = format!("[{section}]");
    let mut in_section = false;
    for line in config.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_section = line == header;
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            if k.trim() == key {
                return Some(v.trim().trim_matches('"').to_owned());
            }
        }
    }
    None
}

fn addr_port(addr: &str) -> Option<u16> {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

#[test]
fn deployment_runs_three_gateways_with_the_default_probes_and_ports() {
    let all = load_manifests();
    let dep = one(&all, "Deployment");
    let f = &dep.file;

    assert_eq!(
        dep.doc["spec"]["replicas"].as_u64(),
        Some(3),
        "{f}: spec.replicas should be 3"
    );

    let c = gateway_container(dep);
    let live = &c["livenessProbe"]["httpGet"];
    assert_eq!(
        live["path"].as_str(),
        Some(HEALTH_PATH),
        "{f}: livenessProbe.httpGet.path should be {HEALTH_PATH}"
    );
    assert_eq!(
        port_of(&live["port"]),
        Some(LISTEN_PORT),
        "{f}: livenessProbe.httpGet.port should be {LISTEN_PORT}"
    );
    let ready = &c["readinessProbe"]["httpGet"];
    assert_eq!(
        ready["path"].as_str(),
        Some(READY_PATH),
        "{f}: readinessProbe.httpGet.path should be {READY_PATH}"
    );
    assert_eq!(
        port_of(&ready["port"]),
        Some(LISTEN_PORT),
        "{f}: readinessProbe.httpGet.port should be {LISTEN_PORT}"
    );

    let ports = container_ports(c);
    for (name, want) in [("http", LISTEN_PORT), ("metrics", METRICS_PORT)] {
        assert!(
            ports.iter().any(|(n, p)| n == name && *p == want),
            "{f}: container `llmgate` should declare port `{name}` = {want}; has {ports:?}"
        );
    }
    if let Some((_, admin)) = ports.iter().find(|(n, _)| n == "admin") {
        assert_eq!(
            *admin, ADMIN_PORT,
            "{f}: container port `admin` should be {ADMIN_PORT}"
        );
    }

    let args: Vec<&str> = seq(&c["args"], "container `llmgate` args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args.first().copied(),
        Some("serve"),
        "{f}: container args should start with `serve`, got {args:?}"
    );
    let config_path = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .unwrap_or_else(|| panic!("{f}: container args have no `--config PATH`: {args:?}"));

    // The config file comes from the ConfigMap, mounted where --config points.
    let cm = one(&all, "ConfigMap");
    let volumes = seq(
        &dep.doc["spec"]["template"]["spec"]["volumes"],
        "Deployment volumes",
    );
    let vol = volumes
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some(cm.name()))
        .unwrap_or_else(|| panic!("{f}: no volume mounts ConfigMap `{}`", cm.name()));
    let vol_name = vol["name"].as_str().unwrap_or("");
    let mount = seq(&c["volumeMounts"], "container `llmgate` volumeMounts")
        .iter()
        .find(|m| m["name"].as_str() == Some(vol_name))
        .unwrap_or_else(|| panic!("{f}: volume `{vol_name}` is not mounted in `llmgate`"));
    let mount_path = mount["mountPath"].as_str().unwrap_or("");
    assert_eq!(
        config_path,
        format!("{}/llmgate.toml", mount_path.trim_end_matches('/')),
        "{f}: --config should point at llmgate.toml in the ConfigMap mount {mount_path}"
    );

    // Hardening.
    let pod_sc = &dep.doc["spec"]["template"]["spec"]["securityContext"];
    let sc = &c["securityContext"];
    assert!(
        pod_sc["runAsNonRoot"].as_bool() == Some(true)
            || sc["runAsNonRoot"].as_bool() == Some(true),
        "{f}: the gateway should run with runAsNonRoot: true"
    );
    assert_eq!(
        sc["readOnlyRootFilesystem"].as_bool(),
        Some(true),
        "{f}: container `llmgate` should have readOnlyRootFilesystem: true"
    );
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                !c["resources"][kind][res].is_null(),
                "{f}: container `llmgate` has no resources.{kind}.{res}"
            );
        }
    }
}

#[test]
fn pods_outlive_the_drain_deadline() {
    let all = load_manifests();
    let dep = one(&all, "Deployment");
    let f = &dep.file;
    let pod = &dep.doc["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap_or_else(|| panic!("{f}: terminationGracePeriodSeconds is not set"));

    let config = gateway_config(&all);
    let drain: i64 = toml_value(&config, "server", "drain_timeout_secs")
        .map(|v| v.parse().expect("server.drain_timeout_secs is an integer"))
        .unwrap_or(DRAIN_DEADLINE_SECS);

    let pre_stop = &gateway_container(dep)["lifecycle"]["preStop"];
    assert!(
        !pre_stop.is_null(),
        "{f}: container `llmgate` needs a preStop hook so endpoints deregister before SIGTERM"
    );
    let pre_stop_secs = pre_stop["sleep"]["seconds"].as_i64().unwrap_or(0);

    assert!(
        grace > DRAIN_DEADLINE_SECS,
        "{f}: terminationGracePeriodSeconds ({grace}) should exceed the {DRAIN_DEADLINE_SECS} s drain deadline"
    );
    assert!(
        grace > drain + pre_stop_secs,
        "{f}: terminationGracePeriodSeconds ({grace}) should exceed the preStop sleep \
         ({pre_stop_secs} s) plus server.drain_timeout_secs ({drain} s)"
    );
}

#[test]
fn service_targets_the_container_ports_by_name() {
    let all = load_manifests();
    let svc = one(&all, "Service");
    let f = &svc.file;
    let dep = one(&all, "Deployment");
    let container = container_ports(gateway_container(dep));

    let svc_type = svc.doc["spec"]["type"].as_str().unwrap_or("ClusterIP");
    assert_eq!(svc_type, "ClusterIP", "{f}: Service should be ClusterIP");

    let ports = seq(&svc.doc["spec"]["ports"], "Service spec.ports");
    let find = |name: &str| {
        ports
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{f}: Service has no port named `{name}`"))
    };

    let http = find("http");
    assert_eq!(
        port_of(&http["port"]),
        Some(80),
        "{f}: Service port `http` should be 80"
    );
    let metrics = find("metrics");
    assert_eq!(
        port_of(&metrics["port"]),
        Some(METRICS_PORT),
        "{f}: Service port `metrics` should be {METRICS_PORT}"
    );

    for (svc_port, name, want) in [
        (http, "http", LISTEN_PORT),
        (metrics, "metrics", METRICS_PORT),
    ] {
        assert_eq!(
            svc_port["targetPort"].as_str(),
            Some(name),
            "{f}: Service port `{name}` should target the container port by name `{name}`"
        );
        assert!(
            container.iter().any(|(n, p)| n == name && *p == want),
            "{f}: Service targets `{name}` but the Deployment's container port `{name}` is not {want}"
        );
    }

    assert!(
        ports.iter().all(|p| {
            p["name"].as_str() != Some("admin")
                && port_of(&p["port"]) != Some(ADMIN_PORT)
                && p["targetPort"].as_str() != Some("admin")
                && port_of(&p["targetPort"]) != Some(ADMIN_PORT)
        }),
        "{f}: the admin API ({ADMIN_PORT}) binds to localhost and must not be a Service port"
    );

    // The selector picks the Deployment's pods.
    let selector = svc.doc["spec"]["selector"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{f}: Service has no selector"));
    let labels = &dep.doc["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector {
        assert_eq!(
            &labels[k], v,
            "{f}: Service selector {k:?}={v:?} does not match the Deployment's pod labels"
        );
    }
}

#[test]
fn pod_monitor_scrapes_the_metrics_port() {
    let all = load_manifests();
    let pm = one(&all, "PodMonitor");
    let f = &pm.file;
    assert_eq!(
        pm.doc["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1"),
        "{f}: PodMonitor apiVersion should be monitoring.coreos.com/v1"
    );
    let endpoints = seq(
        &pm.doc["spec"]["podMetricsEndpoints"],
        "PodMonitor spec.podMetricsEndpoints",
    );
    assert!(
        endpoints
            .iter()
            .any(|e| e["port"].as_str() == Some("metrics")
                && e["path"].as_str().unwrap_or(METRICS_PATH) == METRICS_PATH),
        "{f}: PodMonitor should scrape port `metrics` at path {METRICS_PATH}"
    );

    let dep = one(&all, "Deployment");
    let labels = &dep.doc["spec"]["template"]["metadata"]["labels"];
    let sel = pm.doc["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{f}: PodMonitor has no selector.matchLabels"));
    for (k, v) in sel {
        assert_eq!(
            &labels[k], v,
            "{f}: PodMonitor selector {k:?}={v:?} does not match the Deployment's pod labels"
        );
    }
}

#[test]
fn hpa_scales_the_deployment() {
    let all = load_manifests();
    let hpa = one(&all, "HorizontalPodAutoscaler");
    let f = &hpa.file;
    let dep = one(&all, "Deployment");
    assert_eq!(
        hpa.doc["apiVersion"].as_str(),
        Some("autoscaling/v2"),
        "{f}: HPA apiVersion should be autoscaling/v2"
    );
    let target = &hpa.doc["spec"]["scaleTargetRef"];
    assert_eq!(
        (target["kind"].as_str(), target["name"].as_str()),
        (Some("Deployment"), Some(dep.name())),
        "{f}: HPA scaleTargetRef should be Deployment `{}`",
        dep.name()
    );
    let min = hpa.doc["spec"]["minReplicas"].as_u64();
    let max = hpa.doc["spec"]["maxReplicas"].as_u64();
    assert_eq!(min, Some(3), "{f}: minReplicas should be 3");
    assert_eq!(max, Some(20), "{f}: maxReplicas should be 20");
    let metrics = seq(&hpa.doc["spec"]["metrics"], "HPA spec.metrics");
    assert!(
        metrics
            .iter()
            .any(|m| m["resource"]["name"].as_str() == Some("cpu")
                && m["resource"]["target"]["averageUtilization"].as_u64() == Some(70)),
        "{f}: HPA should target 70% average CPU utilization"
    );
}

#[test]
fn configmap_config_listens_on_the_default_ports() {
    let all = load_manifests();
    let config = gateway_config(&all);
    let f = &one(&all, "ConfigMap").file;

    for section in ["[server]", "[routing]", "[[replicas]]"] {
        assert!(
            config.lines().any(|l| l.trim() == section),
            "{f}: llmgate.toml has no {section} section"
        );
    }
    let check = |key: &str, host: &str, port: u16| {
        let addr = toml_value(&config, "server", key)
            .unwrap_or_else(|| panic!("{f}: llmgate.toml has no server.{key}"));
        assert_eq!(
            addr_port(&addr),
            Some(port),
            "{f}: server.{key} = {addr:?} should use port {port}"
        );
        assert!(
            addr.starts_with(host),
            "{f}: server.{key} = {addr:?} should bind {host}"
        );
    };
    // Pods must listen on all interfaces for probes and the Service to reach them.
    check("listen", "0.0.0.0:", LISTEN_PORT);
    check("metrics_listen", "0.0.0.0:", METRICS_PORT);
    // The admin API stays on loopback (it is not a Service port).
    check("admin_listen", "127.0.0.1:", ADMIN_PORT);

    let replicas = config
        .lines()
        .filter(|l| l.trim() == "[[replicas]]")
        .count();
    assert!(
        replicas >= 1,
        "{f}: llmgate.toml should configure at least one replica"
    );
    // Every [[replicas]] entry has an id, a url and models.
    for key in ["id", "url", "models"] {
        let n = config
            .lines()
            .filter(|l| l.split_once('=').is_some_and(|(k, _)| k.trim() == key))
            .count();
        assert!(
            n >= replicas,
            "{f}: {replicas} [[replicas]] entries but only {n} set `{key}`"
        );
    }
}

#[test]
fn dockerfile_exposes_the_default_ports() {
    let path = deploy_dir().join("Dockerfile");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read deploy/Dockerfile: {e}"));
    let exposed: Vec<u16> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.to_ascii_uppercase().starts_with("EXPOSE "))
        .flat_map(|l| l[7..].split_whitespace())
        .filter_map(|p| p.split('/').next().and_then(|p| p.parse().ok()))
        .collect();
    for port in [LISTEN_PORT, METRICS_PORT] {
        assert!(
            exposed.contains(&port),
            "deploy/Dockerfile should EXPOSE {port}; it exposes {exposed:?}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.trim().starts_with("ENTRYPOINT") && l.contains("\"/llmgate\"")),
        "deploy/Dockerfile should have ENTRYPOINT [\"/llmgate\"]"
    );
    assert!(
        text.contains("x86_64-unknown-linux-musl") && text.contains("-p llmgate-server"),
        "deploy/Dockerfile should build llmgate-server for x86_64-unknown-linux-musl (a static binary)"
    );
}

#[test]
fn kustomization_lists_every_manifest() {
    let all = load_manifests();
    let k = one(&all, "Kustomization");
    let listed: Vec<&str> = seq(&k.doc["resources"], "Kustomization resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut files: Vec<&str> = all
        .iter()
        .map(|m| m.file.trim_start_matches("deploy/kubernetes/"))
        .filter(|f| *f != "kustomization.yaml")
        .collect();
    files.dedup();
    for f in files {
        assert!(
            listed.contains(&f),
            "deploy/kubernetes/kustomization.yaml does not list {f} under resources"
        );
    }
}
