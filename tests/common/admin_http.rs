//! One-shot HTTP requests to Keyway's admin port.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::*;

/// One HTTP/1.1 request to Keyway's admin port: the status code and the body.
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    http_with(port, method, path, "")
}

/// [`http`] with extra header lines (`Name: value\r\n` each).
pub fn http_with(port: u16, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the admin port");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("read timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: keyway\r\n{headers}Content-Length: 0\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
