//! Receiver policy through the router, without a socket (`oneshot`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::http::Request;
use futures::future::BoxFuture;
use tower::ServiceExt;

use super::*;

#[derive(Debug, Default)]
struct MemoryLog {
    events: Mutex<Vec<Event>>,
    down: bool,
}

impl EventLog for MemoryLog {
    fn append(&self, events: Vec<Event>) -> BoxFuture<'_, crate::Result<()>> {
        Box::pin(async move {
            if self.down {
                return Err(Error::LogUnavailable {
                    reason: "test".into(),
                });
            }
            self.events.lock().expect("lock").extend(events);
            Ok(())
        })
    }
    fn is_available(&self) -> bool {
        !self.down
    }
    fn end_offsets(&self) -> BTreeMap<u32, u64> {
        BTreeMap::new()
    }
}

fn app(log: Arc<MemoryLog>, secret: Option<&str>) -> Router {
    router(ReceiverState {
        log,
        catalog: Arc::new(IndexedCatalog::default()),
        config: Arc::new(ReceiverConfig {
            max_body_bytes: 4096,
            github_secret: secret.map(str::to_owned),
            ..ReceiverConfig::default()
        }),
    })
}

const ALERT: &str = r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A","service":"x"},"annotations":{},"startsAt":"2024-01-01T00:00:00Z"}]}"#;

async fn send(app: Router, req: Request<Body>) -> StatusCode {
    app.oneshot(req).await.expect("infallible").status()
}

fn post(path: &str, ct: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header("content-type", ct)
        .body(body.into())
        .expect("request")
}

