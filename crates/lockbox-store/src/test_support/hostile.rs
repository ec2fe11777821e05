//! [`Hostile`]: a storage provider that lies. It wraps a real object store and, where its rules
//! say so, answers a write that it never made (or made) with "already exists", deletes what it
//! pleases, hides objects from listings and reads, or dies after a number of writes, the way a
//! malicious or crashing provider would. Tests play the attacker with it. It can also answer
//! reads slowly, as a distant or hostile provider does, and counts how many a client holds open.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use crate::Store;

/// What the provider does with one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnPut {
    /// Store it and say so.
    Pass,
    /// Store nothing and answer "already exists".
    Refuse,
    /// Store it, then answer "already exists" (a lost reply, or a lie).
    StoreThenRefuse,
}

/// Decides each write by its object name (relative to the store's root); may also change which
/// objects are hidden or deleted from then on.
pub type PutRule = Box<dyn FnMut(&str, &mut Tamper) -> OnPut + Send>;

/// What the provider does to the objects, beyond single writes.
#[derive(Debug, Default)]
pub struct Tamper {
    /// Objects whose names start with one of these are absent from listings and reads.
    pub hidden: Vec<String>,
    /// Objects to delete before the next answer.
    pub delete: Vec<String>,
    /// After this many more mutating calls (puts and deletes), every call fails as if the
    /// provider had gone away.
    pub writes_left: Option<u64>,
    /// Each read is answered only after this long.
    pub read_delay: Option<Duration>,
    /// Reads of objects whose names start with `.0` are answered with `.1` junk bytes past
    /// what was asked, sent as a remote provider's body stream, piece by piece ([`JUNK_PIECE`]).
    pub padded_reads: Option<(String, u64)>,
}

/// The size of each junk piece a padded read sends.
pub const JUNK_PIECE: usize = 64 << 10;

/// The reads a client made of the provider since the last [`Hostile::reset_reads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reads {
    /// Reads asked for, answered or not.
    pub total: usize,
    /// The most that were waiting for their answer at once.
    pub most_at_once: usize,
    /// Junk bytes of padded answers that the client took.
    pub junk_taken: u64,
}

#[derive(Debug, Default)]
struct ReadGauge {
    now: AtomicUsize,
    most: AtomicUsize,
    total: AtomicUsize,
    junk: Arc<AtomicU64>,
}

/// One read waiting for its answer; counted down when dropped (answered or abandoned).
struct Waiting<'g>(&'g ReadGauge);

impl ReadGauge {
    fn enter(&self) -> Waiting<'_> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        Waiting(self)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A lying provider around a real object store.
pub struct Hostile {
    inner: Arc<dyn ObjectStore>,
    rule: Mutex<Option<PutRule>>,
    tamper: Arc<Mutex<Tamper>>,
    reads: ReadGauge,
}

impl fmt::Debug for Hostile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hostile").finish_non_exhaustive()
    }
}

impl fmt::Display for Hostile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hostile({})", self.inner)
    }
}

impl Hostile {
    /// A provider over the local folder `root` (created if absent), honest until told otherwise.
    pub fn over_folder(root: &std::path::Path) -> Arc<Hostile> {
        std::fs::create_dir_all(root).expect("creating the hostile store's folder");
        let local = object_store::local::LocalFileSystem::new_with_prefix(root)
            .expect("a local object store");
        Arc::new(Hostile {
            inner: Arc::new(local),
            rule: Mutex::new(None),
            tamper: Arc::default(),
            reads: ReadGauge::default(),
        })
    }

    /// A [`Store`] that goes through this provider.
    pub fn store(self: &Arc<Self>, url: &str) -> Store {
        Store::from_object_store(url, Arc::clone(self) as Arc<dyn ObjectStore>)
    }

    /// Sets the rule for every write from now on.
    pub fn on_put(&self, rule: impl FnMut(&str, &mut Tamper) -> OnPut + Send + 'static) {
        *self.rule.lock().expect("rule") = Some(Box::new(rule));
    }

