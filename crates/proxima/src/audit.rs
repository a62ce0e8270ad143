//! The audit log: every admin action — keys, teams, config reloads, from the admin API, the
//! command line or a signal — kept in the database with who made it, what it was, when, on
//! what, with which values, under which request id, and how it ended; never a secret. Read
//! at `GET /admin/audit`.
//!
//! An action is recorded with one call, [`record`], which wraps the change: it writes the
//! row before the change is made (`pending`), so that no change happens unrecorded — if that
//! write fails, the change is refused — and completes it after with `ok` or `error` (the
//! status and code the caller got: refusals are worth seeing too). A row left `pending` means
//! the gateway stopped or the database failed while the change was being made. Admin actions
//! are rare: the two writes are on the request path, which keeps the order exact.
//!
//! A new admin action (the prompts API, say) plugs in the same way:
//!
//! ```ignore
//! audit::record(&store, &actor, "prompt.create", Target::Known(&name), audit::detail(&body),
//!     async { store.create_prompt(&prompt).await })
//! .await
//! ```

use std::future::Future;

use serde_json::Value;

use crate::clock;
use crate::error::Result;
use crate::policy::Caller;
use crate::store::{AuditEntry, Store};

/// Who made an admin action, and in which request.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `master`, an admin key's id, `cli` or `system`.
    pub id: String,
    /// The key's name, the command line's user, or what triggered a `system` action.
    pub name: String,
    pub request_id: Option<String>,
}

impl Actor {
    /// The caller of an admin API request.
    pub fn caller(caller: &Caller, request_id: &str) -> Actor {
        Actor {
            id: caller.id.to_string(),
            name: caller.name.to_string(),
            request_id: Some(request_id.to_owned()),
        }
    }

    /// The `proxima` command line, named after the user running it when the system says.
    pub fn cli() -> Actor {
        Actor {
            id: "cli".into(),
            name: std::env::var("USER").unwrap_or_else(|_| "cli".into()),
            request_id: None,
        }
    }

    /// The gateway itself, acting on `trigger` (`SIGHUP`, say).
    pub fn system(trigger: &str) -> Actor {
        Actor {
            id: "system".into(),
            name: trigger.to_owned(),
            request_id: None,
        }
    }
}

/// What an action is on.
pub enum Target<'a, T> {
    /// Known before the change (a key id, a team name).
    Known(&'a str),
    /// Made by the change (a new key's id), read from its result.
    Made(fn(&T) -> String),
    None,
}

/// Records `action` by `actor` on `target` with `detail` (see [`detail`]), and makes the change
/// only once that record is written; then records how it ended and returns its result.
pub async fn record<T>(
    store: &Store,
    actor: &Actor,
    action: &'static str,
    target: Target<'_, T>,
    detail: Value,
    change: impl Future<Output = Result<T>>,
) -> Result<T> {
    let at = clock::now_ms();
    let entry = AuditEntry {
        id: AuditEntry::new_id(at),
        at,
        actor_id: actor.id.clone(),
        actor_name: actor.name.clone(),
        action: action.to_owned(),
        target: match target {
            Target::Known(target) => Some(target.to_owned()),
            Target::Made(_) | Target::None => None,
        },
        detail,
        request_id: actor.request_id.clone(),
        outcome: "pending".into(),
        status: None,
        error_code: None,
    };
    store.insert_audit(&entry).await?;
    let result = change.await;
    let finished = match &result {
        Ok(value) => {
            let made = match target {
                Target::Made(read) => Some(read(value)),
                Target::Known(_) | Target::None => None,
            };
            store
                .finish_audit(&entry.id, made.as_deref(), "ok", None, None)
                .await
        }
        Err(e) => {
            let status = i64::from(e.kind.status().as_u16());
            store
                .finish_audit(&entry.id, None, "error", Some(status), Some(e.kind.code()))
                .await
        }
    };
    if let Err(e) = finished {
        tracing::warn!(audit_id = %entry.id, action, error = %e, "could not record how an admin action ended: its audit entry stays pending");
    }
    result
}

/// Field names whose values are never written to the audit log, at any depth.
const SECRET_FIELDS: &[&str] = &[
    "key",
    "secret",
    "hash",
    "password",
    "token",
    "authorization",
];

