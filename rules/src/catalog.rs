//! The service catalog: how differently named identities map onto one service.
//!
//! With no catalog, names that match across sources (repository = workload = `app`
//! label) are enough to correlate; the catalog is for when they don't.

use std::collections::{BTreeMap, HashMap};

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
    /// Cloud account (or billing sub-account) id → the cluster whose workloads run
    /// in it. A cloud change or cost row of a mapped account is correlated in that
    /// cluster's scope, so it can join the cluster's alerts; an unmapped account is
    /// a scope of its own.
    #[serde(default)]
    pub accounts: BTreeMap<String, String>,
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
            accounts: BTreeMap::new(),
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
    /// ConfigMaps and Secrets this service reads: a change to one is a change to
    /// the service.
    #[serde(default)]
    pub configs: Vec<String>,
    /// The owning team, named on every incident of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Who to page: an on-call rotation, channel or address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oncall: Option<String>,
    /// The service's runbook page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook_url: Option<String>,
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

    /// A service's catalog entry, by canonical name.
    pub fn service(&self, name: &str) -> Option<&ServiceEntry> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The correlation scope of a cloud account: its cluster when the catalog maps
    /// it, else the account itself.
    pub fn scope_for_account(&self, account: &str) -> String {
        self.accounts
            .get(account)
            .cloned()
            .unwrap_or_else(|| account.to_owned())
    }

    /// The service a ConfigMap or Secret belongs to: the catalog's, else the name
    /// without a conventional suffix (`checkout-config` → `checkout`), else the name.
    pub fn service_for_config(&self, namespace: Option<&str>, name: &str) -> String {
        let listed = self.services.iter().find(|s| {
            namespace_fits(s.namespace.as_deref(), namespace) && s.configs.iter().any(|c| c == name)
        });
        if let Some(s) = listed {
            return s.name.clone();
        }
        self.service_for_workload(namespace, config_base(name))
    }

    /// The service a repository (`owner/name`) belongs to; else the repository's name.
    pub fn service_for_repo(&self, full_name: &str) -> String {
        self.services
            .iter()
            .find(|s| s.repos.iter().any(|r| r.eq_ignore_ascii_case(full_name)))
            .map(|s| s.name.clone())
            .unwrap_or_else(|| repo_name(full_name).to_owned())
    }

    /// The service a workload in a namespace belongs to; else the workload's name.
    pub fn service_for_workload(&self, namespace: Option<&str>, workload: &str) -> String {
        self.services
            .iter()
            .find(|s| {
                namespace_fits(s.namespace.as_deref(), namespace)
                    && (s.workloads.iter().any(|w| w == workload) || s.name == workload)
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

    /// The service an entity stands for: a service name as it is, a workload, Argo CD
    /// application or cloud resource through the catalog, else the entity itself.
    pub fn service_of(&self, entity: &str) -> String {
        self.services
            .iter()
            .find(|s| {
                s.name == entity
                    || s.workloads.iter().any(|w| w == entity)
                    || s.argo_apps.iter().any(|a| a == entity)
                    || s.resources.iter().any(|r| r == entity)
            })
            .map(|s| s.name.clone())
            .unwrap_or_else(|| entity.to_owned())
    }

    /// Everything a service depends on, directly or through the services it depends
    /// on, as the entities events about them carry (a resource the catalog assigns to
    /// a service is that service). Sorted, without the service itself.
    pub fn dependency_entities(&self, service: &str) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut todo = vec![self.service_of(service)];
        let start = todo[0].clone();
        while let Some(s) = todo.pop() {
            for dep in self.depends_on(&s) {
                let entity = self.service_of(dep);
                if entity != start && seen.insert(entity.clone()) {
                    todo.push(entity);
                }
            }
        }
        seen.into_iter().collect()
    }

    /// The namespace the catalog gives a service, if any.
    pub fn namespace_of(&self, service: &str) -> Option<&str> {
        self.services
            .iter()
            .find(|s| s.name == service)
            .and_then(|s| s.namespace.as_deref())
    }
}

/// A ConfigMap or Secret name without a conventional suffix (`checkout-config` →
/// `checkout`), else the name.
fn config_base(name: &str) -> &str {
    const SUFFIXES: [&str; 9] = [
        "-configmap",
        "-config",
        "-conf",
        "-cfg",
        "-settings",
        "-env",
        "-secrets",
        "-secret",
        "-credentials",
    ];
    SUFFIXES
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .filter(|b| !b.is_empty())
        .unwrap_or(name)
}

/// A repository's name without its owner (`acme/checkout` → `checkout`).
fn repo_name(full_name: &str) -> &str {
    full_name.rsplit('/').next().unwrap_or(full_name)
}

/// Whether a service in `service_ns` can be the one a source in `namespace` names.
fn namespace_fits(service_ns: Option<&str>, namespace: Option<&str>) -> bool {
    match (service_ns, namespace) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// A catalog with its by-name lookups indexed, for paths that ask them for every
/// event or incident version (decoders, enrichment): with a catalog of a few
/// thousand services the linear scans of [`Catalog`] become the top cost there.
/// Answers exactly as the catalog does: the first service (in catalog order) that
/// claims a name wins. Lookups it does not index go to the catalog (`Deref`).
#[derive(Debug, Clone)]
pub struct IndexedCatalog {
    catalog: Catalog,
    by_entity: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
    /// Name or workload → every service claiming it, in catalog order (namespaces
    /// decide between them).
    by_workload: HashMap<String, Vec<usize>>,
    by_config: HashMap<String, Vec<usize>>,
    by_resource: HashMap<String, usize>,
    by_argo_app: HashMap<String, usize>,
    /// Repositories, ASCII-lowercased (they match case-insensitively).
    by_repo: HashMap<String, usize>,
}

impl IndexedCatalog {
    pub fn new(catalog: Catalog) -> IndexedCatalog {
        fn first(map: &mut HashMap<String, usize>, key: &str, i: usize) {
            map.entry(key.to_owned()).or_insert(i);
        }
        fn all(map: &mut HashMap<String, Vec<usize>>, key: &str, i: usize) {
            let list = map.entry(key.to_owned()).or_default();
            if list.last() != Some(&i) {
                list.push(i);
            }
        }
        let mut c = IndexedCatalog {
            by_entity: HashMap::new(),
            by_name: HashMap::new(),
            by_workload: HashMap::new(),
            by_config: HashMap::new(),
            by_resource: HashMap::new(),
            by_argo_app: HashMap::new(),
            by_repo: HashMap::new(),
            catalog,
        };
        for (i, s) in c.catalog.services.iter().enumerate() {
            first(&mut c.by_name, &s.name, i);
            for entity in std::iter::once(&s.name)
                .chain(&s.workloads)
                .chain(&s.argo_apps)
                .chain(&s.resources)
            {
                first(&mut c.by_entity, entity, i);
            }
            for w in std::iter::once(&s.name).chain(&s.workloads) {
                all(&mut c.by_workload, w, i);
            }
            for config in &s.configs {
                all(&mut c.by_config, config, i);
            }
            for r in &s.resources {
                first(&mut c.by_resource, r, i);
            }
            for a in &s.argo_apps {
                first(&mut c.by_argo_app, a, i);
            }
            for r in &s.repos {
                first(&mut c.by_repo, &r.to_ascii_lowercase(), i);
            }
        }
        c
    }

    fn name_at(&self, i: usize) -> Option<String> {
        self.catalog.services.get(i).map(|s| s.name.clone())
    }

    /// The first of `candidates` whose namespace fits.
    fn in_namespace(
        &self,
        candidates: Option<&Vec<usize>>,
        namespace: Option<&str>,
    ) -> Option<String> {
        candidates?
            .iter()
            .filter_map(|i| self.catalog.services.get(*i))
            .find(|s| namespace_fits(s.namespace.as_deref(), namespace))
            .map(|s| s.name.clone())
    }

    /// As [`Catalog::service_of`].
    pub fn service_of(&self, entity: &str) -> String {
        self.by_entity
            .get(entity)
            .and_then(|i| self.name_at(*i))
            .unwrap_or_else(|| entity.to_owned())
    }

    /// As [`Catalog::service`].
    pub fn service(&self, name: &str) -> Option<&ServiceEntry> {
        self.by_name
            .get(name)
            .and_then(|i| self.catalog.services.get(*i))
    }

    /// As [`Catalog::namespace_of`].
    pub fn namespace_of(&self, service: &str) -> Option<&str> {
        self.service(service).and_then(|s| s.namespace.as_deref())
    }

    /// As [`Catalog::service_for_workload`].
    pub fn service_for_workload(&self, namespace: Option<&str>, workload: &str) -> String {
        self.in_namespace(self.by_workload.get(workload), namespace)
            .unwrap_or_else(|| workload.to_owned())
    }

    /// As [`Catalog::service_for_config`].
    pub fn service_for_config(&self, namespace: Option<&str>, name: &str) -> String {
        self.in_namespace(self.by_config.get(name), namespace)
            .unwrap_or_else(|| self.service_for_workload(namespace, config_base(name)))
    }

    /// As [`Catalog::service_for_resource`].
    pub fn service_for_resource(&self, resource: &str) -> String {
        self.by_resource
            .get(resource)
            .and_then(|i| self.name_at(*i))
            .unwrap_or_else(|| resource.to_owned())
    }

    /// As [`Catalog::service_for_argo_app`].
    pub fn service_for_argo_app(&self, namespace: Option<&str>, app: &str) -> String {
        self.by_argo_app
            .get(app)
            .and_then(|i| self.name_at(*i))
            .unwrap_or_else(|| self.service_for_workload(namespace, app))
    }

    /// As [`Catalog::service_for_repo`].
    pub fn service_for_repo(&self, full_name: &str) -> String {
        self.by_repo
            .get(&full_name.to_ascii_lowercase())
            .and_then(|i| self.name_at(*i))
            .unwrap_or_else(|| repo_name(full_name).to_owned())
    }
}

impl Default for IndexedCatalog {
    fn default() -> Self {
        IndexedCatalog::new(Catalog::default())
    }
}

impl std::ops::Deref for IndexedCatalog {
    type Target = Catalog;
    fn deref(&self) -> &Catalog {
        &self.catalog
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog {
            default_cluster: "prod".into(),
            environments: [("production".to_owned(), "prod".to_owned())].into(),
            accounts: [("111122223333".to_owned(), "prod".to_owned())].into(),
            services: vec![ServiceEntry {
                name: "payments".into(),
                namespace: Some("shop".into()),
                workloads: vec!["payments-api".into()],
                repos: vec!["acme/payments-service".into()],
                resources: vec!["arn:aws:rds:eu-west-1:1:db:payments".into()],
                argo_apps: vec!["payments-prod".into()],
                cost_tags: [("team".to_owned(), "pay".to_owned())].into(),
                depends_on: vec!["payments-db".into()],
                configs: vec!["pay-flags".into()],
                team: Some("payments-team".into()),
                oncall: None,
                runbook_url: None,
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
        assert_eq!(c.scope_for_account("111122223333"), "prod");
        assert_eq!(c.scope_for_account("999"), "999");
        assert_eq!(c.service_for_config(Some("shop"), "pay-flags"), "payments");
        assert_eq!(
            c.service_for_config(Some("shop"), "payments-api-config"),
            "payments"
        );
        assert_eq!(c.service_for_config(None, "search-secrets"), "search");
        assert_eq!(c.service_for_config(None, "config"), "config");
    }

    /// The index answers every lookup as the linear scans do, including where
    /// several services claim one name (first in catalog order wins, namespaces
    /// decide between workloads and configs, repositories ignore case).
    #[test]
    fn the_indexed_catalog_answers_as_the_catalog() {
        let mut c = catalog();
        c.services.extend([
            ServiceEntry {
                name: "payments-eu".into(),
                namespace: Some("shop-eu".into()),
                workloads: vec!["payments-api".into(), "pay-worker".into()],
                repos: vec!["ACME/Payments-Service".into(), "acme/pay-eu".into()],
                resources: vec!["arn:aws:rds:eu-west-1:1:db:payments".into(), "i-1".into()],
                argo_apps: vec!["payments-prod".into(), "payments-eu".into()],
                configs: vec!["pay-flags".into(), "eu-flags".into()],
                ..ServiceEntry::default()
            },
            ServiceEntry {
                // A second entry of one name: the first keeps it.
                name: "payments".into(),
                namespace: Some("other".into()),
                ..ServiceEntry::default()
            },
            ServiceEntry {
                name: "search".into(),
                workloads: vec!["pay-worker".into()],
                configs: vec!["search-secrets".into()],
                ..ServiceEntry::default()
            },
        ]);
        let ix = IndexedCatalog::new(c.clone());
        let namespaces = [None, Some("shop"), Some("shop-eu"), Some("other")];
        let names = [
            "payments",
            "payments-eu",
            "payments-api",
            "pay-worker",
            "search",
            "unknown",
            "pay-flags",
            "eu-flags",
            "search-secrets",
            "payments-api-config",
            "search-env",
            "config",
            "payments-prod",
            "i-1",
            "arn:aws:rds:eu-west-1:1:db:payments",
            "acme/payments-service",
            "Acme/Pay-EU",
            "acme/unknown",
            "plain",
        ];
        for name in names {
            assert_eq!(ix.service_of(name), c.service_of(name), "{name}");
            assert_eq!(ix.service(name), c.service(name), "{name}");
            assert_eq!(ix.namespace_of(name), c.namespace_of(name), "{name}");
            assert_eq!(ix.service_for_resource(name), c.service_for_resource(name));
            assert_eq!(
                ix.service_for_repo(name),
                c.service_for_repo(name),
                "{name}"
            );
            for ns in namespaces {
                let case = format!("{name} in {ns:?}");
                assert_eq!(
                    ix.service_for_workload(ns, name),
                    c.service_for_workload(ns, name),
                    "{case}"
                );
                assert_eq!(
                    ix.service_for_config(ns, name),
                    c.service_for_config(ns, name),
                    "{case}"
                );
                assert_eq!(
                    ix.service_for_argo_app(ns, name),
                    c.service_for_argo_app(ns, name),
                    "{case}"
                );
            }
        }
        // Spot checks that the cases above are not all fall-throughs.
        assert_eq!(
            ix.service_for_workload(Some("shop-eu"), "payments-api"),
            "payments-eu"
        );
        assert_eq!(
            ix.service_for_workload(Some("other"), "pay-worker"),
            "search"
        );
        assert_eq!(ix.service_for_repo("acme/pay-eu"), "payments-eu");
        assert_eq!(
            ix.service_for_config(Some("shop-eu"), "pay-flags"),
            "payments-eu"
        );
    }

    #[test]
    fn dependencies_are_followed_through_services() {
        let mut c = catalog();
        c.services.push(ServiceEntry {
            name: "payments-db".into(),
            resources: vec!["arn:aws:rds:eu-west-1:1:db:pay".into()],
            depends_on: vec!["vpc-1".into()],
            ..ServiceEntry::default()
        });
        assert_eq!(
            c.dependency_entities("payments-api"),
            ["payments-db".to_owned(), "vpc-1".to_owned()]
        );
        assert_eq!(
            c.service_of("arn:aws:rds:eu-west-1:1:db:pay"),
            "payments-db"
        );
        assert!(c.dependency_entities("unknown").is_empty());
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
