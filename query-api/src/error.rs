//! The one place where error kinds become HTTP statuses. Every error leaves the API as
//! `{"error": {"code": "...", "message": "..."}}`; client mistakes are 4xx, never 500.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use perimeter_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No, malformed, unknown, revoked or expired bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid token whose role does not allow the operation.
    #[error("{0}")]
    Forbidden(String),
    /// Unknown id, or an id that belongs to another tenant (indistinguishable on purpose).
    #[error("{0}")]
    NotFound(String),
    /// A request parameter or body that does not make sense; `code` says which kind.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// The request was well-formed but the rule engine rejected the rule.
    #[error("{0}")]
    InvalidRule(String),
    /// The route exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The body is not JSON (`Content-Type`) or too large.
    #[error("{message}")]
    UnsupportedBody { status: StatusCode, message: String },
    /// The service is shutting down or not ready.
    #[error("{0}")]
    Unavailable(String),
    /// A server-side failure (store IO, audit log write). The message is generic on the wire.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The JSON error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// Machine-readable `code` plus a human `message`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable error code: `unauthorized`, `forbidden`, `not_found`, `invalid_parameter`,
    /// `invalid_query`, `invalid_json`, `limit_too_large`, `invalid_rule`, `method_not_allowed`,
    /// `unsupported_media_type`, `payload_too_large`, `unavailable`, `internal`; and, for
    /// requests hyper refuses before routing, `bad_request`, `uri_too_long`, `headers_too_large`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_parameter(message: impl Into<String>) -> ApiError {
        ApiError::bad_request("invalid_parameter", message)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::InvalidRule(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedBody { status, .. } => *status,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest { code, .. } => code,
            ApiError::InvalidRule(_) => "invalid_rule",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::UnsupportedBody { status, .. }
                if *status == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                "payload_too_large"
            }
            ApiError::UnsupportedBody { .. } => "unsupported_media_type",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            // Internal details (paths, IO errors) stay in the server log, not on the wire.
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            // RFC 7235 3.1: a 401 names the scheme that would be accepted.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(WWW_AUTHENTICATE_BEARER),
            );
        }
        response
    }
}

/// The `WWW-Authenticate` challenge of every 401.
pub const WWW_AUTHENTICATE_BEARER: &str = "Bearer realm=\"perimeter\"";

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::InvalidQuery(reason) => ApiError::bad_request("invalid_query", reason),
            // A full disk is the operator's to mend, and the change can be sent again then
            // (QA: an alert update on a full disk was a bare 500).
            other if other.is_no_space() => {
                tracing::error!(error = %other, "request failed: the store cannot write");
                ApiError::Unavailable(
                    "the store cannot write (no space left on the data directory's disk); retry once space is freed".into(),
                )
            }
            other => ApiError::Internal(format!("store: {other}")),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedBody {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: "expected `Content-Type: application/json`".into(),
            },
            JsonRejection::BytesRejection(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::UnsupportedBody {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: "request body too large".into(),
                }
            }
            // Syntax and data errors (unknown fields, wrong enum values) are both the
            // client's JSON being wrong: one code, the serde message says where.
            other => ApiError::bad_request("invalid_json", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::invalid_parameter(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::invalid_parameter(rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_error_is_4xx() {
        let errors = [
            ApiError::Unauthorized("x".into()),
            ApiError::Forbidden("x".into()),
            ApiError::NotFound("x".into()),
            ApiError::invalid_parameter("x"),
            ApiError::bad_request("limit_too_large", "x"),
            ApiError::InvalidRule("x".into()),
            ApiError::MethodNotAllowed("x".into()),
        ];
        for e in errors {
            assert!(e.status().is_client_error(), "{e:?} -> {}", e.status());
        }
        let full = StoreError::Io {
            path: "/data/alerts/tenant=a/journal.jsonl".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        let e: ApiError = full.into();
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        assert!(!e.to_string().contains("/data"), "no path on the wire: {e}");
        assert_eq!(
            ApiError::Internal("disk".into()).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn store_invalid_query_is_a_bad_request() {
        let e: ApiError = StoreError::InvalidQuery("unbalanced quote".into()).into();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.code(), "invalid_query");
    }
}