/// An action's detail from what was asked: the fields and their values, with the value of any
/// field that could hold a secret (named `key`, `secret`, `hash`, `password`, `token`,
/// `authorization`, or ending in `_key`, `_secret`, `_token`, `_password`) replaced by
/// `"[redacted]"`.
pub fn detail(asked: &Value) -> Value {
    match asked {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, value)| {
                    let value = if is_secret_field(name) {
                        Value::from("[redacted]")
                    } else {
                        detail(value)
                    };
                    (name.clone(), value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(detail).collect()),
        other => other.clone(),
    }
}

fn is_secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_FIELDS.iter().any(|secret| {
        name == *secret
            || name
                .strip_suffix(secret)
                .is_some_and(|head| head.ends_with('_') || head.ends_with('-'))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::{Error, ErrorKind};
    use crate::store::AuditFilter;

    #[test]
    fn details_never_carry_secret_fields() {
        let asked = json!({
            "name": "ci", "rpm": 60, "max_tokens": 100, "tpm": 1000, "models": ["fast"],
            "key": "sk-px-secret", "metadata": {"api_key": "abc", "Access-Token": "t", "owner": "ops"},
            "items": [{"password": "p", "ok": 1}],
        });
        assert_eq!(
            detail(&asked),
            json!({
                "name": "ci", "rpm": 60, "max_tokens": 100, "tpm": 1000, "models": ["fast"],
                "key": "[redacted]",
                "metadata": {"api_key": "[redacted]", "Access-Token": "[redacted]", "owner": "ops"},
                "items": [{"password": "[redacted]", "ok": 1}],
            })
        );
    }

    #[tokio::test]
    async fn an_action_is_written_before_the_change_and_completed_after() {
        let store = crate::store::testing::sqlite().await;
        let actor = Actor {
            id: "key_ops".into(),
            name: "ops".into(),
            request_id: Some("req-1".into()),
        };
        // While the change runs, its entry is already there, pending.
        let made = record(
            &store,
            &actor,
            "key.create",
            Target::Made(|id: &String| id.clone()),
            json!({"name": "ci"}),
            async {
                let page = store.audit_log(&AuditFilter::default()).await?;
                assert_eq!(page.data[0].outcome, "pending");
                assert_eq!(page.data[0].target, None);
                Ok("key_new".to_owned())
            },
        )
        .await
        .unwrap();
        assert_eq!(made, "key_new");
        let refused = record(
            &store,
            &actor,
            "team.delete",
            Target::<()>::Known("platform"),
            json!({}),
            async {
                Err(Error::new(
                    ErrorKind::NotFound,
                    "there is no team `platform`",
                ))
            },
        )
        .await
        .unwrap_err();
        assert_eq!(refused.kind, ErrorKind::NotFound);

        let page = store.audit_log(&AuditFilter::default()).await.unwrap();
        let (deleted, created) = (&page.data[0], &page.data[1]);
        assert_eq!(
            (
                created.action.as_str(),
                created.target.as_deref(),
                created.outcome.as_str()
            ),
            ("key.create", Some("key_new"), "ok")
        );
        assert_eq!(
            (created.actor_id.as_str(), created.actor_name.as_str()),
            ("key_ops", "ops")
        );
        assert_eq!(created.request_id.as_deref(), Some("req-1"));
        assert_eq!(created.detail, json!({"name": "ci"}));
        assert_eq!(
            (
                deleted.target.as_deref(),
                deleted.outcome.as_str(),
                deleted.status,
                deleted.error_code.as_deref()
            ),
            (Some("platform"), "error", Some(404), Some("not_found"))
        );

        // No entry, no change: with the database gone the change never runs.
        store.close().await;
        let ran = std::sync::atomic::AtomicBool::new(false);
        let result = record(
            &store,
            &actor,
            "key.revoke",
            Target::<()>::Known("key_a"),
            json!({}),
            async {
                ran.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            },
        )
        .await;
        assert!(result.is_err());
        assert!(!ran.load(std::sync::atomic::Ordering::Relaxed));
    }
}
