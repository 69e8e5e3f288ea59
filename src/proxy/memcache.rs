//! The memcached side of a session (ASCII protocol): decodes a request and starts its reply:
//! answered here (`version`, `quit`, `mn`), split by shard (multi-key retrievals), or
//! forwarded by its key.

use bytes::BytesMut;

use super::session::{Decoded, FanoutReply, Handler, Pending, Plan};
use crate::backend::Expect;
use crate::config;
use crate::protocol::memcache::{self, ReplyPolicy, KEY_MAX_LENGTH, MAX_LINE_BYTES};

/// A memcached client's request decoder.
pub(super) struct Memcache {
    decoder: memcache::RequestDecoder,
}

impl Memcache {
    /// A decoder enforcing the pool's limits.
    pub(super) fn new(limits: &config::Limits) -> Memcache {
        Memcache {
            decoder: memcache::RequestDecoder::new(decoder_limits(limits)),
        }
    }

    /// Takes the next request off `input` and starts its reply. A malformed request gets an
    /// error reply; the connection closes only when the stream cannot resynchronise.
    #[inline]
    pub(super) fn decode(&mut self, input: &mut BytesMut, handler: &mut Handler<'_>) -> Decoded {
        match self.decoder.decode(input) {
            Ok(Some(request)) => handler.handle_memcache(request),
            Ok(None) => Decoded::More,
            Err(error) => match error.reply() {
                Some(reply) if error.is_fatal() => Decoded::Fatal(reply),
                Some(reply) => Decoded::Request(Pending::Ready(reply)),
                None => Decoded::Silent,
            },
        }
    }
}

/// A pool's limits, as they apply to memcached requests: `max_request_bytes` bounds a whole
/// request, its data block included (memcached's own `-I` item size still applies behind
/// it); `max_multibulk_length` the keys of one `get`/`gets`/`gat`/`gats`; `max_key_bytes` a
/// key, never beyond memcached's 250 bytes.
fn decoder_limits(limits: &config::Limits) -> memcache::Limits {
    memcache::Limits {
        max_key_bytes: limits.max_key_bytes.min(KEY_MAX_LENGTH),
        max_item_bytes: limits.max_request_bytes,
        max_keys: limits.max_multibulk_length,
        max_line_bytes: MAX_LINE_BYTES,
        max_request_bytes: limits.max_request_bytes,
    }
}

impl Handler<'_> {
    /// Starts the reply to a memcached request.
    fn handle_memcache(&mut self, request: memcache::Request) -> Decoded {
        let reply = match request.command() {
            memcache::Command::Version => Pending::Ready(memcache::reply::version_reply()),
            memcache::Command::MetaNoop => Pending::Ready(memcache::reply::noop_reply()),
            memcache::Command::Quit => {
                self.client.quitting = true;
                return Decoded::Silent;
            }
            _ if self.migrating() => self.migrate_memcache(&request),
            _ => {
                let expect = Expect::Memcache(request.expect());
                match memcache::fanout::split(&request, |key| self.route(key)) {
                    Err(reply) => Pending::Ready(reply),
                    Ok(memcache::fanout::Split::Whole(shard)) => {
                        self.send(shard, request.frame().clone(), expect)
                    }
                    Ok(memcache::fanout::Split::Parts(parts, plan)) => {
                        self.fragments(parts.len());
                        Pending::Fanout(Box::new(FanoutReply {
                            plan: Plan::Memcache(plan),
                            parts: parts
                                .into_iter()
                                .map(|part| {
                                    self.send(part.shard, part.request.frame().clone(), expect)
                                })
                                .collect(),
                        }))
                    }
                }
            }
        };
        match request.reply_policy() {
            ReplyPolicy::Always => Decoded::Request(reply),
            policy => Decoded::Request(Pending::Filtered(Box::new(reply), policy)),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    #[test]
    fn pool_limits_map_onto_memcached_limits() {
        let pool = config::Limits {
            max_request_bytes: 5000,
            max_multibulk_length: 7,
            max_key_bytes: 100_000,
            ..config::Limits::default()
        };
        let limits = decoder_limits(&pool);
        assert_eq!(limits.max_key_bytes, KEY_MAX_LENGTH);
        assert_eq!(limits.max_keys, 7);
        assert_eq!(limits.max_request_bytes, 5000);
        // the item size is left to memcached's own `-I`, within the request limit
        assert_eq!(limits.max_item_bytes, 5000);
        let small = decoder_limits(&config::Limits {
            max_key_bytes: 10,
            ..pool
        });
        assert_eq!(small.max_key_bytes, 10);
        let mut buf = BytesMut::from(&b"get 0123456789a\r\nget a b c d e f g h\r\n"[..]);
        let mut decoder = memcache::RequestDecoder::new(small);
        let mut reply = || decoder.decode(&mut buf).err().and_then(|e| e.reply());
        assert_eq!(
            reply().as_deref(),
            Some(&b"CLIENT_ERROR bad command line format\r\n"[..])
        );
        assert_eq!(
            reply().as_deref(),
            Some(&b"CLIENT_ERROR too many keys\r\n"[..])
        );
        assert!(buf.is_empty());
    }
}
