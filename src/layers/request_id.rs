//! The client's `x-request-id` ends up in logs, spans and every audit row of the call (10,000
//! of them in a large confirm), so only a short, safe one is kept: at most
//! [`MAX_REQUEST_ID_LEN`] characters of `[A-Za-z0-9._:-]` (UUIDs, ULIDs, W3C trace ids and
//! the usual `service:1234` forms all fit). Any other is dropped before the request id layer,
//! which then mints one; the response's `x-request-id` tells the client which id was used.

use crate::api::REQUEST_ID_HEADER;

/// The longest client request id kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether `id` may be kept as the call's request id.
pub fn is_safe(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Removes every `x-request-id` of `request` unless there is exactly one and it is safe.
pub fn drop_unsafe<B>(mut request: http::Request<B>) -> http::Request<B> {
    let mut ids = request.headers().get_all(REQUEST_ID_HEADER).iter();
    let keep = match (ids.next(), ids.next()) {
        (Some(id), None) => is_safe(id.as_bytes()),
        (None, _) => true,
        _ => false,
    };
    if !keep {
        tracing::debug!("client x-request-id refused; minting one");
        request.headers_mut().remove(REQUEST_ID_HEADER);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_safe_ids_are_kept() {
        for ok in [
            "0190f3c2-7d1e-7aa0-8b1e-5f2f6c3b9e11",
            "01HZY3C1X9Q8W4T6",
            "billing:1234",
            "a.b_c-d",
            &"x".repeat(128),
        ] {
            assert!(is_safe(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            &"x".repeat(129),
            "with space",
            "semi;colon",
            "ünïcode",
            "new\nline",
            "<script>",
        ] {
            assert!(!is_safe(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn unsafe_or_repeated_ids_are_dropped() {
        let request = |ids: &[&str]| {
            let mut builder = http::Request::builder();
            for id in ids {
                builder = builder.header(REQUEST_ID_HEADER, *id);
            }
            drop_unsafe(builder.body(()).unwrap())
        };
        assert_eq!(request(&["ok-1"]).headers()[REQUEST_ID_HEADER], "ok-1");
        assert!(
            request(&["not ok"])
                .headers()
                .get(REQUEST_ID_HEADER)
                .is_none()
        );
        assert!(
            request(&["a", "b"])
                .headers()
                .get(REQUEST_ID_HEADER)
                .is_none()
        );
        assert!(request(&[]).headers().get(REQUEST_ID_HEADER).is_none());
    }
}
