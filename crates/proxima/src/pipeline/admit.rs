//! Phase 1, admit: the public model exists and the caller may use it. Fails with 404
//! `model_not_found` or 403 `model_not_allowed`, and the refusal is metered like any call.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{finish, Exchange, RequestContext};
use crate::error::Result;
use crate::telemetry::Operation;
use crate::usage::{Meter, UsageRecord};

/// Opens the call's meter, with the gateway's own ledger `tags` for the call (see
/// [`super::Directives::tags`]), and resolves its model. A refusal has its ledger row written.
pub fn admit<'a>(
    cx: &'a RequestContext,
    model: &str,
    user: Option<&str>,
    stream: bool,
    operation: Operation,
    tags: crate::usage::Tags,
) -> Result<Exchange<'a>> {
    let mut meter = open_meter(cx, model, user, stream, operation);
    if let Some(record) = meter.record() {
        record.add_tags(tags);
    }
    match cx.resolve(model) {
        Ok(resolved) => {
            if let Some(record) = meter.record() {
                record.telemetry.series = resolved.model.metrics.clone();
            }
            Ok(Exchange {
                cx,
                resolved,
                stages: finish::Stages::new(),
                meter,
                headers: Vec::new(),
            })
        }
        Err(e) => {
            // A model that exists but is not allowed is counted under its name; an unknown
            // name, being the caller's text, is not.
            if let (Some(resolved), Some(record)) =
                (cx.gateway.router.resolve(model), meter.record())
            {
                record.telemetry.series = resolved.model.metrics.clone();
            }
            meter.close(Err(&e));
            Err(e)
        }
    }
}

/// A meter for this call, which writes its ledger row when it closes.
fn open_meter(
    cx: &RequestContext,
    model: &str,
    user: Option<&str>,
    stream: bool,
    operation: Operation,
) -> Meter {
    cx.metered.store(true, Ordering::Relaxed);
    let (user, metadata) = crate::pii::for_ledger(cx, user);
    Meter::new(
        UsageRecord {
            request_id: cx.id.clone(),
            at: cx.at,
            caller: cx.caller.clone(),
            user,
            public_model: Arc::from(model),
            provider: None,
            upstream_model: None,
            price: None,
            attempts: 0,
            usage: None,
            stream,
            started: cx.started,
            first_token: None,
            metadata,
            cache: None,
            saved: None,
            telemetry: cx.services.telemetry.call(operation, cx.trace),
        },
        cx.services.ledger.clone(),
    )
}

/// Records a call refused before it reached the pipeline (a bad body or header) with the
/// status and error code the client was told, so it too has its ledger row.
pub fn record_refusal(
    cx: &RequestContext,
    operation: Operation,
    status: u16,
    code: Option<&'static str>,
) {
    open_meter(cx, "", None, false, operation).close_with(status, code);
}
