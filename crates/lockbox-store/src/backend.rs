//! Storage URL → object_store backend (local folder, S3, GCS, Azure) and key prefix.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use url::Url;

use crate::options::invalid;
use crate::{StoreError, StoreOptions};

/// Where a storage URL points, before any client is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Local(PathBuf),
    Bucket {
        scheme: Cloud,
        bucket: String,
        prefix: Path,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cloud {
    S3,
    Gcs,
    Azure,
}

pub(crate) fn parse_url(url: &str) -> Result<Target, StoreError> {
    let bad = |reason: &str| StoreError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Do not echo the URL: it carries credentials.
        return Err(StoreError::InvalidUrl {
            url: format!("{}://<redacted>", parsed.scheme()),
            reason: "credentials do not belong in the URL; use the provider's environment \
                     variables or options"
                .into(),
        });
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("query strings and fragments are not supported"));
    }
    let cloud = match parsed.scheme() {
        "file" => return local_target(&parsed).map_err(bad),
        "s3" => Cloud::S3,
        "gs" => Cloud::Gcs,
        "az" => Cloud::Azure,
        other => {
            return Err(StoreError::UnsupportedScheme {
                url: url.to_owned(),
                scheme: other.to_owned(),
                hint: " (use file://, s3://, gs:// or az://)",
            });
        }
    };
    let bucket = parsed
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| bad("missing bucket/container name"))?;
    let prefix = Path::from_url_path(parsed.path().trim_matches('/'))
        .map_err(|e| bad(&format!("invalid prefix: {e}")))?;
    Ok(Target::Bucket {
        scheme: cloud,
        bucket: bucket.to_owned(),
        prefix,
    })
}

fn local_target(parsed: &Url) -> Result<Target, &'static str> {
    let path = parsed
        .to_file_path()
        .map_err(|()| "file:// URLs need an absolute local path, e.g. file:///srv/backups")?;
    Ok(Target::Local(path))
}

/// A built backend: the object store plus the key prefix that backups live under.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// `LocalFileSystem` needs its root to exist, so it is built on first use.
    Local {
        root: PathBuf,
        store: OnceLock<Arc<dyn ObjectStore>>,
        /// The same folder without a flush per write, for [`crate::Store::put_object_lazily`].
        lazy: OnceLock<Arc<dyn ObjectStore>>,
    },
    Remote {
        store: Arc<dyn ObjectStore>,
        prefix: Path,
    },
}

impl Backend {
    pub(crate) fn build(url: &str, options: &StoreOptions) -> Result<Backend, StoreError> {
        options.validate(url)?;
        match parse_url(url)? {
            Target::Local(root) => {
                if let Some((key, _)) = options.provider_options.first() {
                    return Err(invalid(url, key, "file:// storage takes no options".into()));
                }
                Ok(Backend::Local {
                    root,
                    store: OnceLock::new(),
                    lazy: OnceLock::new(),
                })
            }
            Target::Bucket {
                scheme,
                bucket,
                prefix,
            } => Ok(Backend::Remote {
                store: cloud::build(url, scheme, &bucket, options)?,
                prefix,
            }),
        }
    }

    pub(crate) fn prefix(&self) -> Path {
        match self {
            Backend::Local { .. } => Path::default(),
            Backend::Remote { prefix, .. } => prefix.clone(),
        }
    }

    /// The folder of a `file://` store.
    pub(crate) fn local_root(&self) -> Option<&std::path::Path> {
        match self {
            Backend::Local { root, .. } => Some(root),
            Backend::Remote { .. } => None,
        }
    }

    /// The store, for reading: a missing local folder is `NotFound`, never created.
    pub(crate) fn existing(&self, url: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
        match self {
            Backend::Remote { store, .. } => Ok(Arc::clone(store)),
            Backend::Local { root, store, .. } => {
                if !root.is_dir() {
                    return Err(StoreError::NotFound {
                        url: url.to_owned(),
                        what: format!("backup folder {}", root.display()),
                    });
                }
                local_store(url, root, store, true)
            }
        }
    }

    /// The store, for writing: a missing local folder is created first.
    pub(crate) fn for_write(&self, url: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
        self.writer(url, true)
    }

    /// The store, for writes made durable later by [`crate::Store::make_durable`]: in a local
    /// folder they are not flushed one by one. Elsewhere the same as [`Backend::for_write`].
    pub(crate) fn for_lazy_write(&self, url: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
        self.writer(url, false)
    }

    fn writer(&self, url: &str, fsync: bool) -> Result<Arc<dyn ObjectStore>, StoreError> {
        if let Backend::Local { root, store, lazy } = self {
            std::fs::create_dir_all(root).map_err(|e| {
                local_error(url, format!("creating backup folder {}", root.display()), e)
            })?;
            return local_store(url, root, if fsync { store } else { lazy }, fsync);
        }
        self.existing(url)
    }
}

