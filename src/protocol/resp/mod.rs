//! RESP2 and inline requests, RESP2/RESP3 replies, the command table, multi-key fan-out and
//! keyspace-wide commands.

pub mod codec;
pub mod command;
pub mod fanout;
pub mod keyspace;
pub mod reply;

pub use codec::{Request, RequestDecoder};
pub use reply::ReplyScanner;
