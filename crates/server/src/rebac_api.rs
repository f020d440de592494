//! Relationship-based access over HTTP (`/v1/rebac/…`), with OpenFGA's field names.
//!
//! Every route exists for the default store (`/v1/rebac/check`) and for a named one
//! (`/v1/rebac/stores/{store}/check`). Model uploads and tuple writes need `admin` and are
//! recorded in the ledger before they take effect; checks are decisions and each is recorded
//! (`rebac.check`); reads, expansion and listing need `enforcer`, `auditor` or `admin`.

use std::sync::Arc;

use axum::{
    Extension,
    extract::State,
    http::{HeaderMap, StatusCode, header},
};
use ledger::{NewEvent, OcsfClass, Outcome};
use rebac::{Model, ObjectRef, RebacError, Tuple, TupleKey, User};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::RebacWrite;
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ApiJson, ApiQuery, ErrorBody},
    holds::{Barred, Subjects},
    now_ms,
    relations::{self, DEFAULT_STORE, RelStore},
};

/// Most tuples in one write request (writes and deletes together), as OpenFGA.
const MAX_WRITE_TUPLES: usize = rebac::MAX_TUPLES_PER_WRITE;
/// Most checks in one batch-check request, as OpenFGA's default.
const MAX_BATCH_CHECKS: usize = rebac::MAX_BATCH_CHECK_ITEMS;
/// Most contextual tuples in one request, as OpenFGA.
const MAX_CONTEXTUAL_TUPLES: usize = rebac::MAX_CONTEXTUAL_TUPLES;
/// Largest page of a read or of the change feed.
const MAX_PAGE: usize = 1_000;

// ---- errors ---------------------------------------------------------------------------------

/// A relationship engine error as an API error: its stable code, and its position for model
/// errors.
pub(crate) fn rebac_error(e: &RebacError) -> ApiError {
    let status = match e.code() {
        "tuple_exists" | "tuple_not_found" => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    };
    let err = ApiError::new(status, e.code(), e.to_string());
    match e.position() {
        Some(p) => err.with_details(json!({ "line": p.line, "column": p.column })),
        None => err,
    }
}

/// The store a route names: `{store}` in `/v1/rebac/stores/{store}/…`, else the default.
pub(crate) struct StoreName(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for StoreName {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let params = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid_request(e.to_string()))?;
        let given = params
            .iter()
            .find(|(k, _)| *k == "store")
            .map(|(_, v)| v.to_owned());
        store_name(given).map(StoreName)
    }
}

fn store_name(given: Option<String>) -> Result<String, ApiError> {
    let name = given.unwrap_or_else(|| DEFAULT_STORE.to_owned());
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(name)
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_store",
            format!("store name `{name}` must be 1-64 of a-z, 0-9, `-`, `_`"),
        ))
    }
}

/// The store, caught up to `at_least` if given.
pub(crate) async fn open_store(
    state: &AppState,
    name: &str,
    at_least: Option<u64>,
) -> Result<Arc<RelStore>, ApiError> {
    let Some(rel) = state.relations.get(name) else {
        // Another replica may have created it within the last second.
        state.relations.refresh(state.store.as_ref()).await?;
        return state.relations.get(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_store",
                format!("relationship store `{name}` has no model: `warden rebac model push FILE`"),
            )
        });
    };
    if let Some(wanted) = at_least {
        if rel.read().revision() < wanted {
            let now = rel.catch_up(state.store.as_ref()).await?;
            if now < wanted {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unknown_revision",
                    format!(
                        "store `{name}` is at revision {now}; revision {wanted} does not exist"
                    ),
                ));
            }
        }
    }
    Ok(rel)
}

fn require_reader(caller: &Caller) -> Result<(), ApiError> {
    if [Role::Enforcer, Role::Auditor]
        .into_iter()
        .any(|r| caller.role.allows(r))
    {
        Ok(())
    } else {
        caller.require(Role::Enforcer)
    }
}

// ---- wire types -----------------------------------------------------------------------------

/// A tuple key in OpenFGA's form.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireTuple {
    /// `type:id`, `type:*` or `type:id#relation`.
    pub(crate) user: String,
    /// The relation.
    pub(crate) relation: String,
    /// `type:id`.
    pub(crate) object: String,
    /// When the tuple stops counting (RFC 3339); absent: never. Writes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expires_at: Option<String>,
    /// OpenFGA conditions are not supported; a tuple naming one is refused.
    #[serde(default, skip_serializing)]
    #[schema(value_type = Option<Object>)]
    pub(crate) condition: Option<Value>,
}

/// `{"tuple_keys": [...]}`, or a bare list (OpenFGA uses both shapes).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum TupleList {
    /// `{"tuple_keys": [...]}`.
    Wrapped {
        /// The tuples.
        tuple_keys: Vec<WireTuple>,
    },
    /// `[...]`.
    Bare(Vec<WireTuple>),
    /// Absent.
    #[default]
    #[serde(skip)]
    None,
}

impl TupleList {
    fn items(&self) -> &[WireTuple] {
        match self {
            TupleList::Wrapped { tuple_keys } => tuple_keys,
            TupleList::Bare(v) => v,
            TupleList::None => &[],
        }
    }
}

fn parse_time(text: &str) -> Result<i64, ApiError> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_tuple",
                format!("`expires_at` `{text}` is not an RFC 3339 time: {e}"),
            )
        })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| ApiError::invalid_request(format!("`expires_at` `{text}` is out of range")))
}

