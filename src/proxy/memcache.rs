//! The memcached side of a session (ASCII protocol): decodes a request and starts its reply:
//! answered here (`version`, `quit`, `mn`), split by shard (multi-key retrievals), or
//! forwarded by its key.

use bytes::BytesMut;

use super::session::{Decoded, FanoutReply, Handler, Pending, Plan};
use crate::backend::Expect;
use crate::protocol::memcache::{self, ReplyPolicy};

/// A memcached client's request decoder.
pub(super) struct Memcache {
    decoder: memcache::RequestDecoder,
}

impl Memcache {
    /// A decoder enforcing the pool's limits.
    pub(super) fn new(limits: &crate::config::Limits) -> Memcache {
        Memcache {
            decoder: memcache::RequestDecoder::new(memcache::Limits::from(limits)),
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
