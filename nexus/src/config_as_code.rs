//! Configuration as code: providers, their models (with prices), model groups and client keys'
//! scopes and limits declared in a file, applied to the registry idempotently, and exported back.
//!
//! The rules, from what operators of LiteLLM and one-api lose on redeploys:
//! - Objects are matched by name (providers by name, models by name within their provider, keys
//!   by name), never by id, so one file serves every installation.
//! - Applying computes a [`Plan`] first, against the registry as it is; nothing is written until
//!   every secret reference resolves and every name is known, so a bad file changes nothing.
//!   Applying the same file twice makes no change the second time.
//! - Objects the file does not name are left alone (the file adds and updates; deleting stays a
//!   deliberate act in the API or the UI).
//! - Secrets are given by reference: `env:NAME` (an environment variable) or `file:PATH` / a
//!   path (the file's contents, trimmed), never in the file itself, which ends up in version
//!   control. An empty `api_key` is allowed for upstreams that take none.
//! - An `enabled = true` in the file is the operator's intent: a provider the health checks
//!   disabled is not forced back on (they enable it when it recovers).
//! - Export writes the same shape back with every secret as an `env:` reference to set.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::budgets::BudgetPeriod;
use crate::error::{Error, Result};
use crate::records::{
    ClientKey, GroupPatch, KeyPatch, Model, ModelKind, ModelPatch, NewGroup, NewKey, NewModel,
    NewProvider, Provider, ProviderKind, ProviderOptions, ProviderPatch,
};
use crate::registry::Registry;

/// The declarative part of a configuration file: `[[providers]]` (each with `[[providers.models]]`)
/// and `[[keys]]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredConfig {
    /// Providers and their models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<DeclaredProvider>,
    /// Model groups: a name served by an ordered list of models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<DeclaredGroup>,
    /// Client keys (scopes, limits, budgets; their secrets are generated, never declared).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<DeclaredKey>,
}

/// A model group in the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredGroup {
    /// The client-facing name.
    pub name: String,
    /// The models tried in turn.
    pub models: Vec<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A provider in the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredProvider {
    /// Unique name: what the file and the registry are matched by.
    pub name: String,
    /// Wire format (`openai` when absent).
    #[serde(default)]
    pub kind: ProviderKind,
    /// Upstream URL.
    pub base_url: String,
    /// A reference to the upstream key: `env:NAME`, `file:PATH` or a path; empty for none.
    #[serde(default)]
    pub api_key: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Routable (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Tuning, as in the API. Header values may be references too.
    #[serde(default, skip_serializing_if = "is_default_options")]
    pub options: ProviderOptions,
    /// Models it serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<DeclaredModel>,
}

/// A model in the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredModel {
    /// Client-facing name, unique within its provider.
    pub name: String,
    /// The name sent upstream, if different.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_name: Option<String>,
    /// Chat (default) or embedding.
    #[serde(default, skip_serializing_if = "is_chat")]
    pub kind: ModelKind,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// USD per million prompt tokens (absent: the bundled catalog's price, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_price: Option<f64>,
    /// USD per million completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_price: Option<f64>,
    /// USD per million cache-read prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_price: Option<f64>,
    /// USD per million cache-write prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_price: Option<f64>,
    /// Completion tokens asked for when a request sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_max_tokens: Option<u32>,
}

/// A client key in the file: its scope and limits. A key the registry lacks is created and its
/// secret shown once in the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredKey {
    /// Unique name: what the file and the registry are matched by.
    pub name: String,
    /// Provider scope by provider name; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<String>,
    /// Model scope; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u32>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Hard budget in USD per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// `daily`, `weekly`, `monthly` (default) or `total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_period: Option<BudgetPeriod>,
    /// Soft alert threshold in USD per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_budget_usd: Option<f64>,
    /// Usable (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

fn is_default_options(o: &ProviderOptions) -> bool {
    *o == ProviderOptions::default()
}

fn is_chat(k: &ModelKind) -> bool {
    *k == ModelKind::Chat
}