fn format_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn key_of(t: &WireTuple) -> Result<TupleKey, ApiError> {
    if t.condition.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "condition_unsupported",
            format!(
                "tuple `{}#{}@{}` names a condition; conditions are not supported",
                t.object, t.relation, t.user
            ),
        ));
    }
    TupleKey::from_parts(&t.object, &t.relation, &t.user).map_err(|e| rebac_error(&e))
}

fn tuple_of(t: &WireTuple) -> Result<Tuple, ApiError> {
    let key = key_of(t)?;
    Ok(match &t.expires_at {
        Some(at) => Tuple::expiring(key, parse_time(at)?),
        None => Tuple::new(key),
    })
}

fn wire_of(t: &Tuple) -> WireTuple {
    let key = &t.key;
    WireTuple {
        user: key.user().to_string(),
        relation: key.relation().to_owned(),
        object: key.object().to_string(),
        expires_at: t.expires_at_ms.map(format_time),
        condition: None,
    }
}

/// Contextual tuples, parsed and validated against the model.
fn contextual(model: &Model, list: &TupleList) -> Result<Vec<TupleKey>, ApiError> {
    let items = list.items();
    if items.len() > MAX_CONTEXTUAL_TUPLES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_many_tuples",
            format!(
                "{} contextual tuples; at most {MAX_CONTEXTUAL_TUPLES}",
                items.len()
            ),
        ));
    }
    items
        .iter()
        .map(|t| {
            let key = key_of(t)?;
            model.validate_tuple(&key).map_err(|e| rebac_error(&e))?;
            Ok(key)
        })
        .collect()
}

// ---- model ----------------------------------------------------------------------------------

/// A model version.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ModelInfo {
    /// The store.
    store: String,
    /// The model's content id (hex SHA-256 of its canonical JSON).
    authorization_model_id: String,
    /// 1, 2, … per store.
    version: i64,
    /// The model as uploaded (OpenFGA modeling language).
    dsl: String,
    /// The model in OpenFGA's JSON form.
    #[schema(value_type = Object)]
    model: Value,
    /// When it was uploaded (RFC 3339).
    created_at: String,
    /// Who uploaded it.
    created_by: String,
}

/// A model in the OpenFGA modeling language as raw UTF-8 bytes.
// Only in the OpenAPI document: `put_model` reads any body that is not JSON as the language.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[expect(
    dead_code,
    reason = "describes a request body in the OpenAPI document; `put_model` reads it as text"
)]
pub(crate) struct ModelBytes(Vec<u8>);

/// Uploads a model (the OpenFGA modeling language, schema 1.1, as the request body; or
/// OpenFGA's JSON model with `Content-Type: application/json`). The new version is in force
/// at once; tuples are not rewritten (role `admin`).
#[utoipa::path(put, path = "/v1/rebac/model", operation_id = "put_rebac_model",
    tag = "rebac", security(("bearer" = [])),
    // OpenFGA's JSON model (`application/json`) is in the description only: some client
    // generators (openapi-python-client 0.29) make unusable code for a body of several types.
    request_body(description = "The model in the OpenFGA modeling language (schema 1.1), UTF-8 \
        text; any content type but `application/json` is read as the modeling language. \
        OpenFGA's JSON model is also accepted, sent as `application/json`.",
        content((String = "text/plain"), (inline(ModelBytes) = "application/octet-stream"))),
    responses((status = 201, body = ModelInfo), (status = 400, body = ErrorBody)))]
pub(crate) async fn put_model(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    StoreName(name): StoreName,
    headers: HeaderMap,
    body: String,
) -> Result<(StatusCode, ApiJson<ModelInfo>), ApiError> {
    caller.require(Role::Admin)?;
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let model = if json_body {
        let value: Value = serde_json::from_str(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_model",
                format!("model JSON: {e}"),
            )
        })?;
        Model::from_json(&value)
    } else {
        Model::parse(&body)
    }
    .map_err(|e| rebac_error(&e))?;
    // Stored as DSL when given as DSL; a JSON upload is kept as its JSON text.
    let stored = if json_body {
        model.to_json().to_string()
    } else {
        body
    };
    let event = NewEvent::new(
        caller.actor(),
        "rebac.model",
        Outcome::Success,
        OcsfClass::ApiActivity,
    )
    .field("store", name.clone())
    .field("authorization_model_id", model.id());
    state.record(event).await?;
    let row = store::RebacModelRow {
        store: name.clone(),
        version: 0,
        model_id: model.id().to_owned(),
        dsl: stored,
        created_unix_ms: now_ms(),
        created_by: caller.actor(),
    };
    let version = state.store.rebac_model_append(&row).await?;
    state.relations.refresh(state.store.as_ref()).await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(model_info(&store::RebacModelRow { version, ..row })?),
    ))
}

fn model_info(row: &store::RebacModelRow) -> Result<ModelInfo, ApiError> {
    let model = relations::parse_stored(&row.dsl).map_err(|e| rebac_error(&e))?;
    Ok(ModelInfo {
        store: row.store.clone(),
        authorization_model_id: row.model_id.clone(),
        version: row.version,
        dsl: row.dsl.clone(),
        model: model.to_json(),
        created_at: format_time(row.created_unix_ms),
        created_by: row.created_by.clone(),
    })
}

/// `?version=N` for reading one model version.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionQuery {
    /// A version number; default: the latest.
    version: Option<i64>,
}

