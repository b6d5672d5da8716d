//! The Trove guest API (`guestagent.<guest_id>`, version 1.3) as [`Dispatcher`] handlers.
//!
//! Implemented for real: `rpc_ping`, `prepare` (cast), `restart`, `stop_db`,
//! `start_db_with_conf_changes`, `update_overrides`, `apply_overrides` (MySQL/MariaDB) and
//! `get_filesystem_stats`; the logic is in
//! [`GuestService`], with the MySQL/MariaDB datastore layer in [`crate::mysql`]. Every other method of Trove's `guestagent/api.py` answers a clear
//! `NotSupported` failure (or, for a cast, reports it to the conductor when the request
//! carries a notification), never a silent success. `get_hwinfo`, `get_diagnostics` and
//! `update_guest` stay unknown (`NoSuchMethod`), exactly as with Trove's Python guest.
//!
//! Handlers only see the traits [`ContainerRuntime`](netiso_runtime::ContainerRuntime),
//! [`StatusSink`] and [`PortProbe`], so they are unit-tested against fakes.

mod filesystem;
mod service;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use netiso_config::Secret;
use netiso_messaging::{Args, Context, Dispatcher, HandlerError};
use serde_json::Value;
use tokio::sync::watch;

pub use filesystem::{FilesystemError, filesystem_stats, to_gb};
pub use service::{
    CONFIG_CONTENTS_FILE, ConductorSink, DatabaseError, DatabaseSettings, GuestService,
    PREPARE_END_FILE, PortProbe, PrepareRequest, ProbeTarget, STOPPED_ON_REQUEST_FILE, StatusSink,
    TcpProbe, UNFINISHED_START_FILE, status_of,
};

/// The guest API version this agent implements (Trove's `API_LATEST_VERSION`).
pub const GUEST_API_VERSION: &str = "1.3";

/// Trove guest methods this agent does not implement, and whether Trove casts them.
pub const UNSUPPORTED_METHODS: &[(&str, bool)] = &[
    ("change_passwords", true),
    ("update_attributes", true),
    ("create_user", true),
    ("get_user", false),
    ("list_access", false),
    ("grant_access", false),
    ("revoke_access", false),
    ("list_users", false),
    ("delete_user", true),
    ("create_database", true),
    ("list_databases", false),
    ("delete_database", true),
    ("get_root_password", false),
    ("enable_root", false),
    ("enable_root_with_password", false),
    ("disable_root", false),
    ("is_root_enabled", false),
    ("pre_upgrade", false),
    ("post_upgrade", false),
    ("upgrade", true),
    ("reset_configuration", false),
    ("create_backup", true),
    ("mount_volume", false),
    ("unmount_volume", false),
    ("resize_fs", false),
    ("backup_required_for_replication", false),
    ("get_replication_snapshot", false),
    ("attach_replication_slave", true),
    ("detach_replica", false),
    ("get_replica_context", false),
    ("attach_replica", false),
    ("make_read_only", false),
    ("enable_as_master", false),
    ("get_txn_count", false),
    ("get_last_txn", false),
    ("get_latest_txn_id", false),
    ("wait_for_txn", false),
    ("cleanup_source_on_replica_detach", false),
    ("demote_replication_master", false),
    ("guest_log_list", false),
    ("guest_log_action", false),
    ("ssl_show", false),
    ("ssl_action", false),
    ("ssl_rollback", false),
    ("module_list", false),
    ("module_apply", false),
    ("module_remove", false),
    ("rebuild", true),
    ("pre_create_backup", false),
    ("post_create_backup", false),
];

/// The failure class of unsupported methods (module `trove_guest`, so Trove's API shows the
/// plain message).
pub const NOT_SUPPORTED_CLASS: &str = "NotSupported";

/// The message of an unsupported method.
pub fn not_supported_message(method: &str) -> String {
    format!(
        "{method} is not supported by this agent (trove-netiso guest agent: network isolation \
         and the database container's lifecycle only)"
    )
}

/// Counts the requests being handled, so that a shutdown waits for them to finish, and the
/// requests handed to a handler since start (logged at shutdown; the hostile-sender tests
/// prove with it that a refused request runs nothing).
#[derive(Debug, Clone)]
pub struct InFlight {
    count: Arc<watch::Sender<usize>>,
    started: Arc<AtomicU64>,
}

/// Held while one request runs.
#[derive(Debug)]
pub struct InFlightGuard {
    count: Arc<watch::Sender<usize>>,
}

