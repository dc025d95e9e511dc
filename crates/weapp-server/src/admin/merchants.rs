//! WeChat Pay merchants in the admin API (`/v1/admin/merchants…`): merchants added at runtime
//! (stored in `pay_merchants`, the private key and the APIv3 key sealed with the data key and
//! bound to the mchid, its apps and its stored settings; every instance serves a change within
//! `registry_poll_ms`), the file's `[[merchants]]` shown read-only (`source: "config"`), and
//! each merchant's daily reconciliation reports (listed, shown, run on demand).
//!
//! Before anything is stored, the merchant is built exactly as a file's merchant is: the key
//! parses, the APIv3 key is 32 bytes, the SDK builds the client. No answer and no log line
//! carries the private key or the APIv3 key: answers say `has_private_key`, `has_apiv3_key`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::auth::Admin;
use super::common::{audit, audit_record, check_target, host_of, invalid, logged};
use super::service::AdminApi;
use crate::config::redact_url;
use crate::http::{AppError, ErrorBody, JsonBody};
use crate::payments::merchants::{merchant_config, MerchantSecrets, MerchantSettings};
use crate::payments::reconcile::{self, ReconcileError};
use crate::payments::MerchantSource;
use crate::shared::now_ms;
use crate::store::{MerchantWrite, PayMerchantRecord, ReconciliationRecord};

/// `POST /v1/admin/merchants`: the configuration's names.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMerchant {
    /// The merchant id (商户号), 1–32 digits.
    #[schema(min_length = 1, max_length = 32)]
    pub mchid: String,
    /// The mini programs whose orders it takes (an appid is served by one merchant).
    pub appids: Vec<String>,
    /// The merchant API certificate's serial number.
    #[schema(min_length = 1, max_length = 64)]
    pub serial_no: String,
    /// The merchant private key (`apiclient_key.pem`), PEM. Sealed; never shown again.
    pub private_key: String,
    /// The APIv3 key, 32 characters. Sealed; never shown again.
    #[schema(min_length = 32, max_length = 32)]
    pub apiv3_key: String,
    /// The WeChat Pay public key's id (`PUB_KEY_ID_…`), with `public_key`.
    #[serde(default)]
    pub public_key_id: Option<String>,
    /// The WeChat Pay public key (PEM).
    #[serde(default)]
    pub public_key: Option<String>,
    /// Verify with platform certificates (downloaded and refreshed) too.
    #[serde(default)]
    pub platform_certificates: Option<bool>,
    /// WeChat Pay's API host (default) or a weapp-sim URL.
    #[serde(default)]
    #[schema(max_length = 2048)]
    pub api_base: Option<String>,
    /// Where WeChat notifies this merchant: this service's `…/v1/pay/{mchid}/notify`.
    #[schema(max_length = 256)]
    pub notify_url: String,
}

/// `PUT /v1/admin/merchants/{mchid}`: the fields given replace the stored ones; omitted ones
/// (the keys among them) are kept. Moving `api_base` to another host needs `private_key` in
/// the same request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMerchant {
    /// The merchant id again (optional; must be the path's).
    #[serde(default)]
    pub mchid: Option<String>,
    /// The apps.
    #[serde(default)]
    pub appids: Option<Vec<String>>,
    /// A new certificate serial (with a new private key, usually).
    #[serde(default)]
    pub serial_no: Option<String>,
    /// A new private key (rotation).
    #[serde(default)]
    pub private_key: Option<String>,
    /// A new APIv3 key.
    #[serde(default)]
    pub apiv3_key: Option<String>,
    /// The WeChat Pay public key's id.
    #[serde(default)]
    pub public_key_id: Option<String>,
    /// The WeChat Pay public key (PEM).
    #[serde(default)]
    pub public_key: Option<String>,
    /// Platform certificates on or off.
    #[serde(default)]
    pub platform_certificates: Option<bool>,
    /// The API host.
    #[serde(default)]
    pub api_base: Option<String>,
    /// The notify URL.
    #[serde(default)]
    pub notify_url: Option<String>,
}