/// The model in force, or an earlier version (roles `enforcer`, `auditor`, `admin`).
#[utoipa::path(get, path = "/v1/rebac/model", operation_id = "get_rebac_model",
    tag = "rebac", security(("bearer" = [])), params(VersionQuery),
    responses((status = 200, body = ModelInfo), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_model(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    StoreName(name): StoreName,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> Result<ApiJson<ModelInfo>, ApiError> {
    require_reader(&caller)?;
    let rows = state.store.rebac_models(&name).await?;
    let row = match q.version {
        Some(v) => rows.iter().find(|r| r.version == v),
        None => rows.last(),
    }
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_model",
            match q.version {
                Some(v) => format!("store `{name}` has no model version {v}"),
                None => format!("store `{name}` has no model"),
            },
        )
    })?;
    Ok(ApiJson(model_info(row)?))
}

// ---- stores ---------------------------------------------------------------------------------

/// A relationship store.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StoreInfo {
    /// Its name.
    name: String,
    /// Committed write batches so far.
    revision: u64,
    /// The model version in force.
    model_version: i64,
    /// Its id.
    authorization_model_id: String,
}

/// Every relationship store (roles `enforcer`, `auditor`, `admin`).
#[utoipa::path(get, path = "/v1/rebac/stores", operation_id = "list_rebac_stores",
    tag = "rebac", security(("bearer" = [])),
    responses((status = 200, body = Vec<StoreInfo>)))]
pub(crate) async fn stores(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<ApiJson<Vec<StoreInfo>>, ApiError> {
    require_reader(&caller)?;
    state.relations.refresh(state.store.as_ref()).await?;
    Ok(ApiJson(
        state
            .relations
            .all()
            .iter()
            .map(|s| {
                let snap = s.read();
                StoreInfo {
                    name: s.name.clone(),
                    revision: snap.revision(),
                    model_version: snap.model_version(),
                    authorization_model_id: snap.model().id().to_owned(),
                }
            })
            .collect(),
    ))
}

// ---- tuples ---------------------------------------------------------------------------------

/// OpenFGA's Write body: tuples to write and to delete, applied together or not at all.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteRequest {
    /// Tuples to add (each may carry `expires_at`).
    #[serde(default)]
    writes: TupleList,
    /// Tuples to remove.
    #[serde(default)]
    deletes: TupleList,
    /// Accepted for OpenFGA compatibility; must be the model in force if given.
    #[serde(default)]
    authorization_model_id: Option<String>,
}

/// The revision a write produced: pass it as `at_least_revision` to read your own write on
/// any replica.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WriteResponse {
    /// The store's revision after this write.
    revision: u64,
}

/// Writes and deletes tuples atomically (at most 100 per request), validated against the
/// model in force (role `admin`).
#[utoipa::path(post, path = "/v1/rebac/tuples", operation_id = "write_rebac_tuples",
    tag = "rebac", security(("bearer" = [])), request_body = WriteRequest,
    responses((status = 200, body = WriteResponse), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn write(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    StoreName(name): StoreName,
    ApiJson(req): ApiJson<WriteRequest>,
) -> Result<ApiJson<WriteResponse>, ApiError> {
    caller.require(Role::Admin)?;
    let rel = open_store(&state, &name, None).await?;
    let (writes, deletes) = (req.writes.items(), req.deletes.items());
    if writes.is_empty() && deletes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_error",
            "nothing to write: give `writes` or `deletes`",
        ));
    }
    if writes.len() + deletes.len() > MAX_WRITE_TUPLES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_many_tuples",
            format!(
                "{} tuples in one write; at most {MAX_WRITE_TUPLES}",
                writes.len() + deletes.len()
            ),
        ));
    }
    let writes: Vec<Tuple> = writes.iter().map(tuple_of).collect::<Result<_, _>>()?;
    let deletes: Vec<TupleKey> = deletes.iter().map(key_of).collect::<Result<_, _>>()?;
    let revision = write_tuples(
        &state,
        &caller.actor(),
        &name,
        &rel,
        req.authorization_model_id.as_ref(),
        &writes,
        &deletes,
    )
    .await?;
    Ok(ApiJson(WriteResponse { revision }))
}

/// Validates a tuple write against the store's model, records it (`rebac.write`), commits it
/// and brings this replica's graph up to it; returns the new revision. Shared by the tuple
/// API and task grants.
pub(crate) async fn write_tuples(
    state: &AppState,
    actor: &str,
    name: &str,
    rel: &RelStore,
    model_id: Option<&String>,
    writes: &[Tuple],
    deletes: &[TupleKey],
) -> Result<u64, ApiError> {
    {
        let snap = rel.read();
        same_model(&snap, model_id)?;
        rebac::validate_write(snap.model(), snap.graph(), writes, deletes, now_ms())
            .map_err(|e| rebac_error(&e))?;
    }
    let write_rows: Vec<store::RebacTupleRow> = writes.iter().map(relations::row_of).collect();
    let delete_rows: Vec<store::RebacTupleRow> = deletes
        .iter()
        .map(|k| relations::row_of(&Tuple::new(k.clone())))
        .collect();
    let listed = |rows: &[store::RebacTupleRow]| recorded_tuples(rows);
    // Recorded before it takes effect; a write that then fails records why.
    let event = |outcome, detail: &str| {
        NewEvent::new(actor, "rebac.write", outcome, OcsfClass::ApiActivity)
            .field("store", name.to_owned())
            .field("writes", listed(&write_rows))
            .field("deletes", listed(&delete_rows))
            .field("detail", detail.to_owned())
    };
    state.record(event(Outcome::Success, "requested")).await?;
    let outcome = state
        .store
        .rebac_write(name, &write_rows, &delete_rows, now_ms(), actor)
        .await?;
    let refused =
        |code: &'static str, message: String| ApiError::new(StatusCode::CONFLICT, code, message);
    let err = match outcome {
        RebacWrite::Written { revision } => {
            rel.catch_up(state.store.as_ref()).await?;
            return Ok(u64::try_from(revision).unwrap_or(0));
        }
        RebacWrite::Exists(i) => refused(
            "tuple_exists",
            format!(
                "cannot write a tuple which already exists: `{}`",
                writes[i].key
            ),
        ),
        RebacWrite::Missing(i) => refused(
            "tuple_not_found",
            format!(
                "cannot delete a tuple which does not exist: `{}`",
                deletes[i]
            ),
        ),
        RebacWrite::NoStore => {
            ApiError::not_found(format!("relationship store `{name}` has no model"))
        }
    };
    state
        .record(event(
            Outcome::Failure,
            "refused: conflicting concurrent write",
        ))
        .await?;
    Err(err)
}

