//! The persistent NetworkID -> tenant NIC map, in the file format Trove's plugin uses
//! (`/etc/docker/hostnic.json`).
//!
//! Docker keeps its network definitions across restarts and never repeats `CreateNetwork`, so
//! losing this file breaks every later `Join`. Writes are therefore atomic (temp file in the same
//! directory, fsync, rename, fsync of the directory), and a file that cannot be parsed is moved
//! aside, never overwritten. Entries are judged one by one: a bad entry (a wrong MAC, a wrong
//! type) is reported with its position and NetworkID and kept verbatim in the file, while every
//! valid entry is served.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use netiso_config::tenant_nic::MacAddress;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where Trove's plugin keeps its state.
pub const DEFAULT_STATE_FILE: &str = "/etc/docker/hostnic.json";

/// Mode of a newly created state file (Trove's file was created 0644 by Python).
const NEW_FILE_MODE: u32 = 0o644;

/// How many `*.corrupt-<time>[-n]` names to try before giving up.
const MAX_SET_ASIDE_ATTEMPTS: u32 = 100;

/// One network's entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkEntry {
    /// The tenant NIC's MAC (`hostnic_mac`).
    #[serde(with = "crate::mac::serde_nic_mac")]
    pub mac_address: MacAddress,
    /// The IPv4 pool gateway at creation; informational, as in Trove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Keys written by other versions, kept so a rewrite loses nothing.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl NetworkEntry {
    /// A new entry with no extra keys.
    pub fn new(mac_address: MacAddress, gateway: Option<IpAddr>) -> Self {
        Self {
            mac_address,
            gateway,
            other: BTreeMap::new(),
        }
    }
}

/// The parsed content of a state file: NetworkID -> entry.
pub type Networks = BTreeMap<String, NetworkEntry>;

/// An entry of the state file that is not a valid network entry. It is not served, but it is
/// written back as it was, so that nothing in the file is lost.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedEntry {
    /// Its position in the file (0-based, in file order).
    pub index: usize,
    /// The entry as found.
    pub raw: Value,
    /// Why it is not usable.
    pub reason: String,
}

/// Entries that could not be used, by NetworkID.
pub type RejectedEntries = BTreeMap<String, RejectedEntry>;

/// A state file judged entry by entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedState {
    /// The valid entries.
    pub networks: Networks,
    /// The invalid ones, kept verbatim.
    pub rejected: RejectedEntries,
}

/// A state file that could not be parsed at start-up and was renamed, so that nothing is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAsideFile {
    /// Its new name.
    pub kept_as: PathBuf,
    /// The parse error.
    pub reason: String,
}

/// State file failures; each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading the file failed (other than "does not exist").
    #[error("cannot read the state file {path}: {source}")]
    Read {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Writing or renaming failed; the previous file content is intact.
    #[error(
        "cannot write the state file {path}: {source}; the previous content is unchanged (check free space and permissions of the directory)"
    )]
    Write {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A corrupt file could not be moved aside, so it was not replaced either.
    #[error(
        "the state file {path} is corrupt ({reason}) and could not be renamed aside: {source}; move it away by hand"
    )]
    SetAside {
        /// The state file.
        path: PathBuf,
        /// The parse error.
        reason: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The path has no file name or directory.
    #[error("the state file path {path} must name a file in a directory")]
    BadPath {
        /// The configured path.
        path: PathBuf,
    },
}

/// The in-memory copy of the state file; every change is written through before it is applied.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    networks: Networks,
    rejected: RejectedEntries,
    set_aside: Option<SetAsideFile>,
    earlier_set_aside: Option<PathBuf>,
}