#[tokio::test]
async fn the_status_policy_holds_and_refusals_leave_no_events() {
    let log = Arc::new(MemoryLog::default());
    let a = || app(log.clone(), None);
    assert_eq!(
        send(a(), post("/ingest/alertmanager", "application/json", ALERT)).await,
        StatusCode::OK
    );
    assert_eq!(log.events.lock().expect("lock").len(), 1);
    assert_eq!(
        send(a(), post("/ingest/alertmanager", "text/plain", ALERT)).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        send(
            a(),
            post("/ingest/alertmanager", "application/json", "{not json")
        )
        .await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(
            a(),
            post(
                "/ingest/alertmanager",
                "application/json",
                ALERT.replace("\"4\"", "\"3\"")
            )
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        send(
            a(),
            post("/ingest/alertmanager", "application/json", vec![b' '; 5000])
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        log.events.lock().expect("lock").len(),
        1,
        "refusals added nothing"
    );
    let before = metrics::REJECTED
        .with_label_values(&["alertmanager", "malformed"])
        .get();
    assert!(before >= 1);

    let down = Arc::new(MemoryLog {
        down: true,
        ..MemoryLog::default()
    });
    assert_eq!(
        send(
            app(down, None),
            post("/ingest/alertmanager", "application/json", ALERT)
        )
        .await,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn github_signatures_are_verified_when_a_secret_is_set() {
    let log = Arc::new(MemoryLog::default());
    let body = "{\"zen\":\"hi\"}";
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("key");
    mac.update(body.as_bytes());
    let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let req = |sig: &str| {
        Request::post("/ingest/github")
            .header("content-type", "application/json")
            .header("x-github-event", "ping")
            .header("x-hub-signature-256", sig)
            .body(Body::from(body))
            .expect("request")
    };
    assert_eq!(
        send(app(log.clone(), Some("s3cret")), req(&good)).await,
        StatusCode::OK
    );
    assert_eq!(
        send(app(log.clone(), Some("s3cret")), req("sha256=00")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(app(log, Some("other")), req(&good)).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn bearer_and_basic_credentials_are_required_where_configured() {
    let log = Arc::new(MemoryLog::default());
    let mut config = ReceiverConfig::default();
    config
        .auth
        .insert("alertmanager".into(), Credential::Bearer("t0ken".into()));
    config.auth.insert(
        "prometheus".into(),
        Credential::Basic {
            username: "prom".into(),
            password: "pa:ss".into(),
        },
    );
    let app = || {
        router(ReceiverState {
            log: log.clone(),
            catalog: Arc::new(IndexedCatalog::default()),
            config: Arc::new(config.clone()),
        })
    };
    let with = |path: &str, auth: Option<&str>, body: &str| {
        let mut r = Request::post(path).header("content-type", "application/json");
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.body(Body::from(body.to_owned())).expect("request")
    };
    assert_eq!(
        send(app(), with("/ingest/alertmanager", None, ALERT)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(
            app(),
            with("/ingest/alertmanager", Some("Bearer nope"), ALERT)
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(
            app(),
            with("/ingest/alertmanager", Some("Bearer t0ken"), ALERT)
        )
        .await,
        StatusCode::OK
    );
    let v2 = r#"[{"labels":{"alertname":"A"},"startsAt":"2024-01-01T00:00:00Z"}]"#;
    // base64("prom:pa:ss")
    assert_eq!(
        send(
            app(),
            with("/api/v2/alerts", Some("Basic cHJvbTpwYTpzcw=="), v2)
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        send(app(), with("/api/v2/alerts", Some("Basic cHJvbTp4"), v2)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        log.events.lock().expect("lock").len(),
        2,
        "refused requests added nothing"
    );
}

#[tokio::test]
async fn requests_over_the_rate_limit_get_429_and_are_counted() {
    let log = Arc::new(MemoryLog::default());
    let app = router(ReceiverState {
        log: log.clone(),
        catalog: Arc::new(IndexedCatalog::default()),
        config: Arc::new(ReceiverConfig {
            max_requests_per_second: Some(2),
            ..ReceiverConfig::default()
        }),
    });
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            send(
                app.clone(),
                post("/ingest/alertmanager", "application/json", ALERT),
            )
            .await,
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count(),
        3
    );
    assert!(
        metrics::REJECTED
            .with_label_values(&["alertmanager", "rate_limited"])
            .get()
            >= 3
    );
}

/// Writes `head` and then `body` in pieces, as a client without
/// `Expect: 100-continue` does, then reads one response: status line and body.
async fn raw_exchange(
    stream: &mut tokio::net::TcpStream,
    head: &str,
    body: &[u8],
) -> (String, String) {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    stream.write_all(head.as_bytes()).await.expect("write head");
    for piece in body.chunks(700) {
        stream.write_all(piece).await.expect("write body");
    }
    let mut reader = tokio::io::BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).await.expect("status line");
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("header line");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().expect("content-length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.expect("response body");
    (
        status.trim_end().to_owned(),
        String::from_utf8(body).expect("utf-8"),
    )
}

async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A client that writes its whole oversized body before reading gets the 413,
/// not a broken pipe: the body is drained, so the connection even stays usable.
#[tokio::test]
async fn a_declared_oversize_body_is_drained_and_refused_with_413_over_a_socket() {
    let log = Arc::new(MemoryLog::default());
    let addr = serve(app(log.clone(), None)).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let before = metrics::REJECTED
        .with_label_values(&["alertmanager", "too_large"])
        .get();
    let big = vec![b' '; 5000];
    let head = format!(
        "POST /ingest/alertmanager HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        big.len()
    );
    let (status, body) = raw_exchange(&mut stream, &head, &big).await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
    assert!(body.contains("\"too_large\""), "{body}");
    assert!(body.contains("5000"), "{body}");
    assert_eq!(
        metrics::REJECTED
            .with_label_values(&["alertmanager", "too_large"])
            .get(),
        before + 1
    );
    // The same connection carries the next request.
    let head = format!(
        "POST /ingest/alertmanager HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        ALERT.len()
    );
    let (status, body) = raw_exchange(&mut stream, &head, ALERT.as_bytes()).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert_eq!(log.events.lock().expect("lock").len(), 1);
}

/// A body declared far over the limit is refused at once, without waiting for
/// the body (the head alone is sent here).
#[tokio::test]
async fn a_body_declared_far_over_the_limit_is_refused_without_reading_it() {
    let log = Arc::new(MemoryLog::default());
    let addr = serve(app(log.clone(), None)).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = "POST /ingest/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n";
    // Half the drain timeout: an answer only after a drain would miss it.
    let exchange = raw_exchange(&mut stream, head, b"");
    let (status, body) = tokio::time::timeout(OVERSIZE_DRAIN_TIMEOUT / 2, exchange)
        .await
        .expect("answered without the body");
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
    assert!(body.contains("\"too_large\""), "{body}");
    assert!(log.events.lock().expect("lock").is_empty());
}