/// Most bytes of tuples a `rebac.write` entry lists; a batch of long ids can exceed the
/// ledger's 64 KiB per entry, and is then recorded by count and digest.
const MAX_RECORDED_TUPLE_BYTES: usize = 24 * 1024;

/// The tuples of a write as its ledger entry records them: listed, or — when they are too
/// long to list — their count and the SHA-256 of their lines `object#relation@user` (with
/// ` expires_at_ms` when expiring), one per line, which the change feed reproduces.
fn recorded_tuples(rows: &[store::RebacTupleRow]) -> Value {
    let listed: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = json!({ "object": r.object, "relation": r.relation, "user": r.subject });
            if let Some(at) = r.expires_at_ms {
                v["expires_at_ms"] = json!(at);
            }
            v
        })
        .collect();
    let listed = Value::Array(listed);
    if listed.to_string().len() <= MAX_RECORDED_TUPLE_BYTES {
        return listed;
    }
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for r in rows {
        digest.update(format!("{}#{}@{}", r.object, r.relation, r.subject).as_bytes());
        if let Some(at) = r.expires_at_ms {
            digest.update(format!(" {at}").as_bytes());
        }
        digest.update(b"\n");
    }
    json!({ "count": rows.len(), "sha256": hex::encode(digest.finalize()) })
}

/// Filters for reading tuples (all optional; `object` may be `type:` for every object of a
/// type, as in OpenFGA).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadQuery {
    /// `type:id`, or `type:` for every object of the type.
    object: Option<String>,
    /// The relation.
    relation: Option<String>,
    /// `type:id`, `type:*` or `type:id#relation`.
    user: Option<String>,
    /// Page size (default and maximum 1,000).
    page_size: Option<usize>,
    /// The `continuation_token` of the previous page.
    continuation_token: Option<String>,
    /// Read at least this fresh.
    at_least_revision: Option<u64>,
}

/// A page of tuples.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReadResponse {
    /// Live tuples (expired ones are not shown).
    tuples: Vec<WireTuple>,
    /// Pass back for the next page; empty when this is the last.
    continuation_token: String,
    /// The revision read.
    revision: u64,
}

/// Reads live tuples matching the filters, in a stable order (roles `enforcer`, `auditor`,
/// `admin`).
#[utoipa::path(get, path = "/v1/rebac/tuples", operation_id = "read_rebac_tuples",
    tag = "rebac", security(("bearer" = [])), params(ReadQuery),
    responses((status = 200, body = ReadResponse), (status = 400, body = ErrorBody)))]
pub(crate) async fn read(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    StoreName(name): StoreName,
    ApiQuery(q): ApiQuery<ReadQuery>,
) -> Result<ApiJson<ReadResponse>, ApiError> {
    require_reader(&caller)?;
    let rel = open_store(&state, &name, q.at_least_revision).await?;
    let page_size = q.page_size.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let skip: usize = match q.continuation_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_continuation_token",
                "invalid `continuation_token`",
            )
        })?,
    };
    let filter = read_filter(&q)?;
    let snap = rel.read();
    let tuples: Vec<Tuple> = snap.graph().read(&filter, now_ms());
    let total = tuples.len();
    let page: Vec<WireTuple> = tuples
        .iter()
        .skip(skip)
        .take(page_size)
        .map(wire_of)
        .collect();
    let next = skip + page.len();
    Ok(ApiJson(ReadResponse {
        tuples: page,
        continuation_token: if next < total {
            next.to_string()
        } else {
            String::new()
        },
        revision: snap.revision(),
    }))
}

/// OpenFGA's Read filter: `object` is `type:id`, or `type:` for every object of a type.
fn read_filter(q: &ReadQuery) -> Result<rebac::ReadFilter, ApiError> {
    let mut filter = rebac::ReadFilter::default();
    if let Some(object) = q.object.as_deref().filter(|o| !o.is_empty()) {
        match object.strip_suffix(':') {
            Some(t) if !t.contains(':') => filter.object_type = Some(t.to_owned()),
            _ => filter.object = Some(ObjectRef::parse(object).map_err(|e| rebac_error(&e))?),
        }
    }
    filter.relation = q.relation.clone().filter(|r| !r.is_empty());
    if let Some(user) = q.user.as_deref().filter(|u| !u.is_empty()) {
        filter.user = Some(User::parse(user).map_err(|e| rebac_error(&e))?);
    }
    Ok(filter)
}

