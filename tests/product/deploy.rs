//! deploy/ is product: the Kubernetes manifests validate against the
//! Kubernetes schemas (kubernetes-validate from PyPI, required in CI by
//! SOJOURN_REQUIRE_K8S_VALIDATE=1), the PrometheusRule is the rules file,
//! the DaemonSet has what a node agent needs, the sidecar example's sojourn
//! config is one sojourn accepts, the systemd unit and Dockerfile run
//! the binary with flags it knows, and the DaemonSet's container, made by
//! an OCI runtime from its pod spec (podman and runc, required in CI by
//! SOJOURN_REQUIRE_CONTAINER_RUNTIME=1), times every queue.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_yaml_ng::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn manifests() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["deploy/kubernetes/base", "deploy/kubernetes/examples"] {
        for e in std::fs::read_dir(Path::new(ROOT).join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[k],
    })
}

#[test]
fn the_kustomization_lists_every_base_manifest() {
    let base = Path::new(ROOT).join("deploy/kubernetes/base");
    let k = &docs(&base.join("kustomization.yaml"))[0];
    let listed: Vec<&str> = k["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for r in &listed {
        assert!(base.join(r).exists(), "{r} is listed but missing");
    }
    for p in manifests().iter().filter(|p| p.starts_with(&base)) {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(
            listed.contains(&name),
            "{name} is not in kustomization.yaml"
        );
    }
    // The namespace it puts everything in is one it creates.
    let namespace = k["namespace"].as_str().expect("a namespace");
    let created = listed.iter().flat_map(|r| docs(&base.join(r))).any(|d| {
        d["kind"].as_str() == Some("Namespace") && d["metadata"]["name"].as_str() == Some(namespace)
    });
    assert!(created, "namespace {namespace} is not created by the base");
}

#[test]
fn core_resources_validate_against_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for path in manifests() {
        for (i, doc) in docs(&path).into_iter().enumerate() {
            let api = doc["apiVersion"].as_str().unwrap_or_default();
            // The Prometheus Operator's kinds have no schema there: checked below.
            if api.starts_with("monitoring.coreos.com/") {
                continue;
            }
            let f = dir.path().join(format!(
                "{}-{i}.yaml",
                path.file_stem().unwrap().to_string_lossy()
            ));
            std::fs::write(&f, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
            files.push(f);
        }
    }
    assert!(files.len() >= 6, "{files:?}");
    // As a module: found wherever pip put it, shims or not.
    let installed = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let run = if installed {
        Command::new("python3")
            .args(["-m", "kubernetes_validate"])
            .arg("--strict")
            .arg("--quiet")
            .args(&files)
            .output()
    } else {
        Err(std::io::Error::other(
            "python3 -m kubernetes_validate is not installed",
        ))
    };
    match run {
        Ok(out) => assert!(
            out.status.success(),
            "kubernetes-validate:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            common::skip_unless_required(
                "SOJOURN_REQUIRE_K8S_VALIDATE",
                &format!("kubernetes-validate cannot run ({e}): schema validation"),
            );
        }
    }
}

#[test]
fn the_prometheusrule_is_the_rules_file() {
    let rules = &docs(&Path::new(ROOT).join("alerts/sojourn-rules.yml"))[0];
    let pr = &docs(&Path::new(ROOT).join("deploy/kubernetes/base/prometheusrule.yaml"))[0];
    assert_eq!(pr["kind"], Value::from("PrometheusRule"));
    assert_eq!(pr["apiVersion"], Value::from("monitoring.coreos.com/v1"));
    assert!(
        pr["spec"] == *rules,
        "deploy/kubernetes/base/prometheusrule.yaml differs from alerts/sojourn-rules.yml: run scripts/prometheusrule.py"
    );
}

