//! What keeps a pool's traffic private and its data to the right clients: TLS on both sides
//! ([`tls`]).

pub mod tls;
