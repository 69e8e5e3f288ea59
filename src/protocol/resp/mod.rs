//! RESP2 and inline requests, RESP2/RESP3 replies, the command table and multi-key fan-out.

pub mod codec;
pub mod command;
pub mod fanout;
pub mod reply;

pub use codec::{Request, RequestDecoder};
pub use reply::ReplyScanner;