impl DeclaredConfig {
    /// Parses the declarative part of a TOML file, ignoring its other top-level keys (the
    /// server's settings share the file).
    pub fn from_toml(text: &str) -> Result<DeclaredConfig> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| Error::invalid(format!("not valid TOML: {e}")))?;
        let mut part = toml::Table::new();
        for k in ["providers", "groups", "keys"] {
            if let Some(v) = table.remove(k) {
                part.insert(k.to_owned(), v);
            }
        }
        part.try_into()
            .map_err(|e| Error::invalid(format!("invalid configuration: {e}")))
    }

    /// True when the file declares nothing.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty() && self.groups.is_empty() && self.keys.is_empty()
    }

    /// TOML text of this configuration.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Internal(format!("cannot write TOML: {e}")))
    }
}

/// Resolves a secret reference: `env:NAME`, `file:PATH` or a path (`/`, `./`, `../`); empty
/// stays empty. Anything else is refused, so a key never sits in the file itself.
pub fn resolve_secret(what: &str, reference: &str) -> Result<String> {
    let r = reference.trim();
    if r.is_empty() {
        return Ok(String::new());
    }
    if let Some(name) = r.strip_prefix("env:") {
        return std::env::var(name).map_err(|_| {
            Error::invalid(format!(
                "{what}: the environment variable {name} is not set"
            ))
        });
    }
    let path = r.strip_prefix("file:").or_else(|| {
        (r.starts_with('/') || r.starts_with("./") || r.starts_with("../")).then_some(r)
    });
    match path {
        Some(p) => std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .map_err(|e| Error::invalid(format!("{what}: cannot read {p}: {e}"))),
        None => Err(Error::invalid(format!(
            "{what} must be a reference (env:NAME, file:PATH or a path), not the secret itself: \
             the file ends up in version control"
        ))),
    }
}

/// Header values may be references; others (`anthropic-beta: ...`) are taken as written.
fn resolve_header(what: &str, value: &str) -> Result<String> {
    let v = value.trim();
    if v.starts_with("env:") || v.starts_with("file:") {
        resolve_secret(what, v)
    } else {
        Ok(value.to_owned())
    }
}

/// What one step of a plan does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A new object.
    Created,
    /// Fields of an existing object changed.
    Updated,
}

/// One change, for the report: what object, and which fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Created or updated.
    pub change: ChangeKind,
    /// `provider`, `model` or `key`.
    pub object: &'static str,
    /// Its name (`provider/model` for a model).
    pub name: String,
    /// The fields that changed (empty for a creation). Secret fields are named, never shown.
    pub fields: Vec<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.change {
            ChangeKind::Created => write!(f, "+ {} {}", self.object, self.name),
            ChangeKind::Updated => write!(
                f,
                "~ {} {}: {}",
                self.object,
                self.name,
                self.fields.join(", ")
            ),
        }
    }
}

enum Step {
    CreateProvider(Box<NewProvider>),
    UpdateProvider(i64, Box<ProviderPatch>),
    /// A model of a provider the plan creates: its id is known once that step ran.
    CreateModel(String, Box<NewModel>),
    UpdateModel(i64, Box<ModelPatch>),
    CreateGroup(NewGroup),
    UpdateGroup(i64, GroupPatch),
    CreateKey(Box<DeclaredKey>),
    /// With the provider scope by name, when it changes (a provider the plan creates has no id
    /// before it runs).
    UpdateKey(i64, Box<KeyPatch>, Option<Vec<String>>),
}

/// The changes a file makes to the registry, computed before any is made.
pub struct Plan {
    steps: Vec<(Change, Step)>,
    /// What the file declares, marked once it is applied.
    marks: crate::config_marks::ConfigMarks,
}

/// What applying did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    /// Every change, in the order made.
    pub changes: Vec<Change>,
    /// Keys created, with their secrets (shown once).
    pub created_keys: Vec<(String, String)>,
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return writeln!(f, "no changes");
        }
        for c in &self.changes {
            writeln!(f, "{c}")?;
        }
        for (name, secret) in &self.created_keys {
            writeln!(f, "key {name}: {secret} (shown once)")?;
        }
        Ok(())
    }
}

impl Plan {
    /// The changes, in order.
    pub fn changes(&self) -> Vec<Change> {
        self.steps.iter().map(|(c, _)| c.clone()).collect()
    }

