//! Extractors whose rejections are [`ApiError`]s, so malformed JSON, unknown fields and bad
//! query strings answer with the same JSON error body as everything else.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::MAX_BODY_BYTES;

/// `axum::Json` with [`ApiError`] rejections.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        refuse_announced_oversize(&req)?;
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedBody {
                status: axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: "expected `Content-Type: application/json`".into(),
            });
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(axum::extract::rejection::JsonRejection::from)?;
        // Half of a surrogate pair escaped alone (`\ud83d`, text cut mid-emoji, which ingest
        // takes as U+FFFD): an event pasted into a rule test, a note, read the same way.
        let parsed = perimeter_model::parse_with_lone_surrogates(&bytes, |b| {
            axum::Json::<JsonObject<T>>::from_bytes(b)
        });
        let axum::Json(JsonObject(value)) = parsed?;
        Ok(ApiJson(value))
    }
}

/// `application/json`, or another JSON type (`application/<x>+json`), as axum's `Json` takes.
fn is_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// `T` read from a JSON object only. serde also builds a struct from an array of its fields
/// in order (`["acknowledged", null, null]` as `{status, assignee, note}`), which no client
/// means and the API does not document: every API body is an object.
struct JsonObject<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<T, M::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(ObjectVisitor(std::marker::PhantomData))
            .map(JsonObject)
    }
}

/// Refuse a body whose announced length is over [`MAX_BODY_BYTES`] before reading any of it;
/// a body without a length is cut off at the limit by `DefaultBodyLimit` instead. This runs
/// as the body is extracted, so after the handler's [`crate::auth::Auth`]: a caller without a
/// valid token gets 401, and one without the role 403 (audited), whatever the body's size.
fn refuse_announced_oversize(req: &Request) -> Result<(), ApiError> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::UnsupportedBody {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body larger than {MAX_BODY_BYTES} bytes"),
        });
    }
    Ok(())
}

/// `axum::extract::Query` with [`ApiError`] rejections.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // The parser reads bytes that are no UTF-8 as the replacement character: a client
        // sending Latin-1 (`q=dana%ff`) got the answer to another query, without a word (QA).
        // Refused, as a path that is no UTF-8 is.
        if let Some(query) = parts.uri.query() {
            for pair in query.split('&') {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let decoded = |part: &str| -> Vec<u8> {
                    percent_encoding::percent_decode_str(part).collect()
                };
                for (part, what) in [(name, "name"), (value, "value")] {
                    if let Err(e) = std::str::from_utf8(&decoded(part)) {
                        return Err(ApiError::invalid_parameter(format!(
                            "`{}` is not UTF-8 (byte {} of its percent-decoded {what})",
                            String::from_utf8_lossy(&decoded(name)),
                            e.valid_up_to()
                        )));
                    }
                }
            }
        }
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

/// The query string of a route that takes no parameters: any is refused (400), as on the
/// routes that take some, so a misspelt filter is never silently ignored.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// `axum::extract::Path` with [`ApiError`] rejections.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}
