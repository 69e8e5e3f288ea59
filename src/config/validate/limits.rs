//! Keyway's limits (extension keys): sizes and depths past which a request, a reply or a
//! client is refused, each a positive number.

use super::{parse_digits, PoolChecker};
use crate::config::keys::Key;
use crate::config::raw::RawPool;
use crate::config::Limits;

impl PoolChecker<'_> {
    /// Takes and checks the limit keys; `None` when any is wrong (the problems are recorded).
    pub(super) fn limits(&mut self, raw: &mut RawPool) -> Option<Limits> {
        let defaults = Limits::default();
        // Every field is read before any `?`, so that each wrong key is reported.
        let max_request_bytes = self.or_default(
            raw.scalar(Key::MaxRequestBytes),
            Key::MaxRequestBytes,
            defaults.max_request_bytes,
            parse_request_limit,
        );
        let mut limit =
            |key: Key, default: usize| self.or_default(raw.scalar(key), key, default, parse_limit);
        let max_multibulk_length = limit(Key::MaxMultibulkLength, defaults.max_multibulk_length);
        let max_key_bytes = limit(Key::MaxKeyBytes, defaults.max_key_bytes);
        let max_pipeline = limit(Key::MaxPipeline, defaults.max_pipeline);
        let max_reply_bytes = limit(Key::MaxReplyBytes, defaults.max_reply_bytes);
        let client_output_limit = limit(Key::ClientOutputLimit, defaults.client_output_limit);
        let client_output_hard_limit = limit(
            Key::ClientOutputHardLimit,
            defaults.client_output_hard_limit,
        );
        let dedicated_connections =
            limit(Key::DedicatedConnections, defaults.dedicated_connections);
        Some(Limits {
            max_request_bytes: max_request_bytes?,
            max_multibulk_length: max_multibulk_length?,
            max_key_bytes: max_key_bytes?,
            max_pipeline: max_pipeline?,
            max_reply_bytes: max_reply_bytes?,
            client_output_limit: client_output_limit?,
            client_output_hard_limit: client_output_hard_limit?,
            dedicated_connections: dedicated_connections?,
        })
    }
}

/// A Keyway limit: a positive number of any size the platform holds.
fn parse_limit(text: &str) -> Result<usize, String> {
    let value = parse_digits(text).ok_or_else(|| format!("'{text}' is not a number"))?;
    match usize::try_from(value) {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text} is too large")),
    }
}

/// `max_request_bytes`: a limit the codecs can hold (their argument offsets are 32-bit).
fn parse_request_limit(text: &str) -> Result<usize, String> {
    let max = crate::protocol::resp::codec::MAX_FRAME;
    match parse_limit(text)? {
        n if n > max => Err(format!("must be at most {max}")),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::validate::tests::rejection;

    #[test]
    fn rejects_a_request_limit_past_32_bits() {
        assert_eq!(
            rejection("  max_request_bytes: 4294967296\n"),
            "pool 'alpha': key 'max_request_bytes': must be at most 4294967295"
        );
    }

    #[test]
    fn rejects_zero_limit() {
        assert_eq!(
            rejection("  max_pipeline: 0\n"),
            "pool 'alpha': key 'max_pipeline': must be at least 1"
        );
    }

    #[test]
    fn rejects_zero_or_non_numeric_dedicated_connections() {
        assert_eq!(
            rejection("  dedicated_connections: 0\n"),
            "pool 'alpha': key 'dedicated_connections': must be at least 1"
        );
        assert!(rejection("  dedicated_connections: many\n").contains("'many' is not a number"));
    }

    #[test]
    fn rejects_non_numeric_limit() {
        assert!(rejection("  max_key_bytes: 1MB\n").contains("'1MB' is not a number"));
    }

    #[test]
    fn every_wrong_limit_is_reported() {
        let problems = crate::config::validate::tests::parse(
            "alpha:\n  listen: 127.0.0.1:22121\n  max_request_bytes: 0\n  max_pipeline: x\n  \
             servers:\n   - 127.0.0.1:6379:1\n",
        )
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "pool 'alpha': key 'max_request_bytes': must be at least 1",
                "pool 'alpha': key 'max_pipeline': 'x' is not a number"
            ]
        );
    }
}
