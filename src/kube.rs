//! Kubernetes identity from kubelet cgroup paths, so container metrics can
//! be joined with kube-state-metrics' `kube_pod_info{uid=...}`.
//!
//! - cgroupfs driver: `/kubepods/burstable/pod<uid>/<container-id>`,
//!   `/kubepods/pod<uid>/<container-id>` (Guaranteed);
//! - systemd driver: `/kubepods.slice/kubepods-besteffort.slice/
//!   kubepods-besteffort-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`,
//!   with `docker-<id>.scope` or `crio-<id>.scope` for other runtimes.

/// Pod QoS class as the kubelet encodes it in the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "guaranteed",
            QosClass::Burstable => "burstable",
            QosClass::BestEffort => "besteffort",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeIdentity {
    pub pod_uid: String,
    /// None for the pod-level cgroup itself.
    pub container_id: Option<String>,
    pub qos: QosClass,
}

fn is_uid(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

fn is_container_id(s: &str) -> bool {
    s.len() >= 12 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// The container id in a path segment: a bare id (cgroupfs) or a runtime
/// scope (`cri-containerd-<id>.scope`, `docker-<id>.scope`, `crio-<id>.scope`).
/// CRI-O's `crio-conmon-<id>.scope` is its monitor, not the container.
fn container_segment(seg: &str) -> Option<&str> {
    if is_container_id(seg) {
        return Some(seg);
    }
    let scope = seg.strip_suffix(".scope")?;
    let id = ["cri-containerd-", "docker-", "crio-"]
        .iter()
        .find_map(|p| scope.strip_prefix(p))?;
    is_container_id(id).then_some(id)
}

/// Parses a cgroup path (relative to the hierarchy root, `/`-separated).
pub fn parse(path: &str) -> Option<KubeIdentity> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let start = segs
        .iter()
        .position(|s| *s == "kubepods" || *s == "kubepods.slice")?;
    let mut qos = QosClass::Guaranteed;
    let mut pod_uid = None;
    let mut container_id = None;
    for seg in &segs[start + 1..] {
        if let Some(rest) = seg
            .strip_prefix("kubepods-")
            .and_then(|s| s.strip_suffix(".slice"))
        {
            // systemd: kubepods-burstable.slice, kubepods-burstable-pod<uid>.slice, kubepods-pod<uid>.slice
            let (class, pod) = match rest.split_once("pod") {
                Some((class, uid)) => (class.trim_end_matches('-'), Some(uid)),
                None => (rest, None),
            };
            match class {
                "burstable" => qos = QosClass::Burstable,
                "besteffort" => qos = QosClass::BestEffort,
                _ => {}
            }
            if let Some(uid) = pod.map(|u| u.replace('_', "-")).filter(|u| is_uid(u)) {
                pod_uid = Some(uid);
            }
        } else if *seg == "burstable" {
            qos = QosClass::Burstable;
        } else if *seg == "besteffort" {
            qos = QosClass::BestEffort;
        } else if let Some(uid) = seg.strip_prefix("pod").filter(|u| is_uid(u)) {
            pod_uid = Some(uid.to_string());
        } else if pod_uid.is_some()
            && let Some(id) = container_segment(seg)
        {
            container_id = Some(id.to_string());
        }
    }
    Some(KubeIdentity {
        pod_uid: pod_uid?,
        container_id,
        qos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0d3fc3ab-1c36-4a7a-9b3e-6d3c2b1a0f9e";
    const CID: &str = "4f1c3a8e2b6d7f90a1b2c3d4e5f60718293a4b5c6d7e8f9012345678abcdef01";

    #[test]
    fn cgroupfs_driver() {
        let id = parse(&format!("/kubepods/burstable/pod{UID}/{CID}")).unwrap();
        assert_eq!(
            id,
            KubeIdentity {
                pod_uid: UID.into(),
                container_id: Some(CID.into()),
                qos: QosClass::Burstable
            }
        );
        let id = parse(&format!("/kubepods/pod{UID}/{CID}")).unwrap();
        assert_eq!(id.qos, QosClass::Guaranteed);
        let pod = parse(&format!("/kubepods/besteffort/pod{UID}")).unwrap();
        assert_eq!((pod.qos, pod.container_id), (QosClass::BestEffort, None));
    }

    #[test]
    fn systemd_driver_and_runtimes() {
        let u = UID.replace('-', "_");
        for (scope, want) in [
            (format!("cri-containerd-{CID}.scope"), Some(CID)),
            (format!("docker-{CID}.scope"), Some(CID)),
            (format!("crio-{CID}.scope"), Some(CID)),
            (format!("crio-conmon-{CID}.scope"), None),
        ] {
            let path = format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/{scope}"
            );
            let id = parse(&path).unwrap();
            assert_eq!(id.pod_uid, UID);
            assert_eq!(id.qos, QosClass::Burstable);
            assert_eq!(id.container_id.as_deref(), want, "{scope}");
        }
        let g = parse(&format!(
            "/kubepods.slice/kubepods-pod{u}.slice/cri-containerd-{CID}.scope"
        ))
        .unwrap();
        assert_eq!(g.qos, QosClass::Guaranteed);
    }

    #[test]
    fn other_paths_are_not_kubernetes() {
        assert_eq!(parse("/system.slice/sshd.service"), None);
        assert_eq!(
            parse("/kubepods/burstable"),
            None,
            "a QoS parent is not a pod"
        );
        assert_eq!(parse("/docker/abc"), None);
    }
}