impl StateStore {
    /// Loads the file, creating it (and its directory) as `{}` when absent.
    ///
    /// A file that is not a JSON object (torn, truncated, not JSON) is renamed to
    /// `<name>.corrupt-<unix-time>` and replaced by an empty state; [`StateStore::set_aside`]
    /// reports it so that callers can log it and mention it in later "unknown network" errors.
    /// In a JSON object, each bad entry is logged (position, NetworkID, reason) and kept in the
    /// file as it is ([`StateStore::rejected`]); the valid entries are served.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let directory = parent_dir(path)?;
        std::fs::create_dir_all(directory).map_err(|source| StateError::Write {
            path: path.to_owned(),
            source,
        })?;
        let mut store = Self {
            path: path.to_owned(),
            networks: Networks::new(),
            rejected: RejectedEntries::new(),
            set_aside: None,
            earlier_set_aside: None,
        };
        match std::fs::read(path) {
            Ok(bytes) => match parse_networks(&bytes) {
                Ok(parsed) => {
                    for (network_id, entry) in &parsed.rejected {
                        tracing::error!(
                            state_file = %path.display(),
                            index = entry.index,
                            network_id = %network_id,
                            reason = %entry.reason,
                            "a state file entry is invalid: it is kept in the file but not served; fix or remove it by hand"
                        );
                    }
                    store.networks = parsed.networks;
                    store.rejected = parsed.rejected;
                    store.earlier_set_aside = newest_set_aside_copy(path);
                }
                Err(unusable) => {
                    let reason = unusable.to_string();
                    let kept_as = set_aside(path, &reason)?;
                    store.set_aside = Some(SetAsideFile { kept_as, reason });
                    store.write(&Networks::new())?;
                }
            },
            Err(err) if err.kind() == io::ErrorKind::NotFound => store.write(&Networks::new())?,
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        }
        remove_stale_temp_files(path);
        Ok(store)
    }

    /// The state file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The corrupt file moved aside at start-up, if any.
    pub fn set_aside(&self) -> Option<&SetAsideFile> {
        self.set_aside.as_ref()
    }

    /// The newest copy that an earlier start set aside (`<name>.corrupt-*` beside the file),
    /// when this start found the file valid: the state may still miss what that loss took,
    /// because a restart in between wrote the emptied state back as valid.
    pub fn earlier_set_aside(&self) -> Option<&Path> {
        self.earlier_set_aside.as_deref()
    }

    /// The entry of `network_id`.
    pub fn network(&self, network_id: &str) -> Option<&NetworkEntry> {
        self.networks.get(network_id)
    }

    /// All entries, by NetworkID.
    pub fn networks(&self) -> &Networks {
        &self.networks
    }

    /// The invalid entries found at start-up and still in the file.
    pub fn rejected(&self) -> &RejectedEntries {
        &self.rejected
    }

    /// Stores an entry (replacing an invalid one of the same NetworkID); on error neither the
    /// file nor the memory copy changes.
    pub fn insert(&mut self, network_id: &str, entry: NetworkEntry) -> Result<(), StateError> {
        let mut next = self.networks.clone();
        next.insert(network_id.to_owned(), entry);
        let mut rejected = self.rejected.clone();
        rejected.remove(network_id);
        self.write_with(&next, &rejected)?;
        self.networks = next;
        self.rejected = rejected;
        Ok(())
    }

    /// Removes an entry (valid or not: Docker has deleted the network), returning the valid
    /// one; absent entries cause no write.
    pub fn remove(&mut self, network_id: &str) -> Result<Option<NetworkEntry>, StateError> {
        if !self.networks.contains_key(network_id) && !self.rejected.contains_key(network_id) {
            return Ok(None);
        }
        let mut next = self.networks.clone();
        let removed = next.remove(network_id);
        let mut rejected = self.rejected.clone();
        rejected.remove(network_id);
        self.write_with(&next, &rejected)?;
        self.networks = next;
        self.rejected = rejected;
        Ok(removed)
    }

    fn write(&self, networks: &Networks) -> Result<(), StateError> {
        self.write_with(networks, &self.rejected)
    }

    fn write_with(
        &self,
        networks: &Networks,
        rejected: &RejectedEntries,
    ) -> Result<(), StateError> {
        write_atomically(&self.path, networks, rejected).map_err(|source| StateError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// Why a state file is unusable as a whole (single bad entries are [`RejectedEntry`]s).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateFileError {
    /// The bytes are not JSON, or not a JSON object of NetworkID to entry.
    #[error("not a JSON object of NetworkID to entry: {source}")]
    NotAnObjectOfNetworks {
        /// The parser's complaint, with line and column.
        #[source]
        source: serde_json::Error,
    },
}

/// Parses state file bytes entry by entry (pure; also the fuzz entry point). `Err` only when
/// the whole file is unusable: not JSON, or not a JSON object.
pub fn parse_networks(bytes: &[u8]) -> Result<ParsedState, StateFileError> {
    let entries = serde_json::from_slice::<EntriesInFileOrder>(bytes)
        .map_err(|source| StateFileError::NotAnObjectOfNetworks { source })?
        .0;
    let mut parsed = ParsedState::default();
    // A NetworkID given twice: the last one counts, as with Python's `json.load`.
    for (index, (network_id, raw)) in entries.into_iter().enumerate() {
        match NetworkEntry::deserialize(&raw) {
            Ok(entry) => {
                parsed.rejected.remove(&network_id);
                parsed.networks.insert(network_id, entry);
            }
            Err(err) => {
                parsed.networks.remove(&network_id);
                parsed.rejected.insert(
                    network_id,
                    RejectedEntry {
                        index,
                        raw,
                        reason: err.to_string(),
                    },
                );
            }
        }
    }
    Ok(parsed)
}

/// The top-level members in file order (serde_json's map is sorted), so that a bad entry can
/// be reported by its position.
struct EntriesInFileOrder(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for EntriesInFileOrder {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = EntriesInFileOrder;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of NetworkID -> entry")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(EntriesInFileOrder(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// Renders the state file bytes, as written: the valid entries and, verbatim, the rejected
/// ones (pure; also used by the fuzz round trip).
pub fn render_networks(
    networks: &Networks,
    rejected: &RejectedEntries,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut object = serde_json::Map::new();
    for (network_id, entry) in rejected {
        object.insert(network_id.clone(), entry.raw.clone());
    }
    for (network_id, entry) in networks {
        object.insert(network_id.clone(), serde_json::to_value(entry)?);
    }
    let mut contents = serde_json::to_vec_pretty(&Value::Object(object))?;
    contents.push(b'\n');
    Ok(contents)
}

fn parent_dir(path: &Path) -> Result<&Path, StateError> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(_)) if !parent.as_os_str().is_empty() => Ok(parent),
        (Some(_), Some(_)) => Ok(Path::new(".")),
        _ => Err(StateError::BadPath {
            path: path.to_owned(),
        }),
    }
}

