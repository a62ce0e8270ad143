//! Phase 1, admit: the public model exists and the caller may use it. Fails with 404
//! `model_not_found` or 403 `model_not_allowed`, and the refusal is metered like any call.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{finish, Exchange, RequestContext};
use crate::error::Result;
use crate::usage::{Meter, UsageRecord};

/// Opens the call's meter and resolves its model. A refusal has its ledger row written.
pub fn admit<'a>(
    cx: &'a RequestContext,
    model: &str,
    user: Option<&str>,
    stream: bool,
) -> Result<Exchange<'a>> {
    let meter = open_meter(cx, model, user, stream);
    match cx.resolve(model) {
        Ok(resolved) => Ok(Exchange {
            cx,
            resolved,
            stages: finish::Stages::new(),
            meter,
            headers: Vec::new(),
        }),
        Err(e) => {
            meter.close(Err(&e));
            Err(e)
        }
    }
}

/// A meter for this call, which writes its ledger row when it closes.
fn open_meter(cx: &RequestContext, model: &str, user: Option<&str>, stream: bool) -> Meter {
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
        },
        cx.services.ledger.clone(),
    )
}

/// Records a call refused before it reached the pipeline (a bad body or header) with the
/// status and error code the client was told, so it too has its ledger row.
pub fn record_refusal(cx: &RequestContext, status: u16, code: Option<&'static str>) {
    open_meter(cx, "", None, false).close_with(status, code);
}
