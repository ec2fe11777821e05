//! [`StoreOptions`]: transfer sizing, retries, timeouts and provider options.

use std::ffi::OsStr;
use std::time::Duration;

use crate::StoreError;

/// S3's smallest allowed part (all parts but the last): also the floor here, so a setting
/// that works against a local folder cannot fail later against real S3.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// Largest part size accepted (S3 allows 5 GiB; more than 1 GiB per part only costs memory).
pub const MAX_PART_SIZE: usize = 1024 * 1024 * 1024;

/// Environment variable that replaces [`StoreOptions::max_retries`] when
/// [`StoreOptions::use_env`] is set: `0` fails at the first transient error (interactive use,
/// tests), more rides out longer outages. A whole number up to [`RETRIES_ENV_LIMIT`].
pub const RETRIES_ENV: &str = "LOCKBOX_STORAGE_RETRIES";
/// Largest value [`RETRIES_ENV`] accepts.
pub const RETRIES_ENV_LIMIT: usize = 100;

/// How a [`crate::Store`] talks to its storage. `Default` suits backups over flaky links.
///
/// Retries and timeouts (why these values):
/// * object_store retries connection errors, dropped connections, timeouts of idempotent
///   requests (part uploads are), 5xx and throttling with exponential backoff and jitter;
///   10 retries from 200 ms, capped at 15 s per wait and 3 minutes per request in total, ride
///   out a restarting endpoint or a short network loss. The 3-minute cap stays under the
///   5-minute bound after which retried requests could carry stale credentials/signatures.
/// * The overall per-request timeout is disabled: a download is one GET of the whole backup
///   and may legitimately take hours. Stalls are caught instead by `read_timeout` (120 s:
///   covers sending a whole part, so 8 MiB parts need about 70 KB/s upstream, and each read
///   of a response) and `connect_timeout` (10 s).
/// * Failed part uploads and interrupted download streams are retried by object_store
///   itself (ranged re-GET with an ETag check), so a blip mid-backup does not lose the
///   transfer.
#[derive(Clone)]
pub struct StoreOptions {
    /// Multipart part size in bytes (at least [`MIN_PART_SIZE`]). Default 8 MiB.
    pub part_size: usize,
    /// Parts uploaded concurrently. Memory held by an upload is about
    /// `(max_parts_in_flight + 1) * part_size`. Default 3 (about 32 MiB).
    pub max_parts_in_flight: usize,
    /// Retries per request for transient failures. Default 10; replaced by [`RETRIES_ENV`]
    /// when `use_env` is set and that variable is.
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt. Default 3 minutes.
    pub retry_timeout: Duration,
    /// First backoff between retries (doubles, with jitter). Default 200 ms.
    pub initial_backoff: Duration,
    /// Longest backoff between retries. Default 15 s.
    pub max_backoff: Duration,
    /// TCP/TLS connect timeout. Default 10 s.
    pub connect_timeout: Duration,
    /// Longest wait for a response (including sending the request body) or for each read
    /// of a response body. Default 120 s.
    pub read_timeout: Duration,
    /// Read the provider's standard environment variables (`AWS_*`, `GOOGLE_*`,
    /// `AZURE_*`) and [`RETRIES_ENV`]. Default true; tests turn it off to be hermetic.
    pub use_env: bool,
    /// Provider options as object_store config keys, applied after the environment, e.g.
    /// `("aws_endpoint", "http://127.0.0.1:9000")`, `("aws_access_key_id", ..)`,
    /// `("aws_allow_http", "true")`. Not allowed for `file://`.
    pub provider_options: Vec<(String, String)>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            part_size: 8 * 1024 * 1024,
            max_parts_in_flight: 3,
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            use_env: true,
            provider_options: Vec::new(),
        }
    }
}

/// Provider option values may be secrets (`aws_secret_access_key`): only keys are shown.
impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self
            .provider_options
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        f.debug_struct("StoreOptions")
            .field("part_size", &self.part_size)
            .field("max_parts_in_flight", &self.max_parts_in_flight)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout", &self.retry_timeout)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("use_env", &self.use_env)
            .field("provider_option_keys", &keys)
            .finish()
    }
}

impl StoreOptions {
    /// Applies [`RETRIES_ENV`] if `use_env` is set; a malformed value is an error, not ignored.
    pub(crate) fn with_env(mut self, url: &str) -> Result<Self, StoreError> {
        if self.use_env
            && let Some(value) = std::env::var_os(RETRIES_ENV)
        {
            self.max_retries = parse_retries(url, &value)?;
        }
        Ok(self)
    }

    pub(crate) fn validate(&self, url: &str) -> Result<(), StoreError> {
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(invalid(
                url,
                "part_size",
                format!(
                    "{} is outside {MIN_PART_SIZE}..={MAX_PART_SIZE}",
                    self.part_size
                ),
            ));
        }
        if self.max_parts_in_flight == 0 {
            return Err(invalid(
                url,
                "max_parts_in_flight",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }

    #[cfg(any(feature = "aws", feature = "gcs", feature = "azure"))]
    pub(crate) fn retry_config(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: self.initial_backoff,
                max_backoff: self.max_backoff,
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }

    #[cfg(any(feature = "aws", feature = "gcs", feature = "azure"))]
    pub(crate) fn client_options(&self) -> object_store::ClientOptions {
        object_store::ClientOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_read_timeout(self.read_timeout)
            .with_timeout_disabled()
    }
}

fn parse_retries(url: &str, value: &OsStr) -> Result<usize, StoreError> {
    value
        .to_str()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n <= RETRIES_ENV_LIMIT)
        .ok_or_else(|| {
            invalid(
                url,
                RETRIES_ENV,
                format!(
                    "`{}` is not a whole number from 0 to {RETRIES_ENV_LIMIT}",
                    value.to_string_lossy().escape_debug()
                ),
            )
        })
}

pub(crate) fn invalid(url: &str, key: &str, reason: String) -> StoreError {
    StoreError::InvalidOption {
        url: url.to_owned(),
        key: key.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounded() {
        let options = StoreOptions::default();
        options.validate("file:///x").unwrap();
        let held = (options.max_parts_in_flight + 1) * options.part_size;
        assert!(held <= 33 * 1024 * 1024, "{held}");
    }

    #[test]
    fn debug_hides_provider_option_values() {
        let options = StoreOptions {
            provider_options: vec![("aws_secret_access_key".into(), "hunter2".into())],
            ..StoreOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(
            shown.contains("aws_secret_access_key") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn retries_from_the_environment_are_parsed_strictly() {
        let parse = |v: &str| parse_retries("s3://b", OsStr::new(v));
        assert_eq!(parse("0").unwrap(), 0);
        assert_eq!(parse(" 3\n").unwrap(), 3);
        assert_eq!(parse("100").unwrap(), RETRIES_ENV_LIMIT);
        for bad in ["", "-1", "101", "2.5", "ten", "18446744073709551616"] {
            let err = parse(bad).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidOption { ref key, .. } if key == RETRIES_ENV),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn out_of_range_knobs_are_rejected() {
        let small = StoreOptions {
            part_size: MIN_PART_SIZE - 1,
            ..StoreOptions::default()
        };
        assert!(matches!(
            small.validate("file:///x"),
            Err(StoreError::InvalidOption { key, .. }) if key == "part_size"
        ));
        let none_in_flight = StoreOptions {
            max_parts_in_flight: 0,
            ..StoreOptions::default()
        };
        assert!(none_in_flight.validate("file:///x").is_err());
    }
}