/// A merchant as the admin API shows it: never a key.
#[derive(Serialize, ToSchema)]
pub struct MerchantView {
    /// The merchant id.
    pub mchid: String,
    /// Its apps.
    pub appids: Vec<String>,
    /// The merchant certificate's serial.
    pub serial_no: String,
    /// The WeChat Pay public key's id.
    pub public_key_id: Option<String>,
    /// Whether platform certificates are used.
    pub platform_certificates: bool,
    /// The API host (credentials redacted).
    pub api_base: String,
    /// The notify URL (credentials redacted).
    pub notify_url: String,
    /// `config` (the file's: change it there) or `admin`.
    pub source: String,
    /// A private key is held (sealed; never shown).
    pub has_private_key: bool,
    /// An APIv3 key is held (sealed; never shown).
    pub has_apiv3_key: bool,
    /// Whether this instance serves it now.
    pub served: bool,
    /// Unix ms (0 for the file's).
    pub created_at: i64,
    /// Unix ms (0 for the file's).
    pub updated_at: i64,
}

/// Every merchant.
#[derive(Serialize, ToSchema)]
pub struct MerchantList {
    /// By mchid.
    pub merchants: Vec<MerchantView>,
}

/// A reconciliation report's summary.
#[derive(Serialize, ToSchema)]
pub struct ReportSummary {
    /// The merchant.
    pub mchid: String,
    /// The Beijing day (`yyyy-MM-dd`).
    pub bill_date: String,
    /// `clean` or `discrepancies`.
    pub status: String,
    /// Lines of the bill.
    pub bill_rows: i64,
    /// Items that differ.
    pub discrepancies: i64,
    /// Unix ms.
    pub created_at: i64,
}

/// A merchant's reports, newest day first (at most 100).
#[derive(Serialize, ToSchema)]
pub struct ReportList {
    /// The reports.
    pub reports: Vec<ReportSummary>,
}

/// A report with its items: `{kind, out_trade_no, out_refund_no?, appid, here, there}`;
/// `kind` is `missing_here`, `missing_there`, `amount_differs` or `state_differs`.
#[derive(Serialize, ToSchema)]
pub struct ReportView {
    /// The summary.
    #[serde(flatten)]
    pub summary: ReportSummary,
    /// What differs.
    #[schema(value_type = Vec<Object>)]
    pub items: Value,
}

/// `POST /v1/admin/merchants/{mchid}/reconciliations`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunReconciliation {
    /// The Beijing day to reconcile (`yyyy-MM-dd`, before today).
    pub bill_date: String,
}

fn summary(r: &ReconciliationRecord) -> ReportSummary {
    ReportSummary {
        mchid: r.mchid.clone(),
        bill_date: r.bill_date.clone(),
        status: r.status.clone(),
        bill_rows: r.bill_rows,
        discrepancies: r.discrepancies,
        created_at: r.created_at,
    }
}

fn is_config(state: &AdminApi, mchid: &str) -> bool {
    state.config.merchants.iter().any(|m| m.mchid == mchid)
}

fn view_of_record(state: &AdminApi, rec: &PayMerchantRecord) -> MerchantView {
    let settings: Option<MerchantSettings> = serde_json::from_str(&rec.settings).ok();
    let served = state
        .payments
        .merchant(&rec.mchid)
        .is_some_and(|m| m.source == MerchantSource::Admin);
    MerchantView {
        mchid: rec.mchid.clone(),
        appids: rec.appids.clone(),
        serial_no: settings
            .as_ref()
            .map(|s| s.serial_no.clone())
            .unwrap_or_default(),
        public_key_id: settings.as_ref().and_then(|s| s.public_key_id.clone()),
        platform_certificates: settings.as_ref().is_some_and(|s| s.platform_certificates),
        api_base: settings
            .as_ref()
            .map(|s| redact_url(&s.api_base))
            .unwrap_or_default(),
        notify_url: settings
            .as_ref()
            .map(|s| redact_url(&s.notify_url))
            .unwrap_or_default(),
        source: "admin".into(),
        has_private_key: true,
        has_apiv3_key: true,
        served,
        created_at: rec.created_at,
        updated_at: rec.updated_at,
    }
}