impl Default for InFlight {
    fn default() -> Self {
        Self {
            count: Arc::new(watch::channel(0).0),
            started: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl InFlight {
    /// Marks a request as started until the guard drops.
    pub fn enter(&self) -> InFlightGuard {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.count.send_modify(|n| *n += 1);
        InFlightGuard {
            count: Arc::clone(&self.count),
        }
    }

    /// Requests handed to a handler since start.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Requests running now.
    pub fn current(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits until no request runs, at most `timeout`; returns how many were still running.
    pub async fn wait_idle(&self, timeout: Duration) -> usize {
        let mut receiver = self.count.subscribe();
        let _ = tokio::time::timeout(timeout, receiver.wait_for(|n| *n == 0)).await;
        self.current()
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.count.send_modify(|n| *n = n.saturating_sub(1));
    }
}

fn register<F, Fut>(
    dispatcher: &mut Dispatcher,
    method: &str,
    service: &Arc<GuestService>,
    in_flight: &InFlight,
    handler: F,
) where
    F: Fn(Arc<GuestService>, Context, Args) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    let service = Arc::clone(service);
    let in_flight = in_flight.clone();
    dispatcher.register(method, move |context: Context, args: Args| {
        let guard = in_flight.enter();
        let running = handler(Arc::clone(&service), context, args);
        async move {
            let result = running.await;
            drop(guard);
            result
        }
    });
}

/// The guest endpoint: every Trove method, at version [`GUEST_API_VERSION`].
pub fn dispatcher(service: Arc<GuestService>, in_flight: &InFlight) -> Dispatcher {
    let mut dispatcher = match Dispatcher::new(GUEST_API_VERSION) {
        Ok(dispatcher) => dispatcher,
        Err(e) => unreachable!("the guest API version is a valid version: {e}"),
    };
    let d = &mut dispatcher;
    register(
        d,
        "rpc_ping",
        &service,
        in_flight,
        |_, _, args| async move {
            args.finish()?;
            Ok(Value::Bool(true))
        },
    );
    register(
        d,
        "prepare",
        &service,
        in_flight,
        |svc, ctx, mut args| async move {
            // Arguments that do not parse are reported like any other prepare failure
            // (`failed to spawn` and `notify_exc_info`): a cast has no reply.
            let request = match prepare_request(&mut args) {
                Ok(request) => request,
                Err(e) => {
                    let message = format!("invalid prepare request: {}", e.message);
                    tracing::error!(error = %message, "prepare refused");
                    svc.heartbeat(netiso_messaging::ServiceStatus::FailedToSpawn)
                        .await;
                    svc.report_cast_failure(&ctx, &message).await;
                    return Ok(Value::Null);
                }
            };
            // packages, memory_mb and modules are not acted on.
            drop(args);
            svc.prepare(&ctx, request).await;
            Ok(Value::Null)
        },
    );
    register(
        d,
        "restart",
        &service,
        in_flight,
        |svc, _, args| async move {
            args.finish()?;
            svc.restart().await.map_err(to_handler_error)?;
            Ok(Value::Null)
        },
    );
    register(
        d,
        "stop_db",
        &service,
        in_flight,
        |svc, _, mut args| async move {
            // Version 1.0 callers still send `do_not_start_on_reboot`.
            let _: Option<bool> = args.take_opt("do_not_start_on_reboot")?;
            args.finish()?;
            svc.stop_db().await.map_err(to_handler_error)?;
            Ok(Value::Null)
        },
    );
    register(
        d,
        "start_db_with_conf_changes",
        &service,
        in_flight,
        |svc, _, mut args| async move {
            let config_contents: Option<String> = args.take_opt("config_contents")?;
            let ds_version: Option<String> = args.take_opt("ds_version")?;
            args.finish()?;
            svc.start_db_with_conf_changes(config_contents, ds_version)
                .await
                .map_err(to_handler_error)?;
            Ok(Value::Null)
        },
    );
    register(
        d,
        "update_overrides",
        &service,
        in_flight,
        |svc, _, mut args| async move {
            let overrides: Option<Value> = args.take_opt("overrides")?;
            let remove: Option<bool> = args.take_opt("remove")?;
            args.finish()?;
            svc.update_overrides(overrides, remove.unwrap_or(false))
                .await
                .map_err(to_handler_error)?;
            Ok(Value::Null)
        },
    );
    register(
        d,
        "apply_overrides",
        &service,
        in_flight,
        |svc, _, mut args| async move {
            let overrides: Option<Value> = args.take_opt("overrides")?;
            args.finish()?;
            svc.apply_overrides(overrides)
                .await
                .map_err(to_handler_error)?;
            Ok(Value::Null)
        },
    );
    register(
        d,
        "get_filesystem_stats",
        &service,
        in_flight,
        |svc, _, mut args| async move {
            let fs_path: Option<String> = args.take_opt("fs_path")?;
            args.finish()?;
            svc.filesystem_stats(fs_path)
                .await
                .map_err(|error| HandlerError::with_class("RuntimeError", error.to_string()))
        },
    );
    for &(method, is_cast) in UNSUPPORTED_METHODS {
        register(
            d,
            method,
            &service,
            in_flight,
            move |svc, ctx, _| async move {
                let message = not_supported_message(method);
                tracing::warn!(method, "refused a method this agent does not implement");
                if is_cast {
                    svc.report_cast_failure(&ctx, &message).await;
                }
                Err(HandlerError::with_class(NOT_SUPPORTED_CLASS, message))
            },
        );
    }
    dispatcher
}

/// `prepare` arguments that ask for what this agent cannot do; a request carrying one is
/// refused rather than answered with an empty database.
const UNSUPPORTED_PREPARE_ARGUMENTS: &[(&str, &str)] = &[
    ("backup_info", "restoring from a backup"),
    ("snapshot", "starting as a replica"),
    ("cluster_config", "clusters"),
];

/// `prepare`'s arguments as the service takes them.
fn prepare_request(args: &mut Args) -> Result<PrepareRequest, HandlerError> {
    for (name, what) in UNSUPPORTED_PREPARE_ARGUMENTS {
        let value: Option<Value> = args.take_opt(name)?;
        if value.is_some_and(|v| !v.is_null()) {
            return Err(HandlerError::new(format!(
                "`{name}` is set, but {what} is not supported by this agent"
            )));
        }
    }
    let path = |text: Option<String>| text.filter(|t| !t.is_empty()).map(PathBuf::from);
    Ok(PrepareRequest {
        ds_version: args.take_opt("ds_version")?,
        databases: args.take_opt("databases")?,
        users: args.take_opt("users")?,
        config_contents: args.take_opt("config_contents")?,
        root_password: args
            .take_opt::<String>("root_password")?
            .filter(|p| !p.is_empty())
            .map(Secret::new),
        overrides: args.take_opt("overrides")?,
        device_path: path(args.take_opt("device_path")?),
        mount_point: path(args.take_opt("mount_point")?),
    })
}

fn to_handler_error(error: DatabaseError) -> HandlerError {
    HandlerError::new(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(value: Value) -> Args {
        match value {
            Value::Object(map) => Args::new("prepare", map),
            other => unreachable!("test arguments are an object: {other}"),
        }
    }

    #[test]
    fn prepare_arguments_as_trove_sends_them() {
        let mut sent = args(json!({
            "packages": null, "databases": [{"_name": "app"}], "memory_mb": 2048,
            "users": [], "device_path": "/dev/vdb", "mount_point": "/var/lib/mysql",
            "backup_info": null, "config_contents": "[mysqld]\n", "root_password": "",
            "overrides": {}, "cluster_config": null, "snapshot": null, "modules": null,
            "ds_version": "10.11"
        }));
        let request = prepare_request(&mut sent).expect("valid");
        assert_eq!(request.ds_version.as_deref(), Some("10.11"));
        assert_eq!(request.device_path, Some(PathBuf::from("/dev/vdb")));
        assert_eq!(request.mount_point, Some(PathBuf::from("/var/lib/mysql")));
        assert_eq!(
            request.root_password, None,
            "an empty root password is none"
        );
        assert_eq!(request.config_contents.as_deref(), Some("[mysqld]\n"));
    }

    #[test]
    fn a_restore_a_replica_or_a_cluster_is_refused() {
        for (name, value) in [
            ("backup_info", json!({"id": "b1", "location": "swift://x"})),
            ("snapshot", json!({"config": {}})),
            ("cluster_config", json!({"id": "c1"})),
        ] {
            let mut sent = args(json!({ name: value, "ds_version": "10.11" }));
            let error = prepare_request(&mut sent).expect_err(name);
            assert!(
                error.message.contains(name) && error.message.contains("not supported"),
                "{}",
                error.message
            );
        }
    }
}
