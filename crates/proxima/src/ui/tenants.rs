//! Choosing whose data a page shows. Conversations, vector stores and files belong to a tenant
//! — a team (`team:NAME`), or a key without a team (`key:ID`), as
//! [`crate::pipeline::RequestContext::tenant`] names them — and the pages that browse them
//! show one tenant at a time.

use std::sync::Arc;

use maud::{html, Markup};

use crate::error::Result;
use crate::policy::Caller;
use crate::state::AppState;

/// A tenant that can own data, and how people read its name.
pub struct Tenant {
    pub id: String,
    pub label: String,
}

/// Every tenant, and the one a page shows: the one `asked` for, else the first.
pub async fn choose(
    state: &AppState,
    asked: &Option<String>,
) -> Result<(Vec<Tenant>, Option<String>)> {
    let tenants = all(state).await?;
    let chosen = super::filled(asked)
        .map(str::to_owned)
        .or_else(|| tenants.first().map(|t| t.id.clone()));
    Ok((tenants, chosen))
}

/// Every team, and every key without a team, in that order: from the database and the
/// config's static keys.
async fn all(state: &AppState) -> Result<Vec<Tenant>> {
    let store = &state.services().store;
    let gateway = state.gateway();
    let mut teams: Vec<String> = store
        .list_teams()
        .await?
        .into_iter()
        .filter(|t| t.deleted_at.is_none())
        .map(|t| t.name)
        .chain(gateway.config.keys.values().filter_map(|k| k.team.clone()))
        .collect();
    teams.sort();
    teams.dedup();
    let keys = store.list_keys(false).await?;
    let static_keys = gateway
        .config
        .keys
        .iter()
        .filter(|(_, k)| k.team.is_none())
        .map(|(name, _)| Tenant {
            id: format!("key:{name}"),
            label: format!("key {name} (config)"),
        });
    Ok(teams
        .into_iter()
        .map(|name| Tenant {
            id: format!("team:{name}"),
            label: format!("team {name}"),
        })
        .chain(keys.iter().filter(|k| k.team.is_none()).map(|k| Tenant {
            id: format!("key:{}", k.id),
            label: format!("key {} ({})", k.name, k.prefix),
        }))
        .chain(static_keys)
        .collect())
}

/// A form choosing a tenant, sent to `action` as `tenant`.
pub fn picker(action: &str, tenants: &[Tenant], current: Option<&str>) -> Markup {
    html! {
        form.filters method="get" action=(action) {
            label { "Team or key "
                select name="tenant" {
                    @for tenant in tenants {
                        option value=(tenant.id) selected[current == Some(tenant.id.as_str())] { (tenant.label) }
                    }
                }
            }
            button type="submit" { "Show" }
        }
    }
}

/// A caller whose tenant is `tenant`, to act on its data as the signed-in `admin`: the admin
/// in the team; a virtual key itself (whose limits then apply); or, for a static key, the
/// admin under that key's name.
pub async fn caller_for(state: &AppState, admin: &Caller, tenant: &str) -> Result<Arc<Caller>> {
    let as_admin = |id: Arc<str>, team: Option<Arc<str>>| Caller {
        id,
        name: admin.name.clone(),
        team,
        admin: true,
        ..Caller::default()
    };
    if let Some(team) = tenant.strip_prefix("team:") {
        return Ok(Arc::new(as_admin(admin.id.clone(), Some(Arc::from(team)))));
    }
    let id = tenant.strip_prefix("key:").unwrap_or(tenant);
    Ok(Arc::new(match state.services().store.get_key(id).await? {
        Some(record) => Caller::from_key(&record),
        None => as_admin(Arc::from(id), None),
    }))
}
