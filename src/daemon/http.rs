//! The daemon's HTTP listener: `GET /metrics`, `/healthz` and `/readyz`, nothing else. Three
//! fixed read-only answers do not need a web framework: one request per connection, a bounded
//! request head, read and write timeouts, a bounded number of connections at once (more are
//! closed at once), `Connection: close`. Every answer comes from state the daemon keeps; none
//! asks the database (ADR 0005).

use super::State;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// For the whole answer: a client that asks and never reads is let go after this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections answered at once; more are closed as they come (a scraper and two probes need
/// three).
pub const MAX_CONNECTIONS: usize = 16;

/// Accepts connections until the process ends. Each is answered on its own task.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::debug!("too many http connections at once; one closed unanswered");
                    drop(stream);
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(e) = answer(stream, &state).await {
                        tracing::debug!(error = %e, "http connection ended with an error");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting an http connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, state: &State) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if head.len() > MAX_HEAD {
                return Ok(false);
            }
        }
    })
    .await
    .unwrap_or(Ok(false))?;
    if !complete {
        return respond(&mut stream, 400, "text/plain", "bad request\n").await;
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut stream, 405, "text/plain", "only GET\n").await;
    }
    match path.split('?').next().unwrap_or("") {
        "/metrics" => {
            // Prometheus asks for OpenMetrics in its Accept header; curl and promtool do not.
            let openmetrics = line.lines().any(|h| {
                h.split_once(':').is_some_and(|(name, value)| {
                    name.eq_ignore_ascii_case("accept")
                        && value.contains("application/openmetrics-text")
                })
            });
            let body = state.metrics_text(openmetrics);
            let kind = if openmetrics {
                super::metrics::OPENMETRICS
            } else {
                super::metrics::PROMETHEUS_TEXT
            };
            respond(&mut stream, 200, kind, &body).await
        }
        "/healthz" => {
            let (alive, body) = state.liveness();
            respond(
                &mut stream,
                if alive { 200 } else { 503 },
                "text/plain",
                &body,
            )
            .await
        }
        "/readyz" => {
            let (ready, body) = state.readiness();
            respond(
                &mut stream,
                if ready { 200 } else { 503 },
                "text/plain",
                &body,
            )
            .await
        }
        _ => respond(&mut stream, 404, "text/plain", "not found\n").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not read its answer",
        ))
    })
}