    /// Makes the changes. A failure part way leaves the earlier changes made; applying the
    /// file again finishes the job.
    pub fn apply(self, registry: &Registry) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        for (change, step) in self.steps {
            match step {
                Step::CreateProvider(p) => {
                    registry.create_provider(*p)?;
                }
                Step::UpdateProvider(id, p) => {
                    registry.update_provider(id, *p)?;
                }
                Step::CreateModel(provider, m) => {
                    let id = provider_id(registry, &provider)?;
                    registry.create_model(id, *m)?;
                }
                Step::UpdateModel(id, m) => {
                    registry.update_model(id, *m)?;
                }
                Step::CreateGroup(g) => {
                    registry.create_group(g)?;
                }
                Step::UpdateGroup(id, g) => {
                    registry.update_group(id, g)?;
                }
                Step::CreateKey(k) => {
                    let provider_ids = k
                        .providers
                        .iter()
                        .map(|p| provider_id(registry, p))
                        .collect::<Result<Vec<_>>>()?;
                    let created = registry.create_key(NewKey {
                        name: k.name.clone(),
                        provider_ids,
                        models: k.models.clone(),
                        expires_at: None,
                        rpm: k.rpm,
                        tpm: k.tpm,
                        max_concurrent: k.max_concurrent,
                        budget_usd: k.budget_usd,
                        budget_period: k.budget_period,
                        soft_budget_usd: k.soft_budget_usd,
                        enabled: k.enabled,
                        // Not part of the file's schema: set per key through the API.
                        record_bodies: None,
                    })?;
                    report.created_keys.push((k.name.clone(), created.key));
                }
                Step::UpdateKey(id, mut p, scope) => {
                    if let Some(names) = scope {
                        p.provider_ids = Some(
                            names
                                .iter()
                                .map(|n| provider_id(registry, n))
                                .collect::<Result<Vec<_>>>()?,
                        );
                    }
                    registry.update_key(id, *p)?;
                }
            }
            report.changes.push(change);
        }
        // After the changes: a file that failed part way marks nothing new.
        crate::config_marks::save(
            registry.store().as_ref(),
            self.marks,
            crate::time::now_ms() / 1000,
        )?;
        Ok(report)
    }
}

fn provider_id(registry: &Registry, name: &str) -> Result<i64> {
    registry
        .providers()?
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| p.id)
        .ok_or_else(|| Error::NotFound {
            what: format!("provider '{name}'"),
        })
}

