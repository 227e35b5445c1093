//! Outbound runbook webhooks: signed, idempotent, retried.
//!
//! A receiver must be able to tell a Causeway call from a forgery and a retry from
//! a new action. Every request carries `X-Causeway-Timestamp` (Unix seconds) and
//! `X-Causeway-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, so a
//! captured request cannot be replayed later with a new timestamp, and the same
//! `Idempotency-Key` on every attempt, so a receiver that honours it applies the
//! action once however many times the network made us retry.
//!
//! Retries: connection errors, timeouts, 408, 429 and 5xx are retried with
//! exponential backoff and full jitter up to a deadline; any other 4xx is a
//! permanent refusal and is not retried.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// Header carrying the signing time, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-causeway-timestamp";
/// Header carrying `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-causeway-signature";
/// Header carrying the action's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// How hard to try.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff; each next one doubles, up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver answered 2xx.
    Delivered { status: u16, attempts: u32 },
    /// The receiver refused for good (4xx other than 408/429), or every attempt
    /// failed: the reason says which.
    Failed { reason: String, attempts: u32 },
    /// Shutdown came first; the action is still owed.
    Cancelled { attempts: u32 },
}

/// Signs `body` at `timestamp` (Unix seconds): the value of [`SIGNATURE_HEADER`].
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature the way a receiver should: constant-time comparison, and a
/// timestamp within `tolerance` of `now` (Unix seconds).
pub fn verify(
    secret: &[u8],
    timestamp: i64,
    body: &[u8],
    signature: &str,
    now: i64,
    tolerance: Duration,
) -> bool {
    let Ok(tol) = i64::try_from(tolerance.as_secs()) else {
        return false;
    };
    if (now - timestamp).abs() > tol {
        return false;
    }
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(raw) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&raw).is_ok()
}

/// Posts signed action payloads.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    policy: RetryPolicy,
}

impl WebhookSender {
    /// A sender with its own connection pool.
    pub fn new(policy: RetryPolicy) -> Result<WebhookSender> {
        let client = reqwest::Client::builder()
            .timeout(policy.request_timeout)
            .build()
            .map_err(|e| Error::Http {
                url: String::new(),
                reason: e.to_string(),
            })?;
        Ok(WebhookSender { client, policy })
    }

    /// Delivers `body` to `url` until it is accepted, refused for good, out of
    /// attempts, or `cancel` fires. `now_unix` gives the signing time of each attempt.
    pub async fn deliver(
        &self,
        url: &str,
        secret: Option<&[u8]>,
        idempotency_key: &str,
        body: &[u8],
        now_unix: impl Fn() -> i64,
        cancel: &CancellationToken,
    ) -> Delivery {
        let mut last_reason = String::new();
        for attempt in 1..=self.policy.max_attempts.max(1) {
            if cancel.is_cancelled() {
                return Delivery::Cancelled {
                    attempts: attempt - 1,
                };
            }
            let ts = now_unix();
            let mut req = self
                .client
                .post(url)
                .header("content-type", "application/json")
                .header(IDEMPOTENCY_HEADER, idempotency_key)
                .header(TIMESTAMP_HEADER, ts.to_string())
                .body(body.to_vec());
            if let Some(secret) = secret {
                req = req.header(SIGNATURE_HEADER, sign(secret, ts, body));
            }
            let retry_after = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if resp.status().is_success() {
                        return Delivery::Delivered {
                            status,
                            attempts: attempt,
                        };
                    }
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = resp.text().await.unwrap_or_default();
                    let excerpt: String = text.chars().take(200).collect();
                    last_reason = format!("HTTP {status}: {excerpt}");
                    if !retryable(status) {
                        return Delivery::Failed {
                            reason: format!("refused: {last_reason}"),
                            attempts: attempt,
                        };
                    }
                    retry_after
                }
                Err(e) => {
                    last_reason = e.to_string();
                    None
                }
            };
            if attempt == self.policy.max_attempts {
                break;
            }
            let wait = retry_after
                .map(|d| d.min(self.policy.max_backoff))
                .unwrap_or_else(|| backoff(&self.policy, attempt, idempotency_key));
            tokio::select! {
                () = cancel.cancelled() => return Delivery::Cancelled { attempts: attempt },
                () = tokio::time::sleep(wait) => {}
            }
        }
        Delivery::Failed {
            reason: format!(
                "gave up after {} attempts: {last_reason}",
                self.policy.max_attempts
            ),
            attempts: self.policy.max_attempts,
        }
    }
}

/// Whether a status is worth another attempt.
fn retryable(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// Full-jitter exponential backoff before attempt `attempt + 1`. The jitter is a
/// hash of the key and attempt: spread across actions, reproducible in tests.
fn backoff(policy: &RetryPolicy, attempt: u32, key: &str) -> Duration {
    let cap = policy
        .initial_backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(policy.max_backoff);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(attempt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Between half the cap and the cap: never a zero wait, still spread out.
    let half = cap / 2;
    let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_micros(h % spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_with_its_secret_body_and_a_fresh_timestamp() {
        let sig = sign(b"s3cret", 1_700_000_000, b"{\"a\":1}");
        let tol = Duration::from_secs(300);
        assert!(verify(
            b"s3cret",
            1_700_000_000,
            b"{\"a\":1}",
            &sig,
            1_700_000_100,
            tol
        ));
        assert!(!verify(
            b"other",
            1_700_000_000,
            b"{\"a\":1}",
            &sig,
            1_700_000_100,
            tol
        ));
        assert!(!verify(
            b"s3cret",
            1_700_000_000,
            b"{\"a\":2}",
            &sig,
            1_700_000_100,
            tol
        ));
        assert!(!verify(
            b"s3cret",
            1_700_000_000,
            b"{\"a\":1}",
            &sig,
            1_700_001_000,
            tol
        ));
        assert!(!verify(
            b"s3cret",
            1_700_000_000,
            b"{\"a\":1}",
            "sha256=zz",
            1_700_000_000,
            tol
        ));
    }

    #[test]
    fn backoff_grows_to_its_cap_and_is_never_zero() {
        let p = RetryPolicy::default();
        let waits: Vec<Duration> = (1..10).map(|a| backoff(&p, a, "act_1")).collect();
        assert!(waits.iter().all(|w| *w >= Duration::from_millis(250)));
        assert!(waits.iter().all(|w| *w <= p.max_backoff));
        assert!(waits[4] > waits[0]);
        assert_ne!(backoff(&p, 3, "act_1"), backoff(&p, 3, "act_2"));
    }
}