// ---- queries --------------------------------------------------------------------------------

/// The `tuple_key` of a check.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckKey {
    /// `type:id` (or a userset `type:id#relation`, or a wildcard `type:*`).
    user: String,
    /// The relation.
    relation: String,
    /// `type:id`.
    object: String,
}

/// OpenFGA's Check body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckRequest {
    /// The question: does `user` have `relation` on `object`?
    tuple_key: CheckKey,
    /// Tuples that count for this request only.
    #[serde(default)]
    contextual_tuples: TupleList,
    /// Answer at least this fresh.
    #[serde(default)]
    at_least_revision: Option<u64>,
    /// Accepted for OpenFGA compatibility; must be the model in force if given.
    #[serde(default)]
    authorization_model_id: Option<String>,
}

/// A check's answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CheckResponse {
    /// Whether the relation holds.
    allowed: bool,
    /// The revision answered at.
    revision: u64,
    /// The ledger record of this decision.
    decision_id: String,
    /// Why it is not allowed whatever the tuples say: the user is an agent on hold or on the
    /// denylist, or its task is on hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The hold check ([`AppState::barred`]) for a relationship query's user: an `agent:` user
/// (the SPIFFE ID without `spiffe://`) that is on hold or on the denylist, or whose current
/// task for `object` is on hold, holds no relation. Other users are never barred.
fn barred_user(
    state: &AppState,
    user: &User,
    object: Option<(&str, &str)>,
) -> Result<Option<Barred>, ApiError> {
    let User::Object(o) = user else {
        return Ok(None);
    };
    if o.object_type() != relations::AGENT_TYPE {
        return Ok(None);
    }
    let Ok(agent) = identity::SpiffeId::parse(&format!("spiffe://{}", o.id())) else {
        return Ok(None);
    };
    state.barred(&Subjects {
        principal: Some(&agent),
        resource: object,
        ..Subjects::default()
    })
}

/// A check's answer, with why a barred user is refused.
struct Checked {
    allowed: bool,
    barred: Option<Barred>,
}

fn same_model(snap: &relations::Snapshot<'_>, id: Option<&String>) -> Result<(), ApiError> {
    match id {
        Some(id) if id != snap.model().id() => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_error",
            format!(
                "authorization model `{id}` is not the one in force (`{}`)",
                snap.model().id()
            ),
        )),
        _ => Ok(()),
    }
}

fn check_one(
    state: &AppState,
    snap: &relations::Snapshot<'_>,
    key: &CheckKey,
    contextual_tuples: &TupleList,
) -> Result<Checked, ApiError> {
    let ctx = contextual(snap.model(), contextual_tuples)?;
    let user = User::parse(&key.user).map_err(|e| rebac_error(&e))?;
    let object = ObjectRef::parse(&key.object).map_err(|e| rebac_error(&e))?;
    // Holds and the denylist before the tuples: a held agent holds nothing.
    if let Some(barred) = barred_user(state, &user, Some((object.object_type(), object.id())))? {
        return Ok(Checked {
            allowed: false,
            barred: Some(barred),
        });
    }
    let allowed = rebac::check(
        snap.model(),
        snap.graph(),
        &rebac::CheckRequest {
            user,
            relation: key.relation.clone(),
            object,
            contextual_tuples: ctx,
            now_ms: now_ms(),
        },
    )
    .map_err(|e| rebac_error(&e))?;
    Ok(Checked {
        allowed,
        barred: None,
    })
}

fn check_event(
    caller: &Caller,
    store: &str,
    key: &CheckKey,
    checked: &Checked,
    id: &str,
    revision: u64,
) -> NewEvent {
    let allowed = checked.allowed;
    let event = NewEvent::new(
        caller.actor(),
        "rebac.check",
        if allowed {
            Outcome::Success
        } else {
            Outcome::Denied
        },
        OcsfClass::AuthorizeSession,
    )
    .field("decision_id", id)
    .field("store", store)
    .field("user", key.user.clone())
    .field("relation", key.relation.clone())
    .field("object", key.object.clone())
    .field("allowed", allowed)
    .field("revision", revision);
    match &checked.barred {
        Some(b) => event
            .field("reason", b.reason())
            .field("barred", b.to_json()),
        None => event,
    }
}

/// Does `user` have `relation` on `object`? OpenFGA's Check, with contextual tuples; every
/// answer is a ledger entry (roles `enforcer`, `auditor`, `admin`).
#[utoipa::path(post, path = "/v1/rebac/check", operation_id = "rebac_check",
    tag = "rebac", security(("bearer" = [])), request_body = CheckRequest,
    responses((status = 200, body = CheckResponse), (status = 400, body = ErrorBody)))]
pub(crate) async fn check(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    StoreName(name): StoreName,
    ApiJson(req): ApiJson<CheckRequest>,
) -> Result<ApiJson<CheckResponse>, ApiError> {
    require_reader(&caller)?;
    let rel = open_store(&state, &name, req.at_least_revision).await?;
    let (checked, revision) = {
        let snap = rel.read();
        same_model(&snap, req.authorization_model_id.as_ref())?;
        (
            check_one(&state, &snap, &req.tuple_key, &req.contextual_tuples)?,
            snap.revision(),
        )
    };
    let id = crate::pdp::decision_id();
    caller
        .record_for_request(
            &state,
            check_event(&caller, &name, &req.tuple_key, &checked, &id, revision),
        )
        .await?;
    Ok(ApiJson(CheckResponse {
        allowed: checked.allowed,
        revision,
        decision_id: id,
        reason: checked.barred.as_ref().map(Barred::reason),
    }))
}

