//! The load benchmark's floor: a forwarder with no features at all, to show what any proxy doing
//! this job can reach on the machine at hand. Not a product and not a model for one: it trusts
//! its input, knows only Content-Length bodies and unpipelined requests, and gives up on a
//! connection at the first fault.
//!
//!   cargo run --release --example floor -- LISTEN UPSTREAM BEARER
//!
//! Per request it does the least any HTTP/1.1 proxy must: read the request, write it upstream
//! with Host and Authorization replaced, read the answer, write it back. That is four socket
//! calls, the same as nginx's proxy module makes (nginx adds one getsockopt). The user-space
//! work is about a microsecond; what is left is the kernel's loopback TCP and the wake-ups of
//! the process on the other end, which every proxy pays alike.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEADERS: usize = 64;
const BUFFER: usize = 16 * 1024;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, bearer] = args.as_slice() else {
        eprintln!("usage: floor LISTEN UPSTREAM BEARER");
        std::process::exit(2);
    };
    let upstream: SocketAddr = upstream.parse().expect("UPSTREAM is host:port");
    let listener = TcpListener::bind(listen.as_str())
        .await
        .expect("LISTEN is free");
    let fixed: &'static [u8] = format!("host: {upstream}\r\nauthorization: Bearer {bearer}\r\n")
        .leak()
        .as_bytes();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = forward(client, upstream, fixed).await;
        });
    }
}

/// One client connection, with an upstream connection of its own for its whole life.
async fn forward(mut client: TcpStream, upstream: SocketAddr, fixed: &[u8]) -> std::io::Result<()> {
    let mut origin = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    origin.set_nodelay(true)?;
    let (mut inbound, mut outbound) = (vec![0; BUFFER], Vec::with_capacity(1024));
    let mut answer = vec![0; BUFFER];
    loop {
        let rewritten = |bytes: &[u8]| rewrite(bytes, fixed, &mut outbound);
        if read_head(&mut client, &mut inbound, rewritten)
            .await?
            .is_none()
        {
            return Ok(());
        }
        origin.write_all(&outbound).await?;
        let Some(length) = read_head(&mut origin, &mut answer, response_length).await? else {
            return Ok(());
        };
        client.write_all(&answer[..length]).await?;
    }
}

/// Reads until `parse` finds a whole message; returns what it reports, or None at end of stream.
async fn read_head(
    stream: &mut TcpStream,
    buffer: &mut [u8],
    mut parse: impl FnMut(&[u8]) -> std::io::Result<Option<usize>>,
) -> std::io::Result<Option<usize>> {
    let mut filled = 0;
    loop {
        let read = stream.read(&mut buffer[filled..]).await?;
        if read == 0 {
            return Ok(None);
        }
        filled += read;
        if let Some(length) = parse(&buffer[..filled])? {
            return Ok(Some(length));
        }
        if filled == buffer.len() {
            return Err(invalid("message larger than the buffer"));
        }
    }
}

/// The length of a complete response, head and Content-Length body.
fn response_length(bytes: &[u8]) -> std::io::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let Some(head) = complete(response.parse(bytes))? else {
        return Ok(None);
    };
    let body = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .ok_or_else(|| invalid("no Content-Length"))?;
    Ok((bytes.len() >= head + body).then_some(head + body))
}

/// Once the request head is complete (the bench sends no request bodies), writes it into `out`
/// for the upstream: the request line and the client's headers, less Host, Authorization and
/// Connection, plus the fixed Host and bearer. Returns the head's length.
fn rewrite(bytes: &[u8], fixed: &[u8], out: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let Some(head) = complete(request.parse(bytes))? else {
        return Ok(None);
    };
    let (method, path) = (request.method.unwrap_or("GET"), request.path.unwrap_or("/"));
    out.clear();
    for part in [method.as_bytes(), b" ", path.as_bytes(), b" HTTP/1.1\r\n"] {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(fixed);
    for header in request.headers.iter() {
        let dropped = ["host", "authorization", "connection"]
            .iter()
            .any(|name| header.name.eq_ignore_ascii_case(name));
        if !dropped {
            out.extend_from_slice(header.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(header.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(head))
}

/// A whole head's length, or None while more bytes are needed.
fn complete(parsed: httparse::Result<usize>) -> std::io::Result<Option<usize>> {
    match parsed {
        Ok(httparse::Status::Complete(head)) => Ok(Some(head)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(invalid(&e.to_string())),
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}