/// Computes what applying `file` would change.
pub fn plan(registry: &Registry, file: &DeclaredConfig) -> Result<Plan> {
    check_names(file)?;
    let providers = registry.providers()?;
    let mut steps = Vec::new();
    for d in &file.providers {
        let what = format!("provider '{}' api_key", d.name);
        let api_key = resolve_secret(&what, &d.api_key)?;
        let mut options = d.options.clone();
        if let Some(h) = &mut options.headers {
            for (name, v) in h.iter_mut() {
                *v = resolve_header(&format!("provider '{}' header {name}", d.name), v)?;
            }
        }
        match providers.iter().find(|p| p.name == d.name) {
            None => {
                steps.push((
                    created("provider", &d.name),
                    Step::CreateProvider(Box::new(NewProvider {
                        name: d.name.clone(),
                        kind: d.kind,
                        base_url: d.base_url.clone(),
                        api_key,
                        description: d.description.clone(),
                        personalized_key: None,
                        enabled: d.enabled,
                        options,
                    })),
                ));
                for m in &d.models {
                    steps.push((
                        created("model", &format!("{}/{}", d.name, m.name)),
                        Step::CreateModel(d.name.clone(), Box::new(new_model(m))),
                    ));
                }
            }
            Some(p) => {
                if let Some(step) = provider_patch(registry, p, d, api_key, options)? {
                    steps.push(step);
                }
                let models = registry.models(Some(p.id))?;
                for m in &d.models {
                    match models.iter().find(|x| x.name == m.name) {
                        None => steps.push((
                            created("model", &format!("{}/{}", d.name, m.name)),
                            Step::CreateModel(d.name.clone(), Box::new(new_model(m))),
                        )),
                        Some(have) => {
                            if let Some(step) = model_patch(&d.name, have, m) {
                                steps.push(step);
                            }
                        }
                    }
                }
            }
        }
    }
    let groups = registry.groups()?;
    for g in &file.groups {
        match groups.iter().find(|x| x.name == g.name) {
            None => steps.push((
                created("group", &g.name),
                Step::CreateGroup(NewGroup {
                    name: g.name.clone(),
                    models: g.models.clone(),
                    description: g.description.clone(),
                }),
            )),
            Some(have) => {
                let mut fields = Vec::new();
                let mut patch = GroupPatch::default();
                if have.models != g.models {
                    patch.models = Some(g.models.clone());
                    fields.push("models".to_owned());
                }
                if have.description != g.description {
                    patch.description = Some(g.description.clone());
                    fields.push("description".to_owned());
                }
                if !fields.is_empty() {
                    steps.push((
                        updated("group", &g.name, fields),
                        Step::UpdateGroup(have.id, patch),
                    ));
                }
            }
        }
    }
    let keys = registry.keys()?;
    for k in &file.keys {
        // Scope names must exist now or be created by this file.
        for p in &k.providers {
            if !providers.iter().any(|x| &x.name == p)
                && !file.providers.iter().any(|x| &x.name == p)
            {
                return Err(Error::invalid(format!(
                    "key '{}': no provider '{p}' in the registry or the file",
                    k.name
                )));
            }
        }
        match keys.iter().find(|x| x.name == k.name) {
            None => steps.push((
                created("key", &k.name),
                Step::CreateKey(Box::new(k.clone())),
            )),
            Some(have) => {
                if let Some(step) = key_patch(&providers, have, k) {
                    steps.push(step);
                }
            }
        }
    }
    let mut marks = crate::config_marks::ConfigMarks {
        providers: file.providers.iter().map(|p| p.name.clone()).collect(),
        models: file
            .providers
            .iter()
            .flat_map(|p| {
                p.models.iter().map(|m| crate::config_marks::ManagedModel {
                    provider: p.name.clone(),
                    name: m.name.clone(),
                })
            })
            .collect(),
        groups: file.groups.iter().map(|g| g.name.clone()).collect(),
        keys: file.keys.iter().map(|k| k.name.clone()).collect(),
        applied_at: None,
    };
    marks.providers.sort();
    marks.models.sort();
    marks.groups.sort();
    marks.keys.sort();
    Ok(Plan { steps, marks })
}

fn check_names(file: &DeclaredConfig) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for p in &file.providers {
        if !seen.insert(p.name.as_str()) {
            return Err(Error::invalid(format!(
                "provider '{}' is declared twice",
                p.name
            )));
        }
        let mut models = std::collections::BTreeSet::new();
        for m in &p.models {
            if !models.insert(m.name.as_str()) {
                return Err(Error::invalid(format!(
                    "model '{}' is declared twice under provider '{}'",
                    m.name, p.name
                )));
            }
        }
    }
    let mut groups = std::collections::BTreeSet::new();
    for g in &file.groups {
        if !groups.insert(g.name.as_str()) {
            return Err(Error::invalid(format!(
                "group '{}' is declared twice",
                g.name
            )));
        }
    }
    let mut keys = std::collections::BTreeSet::new();
    for k in &file.keys {
        if !keys.insert(k.name.as_str()) {
            return Err(Error::invalid(format!(
                "key '{}' is declared twice",
                k.name
            )));
        }
    }
    Ok(())
}

fn created(object: &'static str, name: &str) -> Change {
    Change {
        change: ChangeKind::Created,
        object,
        name: name.to_owned(),
        fields: Vec::new(),
    }
}

fn updated(object: &'static str, name: &str, fields: Vec<String>) -> Change {
    Change {
        change: ChangeKind::Updated,
        object,
        name: name.to_owned(),
        fields,
    }
}