/// One check of a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchItem {
    /// The question.
    tuple_key: CheckKey,
    /// Tuples that count for this check only.
    #[serde(default)]
    contextual_tuples: TupleList,
    /// Names this check's result (unique within the batch).
    correlation_id: String,
}

/// OpenFGA's BatchCheck body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchCheckRequest {
    /// Up to 50 checks.
    checks: Vec<BatchItem>,
    /// Answer at least this fresh.
    #[serde(default)]
    at_least_revision: Option<u64>,
    /// Accepted for OpenFGA compatibility; must be the model in force if given.
    #[serde(default)]
    authorization_model_id: Option<String>,
}

/// Many checks at once: `{"result": {correlation_id: {"allowed": …} or {"error": …}}}`; each
/// answered check is a ledger entry (roles `enforcer`, `auditor`, `admin`).
#[utoipa::path(post, path = "/v1/rebac/batch-check", operation_id = "rebac_batch_check",
    tag = "rebac", security(("bearer" = [])), request_body = BatchCheckRequest,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
pub(crate) async fn batch_check(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    StoreName(name): StoreName,
    ApiJson(req): ApiJson<BatchCheckRequest>,
) -> Result<ApiJson<Value>, ApiError> {
    require_reader(&caller)?;
    if req.checks.is_empty() || req.checks.len() > MAX_BATCH_CHECKS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_error",
            format!(
                "a batch holds 1 to {MAX_BATCH_CHECKS} checks; this one has {}",
                req.checks.len()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for item in &req.checks {
        if item.correlation_id.is_empty() || !seen.insert(item.correlation_id.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "validation_error",
                format!(
                    "correlation_id `{}` is empty or repeated",
                    item.correlation_id
                ),
            ));
        }
    }
    let rel = open_store(&state, &name, req.at_least_revision).await?;
    let (answers, revision) = {
        let snap = rel.read();
        same_model(&snap, req.authorization_model_id.as_ref())?;
        let answers: Vec<Result<Checked, ApiError>> = req
            .checks
            .iter()
            .map(|item| check_one(&state, &snap, &item.tuple_key, &item.contextual_tuples))
            .collect();
        (answers, snap.revision())
    };
    // Holds that cannot be read leave no check answered (503), not one item in error.
    if let Some(Err(e)) = answers
        .iter()
        .find(|a| matches!(a, Err(e) if e.status() == StatusCode::SERVICE_UNAVAILABLE))
    {
        return Err(e.clone());
    }
    let mut result = serde_json::Map::new();
    for (item, answer) in req.checks.iter().zip(answers) {
        let value = match answer {
            Ok(checked) => {
                let id = crate::pdp::decision_id();
                caller
                    .record_for_request(
                        &state,
                        check_event(&caller, &name, &item.tuple_key, &checked, &id, revision),
                    )
                    .await?;
                let mut v = json!({ "allowed": checked.allowed, "decision_id": id });
                if let Some(b) = &checked.barred {
                    v["reason"] = json!(b.reason());
                }
                v
            }
            Err(e) => json!({ "error": e.body() }),
        };
        result.insert(item.correlation_id.clone(), value);
    }
    Ok(ApiJson(json!({ "result": result, "revision": revision })))
}

/// OpenFGA's Expand body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExpandRequest {
    /// `relation` and `object` to expand.
    tuple_key: ExpandKey,
    /// Answer at least this fresh.
    #[serde(default)]
    at_least_revision: Option<u64>,
    /// Accepted for OpenFGA compatibility; must be the model in force if given.
    #[serde(default)]
    authorization_model_id: Option<String>,
}

/// What to expand.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExpandKey {
    /// The relation.
    relation: String,
    /// `type:id`.
    object: String,
}

/// One level of the userset tree of `object#relation`, in OpenFGA's Expand shape (roles
/// `enforcer`, `auditor`, `admin`).
#[utoipa::path(post, path = "/v1/rebac/expand", operation_id = "rebac_expand",
    tag = "rebac", security(("bearer" = [])), request_body = ExpandRequest,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
pub(crate) async fn expand(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    StoreName(name): StoreName,
    ApiJson(req): ApiJson<ExpandRequest>,
) -> Result<ApiJson<Value>, ApiError> {
    require_reader(&caller)?;
    let rel = open_store(&state, &name, req.at_least_revision).await?;
    let snap = rel.read();
    same_model(&snap, req.authorization_model_id.as_ref())?;
    let object = ObjectRef::parse(&req.tuple_key.object).map_err(|e| rebac_error(&e))?;
    let tree = rebac::expand(
        snap.model(),
        snap.graph(),
        &object,
        &req.tuple_key.relation,
        now_ms(),
    )
    .map_err(|e| rebac_error(&e))?;
    Ok(ApiJson(
        json!({ "tree": tree, "revision": snap.revision() }),
    ))
}

/// OpenFGA's ListObjects body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListObjectsRequest {
    /// The object type to list.
    #[serde(rename = "type")]
    object_type: String,
    /// The relation.
    relation: String,
    /// The user.
    user: String,
    /// Tuples that count for this request only.
    #[serde(default)]
    contextual_tuples: TupleList,
    /// Answer at least this fresh.
    #[serde(default)]
    at_least_revision: Option<u64>,
    /// Accepted for OpenFGA compatibility; must be the model in force if given.
    #[serde(default)]
    authorization_model_id: Option<String>,
}

