//! A small HTTP client for posting payloads to receivers (the demo, tests, and
//! outbound webhooks).

use std::time::Duration;

use crate::{Error, Result};

/// Posts JSON bodies to one base URL.
#[derive(Debug, Clone)]
pub struct HttpPoster {
    client: reqwest::Client,
    base: String,
}

/// A response: status and body bytes.
#[derive(Debug, Clone)]
pub struct Posted {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Posted {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl HttpPoster {
    /// A client for `base` (e.g. `http://127.0.0.1:9470`).
    pub fn new(base: &str) -> Result<HttpPoster> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Http {
                url: base.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(HttpPoster {
            client,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// POSTs `body` as JSON to `path` with extra headers.
    pub async fn post_json(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> Result<Posted> {
        self.post(path, "application/json", headers, body.into_bytes())
            .await
    }

    /// POSTs a body with an explicit content type.
    pub async fn post_body(&self, path: &str, content_type: &str, body: Vec<u8>) -> Result<Posted> {
        self.post(path, content_type, &[], body).await
    }

    async fn post(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Posted> {
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .client
            .post(&url)
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.map_err(|e| Error::Http {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Ok(Posted { status, body })
    }

    /// GETs `path` and returns the status and body.
    pub async fn get(&self, path: &str) -> Result<Posted> {
        let url = format!("{}{}", self.base, path);
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| Error::Http {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Ok(Posted { status, body })
    }
}