fn provider_patch(
    registry: &Registry,
    have: &Provider,
    d: &DeclaredProvider,
    api_key: String,
    options: ProviderOptions,
) -> Result<Option<(Change, Step)>> {
    let entry = registry.provider_entry(have.id)?;
    let mut patch = ProviderPatch::default();
    let mut fields = Vec::new();
    if have.kind != d.kind {
        patch.kind = Some(d.kind);
        fields.push("kind".to_owned());
    }
    if have.base_url != d.base_url {
        patch.base_url = Some(d.base_url.clone());
        fields.push("base_url".to_owned());
    }
    if entry.api_key.expose() != api_key {
        patch.api_key = Some(api_key);
        fields.push("api_key".to_owned());
    }
    if have.description != d.description {
        patch.description = Some(d.description.clone());
        fields.push("description".to_owned());
    }
    // The operator's intent: a provider the health checks disabled counts as enabled.
    let intended = have.enabled || have.auto_disabled;
    if let Some(e) = d.enabled.filter(|e| *e != intended) {
        patch.enabled = Some(e);
        fields.push("enabled".to_owned());
    }
    let stored_headers: BTreeMap<String, String> = entry
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
        .collect();
    let headers_differ = options
        .headers
        .as_ref()
        .is_some_and(|h| *h != stored_headers);
    let mut without = options.clone();
    without.headers = None;
    let mut stored = have.options.clone();
    stored.headers = None;
    if without != stored || headers_differ {
        let mut o = options;
        if !headers_differ {
            o.headers = None;
        }
        patch.options = Some(o);
        fields.push(
            if without != stored {
                "options"
            } else {
                "headers"
            }
            .to_owned(),
        );
    }
    if fields.is_empty() {
        return Ok(None);
    }
    Ok(Some((
        updated("provider", &d.name, fields),
        Step::UpdateProvider(have.id, Box::new(patch)),
    )))
}

fn new_model(m: &DeclaredModel) -> NewModel {
    NewModel {
        name: m.name.clone(),
        upstream_name: m.upstream_name.clone(),
        description: m.description.clone(),
        input_price: m.input_price,
        output_price: m.output_price,
        cached_input_price: m.cached_input_price,
        cache_write_price: m.cache_write_price,
        default_max_tokens: m.default_max_tokens,
        kind: m.kind,
    }
}

fn model_patch(provider: &str, have: &Model, m: &DeclaredModel) -> Option<(Change, Step)> {
    let mut patch = ModelPatch::default();
    let mut fields = Vec::new();
    // A field the file leaves out is cleared: the file is the whole truth of what it names.
    macro_rules! nullable {
        ($f:ident) => {
            if have.$f != m.$f {
                patch.$f = Some(m.$f.clone());
                fields.push(stringify!($f).to_owned());
            }
        };
    }
    nullable!(upstream_name);
    nullable!(input_price);
    nullable!(output_price);
    nullable!(cached_input_price);
    nullable!(cache_write_price);
    nullable!(default_max_tokens);
    if have.description != m.description {
        patch.description = Some(m.description.clone());
        fields.push("description".to_owned());
    }
    if have.kind != m.kind {
        patch.kind = Some(m.kind);
        fields.push("kind".to_owned());
    }
    if fields.is_empty() {
        return None;
    }
    Some((
        updated("model", &format!("{provider}/{}", m.name), fields),
        Step::UpdateModel(have.id, Box::new(patch)),
    ))
}

fn key_patch(providers: &[Provider], have: &ClientKey, k: &DeclaredKey) -> Option<(Change, Step)> {
    let mut patch = KeyPatch::default();
    let mut fields = Vec::new();
    macro_rules! nullable {
        ($f:ident) => {
            if have.$f != k.$f {
                patch.$f = Some(k.$f);
                fields.push(stringify!($f).to_owned());
            }
        };
    }
    nullable!(rpm);
    nullable!(tpm);
    nullable!(max_concurrent);
    nullable!(budget_usd);
    nullable!(budget_period);
    nullable!(soft_budget_usd);
    let enabled = k.enabled.unwrap_or(true);
    if have.enabled != enabled {
        patch.enabled = Some(enabled);
        fields.push("enabled".to_owned());
    }
    let mut have_models = have.models.clone();
    have_models.sort();
    let mut want_models = k.models.clone();
    want_models.sort();
    if have_models != want_models {
        patch.models = Some(k.models.clone());
        fields.push("models".to_owned());
    }
    // A scope naming a provider this plan creates has no id yet: compare by name.
    let mut have_scope: Vec<String> = have
        .provider_ids
        .iter()
        .filter_map(|id| {
            providers
                .iter()
                .find(|p| p.id == *id)
                .map(|p| p.name.clone())
        })
        .collect();
    have_scope.sort();
    let mut want_scope = k.providers.clone();
    want_scope.sort();
    let scope = (have_scope != want_scope).then(|| {
        fields.push("providers".to_owned());
        k.providers.clone()
    });
    if fields.is_empty() {
        return None;
    }
    Some((
        updated("key", &k.name, fields),
        Step::UpdateKey(have.id, Box::new(patch), scope),
    ))
}

