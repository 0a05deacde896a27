//! The faults drawn by the sandbox's `faults` made real on the wire:
//! error statuses, dropped connections, hangs, malformed and truncated
//! bodies.

use super::*;

/// Replaces the answer with a fault. `created` is set when the service
/// already created the tracking.
///
/// Long for a reason: one arm per fault, each the answer a real gateway
/// or network gives.
pub(super) async fn inject(
    shared: &Shared,
    fault: Fault,
    close: Option<&CloseConnection>,
    created: Option<&Created>,
) -> Response {
    let config = &shared.config;
    record(shared, Outcome::Fault(fault));
    match fault {
        Fault::Status(500) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"statusCode": 500, "message": "Internal server error", "activityId": activity_id(config.seed)}),
        ),
        Fault::Status(502) => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>\n",
        )
            .into_response(),
        Fault::Status(429) => {
            let mut r = gateway_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit is exceeded. Try again in 1 seconds.",
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            r
        }
        Fault::Status(503) => {
            let mut r = gateway_error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            r
        }
        Fault::Status(other) => {
            let status = StatusCode::from_u16(other).unwrap_or(StatusCode::GATEWAY_TIMEOUT);
            gateway_error(status, status.canonical_reason().unwrap_or("Gateway Timeout"))
        }
        Fault::Drop => {
            match close {
                Some(c) => c.close(),
                None => return gateway_error(StatusCode::BAD_GATEWAY, "connection dropped"),
            }
            std::future::pending::<Response>().await
        }
        Fault::Hang => {
            tokio::time::sleep(config.faults.hang_for).await;
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"statusCode": 500, "message": "Internal server error", "activityId": activity_id(config.seed)}),
            )
        }
        Fault::Malformed => {
            let full = created.map_or_else(|| "{}".to_string(), created_body);
            let cut = full.len() / 2;
            (
                StatusCode::CREATED,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                full.get(..cut).unwrap_or("{").to_string(),
            )
                .into_response()
        }
        Fault::Truncate => {
            let full = created.map_or_else(|| "{}".to_string(), created_body);
            let half = Bytes::from(full.as_bytes()[..full.len() / 2].to_vec());
            // Send the first half, give it time to leave, then break the
            // connection: the client sees a 201 whose body never completes.
            let first = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(half)]);
            let cut = futures_util::stream::once(async {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Err(std::io::Error::other("connection cut by the sandbox"))
            });
            let chunks = futures_util::StreamExt::chain(first, cut);
            let mut r = Response::new(axum::body::Body::from_stream(chunks));
            *r.status_mut() = StatusCode::CREATED;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
            r
        }
    }
}

pub(super) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut s = catalogue::Stream::new(0, &String::from_utf8_lossy(bytes));
    s.next_u64()
}
