//! Reload triggers: debounced config-file changes and SIGHUP, both sent as "reload now" on one channel.
//!
//! The parent directory is watched, not the file: editors and Kubernetes replace files by rename, which a
//! watch on the file itself would lose; a Kubernetes ConfigMap update renames only the `..data` symlink the
//! file resolves through, so other entries' changes count too when the file's resolved target, size or
//! modification time changed. Only events that can change the content of our file name count:
//! notify's inotify backend also reports opens and read-closes, and acting on those would make every
//! reload (which reads the file) trigger the next one.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode, EventKind, MetadataKind, ModifyKind};
use notify::{Event, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

/// Quiet time before a burst of events (write, truncate, close, rename) becomes one reload.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Why a reload was requested (for the reload log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadTrigger {
    FileChanged,
    Signal,
    /// `POST /admin/reload`; sent by the lead's admin handler on the same channel.
    Admin,
}

/// Why a reload trigger could not be installed (the gateway then serves without it, and says so).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch config path '{}': it names no file", .0.display())]
    NoFileName(PathBuf),
    #[error("cannot start the config file watcher: {0}")]
    Start(#[source] notify::Error),
    #[error("cannot watch directory '{}': {source}", dir.display())]
    Directory { dir: PathBuf, source: notify::Error },
    #[error("cannot listen for SIGHUP outside a tokio runtime: {0}")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),
    #[error("cannot listen for SIGHUP: {0}")]
    Sighup(#[source] std::io::Error),
}

/// Keeps the file watch alive; dropping it stops watching.
pub(crate) struct ConfigWatcher {
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    path: PathBuf,
}

impl fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigWatcher")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl ConfigWatcher {
    fn path(&self) -> &Path {
        &self.path
    }
}

/// Watches `path`'s directory and sends `FileChanged` (debounced) when the file is written, replaced,
/// created or removed. When the channel is full a reload is already pending, so the extra one is dropped.
pub(crate) fn watch(
    path: &Path,
    tx: mpsc::Sender<ReloadTrigger>,
) -> Result<ConfigWatcher, WatchError> {
    let name: OsString = path
        .file_name()
        .ok_or_else(|| WatchError::NoFileName(path.to_owned()))?
        .to_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    // Kubernetes mounts a ConfigMap file as `name -> ..data/name` and updates it by renaming a new
    // `..data` symlink into place: no event names our file, only its resolved target changes. So any
    // content-changing event in the directory also counts when the file's fingerprint changed.
    let file = path.to_owned();
    let mut last = Fingerprint::of(&file);
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            let direct = events.iter().any(|e| is_relevant(e, &name));
            let changes = direct || events.iter().any(|e| changes_content(&e.kind));
            if !changes {
                return;
            }
            let now = Fingerprint::of(&file);
            if direct || now != last {
                // Runs on notify's thread, outside tokio: `try_send` never blocks, and a full channel
                // already holds a pending reload.
                let _ = tx.try_send(ReloadTrigger::FileChanged);
            }
            last = now;
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!(error = %e, "config file watcher error");
            }
        }
    };
    let mut debouncer = new_debouncer(DEBOUNCE, None, handler).map_err(WatchError::Start)?;
    debouncer
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::Directory {
            dir: dir.clone(),
            source,
        })?;
    Ok(ConfigWatcher {
        _debouncer: debouncer,
        path: path.to_owned(),
    })
}

/// True for events that may have changed the file named `name`; reads, opens and atime never count.
fn is_relevant(event: &Event, name: &OsStr) -> bool {
    changes_content(&event.kind) && event.paths.iter().any(|p| p.file_name() == Some(name))
}

/// True for event kinds that may change what some path in the directory holds or resolves to.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// What the config path currently resolves to, without reading it (a read would itself raise events):
/// the real file behind any symlinks, its size and modification time. `None`s while it does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    target: Option<PathBuf>,
    len: Option<u64>,
    modified: Option<SystemTime>,
}

impl Fingerprint {
    fn of(path: &Path) -> Fingerprint {
        let meta = std::fs::metadata(path).ok();
        Fingerprint {
            target: std::fs::canonicalize(path).ok(),
            len: meta.as_ref().map(std::fs::Metadata::len),
            modified: meta.and_then(|m| m.modified().ok()),
        }
    }
}

