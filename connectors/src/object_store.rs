//! The S3-compatible client behind an object-store history: the engine reads and
//! writes history files through the `ObjectStore` trait, and this is the one
//! place that builds the HTTP client for it (AWS S3, MinIO, Ceph RGW, R2, …).

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

use crate::{Error, Result};

/// A client for the bucket of `url` (`s3://bucket/prefix`): credentials, region
/// and endpoint from the standard `AWS_*` environment variables, then `options`
/// (`endpoint`, `region`, `allow_http`, `virtual_hosted_style_request`, … — the
/// keys `object_store`'s S3 builder takes, with or without the `aws_` prefix).
pub fn s3_store(url: &str, options: &BTreeMap<String, String>) -> Result<Arc<dyn ObjectStore>> {
    let fail = |reason: String| Error::ObjectStore {
        url: url.to_owned(),
        reason,
    };
    let mut builder = AmazonS3Builder::from_env().with_url(url);
    for (key, value) in options {
        let parsed: AmazonS3ConfigKey = key
            .parse()
            .map_err(|e| fail(format!("option {key:?}: {e}")))?;
        builder = builder.with_config(parsed, value.clone());
    }
    let store = builder.build().map_err(|e| fail(e.to_string()))?;
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_options_are_named() {
        let mut options = BTreeMap::new();
        options.insert("endpoint".to_owned(), "http://127.0.0.1:9".to_owned());
        options.insert("allow_http".to_owned(), "true".to_owned());
        options.insert("region".to_owned(), "eu-west-1".to_owned());
        s3_store("s3://bucket/prefix", &options).expect("known options");
        options.insert("colour".to_owned(), "blue".to_owned());
        let err = s3_store("s3://bucket/prefix", &options)
            .expect_err("unknown option")
            .to_string();
        assert!(err.contains("colour"), "{err}");
    }
}
