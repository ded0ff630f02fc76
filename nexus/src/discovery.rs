//! Model discovery on the hub: a provider's own model list, and importing the models an
//! operator picks from it into the registry.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::records::{Model, NewModel};
use crate::registry::ProviderEntry;
use crate::upstream::models::{list_call, parse_page, UpstreamModel, MAX_PAGES};

/// What an import did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    /// The models created.
    pub created: Vec<Model>,
    /// Names the provider already served (left as they were).
    pub skipped: Vec<String>,
}

impl Hub {
    /// Every model provider `provider_id` lists (all pages, up to ten thousand), each marked
    /// `added` when the provider already serves it in the registry (by name or upstream name).
    pub async fn upstream_models(&self, provider_id: i64) -> Result<Vec<UpstreamModel>> {
        let p = self.registry().provider_entry(provider_id)?;
        let mut listed = self.list_upstream(&p).await?;
        let have = self.registry().models(Some(provider_id))?;
        for m in &mut listed {
            m.added = have
                .iter()
                .any(|h| h.name == m.id || h.upstream_name.as_deref() == Some(m.id.as_str()));
        }
        Ok(listed)
    }

    pub(crate) async fn list_upstream(&self, p: &ProviderEntry) -> Result<Vec<UpstreamModel>> {
        let limit = self.0.opts.connect_timeout + std::time::Duration::from_secs(20);
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let call = list_call(p, page.as_deref())?;
            let body = self
                .0
                .upstream
                .get(p, &call.url, call.headers, limit)
                .await?;
            let (models, next) = parse_page(p.record.kind, &body)?;
            out.extend(models);
            match next {
                Some(n) if Some(&n) != page.as_ref() => page = Some(n),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    }

    /// Adds the models named in `names` from the provider's own list (with the kind the list
    /// gives); names the provider already serves are skipped, names not in its list are a 400.
    pub async fn import_models(&self, provider_id: i64, names: &[String]) -> Result<ImportReport> {
        if names.is_empty() {
            return Err(Error::invalid_param(
                "models",
                "name at least one model to import",
            ));
        }
        let listed = self.upstream_models(provider_id).await?;
        let have: Vec<String> = self
            .registry()
            .models(Some(provider_id))?
            .into_iter()
            .map(|m| m.name)
            .collect();
        let mut picked = Vec::new();
        for n in names {
            let m = listed.iter().find(|m| &m.id == n).ok_or_else(|| {
                Error::invalid_param("models", format!("the provider does not list '{n}'"))
            })?;
            picked.push(m.clone());
        }
        let hub = self.clone();
        let run = move || -> Result<ImportReport> {
            let mut report = ImportReport {
                created: Vec::new(),
                skipped: Vec::new(),
            };
            for m in picked {
                if have.contains(&m.id) || report.created.iter().any(|c| c.name == m.id) {
                    report.skipped.push(m.id);
                    continue;
                }
                report.created.push(hub.registry().create_model(
                    provider_id,
                    NewModel {
                        description: m.display_name.clone().unwrap_or_default(),
                        name: m.id,
                        kind: m.kind,
                        ..NewModel::default()
                    },
                )?);
            }
            Ok(report)
        };
        // The registry writes to the database: off the async worker when there is a runtime.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt
                .spawn_blocking(run)
                .await
                .map_err(|e| Error::Internal(format!("import task failed: {e}")))?,
            Err(_) => run(),
        }
    }
}