#[test]
fn the_daemonset_is_a_read_only_node_agent_with_four_capabilities_and_limits() {
    let ds = &docs(&Path::new(ROOT).join("deploy/kubernetes/base/daemonset.yaml"))[0];
    let pod = get(ds, "spec.template.spec");
    assert_eq!(pod["hostPID"], Value::from(true));
    assert_eq!(pod["hostNetwork"], Value::from(true));
    let c = get(pod, "containers.0");
    assert_eq!(
        get(c, "securityContext.allowPrivilegeEscalation"),
        &Value::from(false)
    );
    for m in c["volumeMounts"].as_sequence().unwrap() {
        assert_eq!(m["readOnly"], Value::from(true), "{m:?}");
    }
    for k in [
        "requests.cpu",
        "requests.memory",
        "limits.cpu",
        "limits.memory",
    ] {
        assert!(!get(&c["resources"], k).is_null(), "resources.{k} unset");
    }
    let caps: Vec<&str> = get(c, "securityContext.capabilities.add")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // What the default collectors need, no more (see the manifest).
    assert_eq!(caps, ["SYS_ADMIN", "SYS_PTRACE", "BPF", "PERFMON"]);
    assert_eq!(
        get(c, "securityContext.capabilities.drop"),
        &Value::from(vec!["ALL"])
    );
    assert_eq!(
        get(c, "securityContext.readOnlyRootFilesystem"),
        &Value::from(true)
    );
    // Every flag is one sojourn knows (the env references resolved).
    let args: Vec<String> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().replace("$(NODE_IP)", "127.0.0.1"))
        .map(|a| {
            a.replace("/host/proc", "/proc")
                .replace("/host/sys", "/sys")
                .replace("/host/root", "/")
        })
        .collect();
    let mut argv = vec!["sojourn".to_string()];
    argv.extend(args);
    sojourn::cli::parse(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
}

#[test]
fn the_monitoring_resources_select_what_they_monitor() {
    let sm = &docs(&Path::new(ROOT).join("deploy/kubernetes/base/servicemonitor.yaml"))[0];
    let svc = &docs(&Path::new(ROOT).join("deploy/kubernetes/base/service.yaml"))[0];
    assert_eq!(sm["kind"], Value::from("ServiceMonitor"));
    for (k, v) in get(sm, "spec.selector.matchLabels").as_mapping().unwrap() {
        assert_eq!(
            &get(svc, "metadata.labels")[k],
            v,
            "Service lacks label {k:?}"
        );
    }
    let port = get(sm, "spec.endpoints.0.port");
    assert_eq!(get(svc, "spec.ports.0.name"), port);
}

#[test]
fn the_sidecar_example_runs_a_config_sojourn_accepts() {
    let docs = docs(&Path::new(ROOT).join("deploy/kubernetes/examples/sidecar.yaml"));
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    // `sojourn.yml` is one key with a dot in it: no `get` path.
    let text = cm["data"]["sojourn.yml"].as_str().unwrap();
    let cfg = sojourn::config::parse(text, Path::new(".")).unwrap();
    assert_eq!(cfg.services.len(), 1);
    assert_eq!(cfg.probes.len(), 1);
    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let sidecar = get(deploy, "spec.template.spec.containers.1");
    assert_eq!(sidecar["name"], Value::from("sojourn"));
    let drain = cfg.services[0].drain_timeout.as_secs();
    let grace = get(deploy, "spec.template.spec.terminationGracePeriodSeconds")
        .as_u64()
        .unwrap();
    assert!(
        grace > drain,
        "grace {grace} s must outlast the drain {drain} s"
    );
}

