//! A minimal HTTP/1.1 client over a unix socket, as dockerd talks to a plugin: one
//! connection kept open while the server allows it (a server that answers
//! `Connection: close` gets a new connection for the next request, as it would from dockerd).

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A keep-alive client for one plugin socket.
pub struct PluginClient {
    socket: PathBuf,
    connection: Option<BufReader<UnixStream>>,
    /// How many connections were opened (1 when the server keeps connections alive).
    pub connections: u64,
}

/// One answer.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl PluginClient {
    /// A client for `socket`; connects on the first request.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
            connection: None,
            connections: 0,
        }
    }

    /// Sends `POST path` with `body` and reads the whole answer. A kept-alive connection
    /// the server closed meanwhile is replaced once, as HTTP clients do (dockerd's included).
    pub fn post(&mut self, path: &str, body: &[u8]) -> Result<Answer> {
        match self.connection.take() {
            Some(connection) => match self.exchange(connection, path, body) {
                Ok(answer) => Ok(answer),
                Err(_) => {
                    let fresh = self.connect()?;
                    self.exchange(fresh, path, body)
                }
            },
            None => {
                let fresh = self.connect()?;
                self.exchange(fresh, path, body)
            }
        }
    }

    fn connect(&mut self) -> Result<BufReader<UnixStream>> {
        let stream = UnixStream::connect(&self.socket)
            .with_context(|| format!("cannot connect to {}", self.socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        self.connections += 1;
        Ok(BufReader::new(stream))
    }

    fn exchange(
        &mut self,
        mut connection: BufReader<UnixStream>,
        path: &str,
        body: &[u8],
    ) -> Result<Answer> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Go-http-client/1.1\r\n\
             Content-Type: application/json\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        // One write, as Go's HTTP client sends a small request: a server that answers once it
        // has the headers (gunicorn, when the handler ignores the body) and closes must not
        // make a separate body write fail with EPIPE.
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        let written = connection.get_mut().write_all(&request);
        let (answer, keep) = match read_answer(&mut connection) {
            Ok(read) => read,
            Err(error) => {
                written.with_context(|| format!("sending {path}"))?;
                return Err(error.context(format!("reading the answer to {path}")));
            }
        };
        if keep {
            self.connection = Some(connection);
        }
        Ok(answer)
    }
}

/// Reads a status line, headers and a body (Content-Length or chunked); tells whether the
/// connection may be reused.
fn read_answer(reader: &mut impl BufRead) -> Result<(Answer, bool)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP status line: {line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    let mut keep = true;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed inside the headers");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => keep = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let body = if chunked {
        read_chunked(reader)?
    } else if let Some(length) = length {
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    } else {
        keep = false;
        let mut body = Vec::new();
        reader.read_to_end(&mut body)?;
        body
    };
    Ok((Answer { status, body }, keep))
}

fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    // Bounded: a plugin answer is small; 4096 chunks is far more than any will send.
    for _ in 0..4096 {
        line.clear();
        reader.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .with_context(|| format!("bad chunk size {line:?}"))?;
        if size == 0 {
            line.clear();
            reader.read_line(&mut line)?;
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_line(&mut line)?;
    }
    bail!("more than 4096 chunks in one answer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_content_length_and_keep_alive() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        let (answer, keep) = read_answer(&mut &raw[..]).expect("parsed");
        assert_eq!(
            (answer.status, answer.body.as_slice(), keep),
            (200, &b"{}"[..], true)
        );
    }

    #[test]
    fn reads_chunked_and_close() {
        let raw = b"HTTP/1.1 500 X\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        let (answer, keep) = read_answer(&mut &raw[..]).expect("parsed");
        assert_eq!(
            (answer.status, answer.body.as_slice(), keep),
            (500, &b"{}"[..], false)
        );
    }
}