/// Every object of `type` on which `user` has `relation`, as `type:id`, sorted (roles
/// `enforcer`, `auditor`, `admin`). At most `limits.list_objects_max_results` objects (1,000)
/// found within `limits.list_objects_deadline_ms` (3 s), OpenFGA's defaults; when either cut
/// the search short, the answer holds what was found and `truncated` is `true`.
#[utoipa::path(post, path = "/v1/rebac/list-objects", operation_id = "rebac_list_objects",
    tag = "rebac", security(("bearer" = [])), request_body = ListObjectsRequest,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_objects(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    StoreName(name): StoreName,
    ApiJson(req): ApiJson<ListObjectsRequest>,
) -> Result<ApiJson<Value>, ApiError> {
    require_reader(&caller)?;
    let rel = open_store(&state, &name, req.at_least_revision).await?;
    let limit = state.limits.list_objects();
    // The search runs off the async workers: it may take up to the deadline.
    let st = Arc::clone(&state);
    let (body, truncated) = blocking(move || {
        let state = st;
        let snap = rel.read();
        same_model(&snap, req.authorization_model_id.as_ref())?;
        let ctx = contextual(snap.model(), &req.contextual_tuples)?;
        let user = User::parse(&req.user).map_err(|e| rebac_error(&e))?;
        // A held or denied agent holds nothing (its current task is not known without an
        // object).
        if barred_user(&state, &user, None)?.is_some() {
            return Ok((
                json!({ "objects": Vec::<String>::new(), "truncated": false, "revision": snap.revision() }),
                false,
            ));
        }
        let out_of_time = || limit.out_of_time();
        let found = rebac::list_objects_bounded(
            snap.model(),
            snap.graph(),
            &req.object_type,
            &req.relation,
            &user,
            &ctx,
            now_ms(),
            rebac::ListBounds {
                max_results: limit.max_results,
                out_of_time: &out_of_time,
            },
        )
        .map_err(|e| rebac_error(&e))?;
        Ok((
            json!({ "objects": found.objects, "truncated": found.truncated, "revision": snap.revision() }),
            found.truncated,
        ))
    })
    .await?;
    if truncated {
        state.metrics.list_truncated("list_objects");
    }
    Ok(ApiJson(body))
}

/// Runs a listing query on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// An object in ListUsers' `{type, id}` form.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TypedObject {
    /// Its type.
    #[serde(rename = "type")]
    object_type: String,
    /// Its id.
    id: String,
}

/// A ListUsers filter: users of `type`, or usersets `type#relation`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserFilter {
    /// The user type.
    #[serde(rename = "type")]
    user_type: String,
    /// For usersets: the relation.
    #[serde(default)]
    relation: Option<String>,
}

/// OpenFGA's ListUsers body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListUsersRequest {
    /// The object.
    object: TypedObject,
    /// The relation.
    relation: String,
    /// Which users to list (exactly one filter, as OpenFGA).
    user_filters: Vec<UserFilter>,
    /// Tuples that count for this request only.
    #[serde(default)]
    contextual_tuples: TupleList,
    /// Answer at least this fresh.
    #[serde(default)]
    at_least_revision: Option<u64>,
    /// Accepted for OpenFGA compatibility; must be the model in force if given.
    #[serde(default)]
    authorization_model_id: Option<String>,
}

/// Every user with `relation` on `object`, in OpenFGA's ListUsers shape: `{"object": {type,
/// id}}`, `{"userset": {type, id, relation}}` or `{"wildcard": {type}}` (roles `enforcer`,
/// `auditor`, `admin`). At most `limits.list_users_max_results` users (1,000) found within
/// `limits.list_users_deadline_ms` (3 s), OpenFGA's defaults; when either cut the search
/// short, the answer holds what was found and `truncated` is `true`.
#[utoipa::path(post, path = "/v1/rebac/list-users", operation_id = "rebac_list_users",
    tag = "rebac", security(("bearer" = [])), request_body = ListUsersRequest,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_users(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    StoreName(name): StoreName,
    ApiJson(req): ApiJson<ListUsersRequest>,
) -> Result<ApiJson<Value>, ApiError> {
    require_reader(&caller)?;
    if req.user_filters.len() != 1 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_error",
            format!(
                "exactly one user filter is needed; {} given",
                req.user_filters.len()
            ),
        ));
    }
    let rel = open_store(&state, &name, req.at_least_revision).await?;
    let limit = state.limits.list_users();
    // The search runs off the async workers: it may take up to the deadline.
    let st = Arc::clone(&state);
    let (body, truncated) = blocking(move || {
        let state = st;
        let snap = rel.read();
        same_model(&snap, req.authorization_model_id.as_ref())?;
        let ctx = contextual(snap.model(), &req.contextual_tuples)?;
        let object =
            ObjectRef::new(&req.object.object_type, &req.object.id).map_err(|e| rebac_error(&e))?;
        let filters: Vec<rebac::UserFilter> = req
            .user_filters
            .iter()
            .map(|f| rebac::UserFilter {
                type_name: f.user_type.clone(),
                relation: f.relation.clone(),
            })
            .collect();
        let out_of_time = || limit.out_of_time();
        let users = rebac::list_users_bounded(
            snap.model(),
            snap.graph(),
            &object,
            &req.relation,
            &filters,
            &ctx,
            now_ms(),
            rebac::ListBounds {
                max_results: limit.max_results,
                out_of_time: &out_of_time,
            },
        )
        .map_err(|e| rebac_error(&e))?;
        let excluded: Vec<Value> = users.excluded_users.iter().map(list_user_json).collect();
        // Held or denied agents (or agents whose task for the object is held) hold nothing.
        let mut listed = Vec::with_capacity(users.users.len());
        for user in &users.users {
            if barred_user(&state, user, Some((object.object_type(), object.id())))?.is_none() {
                listed.push(list_user_json(user));
            }
        }
        Ok((
            json!({
                "users": listed,
                "excluded_users": excluded,
                "truncated": users.truncated,
                "revision": snap.revision(),
            }),
            users.truncated,
        ))
    })
    .await?;
    if truncated {
        state.metrics.list_truncated("list_users");
    }
    Ok(ApiJson(body))
}

