//! The shipping files: the Kubernetes manifests parse and say what matters, the Dockerfile
//! has the instructions it needs, the systemd unit reloads with SIGHUP. There is no Docker
//! engine or cluster here, so these check the files, not a running image.

use std::path::PathBuf;
use std::time::Duration;

use strangler_e2e::binary::workspace_root;
use strangler_e2e::CliOutput;
use yaml_rust2::{Yaml, YamlLoader};

fn read(path: &str) -> String {
    let full: PathBuf = workspace_root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

fn manifest(path: &str) -> Yaml {
    let docs = YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(docs.len(), 1, "{path}: one document");
    docs.into_iter().next().expect("one document")
}

fn s<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {y:?}"))
}

#[test]
fn the_deployment_probes_healthz_on_the_admin_port_and_mounts_the_configmap_as_a_directory() {
    let d = manifest("deploy/kubernetes/deployment.yaml");
    assert_eq!(s(&d["kind"], "kind"), "Deployment");
    let spec = &d["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(s(&c[probe]["httpGet"]["path"], probe), "/healthz");
        assert_eq!(s(&c[probe]["httpGet"]["port"], probe), "admin");
    }
    let ports = c["ports"].as_vec().expect("ports");
    let admin = ports
        .iter()
        .find(|p| p["name"].as_str() == Some("admin"))
        .expect("an admin port");
    assert_eq!(admin["containerPort"].as_i64(), Some(9901));
    // The routes: a ConfigMap volume mounted as a directory; a subPath would never update.
    let volume = spec["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find(|v| !v["configMap"].is_badvalue())
        .expect("a ConfigMap volume");
    let name = s(&volume["name"], "volume name");
    let mount = c["volumeMounts"]
        .as_vec()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"].as_str() == Some(name))
        .expect("the ConfigMap is mounted");
    assert!(
        mount["subPath"].is_badvalue(),
        "no subPath on the routes mount"
    );
    let config_dir = s(&mount["mountPath"], "mountPath");
    let args: Vec<&str> = c["args"]
        .as_vec()
        .expect("args")
        .iter()
        .map(|a| s(a, "arg"))
        .collect();
    assert_eq!(args[0], "run");
    let config = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .expect("--config");
    assert_eq!(config, format!("{config_dir}/routes.yaml"));
    // Non-root, and time to drain.
    assert_eq!(
        spec["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    assert!(
        spec["terminationGracePeriodSeconds"]
            .as_i64()
            .expect("grace period")
            > 30
    );
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"].as_i64(),
        Some(0)
    );
}

#[test]
fn the_service_selects_the_pods_and_keeps_client_addresses() {
    let svc = manifest("deploy/kubernetes/service.yaml");
    let d = manifest("deploy/kubernetes/deployment.yaml");
    assert_eq!(s(&svc["kind"], "kind"), "Service");
    assert_eq!(
        svc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"],
        "the Service selects the Deployment's pods"
    );
    assert_eq!(s(&svc["spec"]["externalTrafficPolicy"], "policy"), "Local");
    let targets: Vec<&str> = svc["spec"]["ports"]
        .as_vec()
        .expect("ports")
        .iter()
        .map(|p| s(&p["targetPort"], "targetPort"))
        .collect();
    assert!(targets.contains(&"https") && !targets.contains(&"admin"));
}

#[test]
fn the_configmap_routes_validate_but_for_the_files_only_a_cluster_has() {
    let cm = manifest("deploy/kubernetes/configmap.yaml");
    assert_eq!(s(&cm["kind"], "kind"), "ConfigMap");
    let d = manifest("deploy/kubernetes/deployment.yaml");
    let cm_name = d["spec"]["template"]["spec"]["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find_map(|v| v["configMap"]["name"].as_str())
        .expect("ConfigMap volume");
    assert_eq!(s(&cm["metadata"]["name"], "name"), cm_name);
    let routes = s(&cm["data"]["routes.yaml"], "routes.yaml");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("routes.yaml"), routes).expect("write routes.yaml");
    let out = CliOutput::run(
        &["check", "--config", "routes.yaml"],
        dir.path(),
        Duration::from_secs(30),
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    // The certificate and the token live in Secrets; everything else is valid.
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.contains("warning:"))
        .collect();
    assert!(!errors.is_empty());
    for e in &errors {
        assert!(
            e.contains("/etc/strangler-tls/") || e.contains("/etc/strangler-secrets/"),
            "unexpected problem: {e}\n{}",
            out.stderr
        );
    }
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_with_a_health_check() {
    let text = read("Dockerfile");
    // Instructions, with continuation lines joined.
    let joined = text.replace("\\\n", " ");
    let instructions: Vec<(String, String)> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (op, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (op.to_ascii_uppercase(), rest.trim().to_string())
        })
        .collect();
    const KNOWN: &[&str] = &[
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
    ];
    for (op, _) in &instructions {
        assert!(KNOWN.contains(&op.as_str()), "unknown instruction {op}");
    }
    let of = |op: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, r)| r.as_str())
            .collect()
    };
    let froms = of("FROM");
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(froms[0].contains(" AS build"), "{froms:?}");
    assert!(of("COPY")
        .iter()
        .any(|c| c.starts_with("--from=build") && c.contains("strangler")));
    let user = of("USER");
    let user = user.last().expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "{user}"
    );
    assert!(of("HEALTHCHECK")
        .iter()
        .any(|h| h.contains("CMD") && h.contains("health")));
    assert!(of("ENTRYPOINT")
        .iter()
        .any(|e| e.contains("/usr/local/bin/strangler")));
    for exec in of("ENTRYPOINT").iter().chain(of("CMD").iter()) {
        serde_json::from_str::<Vec<String>>(exec)
            .unwrap_or_else(|e| panic!("exec form JSON array expected: {exec}: {e}"));
    }
}

#[test]
fn the_systemd_unit_reloads_with_sighup_and_hands_over_on_upgrade() {
    let unit = read("deploy/systemd/strangler@.service");
    let mut sections = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            assert!(line.ends_with(']'), "{line}");
            sections.push(line);
        }
    }
    assert_eq!(sections, vec!["[Unit]", "[Service]", "[Install]"]);
    let joined = unit.replace("\\\n", " ");
    let value = |key: &str| -> Vec<String> {
        joined
            .lines()
            .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
            .map(|v| v.trim().to_string())
            .collect()
    };
    assert_eq!(value("ExecReload"), vec!["/bin/kill -HUP $MAINPID"]);
    let start = value("ExecStart");
    assert_eq!(start.len(), 1);
    assert!(start[0].contains(" run ") && start[0].contains("--upgrade-socket /run/strangler/"));
    assert_eq!(value("RuntimeDirectory"), vec!["strangler"]);
    assert_eq!(value("RuntimeDirectoryPreserve"), vec!["yes"]);
    assert_eq!(value("Restart"), vec!["on-failure"]);
}