#[test]
fn the_systemd_unit_and_dockerfile_start_the_binary() {
    let unit =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/systemd/sojourn.service")).unwrap();
    for line in [
        "ExecStart=/usr/local/bin/sojourn $SOJOURN_ARGS",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "sojourn.service lacks {line}"
        );
    }
    if let Ok(out) = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(Path::new(ROOT).join("deploy/systemd/sojourn.service"))
        .output()
    {
        let err = String::from_utf8_lossy(&out.stderr);
        // The binary is not installed here; anything else is a unit error.
        let problems: Vec<&str> = err
            .lines()
            .filter(|l| !l.contains("/usr/local/bin/sojourn") && !l.trim().is_empty())
            .collect();
        assert!(problems.is_empty(), "systemd-analyze verify:\n{err}");
    }
    let docker = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    assert!(
        docker.contains("FROM scratch"),
        "the image is the binary alone"
    );
    assert!(docker.contains("--locked"));
    assert!(docker.contains(r#"ENTRYPOINT ["/sojourn"]"#));
    assert!(docker.contains("USER 65534"));
}

/// The binary run as a container with `security` (a container's
/// securityContext) would run it: its user, its capability set (bounding;
/// for root also permitted and effective, for another user none, as
/// Kubernetes grants no ambient capabilities), and no_new_privs unless
/// privilege escalation is allowed. The image's binary has no file
/// capabilities (asserted below), so the plain binary is the image's.
fn as_container(security: &Value) -> Option<Command> {
    if !Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        || !rustix::process::geteuid().is_root()
    {
        common::skip_unless_required(
            "SOJOURN_REQUIRE_NAMESPACES",
            "setpriv (util-linux) and root are needed to drop capabilities",
        );
        return None;
    }
    let mut command = Command::new("setpriv");
    let user = security["runAsUser"].as_u64().unwrap_or(0);
    if user != 0 {
        let group = security["runAsGroup"].as_u64().unwrap_or(user);
        command
            .arg(format!("--reuid={user}"))
            .arg(format!("--regid={group}"))
            .arg("--clear-groups");
    }
    let added: Vec<String> = security["capabilities"]["add"]
        .as_sequence()
        .map(|a| {
            a.iter()
                .map(|c| format!(",+{}", c.as_str().unwrap().to_lowercase()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        security["capabilities"]["drop"],
        Value::from(vec!["ALL"]),
        "the test models drop: [ALL]"
    );
    command
        .arg(format!("--bounding-set=-all{}", added.concat()))
        .arg("--inh-caps=-all");
    if security["allowPrivilegeEscalation"] == false {
        command.arg("--no-new-privs");
    }
    command.arg(env!("CARGO_BIN_EXE_sojourn"));
    Some(command)
}

/// The systemd unit's capabilities are enough for everything its comment
/// says they are for: run as another user than root (as DynamicUser= is)
/// with the unit's ambient capabilities and no_new_privs, sojourn loads
/// and attaches every eBPF program, the accept program's syscall
/// tracepoints (whose ids tracefs shows root alone) included.
#[test]
fn the_systemd_unit_times_every_queue_under_its_capabilities() {
    if let Err(e) = sojourn::ebpf::Accept::load() {
        common::skip_unless_required("SOJOURN_REQUIRE_EBPF", &e);
        return;
    }
    let unit =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/systemd/sojourn.service")).unwrap();
    let caps = |key: &str| -> String {
        let line = unit
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("sojourn.service lacks {key}"));
        line.split_whitespace()
            .map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect()
    };
    let (ambient, bounding) = (caps("AmbientCapabilities="), caps("CapabilityBoundingSet="));
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps=-all{ambient}"))
        .arg(format!("--ambient-caps=-all{ambient}"))
        .arg(format!("--bounding-set=-all{bounding}"))
        .arg("--no-new-privs")
        .arg(env!("CARGO_BIN_EXE_sojourn"));
    let exporter = common::start_with(command, &[]);
    let text = common::scrape_until(exporter.addr, Duration::from_secs(10), |t| {
        t.contains("sojourn_scrape_collector_unsupported{collector=\"ebpf_accept\"}")
    });
    for part in ["ebpf", "ebpf_block", "ebpf_accept"] {
        let line = format!("sojourn_scrape_collector_unsupported{{collector=\"{part}\"}} 0");
        assert!(
            text.contains(&line),
            "{line} under the unit's capabilities:\n{text}"
        );
    }
}

#[test]
fn the_image_gives_its_binary_no_file_capabilities() {
    let docker = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    // A file capability makes exec fail with EPERM in a container that
    // drops it or sets no_new_privs, as the sidecar does.
    assert!(
        !docker.lines().any(|l| l.contains("setcap")),
        "the Dockerfile sets file capabilities"
    );
}

#[test]
fn the_sidecar_proxy_serves_under_its_containers_security_context() {
    let docs = docs(&Path::new(ROOT).join("deploy/kubernetes/examples/sidecar.yaml"));
    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let sidecar = get(deploy, "spec.template.spec.containers.1");
    let Some(mut command) = as_container(&sidecar["securityContext"]) else {
        return;
    };
    // The example's config, on loopback ports of the test's.
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let text = cm["data"]["sojourn.yml"]
        .as_str()
        .unwrap()
        .replace("0.0.0.0:8080", "127.0.0.1:0")
        .replace("127.0.0.1:8081", "127.0.0.1:9");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sojourn.yml");
    std::fs::write(&config, text).unwrap();
    // Readable by the container's user, as a ConfigMap volume is.
    for p in [dir.path(), config.as_path()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    command
        .arg("proxy")
        .arg(format!("--config.file={}", config.display()));
    let proxy = common::start_with(command, &[]);
    let metrics = common::get(proxy.addr, "/metrics", &[]);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text().contains("sojourn_proxy_"),
        "{}",
        metrics.text()
    );
    assert_eq!(common::get(proxy.addr, "/-/ready", &[]).status, 200);
}

#[test]
fn the_daemonset_reads_another_users_pod_under_its_containers_security_context() {
    let ds = &docs(&Path::new(ROOT).join("deploy/kubernetes/base/daemonset.yaml"))[0];
    let c = get(ds, "spec.template.spec.containers.0");
    let Some(command) = as_container(&c["securityContext"]) else {
        return;
    };
    // A pod whose process runs as another user, with a listener.
    let Some(pod) = common::pod_of_user("daemonset", true, Some(1000)) else {
        common::skip_unless_required(
            "SOJOURN_REQUIRE_NAMESPACES",
            "ip netns and cgroups need root",
        );
        return;
    };
    let exporter = common::start_with(command, &["--collector.process.rescan-interval", "100ms"]);
    let inode = pod.netns_inode();
    let series = "queue=\"tcp_accept:127.0.0.1:8080\"";
    let text = common::scrape_until(exporter.addr, Duration::from_secs(15), |t| {
        t.lines()
            .any(|l| l.contains(series) && l.contains(&format!("netns=\"{inode}\"")))
    });
    assert!(
        text.contains("sojourn_scrape_collector_unsupported{collector=\"queue_netns\"} 0"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(series) && l.contains(&format!("netns=\"{inode}\""))),
        "the pod's listener is not sampled under the DaemonSet's capabilities:\n{text}"
    );
}

#[test]
fn the_prometheusrule_takes_a_runbook_base_of_the_users() {
    let out = Command::new("python3")
        .arg(Path::new(ROOT).join("scripts/prometheusrule.py"))
        .args([
            "--runbook-base",
            "https://wiki.example.com/sojourn/runbooks",
            "--output",
            "-",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let shipped =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/kubernetes/base/prometheusrule.yaml"))
            .unwrap();
    let urls: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: "))
        .collect();
    assert_eq!(urls.len(), shipped.matches("runbook_url:").count());
    for url in &urls {
        assert!(
            url.starts_with("https://wiki.example.com/sojourn/runbooks#sojourn"),
            "{url}"
        );
    }
    // Nothing else differs from the shipped rule.
    assert_eq!(
        text.replace(
            "https://wiki.example.com/sojourn/runbooks#",
            "https://github.com/sojourn/sojourn/blob/main/docs/runbooks.md#"
        ),
        shipped
    );
    // A relative base would be a dead link again: refused.
    let out = Command::new("python3")
        .arg(Path::new(ROOT).join("scripts/prometheusrule.py"))
        .args(["--runbook-base", "docs/runbooks.md", "--output", "-"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// A container made by podman with runc — an OCI runtime, its default
/// seccomp profile — from the DaemonSet's pod spec: host PID and network,
/// the container's securityContext (root, every capability dropped but
/// the four, no privilege escalation, a read-only root), its volumes at
/// their mount paths and its args (the node's IP loopback, the port
/// free). The image is the binary alone in a directory, with the
/// libraries it links. Removed (`podman rm -f`) when dropped.
struct DaemonSetContainer {
    name: String,
    _rootfs: tempfile::TempDir,
}

impl Drop for DaemonSetContainer {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.name])
            .output();
    }
}

impl DaemonSetContainer {
    /// The container's `podman run` command (run attached: its stderr is
    /// sojourn's), or None where podman and runc are not installed.
    fn command(extra: &[&str]) -> Option<(DaemonSetContainer, Command)> {
        let have = |tool: &str| {
            Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !have("podman") || !have("runc") || !rustix::process::geteuid().is_root() {
            common::skip_unless_required(
                "SOJOURN_REQUIRE_CONTAINER_RUNTIME",
                "podman, runc and root are needed to run the DaemonSet's container",
            );
            return None;
        }
        let ds = &docs(&Path::new(ROOT).join("deploy/kubernetes/base/daemonset.yaml"))[0];
        let pod = get(ds, "spec.template.spec");
        let c = &pod["containers"][0];
        let security = &c["securityContext"];
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "the test runs under the runtime's default seccomp profile"
        );
        assert_eq!(security["capabilities"]["drop"], Value::from(vec!["ALL"]));

        let rootfs = tempfile::tempdir().unwrap();
        let image = DaemonSetContainer {
            name: format!("sojourn-daemonset-{}", std::process::id()),
            _rootfs: rootfs,
        };
        let root = image._rootfs.path();
        std::fs::copy(env!("CARGO_BIN_EXE_sojourn"), root.join("sojourn")).unwrap();
        let ldd = Command::new("ldd")
            .arg(env!("CARGO_BIN_EXE_sojourn"))
            .output()
            .unwrap();
        for lib in String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
        {
            let to = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(lib, to).unwrap();
        }

        let mut command = Command::new("podman");
        command.args([
            "--runtime=runc",
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
            "run",
            "--rm",
            "--name",
            &image.name,
        ]);
        if pod["hostPID"] == true {
            command.arg("--pid=host");
        }
        if pod["hostNetwork"] == true {
            command.arg("--network=host");
        }
        let user = security["runAsUser"].as_u64().unwrap();
        let group = security["runAsGroup"].as_u64().unwrap();
        command.arg(format!("--user={user}:{group}"));
        if security["readOnlyRootFilesystem"] == true {
            command.arg("--read-only");
        }
        if security["allowPrivilegeEscalation"] == false {
            command.arg("--security-opt=no-new-privileges");
        }
        command.arg("--cap-drop=all");
        for cap in security["capabilities"]["add"].as_sequence().unwrap() {
            command.arg(format!("--cap-add={}", cap.as_str().unwrap()));
        }
        // Within this host's hard limits (podman's defaults are above
        // them, which only CAP_SYS_RESOURCE may set); the open files'
        // soft limit low, as a runtime may leave it.
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .maximum
            .unwrap_or(1 << 20);
        command.arg(format!("--ulimit=nofile=1024:{hard}"));
        command.arg("--ulimit=nproc=4096:4096");
        let volumes: std::collections::HashMap<&str, &str> = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap(),
                    v["hostPath"]["path"].as_str().unwrap(),
                )
            })
            .collect();
        for m in c["volumeMounts"].as_sequence().unwrap() {
            let host = volumes[m["name"].as_str().unwrap()];
            let mut options = vec![if m["readOnly"] == true { "ro" } else { "rw" }];
            if m["mountPropagation"] == "HostToContainer" {
                options.push("rslave");
            }
            command.arg(format!(
                "--volume={host}:{}:{}",
                m["mountPath"].as_str().unwrap(),
                options.join(",")
            ));
        }
        command.args(["--rootfs", root.to_str().unwrap(), "/sojourn"]);
        for arg in c["args"].as_sequence().unwrap() {
            let arg = arg.as_str().unwrap().replace("$(NODE_IP)", "127.0.0.1");
            command.arg(match arg.strip_prefix("--web.listen-address=") {
                Some(_) => "--web.listen-address=[127.0.0.1]:0".to_string(),
                None => arg,
            });
        }
        command.args(extra);
        Some((image, command))
    }
}

/// The DaemonSet's container, made by an OCI runtime from its pod spec,
/// times every queue: the runtime's seccomp profile, the dropped
/// capabilities and the read-only root leave the three eBPF programs
/// loadable (the accept program's tracepoint ids read from the mounted
/// host tracefs, or a private mount where the host has none), a pod's
/// namespace enterable (its listener sampled and its accepts timed under
/// its namespace) and the host's cgroups readable.
#[test]
fn the_daemonset_times_every_queue_in_an_oci_runtimes_container() {
    if let Err(e) = sojourn::ebpf::Accept::load() {
        common::skip_unless_required("SOJOURN_REQUIRE_EBPF", &e);
        return;
    }
    let Some((_container, mut command)) =
        DaemonSetContainer::command(&["--collector.process.rescan-interval=100ms"])
    else {
        return;
    };
    let Some(pod) = common::pod_of_user("oci", false, None) else {
        common::skip_unless_required(
            "SOJOURN_REQUIRE_NAMESPACES",
            "ip netns and cgroups need root",
        );
        return;
    };
    let (exporter, _) = common::spawn_listening(&mut command, 1);
    // The programs attached before the pod's connections are made.
    common::scrape_until(exporter.addr, Duration::from_secs(10), |t| {
        t.contains("sojourn_scrape_collector_unsupported{collector=\"ebpf_accept\"}")
    });
    // A listener in the pod that takes three connections and holds them.
    let mut server = pod
        .python(
            "import socket, time\n\
             l = socket.socket(); l.bind(('127.0.0.1', 8081)); l.listen(8)\n\
             cs = [socket.create_connection(('127.0.0.1', 8081)) for _ in range(3)]\n\
             time.sleep(0.2)\n\
             held = [l.accept() for _ in range(3)]\n\
             time.sleep(60)\n",
        )
        .spawn()
        .unwrap();
    let inode = pod.netns_inode();
    let pod_accepts =
        format!("sojourn_tcp_accept_wait_seconds_count{{port=\"8081\",netns=\"{inode}\"");
    let text = common::scrape_until(exporter.addr, Duration::from_secs(20), |t| {
        t.contains(&pod_accepts) && t.contains("sojourn_runqueue_wait_seconds_count")
    });
    let _ = server.kill();
    let _ = server.wait();
    let log = exporter.log.lock().unwrap().clone();
    for part in ["ebpf", "ebpf_block", "ebpf_accept", "cgroup", "queue_netns"] {
        let line = format!("sojourn_scrape_collector_unsupported{{collector=\"{part}\"}} 0");
        assert!(
            text.contains(&line),
            "{line} in the container:\n{text}\n{log}"
        );
    }
    let waits = text
        .lines()
        .find(|l| l.starts_with(&pod_accepts))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(waits, Some(3.0), "the pod's three accepts:\n{text}\n{log}");
    // Each waited the 200 ms the listener slept (the sum, in seconds).
    let sum_line = pod_accepts.replace("_count{", "_sum{");
    let sum = text
        .lines()
        .find(|l| l.starts_with(&sum_line))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap();
    assert!(
        (0.6..1.5).contains(&sum),
        "three waits of ≥ 200 ms: {sum} s"
    );
    assert!(
        text.contains("sojourn_cgroup_runqueue_wait_seconds_count{"),
        "{text}"
    );
}