fn local_store(
    url: &str,
    root: &std::path::Path,
    cell: &OnceLock<Arc<dyn ObjectStore>>,
    fsync: bool,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    if let Some(store) = cell.get() {
        return Ok(Arc::clone(store));
    }
    let built = LocalFileSystem::new_with_prefix(root)
        .map_err(|e| StoreError::from_object_store(url, "opening the backup folder", e))?
        // A backup reported as finished must survive a power cut.
        .with_fsync(fsync);
    let built: Arc<dyn ObjectStore> = Arc::new(built);
    Ok(Arc::clone(cell.get_or_init(|| built)))
}

pub(crate) fn local_error(url: &str, operation: String, e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        return StoreError::PermissionDenied {
            url: url.to_owned(),
            operation,
            source: Box::new(e),
        };
    }
    StoreError::Storage {
        url: url.to_owned(),
        operation,
        source: Box::new(e),
    }
}

#[cfg(not(any(feature = "aws", feature = "gcs", feature = "azure")))]
mod cloud {
    use super::*;

    pub(super) fn build(
        url: &str,
        scheme: Cloud,
        _bucket: &str,
        _options: &StoreOptions,
    ) -> Result<Arc<dyn ObjectStore>, StoreError> {
        Err(unsupported(url, scheme))
    }
}

#[cfg(any(feature = "aws", feature = "gcs", feature = "azure"))]
mod cloud {
    use std::str::FromStr;

    use object_store::{ClientConfigKey, ClientOptions};

    use super::*;

    pub(super) fn build(
        url: &str,
        scheme: Cloud,
        bucket: &str,
        options: &StoreOptions,
    ) -> Result<Arc<dyn ObjectStore>, StoreError> {
        match scheme {
            #[cfg(feature = "aws")]
            Cloud::S3 => s3(url, bucket, options),
            #[cfg(feature = "gcs")]
            Cloud::Gcs => gcs(url, bucket, options),
            #[cfg(feature = "azure")]
            Cloud::Azure => azure(url, bucket, options),
            #[allow(unreachable_patterns)]
            _ => Err(unsupported(url, scheme)),
        }
    }

    /// Provider settings in precedence order: our client defaults < environment < explicit
    /// options. `from_env()` builds the provider part; client settings (timeouts,
    /// `allow_http`, proxy, ...) found in the environment are layered onto our defaults
    /// because `with_client_options` replaces them wholesale.
    struct Layered<K> {
        explicit: Vec<(K, String)>,
        client: ClientOptions,
    }

    fn layered<K: FromStr>(
        url: &str,
        options: &StoreOptions,
        base: ClientOptions,
        env_prefix: &str,
        as_client: fn(&K) -> Option<ClientConfigKey>,
    ) -> Result<Layered<K>, StoreError> {
        let mut client = base;
        if options.use_env {
            // `vars_os`: `std::env::vars` panics on any non-UTF-8 variable, even an unrelated one.
            for (key, value) in std::env::vars_os() {
                let (Some(key), Some(value)) = (key.to_str(), value.into_string().ok()) else {
                    continue;
                };
                if !key.starts_with(env_prefix) {
                    continue;
                }
                if let Some(client_key) = key
                    .to_ascii_lowercase()
                    .parse()
                    .ok()
                    .as_ref()
                    .and_then(as_client)
                {
                    client = client.with_config(client_key, value);
                }
            }
        }
        let mut explicit = Vec::new();
        for (key, value) in &options.provider_options {
            let parsed: K = key.to_ascii_lowercase().parse().map_err(|_| {
                invalid(url, key, "not a configuration key of this provider".into())
            })?;
            match as_client(&parsed) {
                Some(client_key) => client = client.with_config(client_key, value),
                None => explicit.push((parsed, value.clone())),
            }
        }
        Ok(Layered { explicit, client })
    }

    fn built<S: ObjectStore>(
        url: &str,
        result: object_store::Result<S>,
    ) -> Result<Arc<dyn ObjectStore>, StoreError> {
        result
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            .map_err(|e| StoreError::InvalidOption {
                url: url.to_owned(),
                key: "(configuration)".into(),
                reason: e.to_string(),
            })
    }