    /// Changes what is hidden, deleted or left to write.
    pub fn tamper(&self) -> MutexGuard<'_, Tamper> {
        self.tamper.lock().expect("tamper")
    }

    /// The reads made since the last reset.
    pub fn reads(&self) -> Reads {
        Reads {
            total: self.reads.total.load(Ordering::SeqCst),
            most_at_once: self.reads.most.load(Ordering::SeqCst),
            junk_taken: self.reads.junk.load(Ordering::SeqCst),
        }
    }

    /// Starts counting reads afresh (those waiting now still count down when answered).
    pub fn reset_reads(&self) {
        self.reads.total.store(0, Ordering::SeqCst);
        self.reads.junk.store(0, Ordering::SeqCst);
        let now = self.reads.now.load(Ordering::SeqCst);
        self.reads.most.store(now, Ordering::SeqCst);
    }

    /// `found` as a stream that runs on with `junk` bytes past its range, counting what the
    /// client takes of them.
    async fn padded(&self, found: GetResult, junk: u64) -> Result<GetResult> {
        let (meta, range, attributes) = (
            found.meta.clone(),
            found.range.clone(),
            found.attributes.clone(),
        );
        let honest = found.bytes().await?;
        let taken = Arc::clone(&self.reads.junk);
        let pieces = (junk as usize).div_ceil(JUNK_PIECE);
        let junk = futures::stream::iter(0..pieces).map(move |_| {
            taken.fetch_add(JUNK_PIECE as u64, Ordering::SeqCst);
            Ok(Bytes::from(vec![0x5a; JUNK_PIECE]))
        });
        let body = futures::stream::once(async move { Ok(honest) }).chain(junk);
        Ok(GetResult {
            payload: GetResultPayload::Stream(body.boxed()),
            meta,
            range,
            attributes,
            extensions: Default::default(),
        })
    }

    fn hidden(&self, path: &Path) -> bool {
        let name = path.as_ref();
        self.tamper().hidden.iter().any(|h| name.starts_with(h))
    }

    fn not_found(path: &Path) -> object_store::Error {
        object_store::Error::NotFound {
            path: path.to_string(),
            source: "hidden by the provider".into(),
        }
    }

    async fn apply_deletes(&self) -> Result<()> {
        let doomed = std::mem::take(&mut self.tamper().delete);
        for name in doomed {
            match self.inner.delete(&Path::from(name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for Hostile {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        spend_write(&self.tamper)?;
        let action = {
            let mut rule = self.rule.lock().expect("rule");
            match rule.as_mut() {
                Some(rule) => rule(location.as_ref(), &mut self.tamper()),
                None => OnPut::Pass,
            }
        };
        self.apply_deletes().await?;
        let exists = || object_store::Error::AlreadyExists {
            path: location.to_string(),
            source: "the provider says so".into(),
        };
        match action {
            OnPut::Pass => self.inner.put_opts(location, payload, opts).await,
            OnPut::Refuse => Err(exists()),
            OnPut::StoreThenRefuse => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(exists())
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        spend_write(&self.tamper)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if self.hidden(location) {
            return Err(Self::not_found(location));
        }
        let _waiting = self.reads.enter();
        let (delay, padding) = {
            let tamper = self.tamper();
            let padding = tamper.padded_reads.as_ref();
            let padding =
                padding.filter(|(under, _)| location.as_ref().starts_with(under.as_str()));
            (tamper.read_delay, padding.map(|&(_, junk)| junk))
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let found = self.inner.get_opts(location, options).await?;
        match padding {
            Some(junk) => self.padded(found, junk).await,
            None => Ok(found),
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let tamper = Arc::clone(&self.tamper);
        let gated = locations
            .map(move |location| {
                let location = location?;
                spend_write(&tamper)?;
                Ok(location)
            })
            .boxed();
        self.inner.delete_stream(gated)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let hidden = self.tamper().hidden.clone();
        self.inner
            .list(prefix)
            .filter(move |meta| {
                let keep = match meta {
                    Ok(m) => !hidden.iter().any(|h| m.location.as_ref().starts_with(h)),
                    Err(_) => true,
                };
                futures::future::ready(keep)
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        listed.objects.retain(|m| !self.hidden(&m.location));
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        spend_write(&self.tamper)?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// Counts one mutating call against `writes_left`.
fn spend_write(tamper: &Mutex<Tamper>) -> Result<()> {
    let mut t = tamper.lock().expect("tamper");
    match &mut t.writes_left {
        Some(0) => Err(object_store::Error::Generic {
            store: "Hostile",
            source: "the provider went away".into(),
        }),
        Some(n) => {
            *n -= 1;
            Ok(())
        }
        None => Ok(()),
    }
}
