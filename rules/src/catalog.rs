//! The service catalog: how differently named identities map onto one service.
//!
//! With no catalog, names that match across sources (repository = workload = `app`
//! label) are enough to correlate; the catalog is for when they don't.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `catalog:` section of the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// The cluster assumed when a source does not name one.
    #[serde(default = "default_cluster")]
    pub default_cluster: String,
    /// Deployment environment name → cluster (GitHub `environment`).
    #[serde(default)]
    pub environments: BTreeMap<String, String>,
    /// Known services.
    #[serde(default)]
    pub services: Vec<ServiceEntry>,
}

fn default_cluster() -> String {
    "default".into()
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            default_cluster: default_cluster(),
            environments: BTreeMap::new(),
            services: Vec::new(),
        }
    }
}

/// One service and the identities other systems know it by.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    /// The canonical name, used as the event `entity`.
    pub name: String,
    /// Kubernetes namespace of its workloads.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Kubernetes workload names (Deployment, StatefulSet) of this service.
    #[serde(default)]
    pub workloads: Vec<String>,
    /// Source repositories, `owner/name`.
    #[serde(default)]
    pub repos: Vec<String>,
    /// Cloud resources (ARNs or ids) that belong to this service.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Argo CD applications that deploy this service.
    #[serde(default)]
    pub argo_apps: Vec<String>,
    /// Cost allocation tags that mark this service's spend (all must match).
    #[serde(default)]
    pub cost_tags: BTreeMap<String, String>,
    /// Services (or resources) this one depends on, for catalog joins.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

impl Catalog {
    /// The cluster a deployment environment stands for: a mapped environment, else the
    /// environment as given.
    pub fn cluster_for_environment(&self, environment: &str) -> String {
        self.environments
            .get(environment)
            .cloned()
            .unwrap_or_else(|| environment.to_owned())
    }

    /// The service a repository (`owner/name`) belongs to; else the repository's name.
    pub fn service_for_repo(&self, full_name: &str) -> String {
        self.services
            .iter()
            .find(|s| s.repos.iter().any(|r| r.eq_ignore_ascii_case(full_name)))
            .map(|s| s.name.clone())
            .unwrap_or_else(|| full_name.rsplit('/').next().unwrap_or(full_name).to_owned())
    }

    /// The service a workload in a namespace belongs to; else the workload's name.
    pub fn service_for_workload(&self, namespace: Option<&str>, workload: &str) -> String {
        self.services
            .iter()
            .find(|s| {
                let ns_ok = match (&s.namespace, namespace) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                ns_ok && (s.workloads.iter().any(|w| w == workload) || s.name == workload)
            })
            .map(|s| s.name.clone())
            .unwrap_or_else(|| workload.to_owned())
    }

    /// The service a cloud resource (ARN or id) belongs to; else the resource as given.
    pub fn service_for_resource(&self, resource: &str) -> String {
        self.services
            .iter()
            .find(|s| s.resources.iter().any(|r| r == resource))
            .map(|s| s.name.clone())
            .unwrap_or_else(|| resource.to_owned())
    }

    /// The service an Argo CD application deploys; else the workload of that name.
    pub fn service_for_argo_app(&self, namespace: Option<&str>, app: &str) -> String {
        self.services
            .iter()
            .find(|s| s.argo_apps.iter().any(|a| a == app))
            .map(|s| s.name.clone())
            .unwrap_or_else(|| self.service_for_workload(namespace, app))
    }

    /// The service whose cost tags all appear in `tags`, if any.
    pub fn service_for_cost_tags(&self, tags: &BTreeMap<String, String>) -> Option<String> {
        self.services
            .iter()
            .find(|s| {
                !s.cost_tags.is_empty() && s.cost_tags.iter().all(|(k, v)| tags.get(k) == Some(v))
            })
            .map(|s| s.name.clone())
    }

    /// What a service depends on, per the catalog.
    pub fn depends_on(&self, service: &str) -> &[String] {
        self.services
            .iter()
            .find(|s| s.name == service)
            .map(|s| s.depends_on.as_slice())
            .unwrap_or(&[])
    }

    /// The namespace the catalog gives a service, if any.
    pub fn namespace_of(&self, service: &str) -> Option<&str> {
        self.services
            .iter()
            .find(|s| s.name == service)
            .and_then(|s| s.namespace.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog {
            default_cluster: "prod".into(),
            environments: [("production".to_owned(), "prod".to_owned())].into(),
            services: vec![ServiceEntry {
                name: "payments".into(),
                namespace: Some("shop".into()),
                workloads: vec!["payments-api".into()],
                repos: vec!["acme/payments-service".into()],
                resources: vec!["arn:aws:rds:eu-west-1:1:db:payments".into()],
                argo_apps: vec!["payments-prod".into()],
                cost_tags: [("team".to_owned(), "pay".to_owned())].into(),
                depends_on: vec!["payments-db".into()],
            }],
        }
    }

    #[test]
    fn repos_and_workloads_map_to_their_service() {
        let c = catalog();
        assert_eq!(c.service_for_repo("acme/payments-service"), "payments");
        assert_eq!(
            c.service_for_workload(Some("shop"), "payments-api"),
            "payments"
        );
        assert_eq!(c.cluster_for_environment("production"), "prod");
        assert_eq!(
            c.service_for_resource("arn:aws:rds:eu-west-1:1:db:payments"),
            "payments"
        );
        assert_eq!(c.service_for_resource("i-0abc"), "i-0abc");
        assert_eq!(c.service_for_argo_app(None, "payments-prod"), "payments");
        let tags = [
            ("team".to_owned(), "pay".to_owned()),
            ("env".to_owned(), "prod".to_owned()),
        ]
        .into();
        assert_eq!(c.service_for_cost_tags(&tags).as_deref(), Some("payments"));
        assert_eq!(c.service_for_cost_tags(&BTreeMap::new()), None);
        assert_eq!(c.depends_on("payments"), ["payments-db".to_owned()]);
    }

    #[test]
    fn unknown_identities_are_kept_as_they_are() {
        let c = catalog();
        assert_eq!(c.service_for_repo("acme/checkout"), "checkout");
        assert_eq!(
            c.service_for_workload(Some("other"), "payments-api"),
            "payments-api"
        );
        assert_eq!(c.cluster_for_environment("staging"), "staging");
    }
}