fn config_views(state: &AdminApi) -> Vec<MerchantView> {
    state
        .config
        .merchants
        .iter()
        .map(|m| MerchantView {
            mchid: m.mchid.clone(),
            appids: m.appids.clone(),
            serial_no: m.serial_no.clone(),
            public_key_id: m.public_key_id.clone(),
            platform_certificates: m.platform_certificates,
            api_base: redact_url(&m.api_base),
            notify_url: redact_url(&m.notify_url),
            source: "config".into(),
            has_private_key: true,
            has_apiv3_key: true,
            served: state.payments.merchant(&m.mchid).is_some(),
            created_at: 0,
            updated_at: 0,
        })
        .collect()
}

/// The API host of a new merchant: the one given, WeChat Pay's by default; in the sandbox
/// the simulator's and no other. A host other than WeChat Pay's or the sandbox's is checked
/// like any target the service sends requests to.
async fn api_base_of(state: &AdminApi, given: Option<String>) -> Result<String, AppError> {
    let base = match (&state.config.sandbox_api_base, given) {
        (Some(sim), None) => sim.clone(),
        (Some(sim), Some(b)) if b.trim_end_matches('/') == sim.trim_end_matches('/') => b,
        (Some(_), Some(_)) => return Err(super::common::sandbox_only("merchants")),
        (None, b) => b.unwrap_or_else(|| weapp::pay::PAY_BASE_URL.to_owned()),
    };
    let trimmed = base.trim_end_matches('/');
    let exempt = trimmed == weapp::pay::PAY_BASE_URL.trim_end_matches('/')
        || state
            .config
            .sandbox_api_base
            .as_deref()
            .is_some_and(|s| s.trim_end_matches('/') == trimmed);
    if !exempt {
        check_target(state, "api_base", &base).await?;
    }
    Ok(base)
}