fn list_user_json(user: &User) -> Value {
    match user {
        User::Object(o) => json!({ "object": { "type": o.object_type(), "id": o.id() } }),
        User::Wildcard(t) => json!({ "wildcard": { "type": t } }),
        User::Userset { object, relation } => json!({
            "userset": { "type": object.object_type(), "id": object.id(), "relation": relation }
        }),
    }
}

/// Change feed query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangesQuery {
    /// Only changes to objects of this type.
    #[serde(rename = "type")]
    object_type: Option<String>,
    /// Page size (default and maximum 1,000).
    page_size: Option<u32>,
    /// The `continuation_token` of the previous page (a revision): changes after it.
    continuation_token: Option<String>,
}

/// The change feed: every write and delete in commit order, OpenFGA's ReadChanges shape
/// (roles `enforcer`, `auditor`, `admin`).
#[utoipa::path(get, path = "/v1/rebac/changes", operation_id = "rebac_changes",
    tag = "rebac", security(("bearer" = [])), params(ChangesQuery),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
pub(crate) async fn changes(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    StoreName(name): StoreName,
    ApiQuery(q): ApiQuery<ChangesQuery>,
) -> Result<ApiJson<Value>, ApiError> {
    require_reader(&caller)?;
    open_store(&state, &name, None).await?;
    let after: i64 = match q.continuation_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_continuation_token",
                "invalid `continuation_token`",
            )
        })?,
    };
    let page = q
        .page_size
        .unwrap_or(MAX_PAGE as u32)
        .clamp(1, MAX_PAGE as u32);
    let prefix = q.object_type.as_ref().map(|t| format!("{t}:"));
    // Pages end on whole revisions, so the token (a revision) never splits a batch: read
    // enough beyond the page for the last batch (an API write holds at most 100 tuples).
    let rows = state
        .store
        .rebac_changes(&name, after, page + MAX_WRITE_TUPLES as u32)
        .await?;
    let mut taken: Vec<store::RebacChangeRow> = Vec::new();
    for row in rows {
        if taken.len() >= page as usize && taken.last().is_some_and(|l| l.revision != row.revision)
        {
            break;
        }
        taken.push(row);
    }
    let next = taken.last().map_or(after, |r| r.revision);
    let changes: Vec<Value> = taken
        .iter()
        .filter(|r| prefix.as_ref().is_none_or(|p| r.tuple.object.starts_with(p.as_str())))
        .map(|r| {
            let mut key = json!({ "object": r.tuple.object, "relation": r.tuple.relation, "user": r.tuple.subject });
            if let Some(at) = r.tuple.expires_at_ms {
                key["expires_at"] = json!(format_time(at));
            }
            json!({
                "tuple_key": key,
                "operation": if r.operation == "delete" { "TUPLE_OPERATION_DELETE" } else { "TUPLE_OPERATION_WRITE" },
                "timestamp": format_time(r.at_unix_ms),
                "revision": r.revision,
                "actor": r.actor,
            })
        })
        .collect();
    Ok(ApiJson(
        json!({ "changes": changes, "continuation_token": next.to_string() }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize, user_len: usize) -> store::RebacTupleRow {
        store::RebacTupleRow {
            object: format!("doc:{i}"),
            relation: "viewer".into(),
            subject: format!("user:{}", "u".repeat(user_len)),
            expires_at_ms: (i % 2 == 0).then_some(5),
        }
    }

    /// A write's ledger entry lists its tuples, or — for a batch too long for one entry —
    /// records their count and digest, so a valid write is never refused for its size.
    #[test]
    fn written_tuples_are_listed_or_digested() {
        let small: Vec<_> = (0..3).map(|i| row(i, 5)).collect();
        let listed = recorded_tuples(&small);
        assert_eq!(listed.as_array().map(Vec::len), Some(3));
        assert_eq!(listed[0]["expires_at_ms"], 5);
        assert_eq!(listed[1]["user"], "user:uuuuu");

        let big: Vec<_> = (0..MAX_WRITE_TUPLES).map(|i| row(i, 500)).collect();
        let digested = recorded_tuples(&big);
        assert_eq!(digested["count"], MAX_WRITE_TUPLES);
        assert_eq!(digested["sha256"].as_str().map(str::len), Some(64));
        assert!(digested.to_string().len() < 200);
        // The digest covers every tuple: changing one changes it.
        let mut other = big.clone();
        other[7].relation = "editor".into();
        assert_ne!(recorded_tuples(&other)["sha256"], digested["sha256"]);
    }
}