fn write_atomically(
    path: &Path,
    networks: &Networks,
    rejected: &RejectedEntries,
) -> io::Result<()> {
    parent_dir(path).map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err.to_string()))?;
    // An operator's chosen mode is kept; a new file is readable by all (it holds no secret).
    let mode = match std::fs::metadata(path) {
        Ok(metadata) => metadata.permissions().mode() & 0o7777,
        Err(_) => NEW_FILE_MODE,
    };
    let contents = render_networks(networks, rejected).map_err(io::Error::other)?;
    netiso_config::atomic_file::replace(path, &contents, mode)
}

const TEMP_SUFFIX: &str = ".tmp";

/// Temporary files of `path` are `.<file name>.<pid>-<n>.tmp` in the same directory
/// (`netiso_config::atomic_file`).
fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.")
}

/// Removes temporary files left by a process killed between writing and renaming (best effort;
/// only files of this state file's own pattern are touched).
fn remove_stale_temp_files(path: &Path) {
    let Ok(directory) = parent_dir(path) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    let prefix = temp_prefix(path);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(TEMP_SUFFIX) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed a temporary state file left by an interrupted write")
                }
                Err(err) => {
                    tracing::warn!(file = %entry.path().display(), %err, "cannot remove a stale temporary state file")
                }
            }
        }
    }
}

/// The most recently modified `<name>.corrupt-*` beside `path`, if any.
fn newest_set_aside_copy(path: &Path) -> Option<PathBuf> {
    let prefix = format!("{}.corrupt-", path.file_name()?.to_string_lossy());
    std::fs::read_dir(parent_dir(path).ok()?)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .max()
        .map(|(_, copy)| copy)
}