/// The registry as a file: every provider (its key as an `env:` reference to set, header
/// values likewise), its models with their own prices, and every key's scope and limits.
pub fn export(registry: &Registry) -> Result<DeclaredConfig> {
    let providers = registry.providers()?;
    let models = registry.models(None)?;
    let mut out = DeclaredConfig::default();
    for p in &providers {
        let var = env_name(&p.name);
        let mut options = p.options.clone();
        if let Some(h) = &mut options.headers {
            for (name, v) in h.iter_mut() {
                *v = format!("env:{var}_{}", env_name(name));
            }
        }
        out.providers.push(DeclaredProvider {
            name: p.name.clone(),
            kind: p.kind,
            base_url: p.base_url.clone(),
            api_key: format!("env:{var}_API_KEY"),
            description: p.description.clone(),
            enabled: Some(p.enabled || p.auto_disabled),
            options,
            models: models
                .iter()
                .filter(|m| m.provider_id == p.id)
                .map(|m| DeclaredModel {
                    name: m.name.clone(),
                    upstream_name: m.upstream_name.clone(),
                    kind: m.kind,
                    description: m.description.clone(),
                    input_price: m.input_price,
                    output_price: m.output_price,
                    cached_input_price: m.cached_input_price,
                    cache_write_price: m.cache_write_price,
                    default_max_tokens: m.default_max_tokens,
                })
                .collect(),
        });
    }
    for g in registry.groups()? {
        out.groups.push(DeclaredGroup {
            name: g.name,
            models: g.models,
            description: g.description,
        });
    }
    for k in registry.keys()? {
        out.keys.push(DeclaredKey {
            providers: k
                .provider_ids
                .iter()
                .filter_map(|id| {
                    providers
                        .iter()
                        .find(|p| p.id == *id)
                        .map(|p| p.name.clone())
                })
                .collect(),
            name: k.name,
            models: k.models,
            rpm: k.rpm,
            tpm: k.tpm,
            max_concurrent: k.max_concurrent,
            budget_usd: k.budget_usd,
            budget_period: k.budget_period,
            soft_budget_usd: k.soft_budget_usd,
            enabled: Some(k.enabled),
        });
    }
    Ok(out)
}

/// `my-openai` → `MY_OPENAI`.
fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_and_literals_are_refused() {
        assert_eq!(
            resolve_secret("k", "env:PATH").unwrap(),
            std::env::var("PATH").unwrap()
        );
        assert!(resolve_secret("k", "env:NEXUS_CAC_TEST_UNSET").is_err());
        let e = resolve_secret("k", "sk-literal").unwrap_err().to_string();
        assert!(e.contains("reference"), "{e}");
        assert!(!e.contains("sk-literal"), "the secret is not echoed: {e}");
        assert_eq!(resolve_secret("k", "").unwrap(), "");
        let dir = std::env::temp_dir().join(format!("nexus-cac-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("key");
        std::fs::write(&f, "sk-from-file\n").unwrap();
        assert_eq!(
            resolve_secret("k", &format!("file:{}", f.display())).unwrap(),
            "sk-from-file"
        );
        assert_eq!(
            resolve_secret("k", f.to_str().unwrap()).unwrap(),
            "sk-from-file"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_file_keeps_other_keys_out_and_refuses_unknown_fields() {
        let text = r#"
listen = "127.0.0.1:9"
[[providers]]
name = "openai"
base_url = "https://api.openai.com"
api_key = "env:OPENAI_API_KEY"
[[providers.models]]
name = "gpt-4o-mini"
"#;
        let c = DeclaredConfig::from_toml(text).unwrap();
        assert_eq!(c.providers[0].models[0].name, "gpt-4o-mini");
        assert_eq!(c.providers[0].kind, ProviderKind::Openai);
        let bad = "[[providers]]\nname = \"x\"\nbase_url = \"u\"\nbogus = 1\n";
        assert!(DeclaredConfig::from_toml(bad).is_err());
        // The export round-trips.
        let again = DeclaredConfig::from_toml(&c.to_toml().unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn env_names_are_shell_safe() {
        assert_eq!(env_name("my-openai.eu"), "MY_OPENAI_EU");
    }
}