    /// Defines `fn $name(url, bucket, options)`, which builds one provider's store the same way
    /// for every cloud: its environment variables (if allowed), explicit provider options,
    /// bucket or container, then our client options (`$base`) and retry policy. `$Key` is the
    /// provider's config-key enum, whose `Client` variant carries HTTP client settings.
    macro_rules! cloud_store {
        ($(#[$attr:meta])* fn $name:ident: $module:ident::{$Builder:ident, $Key:ident},
         $prefix:literal, $with_bucket:ident, base = $base:expr) => {
            $(#[$attr])*
            fn $name(
                url: &str,
                bucket: &str,
                options: &StoreOptions,
            ) -> Result<Arc<dyn ObjectStore>, StoreError> {
                use object_store::$module::{$Builder, $Key};
                let as_client = |k: &$Key| match k {
                    $Key::Client(c) => Some(*c),
                    _ => None,
                };
                let base: ClientOptions = ($base)(options);
                let layers = layered::<$Key>(url, options, base, $prefix, as_client)?;
                let mut builder = if options.use_env {
                    $Builder::from_env()
                } else {
                    $Builder::new()
                };
                for (key, value) in layers.explicit {
                    builder = builder.with_config(key, value);
                }
                let builder = builder
                    .$with_bucket(bucket)
                    .with_client_options(layers.client)
                    .with_retry(options.retry_config());
                built(url, builder.build())
            }
        };
    }

    cloud_store! { #[cfg(feature = "aws")]
    fn s3: aws::{AmazonS3Builder, AmazonS3ConfigKey},
    "AWS_", with_bucket_name, base = StoreOptions::client_options }

    // The GCS builder allows plain HTTP by default (metadata-server credentials); keep that.
    cloud_store! { #[cfg(feature = "gcs")]
    fn gcs: gcp::{GoogleCloudStorageBuilder, GoogleConfigKey},
    "GOOGLE_", with_bucket_name, base = |o: &StoreOptions| o.client_options().with_allow_http(true) }

    cloud_store! { #[cfg(feature = "azure")]
    fn azure: azure::{MicrosoftAzureBuilder, AzureConfigKey},
    "AZURE_", with_container_name, base = StoreOptions::client_options }
}

#[allow(dead_code)] // unused when every cloud feature is enabled
fn unsupported(url: &str, scheme: Cloud) -> StoreError {
    let (name, hint) = match scheme {
        Cloud::S3 => (
            "s3",
            ": this build lacks S3 support; enable lockbox-store's `aws` feature",
        ),
        Cloud::Gcs => (
            "gs",
            ": this build lacks Google Cloud Storage support; enable lockbox-store's `gcs` feature",
        ),
        Cloud::Azure => (
            "az",
            ": this build lacks Azure Blob Storage support; enable lockbox-store's `azure` feature",
        ),
    };
    StoreError::UnsupportedScheme {
        url: url.to_owned(),
        scheme: name.to_owned(),
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_urls_split_into_bucket_and_prefix() {
        let t = parse_url("s3://my-bucket/phone/backups/").unwrap();
        assert_eq!(
            t,
            Target::Bucket {
                scheme: Cloud::S3,
                bucket: "my-bucket".into(),
                prefix: Path::from("phone/backups"),
            }
        );
        let root = parse_url("gs://b").unwrap();
        assert!(
            matches!(root, Target::Bucket { scheme: Cloud::Gcs, prefix, .. } if prefix == Path::default())
        );
        let az = parse_url("az://container/a%20b").unwrap();
        assert!(
            matches!(az, Target::Bucket { scheme: Cloud::Azure, prefix, .. } if prefix.as_ref() == "a b")
        );
    }

    #[test]
    fn file_urls_need_absolute_paths() {
        assert_eq!(
            parse_url("file:///srv/backups").unwrap(),
            Target::Local(PathBuf::from("/srv/backups"))
        );
        assert!(matches!(
            parse_url("file://relative/x"),
            Err(StoreError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn bad_urls_are_refused_clearly() {
        assert!(matches!(
            parse_url("not a url"),
            Err(StoreError::InvalidUrl { .. })
        ));
        assert!(matches!(
            parse_url("s3:///prefix-without-bucket"),
            Err(StoreError::InvalidUrl { .. })
        ));
        assert!(matches!(
            parse_url("s3://b/p?x=1"),
            Err(StoreError::InvalidUrl { .. })
        ));
        let err = parse_url("ftp://host/x").unwrap_err();
        assert!(matches!(err, StoreError::UnsupportedScheme { ref scheme, .. } if scheme == "ftp"));
    }

    #[test]
    fn credentials_in_urls_are_refused_without_echo() {
        let err = parse_url("s3://AKID:hunter2@bucket/x").unwrap_err();
        let message = err.to_string();
        assert!(
            !message.contains("hunter2") && !message.contains("AKID"),
            "{message}"
        );
    }

    #[cfg(not(feature = "gcs"))]
    #[test]
    fn disabled_provider_names_the_feature() {
        let err = Backend::build("gs://b/p", &StoreOptions::default()).unwrap_err();
        assert!(err.to_string().contains("`gcs` feature"), "{err}");
    }

    #[test]
    fn local_storage_takes_no_options() {
        let options = StoreOptions {
            provider_options: vec![("aws_region".into(), "x".into())],
            ..StoreOptions::default()
        };
        let err = Backend::build("file:///tmp/x", &options).unwrap_err();
        assert!(matches!(err, StoreError::InvalidOption { ref key, .. } if key == "aws_region"));
    }

    #[cfg(feature = "aws")]
    #[test]
    fn unknown_provider_option_is_refused() {
        let options = StoreOptions {
            use_env: false,
            provider_options: vec![("aws_nonsense".into(), "x".into())],
            ..StoreOptions::default()
        };
        let err = Backend::build("s3://b/p", &options).unwrap_err();
        assert!(matches!(err, StoreError::InvalidOption { ref key, .. } if key == "aws_nonsense"));
    }
}