/// Sends `Signal` on every SIGHUP. Must be called inside a tokio runtime; the handler is installed before
/// this returns, so a SIGHUP sent afterwards can no longer kill the process. No-op off Unix.
pub(crate) fn watch_sighup(tx: mpsc::Sender<ReloadTrigger>) -> Result<(), WatchError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        tokio::runtime::Handle::try_current().map_err(WatchError::NoRuntime)?;
        let mut hangups = signal(SignalKind::hangup()).map_err(WatchError::Sighup)?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                if tx.send(ReloadTrigger::Signal).await.is_err() {
                    break;
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RenameMode};
    use tokio::time::timeout;

    fn ev(kind: EventKind, paths: &[&str]) -> Event {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    #[test]
    fn only_content_changes_of_our_file_count() {
        let name = OsStr::new("config.yaml");
        let ours = "/etc/gw/config.yaml";
        let relevant = [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Content)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(notify::event::RemoveKind::File),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
        ];
        for kind in relevant {
            assert!(is_relevant(&ev(kind, &[ours]), name), "{kind:?}");
        }
        let ignored = [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
        ];
        for kind in ignored {
            assert!(!is_relevant(&ev(kind, &[ours]), name), "{kind:?}");
        }
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert!(!is_relevant(&ev(data, &["/etc/gw/other.yaml"]), name));
        // A rename of a temp file onto ours carries both paths.
        let both = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(is_relevant(
            &ev(both, &["/etc/gw/.config.yaml.tmp", ours]),
            name
        ));
    }

    /// Receives the next trigger, or `None` when nothing arrives within `within`.
    async fn next(
        rx: &mut mpsc::Receiver<ReloadTrigger>,
        within: Duration,
    ) -> Option<ReloadTrigger> {
        timeout(within, rx.recv()).await.ok().flatten()
    }

    /// Waits for one trigger and then for quiet, so each step starts clean.
    async fn expect_trigger(rx: &mut mpsc::Receiver<ReloadTrigger>, what: &str) {
        assert_eq!(
            next(rx, Duration::from_secs(10)).await,
            Some(ReloadTrigger::FileChanged),
            "{what}"
        );
        while next(rx, Duration::from_millis(500)).await.is_some() {}
    }

    #[tokio::test]
    async fn fires_on_write_and_rename_but_not_on_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "a: 1\n").unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let watcher = watch(&path, tx).unwrap();
        assert_eq!(watcher.path(), path);

        std::fs::write(&path, "a: 2\n").unwrap();
        expect_trigger(&mut rx, "plain write").await;

        // What a reload does: read the file. It must not trigger the next reload.
        for _ in 0..20 {
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "a: 2\n");
        }
        // Other files in the directory do not count either.
        std::fs::write(dir.path().join("other.yaml"), "b: 1\n").unwrap();
        assert_eq!(next(&mut rx, Duration::from_millis(800)).await, None);

        let tmp = dir.path().join(".config.yaml.tmp");
        std::fs::write(&tmp, "a: 3\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        expect_trigger(&mut rx, "write to temp + rename").await;

        std::fs::remove_file(&path).unwrap();
        expect_trigger(&mut rx, "remove").await;
        drop(watcher);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn fires_on_a_kubernetes_configmap_symlink_swap() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("..2026_01_01_00_00_00.1");
        std::fs::create_dir(&first).unwrap();
        std::fs::write(first.join("config.yaml"), "a: 1\n").unwrap();
        symlink("..2026_01_01_00_00_00.1", dir.path().join("..data")).unwrap();
        let path = dir.path().join("config.yaml");
        symlink("..data/config.yaml", &path).unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let _watcher = watch(&path, tx).unwrap();

        // Unrelated files in the directory still do not count.
        std::fs::write(dir.path().join("other.yaml"), "b: 1\n").unwrap();
        assert_eq!(next(&mut rx, Duration::from_millis(800)).await, None);

        let second = dir.path().join("..2026_01_01_00_05_00.2");
        std::fs::create_dir(&second).unwrap();
        std::fs::write(second.join("config.yaml"), "a: 2\n").unwrap();
        symlink("..2026_01_01_00_05_00.2", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        std::fs::remove_dir_all(&first).unwrap();
        expect_trigger(&mut rx, "..data swap").await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a: 2\n");
    }

    #[test]
    fn bare_file_name_watches_the_current_directory() {
        let (tx, _rx) = mpsc::channel(1);
        let w = watch(Path::new("gw-test-nonexistent.yaml"), tx).unwrap();
        assert_eq!(w.path(), Path::new("gw-test-nonexistent.yaml"));
        let (tx, _rx) = mpsc::channel(1);
        let err = watch(Path::new("/"), tx).unwrap_err().to_string();
        assert!(err.contains("'/'"), "{err}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sighup_triggers_reload() {
        let (tx, mut rx) = mpsc::channel(4);
        watch_sighup(tx).unwrap();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            next(&mut rx, Duration::from_secs(10)).await,
            Some(ReloadTrigger::Signal)
        );
    }
}