fn set_aside(path: &Path, reason: &str) -> Result<PathBuf, StateError> {
    let error = |source| StateError::SetAside {
        path: path.to_owned(),
        reason: reason.to_owned(),
        source,
    };
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    let base = format!("{}.corrupt-{seconds}", path.display());
    for attempt in 0..MAX_SET_ASIDE_ATTEMPTS {
        let candidate = PathBuf::from(if attempt == 0 {
            base.clone()
        } else {
            format!("{base}-{attempt}")
        });
        if candidate.symlink_metadata().is_ok() {
            continue;
        }
        std::fs::rename(path, &candidate).map_err(error)?;
        let directory = parent_dir(path)?;
        std::fs::File::open(directory)
            .and_then(|dir| dir.sync_all())
            .map_err(error)?;
        return Ok(candidate);
    }
    Err(error(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "too many set-aside copies exist already",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_A: &str = "3f5e4b2a1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";
    const NET_B: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

    fn mac(text: &str) -> MacAddress {
        text.parse().unwrap()
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_missing_file_is_created_empty_with_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/docker/hostnic.json");
        let store = StateStore::open(&path).unwrap();
        assert!(store.networks().is_empty());
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "{}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(store.set_aside().is_none());
    }

    #[test]
    fn reads_a_trove_written_file_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hostnic.json");
        let trove = format!(
            r#"{{"{NET_A}": {{"mac_address": "fa:16:3e:12:34:56", "gateway": "10.0.0.1"}}, "{NET_B}": {{"mac_address": "FA:16:3E:AA:BB:CC", "future_key": [1]}}}}"#
        );
        std::fs::write(&path, &trove).unwrap();
        let store = StateStore::open(&path).unwrap();
        let a = store.network(NET_A).unwrap();
        assert_eq!(a.mac_address, mac("fa:16:3e:12:34:56"));
        assert_eq!(a.gateway, Some("10.0.0.1".parse().unwrap()));
        let b = store.network(NET_B).unwrap();
        assert_eq!(b.mac_address, mac("fa:16:3e:aa:bb:cc"));
        assert_eq!(b.gateway, None);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            trove,
            "opening must not rewrite the file"
        );
    }

    #[test]
    fn changes_survive_a_restart_and_keep_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hostnic.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"{NET_B}": {{"mac_address": "fa:16:3e:aa:bb:cc", "future_key": "kept"}}}}"#
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut store = StateStore::open(&path).unwrap();
        store
            .insert(
                NET_A,
                NetworkEntry::new(mac("fa:16:3e:12:34:56"), Some("10.0.0.1".parse().unwrap())),
            )
            .unwrap();
        drop(store);

        let mut reopened = StateStore::open(&path).unwrap();
        assert_eq!(reopened.networks().len(), 2);
        assert_eq!(
            reopened.network(NET_A).unwrap().mac_address,
            mac("fa:16:3e:12:34:56")
        );
        assert_eq!(reopened.network(NET_B).unwrap().other["future_key"], "kept");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600,
            "mode is preserved"
        );
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json[NET_A]["gateway"], "10.0.0.1");

        assert!(reopened.remove(NET_A).unwrap().is_some());
        assert!(reopened.remove(NET_A).unwrap().is_none());
        drop(reopened);
        let again = StateStore::open(&path).unwrap();
        assert!(again.network(NET_A).is_none() && again.network(NET_B).is_some());
        assert_eq!(
            files_in(dir.path()),
            vec!["hostnic.json"],
            "no temp files are left behind"
        );
    }

    #[test]
    fn a_failed_write_changes_neither_file_nor_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hostnic.json");
        let mut store = StateStore::open(&path).unwrap();
        store
            .insert(NET_A, NetworkEntry::new(mac("fa:16:3e:12:34:56"), None))
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        // Make the rename target a non-empty directory: the temp file is written, the rename fails.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("blocker"), "x").unwrap();
        let err = store
            .insert(NET_B, NetworkEntry::new(mac("fa:16:3e:aa:bb:cc"), None))
            .unwrap_err();
        assert!(
            err.to_string().contains("hostnic.json") && err.to_string().contains("unchanged"),
            "{err}"
        );
        assert!(store.network(NET_B).is_none());
        assert!(store.network(NET_A).is_some());
        std::fs::remove_dir_all(&path).unwrap();
        std::fs::write(&path, &before).unwrap();
        assert_eq!(
            files_in(dir.path()),
            vec!["hostnic.json"],
            "the temp file is cleaned up"
        );
    }

    #[test]
    fn a_corrupt_file_is_kept_aside_not_emptied() {
        for corrupt in ["", "{\"abc\": {\"mac_addr", "[]", "{\"x\": 1"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("hostnic.json");
            std::fs::write(&path, corrupt).unwrap();
            let store = StateStore::open(&path).unwrap();
            let set_aside = store.set_aside().expect("reported").clone();
            assert!(
                set_aside
                    .kept_as
                    .to_string_lossy()
                    .contains("hostnic.json.corrupt-")
            );
            assert_eq!(
                std::fs::read_to_string(&set_aside.kept_as).unwrap(),
                corrupt,
                "kept byte for byte"
            );
            assert!(!set_aside.reason.is_empty());
            assert!(store.networks().is_empty());
            assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "{}");

            // A second corruption in the same second gets its own name.
            std::fs::write(&path, "garbage").unwrap();
            let second = StateStore::open(&path).unwrap();
            let kept = &second.set_aside().unwrap().kept_as;
            assert_ne!(kept, &set_aside.kept_as);
            assert_eq!(std::fs::read_to_string(kept).unwrap(), "garbage");
        }
    }

    #[test]
    fn bad_entries_are_reported_kept_verbatim_and_do_not_hide_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hostnic.json");
        // Written as Trove writes it, with three broken entries among two good ones.
        let text = format!(
            r#"{{"{NET_B}": {{"mac_address": "fa:16:3e:aa:bb:cc"}}, "bad-mac": {{"mac_address": "nope"}}, "{NET_A}": {{"mac_address": "fa:16:3e:12:34:56", "gateway": "10.0.0.1"}}, "no-mac": {{"gateway": "10.0.0.1"}}, "not-an-object": 7}}"#
        );
        std::fs::write(&path, &text).unwrap();
        let mut store = StateStore::open(&path).unwrap();
        assert!(store.set_aside().is_none(), "the file is not set aside");
        assert_eq!(
            store.networks().keys().collect::<Vec<_>>(),
            vec![NET_B, NET_A],
            "every valid entry is served"
        );
        let rejected = store.rejected();
        assert_eq!(rejected.len(), 3);
        assert_eq!(rejected["bad-mac"].index, 1, "positions are in file order");
        assert!(rejected["bad-mac"].reason.contains("nope"), "{rejected:?}");
        assert_eq!(rejected["no-mac"].index, 3);
        assert!(
            rejected["no-mac"].reason.contains("mac_address"),
            "{rejected:?}"
        );
        assert_eq!(rejected["not-an-object"].index, 4);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "opening does not rewrite the file"
        );

        // A change rewrites the file with the bad entries as they were.
        store.remove(NET_B).unwrap();
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            written["bad-mac"],
            serde_json::json!({"mac_address": "nope"})
        );
        assert_eq!(written["not-an-object"], 7);
        assert_eq!(written[NET_A]["mac_address"], "fa:16:3e:12:34:56");
        assert!(written.get(NET_B).is_none());

        // Docker re-creating or deleting a network replaces or drops its bad entry.
        store
            .insert("bad-mac", NetworkEntry::new(mac("fa:16:3e:00:00:01"), None))
            .unwrap();
        store.remove("no-mac").unwrap();
        drop(store);
        let reopened = StateStore::open(&path).unwrap();
        assert_eq!(
            reopened.network("bad-mac").unwrap().mac_address,
            mac("fa:16:3e:00:00:01")
        );
        assert_eq!(
            reopened.rejected().keys().collect::<Vec<_>>(),
            vec!["not-an-object"]
        );
    }

    #[test]
    fn a_file_that_is_not_an_object_of_networks_is_unusable_as_a_whole() {
        for bytes in [&b"{\"half"[..], b"[]", b"null", b""] {
            let Err(err) = parse_networks(bytes) else {
                panic!("{bytes:?} is not a state file");
            };
            assert!(
                matches!(err, StateFileError::NotAnObjectOfNetworks { .. }),
                "{err}"
            );
            assert!(
                err.to_string()
                    .starts_with("not a JSON object of NetworkID to entry: "),
                "{err}"
            );
        }
    }

    #[test]
    fn the_last_of_duplicate_network_ids_counts() {
        let parsed = parse_networks(
            format!(r#"{{"{NET_A}": {{"mac_address": "fa:16:3e:12:34:56"}}, "{NET_A}": {{"mac_address": 1}}}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert!(parsed.networks.is_empty());
        assert_eq!(parsed.rejected[NET_A].index, 1);
    }

    #[test]
    fn temporary_files_of_an_interrupted_write_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hostnic.json");
        std::fs::write(&path, "{}").unwrap();
        std::fs::write(dir.path().join(".hostnic.json.a1b2c3.tmp"), "{\"half").unwrap();
        std::fs::write(dir.path().join(".other.json.a1b2c3.tmp"), "not ours").unwrap();
        std::fs::write(dir.path().join("daemon.json"), "{}").unwrap();
        StateStore::open(&path).unwrap();
        assert_eq!(
            files_in(dir.path()),
            vec![".other.json.a1b2c3.tmp", "daemon.json", "hostnic.json"]
        );
    }

    #[test]
    fn a_path_without_file_name_is_rejected() {
        assert!(matches!(
            StateStore::open(Path::new("/")),
            Err(StateError::BadPath { .. })
        ));
    }
}
