//! Identity hints shared by decoders: pod names to workloads, label conventions.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

// Kubernetes generates name suffixes from an alphabet without vowels (and without
// 0, 1 and 3), so `node-exporter` is never mistaken for a hash. Literal patterns:
// compiling them cannot fail.
static DEPLOYMENT_POD: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^(.+)-[bcdfghjklmnpqrstvwxz2456789]{6,10}-[bcdfghjklmnpqrstvwxz2456789]{5}$").ok()
});
static STATEFUL_POD: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"^(.+)-[0-9]+$").ok());
static DAEMON_POD: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^(.+)-[bcdfghjklmnpqrstvwxz2456789]{5}$").ok());

/// The workload a pod belongs to, stripping ReplicaSet and pod hashes
/// (`checkout-7d9f8b6c5d-x2k4q` → `checkout`), StatefulSet ordinals (`db-0` → `db`)
/// and DaemonSet/Job suffixes (`node-exporter-abcde` → `node-exporter`).
pub fn pod_workload(pod: &str) -> &str {
    for re in [&*DEPLOYMENT_POD, &*STATEFUL_POD, &*DAEMON_POD]
        .into_iter()
        .flatten()
    {
        if let Some(m) = re.captures(pod).and_then(|c| c.get(1)) {
            return &pod[m.start()..m.end()];
        }
    }
    pod
}

/// The workload an alert's labels speak of: `service`, `deployment`, `app`,
/// `app.kubernetes.io/name`, `statefulset`, `daemonset`, the pod's workload (`pod`
/// or Falco's `k8s_pod_name`), the `node`, then `job`.
pub fn workload_from_labels(labels: &BTreeMap<String, String>) -> Option<String> {
    for key in [
        "service",
        "deployment",
        "app",
        "app_kubernetes_io_name",
        "app.kubernetes.io/name",
        "statefulset",
        "daemonset",
    ] {
        if let Some(v) = labels.get(key).filter(|v| !v.is_empty()) {
            return Some(v.clone());
        }
    }
    // `k8s_pod_name`: Falco (falcosidekick) and other runtime security tools.
    if let Some(pod) = labels
        .get("pod")
        .or_else(|| labels.get("k8s_pod_name"))
        .filter(|v| !v.is_empty())
    {
        return Some(pod_workload(pod).to_owned());
    }
    if let Some(node) = labels.get("node").filter(|v| !v.is_empty()) {
        return Some(node.clone());
    }
    labels.get("job").filter(|v| !v.is_empty()).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_map_to_their_workload() {
        assert_eq!(pod_workload("checkout-7d9f8b6c5d-x2k4q"), "checkout");
        assert_eq!(pod_workload("payments-api-5f4b9c7d8-bcdfg"), "payments-api");
        assert_eq!(pod_workload("postgres-0"), "postgres");
        assert_eq!(pod_workload("node-exporter-z9x8w"), "node-exporter");
        assert_eq!(pod_workload("standalone"), "standalone");
    }

    #[test]
    fn labels_prefer_service_then_pod_then_job() {
        let l = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            workload_from_labels(&l(&[("service", "cart"), ("pod", "x-1")])).as_deref(),
            Some("cart")
        );
        assert_eq!(
            workload_from_labels(&l(&[("job", "kube"), ("pod", "cart-6b7c8d9f4-qwrtz")]))
                .as_deref(),
            Some("cart")
        );
        assert_eq!(
            workload_from_labels(&l(&[("job", "node")])).as_deref(),
            Some("node")
        );
        assert_eq!(workload_from_labels(&l(&[])), None);
    }
}