/// Checks the merchant (builds it as the file's are built), then the apps' owners: 409 for an
/// app of another merchant this instance serves. Returns the record to store.
fn checked_record(
    state: &AdminApi,
    mchid: &str,
    appids: &[String],
    settings: &MerchantSettings,
    secrets: &MerchantSecrets,
    created_at: i64,
) -> Result<PayMerchantRecord, AppError> {
    let config = merchant_config(mchid, appids, settings, secrets);
    if let Err(e) = state.payments.build_merchant(&config) {
        return Err(AppError::bad_request("invalid_merchant", e.to_string()));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = appids.iter().find(|a| !seen.insert(a.as_str())) {
        return Err(invalid(format!("appid {dup} is listed twice")));
    }
    let served = state.payments.apps_served();
    if let Some((appid, other)) = appids
        .iter()
        .find_map(|a| served.get(a).filter(|m| *m != mchid).map(|m| (a, m)))
    {
        return Err(AppError::Conflict(format!(
            "app {appid} is served by merchant {other}: an app is served by one merchant"
        )));
    }
    // Sealed bound to the settings and apps exactly as stored: changed in the database
    // instead of here, the keys no longer open.
    let settings = serde_json::to_string(settings).expect("plain data");
    let (sealed_secrets, key_id) = state
        .payments
        .seal_merchant_secrets(mchid, appids, &settings, secrets);
    let now = now_ms();
    Ok(PayMerchantRecord {
        mchid: mchid.to_owned(),
        appids: appids.to_vec(),
        settings,
        sealed_secrets,
        key_id,
        created_at,
        updated_at: now,
    })
}

fn write_outcome(w: MerchantWrite, mchid: &str, create: bool) -> Result<(), AppError> {
    match w {
        MerchantWrite::Done => Ok(()),
        MerchantWrite::MchidConflict if create => {
            Err(AppError::Conflict(format!("merchant {mchid} exists")))
        }
        MerchantWrite::MchidConflict => Err(AppError::NotFound(format!("no merchant {mchid}"))),
        MerchantWrite::AppTaken { appid, mchid } => Err(AppError::Conflict(format!(
            "app {appid} is served by merchant {mchid}: an app is served by one merchant"
        ))),
    }
}

async fn sync(state: &AdminApi) {
    if let Err(e) = state.payments.sync_merchants().await {
        tracing::warn!(error = %e, "merchants: could not apply a change at once");
    }
}

/// Add a merchant at runtime: checked, its keys sealed, served by every instance within
/// `registry_poll_ms`.
#[utoipa::path(post, path = "/v1/admin/merchants", tag = "admin", security(("admin_key" = [])), request_body = CreateMerchant,
    responses((status = 201, body = MerchantView), (status = 400, description = "invalid settings or keys (nothing stored)", body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, description = "the mchid exists (or is the file's), or an app is another merchant's", body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create_merchant(
    State(state): State<AdminApi>,
    admin: Admin,
    JsonBody(req): JsonBody<CreateMerchant>,
) -> Result<Response, AppError> {
    if is_config(&state, &req.mchid) {
        return Err(AppError::Conflict(format!(
            "merchant {} is defined in the configuration file: change it there",
            req.mchid
        )));
    }
    let settings = MerchantSettings {
        serial_no: req.serial_no,
        public_key_id: req.public_key_id,
        public_key: req.public_key,
        platform_certificates: req.platform_certificates.unwrap_or(false),
        api_base: api_base_of(&state, req.api_base).await?,
        notify_url: req.notify_url,
    };
    let secrets = MerchantSecrets {
        private_key: req.private_key,
        apiv3_key: req.apiv3_key,
    };
    let record = checked_record(
        &state,
        &req.mchid,
        &req.appids,
        &settings,
        &secrets,
        now_ms(),
    )?;
    let audit_row = audit_record(
        &admin,
        "merchant.create",
        &req.mchid,
        json!({"appids": req.appids, "api_base": host_of(&settings.api_base), "notify_host": host_of(&settings.notify_url)}),
    );
    write_outcome(
        state
            .store
            .put_pay_merchant(&record, true, &audit_row)
            .await?,
        &req.mchid,
        true,
    )?;
    logged(&audit_row);
    sync(&state).await;
    Ok((StatusCode::CREATED, Json(view_of_record(&state, &record))).into_response())
}

/// Every merchant: the file's and the runtime ones.
#[utoipa::path(get, path = "/v1/admin/merchants", tag = "admin", security(("admin_key" = [])),
    responses((status = 200, body = MerchantList), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_merchants(
    State(state): State<AdminApi>,
    _admin: Admin,
) -> Result<Json<MerchantList>, AppError> {
    let mut merchants = config_views(&state);
    for rec in state.store.pay_merchants().await? {
        if !is_config(&state, &rec.mchid) {
            merchants.push(view_of_record(&state, &rec));
        }
    }
    merchants.sort_by(|a, b| a.mchid.cmp(&b.mchid));
    Ok(Json(MerchantList { merchants }))
}

/// A runtime merchant as stored, or 404 (409 for the file's).
async fn stored(state: &AdminApi, mchid: &str) -> Result<PayMerchantRecord, AppError> {
    if is_config(state, mchid) {
        return Err(AppError::Conflict(format!(
            "merchant {mchid} is defined in the configuration file: change it there"
        )));
    }
    state
        .store
        .pay_merchant(mchid)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no merchant {mchid}")))
}

/// One merchant.
#[utoipa::path(get, path = "/v1/admin/merchants/{mchid}", tag = "admin", security(("admin_key" = [])),
    params(("mchid" = String, Path, description = "the merchant")),
    responses((status = 200, body = MerchantView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn get_merchant(
    State(state): State<AdminApi>,
    _admin: Admin,
    Path(mchid): Path<String>,
) -> Result<Json<MerchantView>, AppError> {
    if let Some(v) = config_views(&state).into_iter().find(|v| v.mchid == mchid) {
        return Ok(Json(v));
    }
    let rec = stored(&state, &mchid).await?;
    Ok(Json(view_of_record(&state, &rec)))
}

/// Change a runtime merchant: the fields given (new keys: a rotation); omitted keys are kept.
#[utoipa::path(put, path = "/v1/admin/merchants/{mchid}", tag = "admin", security(("admin_key" = [])),
    params(("mchid" = String, Path, description = "the merchant")), request_body = UpdateMerchant,
    responses((status = 200, body = MerchantView), (status = 400, description = "invalid settings or keys (nothing changed)", body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the file's merchant, or an app of another merchant", body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn update_merchant(
    State(state): State<AdminApi>,
    admin: Admin,
    Path(mchid): Path<String>,
    JsonBody(req): JsonBody<UpdateMerchant>,
) -> Result<Json<MerchantView>, AppError> {
    if req.mchid.as_ref().is_some_and(|m| *m != mchid) {
        return Err(invalid("mchid cannot be changed (it is the path's)"));
    }
    let current = stored(&state, &mchid).await?;
    let (mut settings, mut secrets) = state.payments.open_merchant(&current).map_err(|e| {
        tracing::error!(mchid, error = %e, "a stored merchant does not open");
        AppError::Internal(format!("the stored merchant {mchid} does not open"))
    })?;
    let mut changed = serde_json::Map::new();
    if let Some(b) = req.api_base {
        if host_of(&b) != host_of(&settings.api_base) && req.private_key.is_none() {
            return Err(invalid(
                "changing api_base to another host requires private_key in the same request",
            ));
        }
        settings.api_base = api_base_of(&state, Some(b)).await?;
        changed.insert("api_base".into(), json!(host_of(&settings.api_base)));
    }
    if let Some(k) = req.private_key {
        secrets.private_key = k;
        changed.insert("private_key".into(), json!("changed"));
    }
    if let Some(k) = req.apiv3_key {
        secrets.apiv3_key = k;
        changed.insert("apiv3_key".into(), json!("changed"));
    }
    if let Some(s) = req.serial_no {
        changed.insert("serial_no".into(), json!(s));
        settings.serial_no = s;
    }
    if let Some(id) = req.public_key_id {
        changed.insert("public_key_id".into(), json!(id));
        settings.public_key_id = Some(id);
    }
    if let Some(k) = req.public_key {
        changed.insert("public_key".into(), json!("changed"));
        settings.public_key = Some(k);
    }
    if let Some(p) = req.platform_certificates {
        changed.insert("platform_certificates".into(), json!(p));
        settings.platform_certificates = p;
    }
    if let Some(u) = req.notify_url {
        changed.insert("notify_host".into(), json!(host_of(&u)));
        settings.notify_url = u;
    }
    let appids = req.appids.unwrap_or_else(|| current.appids.clone());
    changed.insert("appids".into(), json!(appids));
    let record = checked_record(
        &state,
        &mchid,
        &appids,
        &settings,
        &secrets,
        current.created_at,
    )?;
    let audit_row = audit_record(&admin, "merchant.update", &mchid, Value::Object(changed));
    write_outcome(
        state
            .store
            .put_pay_merchant(&record, false, &audit_row)
            .await?,
        &mchid,
        false,
    )?;
    logged(&audit_row);
    sync(&state).await;
    Ok(Json(view_of_record(&state, &record)))
}

/// Delete a runtime merchant: every instance stops serving it within `registry_poll_ms`
/// (its orders, notifications and reports stay stored).
#[utoipa::path(delete, path = "/v1/admin/merchants/{mchid}", tag = "admin", security(("admin_key" = [])),
    params(("mchid" = String, Path, description = "the merchant")),
    responses((status = 204, description = "deleted"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "the file's merchant", body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete_merchant(
    State(state): State<AdminApi>,
    admin: Admin,
    Path(mchid): Path<String>,
) -> Result<StatusCode, AppError> {
    stored(&state, &mchid).await?;
    let audit_row = audit_record(&admin, "merchant.delete", &mchid, json!({}));
    if !state.store.delete_pay_merchant(&mchid, &audit_row).await? {
        return Err(AppError::NotFound(format!("no merchant {mchid}")));
    }
    logged(&audit_row);
    sync(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

fn served(
    state: &AdminApi,
    mchid: &str,
) -> Result<std::sync::Arc<crate::payments::MerchantRuntime>, AppError> {
    state
        .payments
        .merchant(mchid)
        .ok_or_else(|| AppError::NotFound(format!("no merchant {mchid} is served")))
}

/// A merchant's reconciliation reports, newest day first.
#[utoipa::path(get, path = "/v1/admin/merchants/{mchid}/reconciliations", tag = "admin", security(("admin_key" = [])),
    params(("mchid" = String, Path, description = "the merchant")),
    responses((status = 200, body = ReportList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_reports(
    State(state): State<AdminApi>,
    _admin: Admin,
    Path(mchid): Path<String>,
) -> Result<Json<ReportList>, AppError> {
    served(&state, &mchid)?;
    let reports = state.store.pay_reconciliations(&mchid, 100).await?;
    Ok(Json(ReportList {
        reports: reports.iter().map(summary).collect(),
    }))
}

fn view(r: &ReconciliationRecord) -> ReportView {
    ReportView {
        summary: summary(r),
        items: serde_json::from_str(&r.report).unwrap_or_else(|_| json!([])),
    }
}

/// One report with its items.
#[utoipa::path(get, path = "/v1/admin/merchants/{mchid}/reconciliations/{bill_date}", tag = "admin", security(("admin_key" = [])),
    params(("mchid" = String, Path, description = "the merchant"), ("bill_date" = String, Path, description = "yyyy-MM-dd")),
    responses((status = 200, body = ReportView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_report(
    State(state): State<AdminApi>,
    _admin: Admin,
    Path((mchid, bill_date)): Path<(String, String)>,
) -> Result<Json<ReportView>, AppError> {
    served(&state, &mchid)?;
    let r = state
        .store
        .pay_reconciliation(&mchid, &bill_date)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no report of {mchid} for {bill_date}")))?;
    Ok(Json(view(&r)))
}

/// Reconcile a day now (again, if it has a report): the trade bill downloaded and compared;
/// answers the report (its events sent as the daily run's are).
#[utoipa::path(post, path = "/v1/admin/merchants/{mchid}/reconciliations", tag = "admin", security(("admin_key" = [])),
    params(("mchid" = String, Path, description = "the merchant")), request_body = RunReconciliation,
    responses((status = 200, body = ReportView), (status = 400, description = "not a past Beijing day", body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "running elsewhere now, or WeChat's bill is not ready yet (10:00 the next day)", body = ErrorBody), (status = 429, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn run_report(
    State(state): State<AdminApi>,
    admin: Admin,
    Path(mchid): Path<String>,
    JsonBody(req): JsonBody<RunReconciliation>,
) -> Result<Json<ReportView>, AppError> {
    let m = served(&state, &mchid)?;
    let now = state
        .config
        .clock
        .as_ref()
        .map_or_else(now_ms, |c| c.now_ms());
    let today = weapp::pay::PayTime::from_unix(now.div_euclid(1000)).china_date();
    if !reconcile::is_bill_date(&req.bill_date) || req.bill_date >= today {
        return Err(invalid(format!(
            "bill_date must be a Beijing day before today ({today}), yyyy-MM-dd"
        )));
    }
    let result = reconcile::reconcile(&state.payments, &m, &req.bill_date, true).await;
    audit(
        &state,
        &admin,
        "merchant.reconcile",
        &mchid,
        json!({"bill_date": req.bill_date, "ok": result.is_ok()}),
    )
    .await;
    match result {
        Ok(Some(report)) => Ok(Json(view(&report.record))),
        Ok(None) | Err(ReconcileError::InProgress { .. }) => Err(AppError::Conflict(format!(
            "the reconciliation of {mchid} for {} is running now",
            req.bill_date
        ))),
        Err(ReconcileError::WeChatPay(e))
            if e.code().is_some_and(|c| c.as_str() == "STATEMENT_CREATING") =>
        {
            Err(AppError::Conflict(format!(
                "WeChat Pay's bill of {} is not ready yet (from 10:00 the next day)",
                req.bill_date
            )))
        }
        Err(ReconcileError::Store(e)) => Err(e.into()),
        Err(e) => {
            tracing::warn!(mchid, bill_date = %req.bill_date, error = %e, "reconciliation failed");
            Err(AppError::Coded {
                status: StatusCode::BAD_GATEWAY,
                code: "reconciliation_failed",
                message: e.to_string(),
                rid: None,
            })
        }
    }
}

/// The routes of this area.
pub fn router() -> Router<AdminApi> {
    Router::new()
        .route(
            "/v1/admin/merchants",
            get(list_merchants).post(create_merchant),
        )
        .route(
            "/v1/admin/merchants/{mchid}",
            get(get_merchant)
                .put(update_merchant)
                .delete(delete_merchant),
        )
        .route(
            "/v1/admin/merchants/{mchid}/reconciliations",
            get(list_reports).post(run_report),
        )
        .route(
            "/v1/admin/merchants/{mchid}/reconciliations/{bill_date}",
            get(get_report),
        )
}
