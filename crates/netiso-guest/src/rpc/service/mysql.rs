//! `prepare`, readiness and status for the MySQL/MariaDB datastore, in Trove's order
//! (`mysql_common/manager.py` `do_prepare`, then `create_database`/`create_user`), with
//! every input checked first so that a bad request changes nothing:
//!
//! 1. databases, users and overrides validated; the image pulled (a missing tag stops
//!    here);
//! 2. the data volume mounted (formatted only when blank);
//! 3. directories, `my.cnf` (`config_contents`), overrides and the system override written;
//!    the root password kept in `<mount_point>/conf.d/root.cnf` (0600);
//! 4. the container created (or the existing one started) and waited for through the
//!    socket;
//! 5. `os_admin`, remote root, databases, users and grants.

use std::time::Instant;

use netiso_config::Secret;
use netiso_messaging::ServiceStatus;
use netiso_runtime::{ContainerStatus, RuntimeError};
use tracing::{error, info, warn};

use super::{DatabaseError, GuestService, PrepareRequest, READY_POLL_INTERVAL, status_of};
use crate::mysql::files::{ADMIN_CNF, ROOT_CNF};
use crate::mysql::models::{schemas_from_trove, users_from_trove};
use crate::mysql::{
    InvalidInput, Layout, MysqlSettings, Provisioning, client, files::overrides_from_trove,
    generate_password,
};
use crate::volume;

impl GuestService {
    pub(super) async fn prepare_mysql(
        &self,
        mysql: &MysqlSettings,
        request: PrepareRequest,
    ) -> Result<(), DatabaseError> {
        let plan = Provisioning {
            databases: schemas_from_trove(request.databases.as_ref(), &mysql.manager)?,
            users: users_from_trove(request.users.as_ref(), &mysql.manager)?,
            remote_root: request.root_password.clone(),
        };
        let overrides = overrides_from_trove(request.overrides.as_ref())?;
        let mut layout = mysql.layout.clone();
        if let Some(mount_point) = request.mount_point.clone() {
            layout.mount_point = mount_point;
        }
        let image = self.image(request.ds_version)?;
        let name = &self.settings.container_name;
        let existing = self.runtime.inspect(name).await?;
        if existing.is_none() {
            self.pull(&image).await?;
        }

        if let Some(device) = &request.device_path {
            let outcome = volume::prepare(
                device,
                &layout.mount_point,
                &self.settings.volume,
                &self.settings.fstab,
            )
            .await?;
            info!(device = %device.display(), mount_point = %layout.mount_point.display(), ?outcome, "data volume ready");
        }
        layout.ensure_directories()?;
        layout.write_config(request.config_contents.as_deref())?;
        layout.write_system_override()?;
        if !overrides.is_empty() {
            layout.write_user_overrides(&overrides)?;
        }
        let root_password = match layout.saved_password(ROOT_CNF)? {
            Some(saved) => saved,
            None => {
                let password = match request.root_password {
                    Some(password) => password,
                    None => generate_password().map_err(|e| {
                        DatabaseError::Config(format!("cannot generate a password: {e}"))
                    })?,
                };
                layout.save_password(ROOT_CNF, "root", &password)?;
                password
            }
        };

        if existing.is_some() {
            info!(container = %name, "starting the existing database container");
            self.runtime.start(name).await?;
        } else {
            self.create_database(&image, Some((&layout, &root_password)))
                .await?;
        }
        self.wait_mysql_ready(&layout, &root_password).await?;

        let admin_password = match layout.saved_password(ADMIN_CNF)? {
            Some(saved) => saved,
            None => generate_password()
                .map_err(|e| DatabaseError::Config(format!("cannot generate a password: {e}")))?,
        };
        client::provision(&layout.socket(), &root_password, &admin_password, &plan).await?;
        layout.save_password(ADMIN_CNF, crate::mysql::sql::ADMIN_USER, &admin_password)?;
        Ok(())
    }

    /// `update_overrides`: Trove's user override file gets `overrides` merged in (after
    /// removing the old ones when `remove`); the server reads it at its next start.
    pub async fn update_overrides(
        &self,
        overrides: Option<serde_json::Value>,
        remove: bool,
    ) -> Result<(), DatabaseError> {
        let mysql = self.require_mysql("update_overrides")?;
        let _lifecycle = self.lifecycle.lock().await;
        let new = overrides_from_trove(overrides.as_ref())?;
        let mut merged = if remove {
            Vec::new()
        } else {
            mysql.layout.read_user_overrides()?
        };
        for (key, value) in new {
            match merged.iter_mut().find(|(k, _)| *k == key) {
                Some(existing) => existing.1 = value,
                None => merged.push((key, value)),
            }
        }
        mysql.layout.write_user_overrides(&merged)?;
        info!(options = merged.len(), "configuration overrides written");
        Ok(())
    }

    /// `apply_overrides`: `SET GLOBAL` for each option, as `os_admin` through the socket. As
    /// in Trove, an option the server refuses is logged and the others are still applied.
    pub async fn apply_overrides(
        &self,
        overrides: Option<serde_json::Value>,
    ) -> Result<(), DatabaseError> {
        let mysql = self.require_mysql("apply_overrides")?;
        let _lifecycle = self.lifecycle.lock().await;
        let Some(serde_json::Value::Object(options)) = overrides else {
            return Err(InvalidInput::Malformed {
                what: "overrides".to_owned(),
                problem: "it is not an object".to_owned(),
            }
            .into());
        };
        let statements = options
            .iter()
            .map(|(key, value)| crate::mysql::sql::set_global(key, value))
            .collect::<Result<Vec<_>, _>>()?;
        let password = mysql.layout.saved_password(ADMIN_CNF)?.ok_or_else(|| {
            DatabaseError::Config("no os_admin password: prepare has not run".into())
        })?;
        let mut session = client::connect(
            &mysql.layout.socket(),
            crate::mysql::sql::ADMIN_USER,
            &password,
        )
        .await?;
        for statement in &statements {
            if let Err(e) = session.execute(statement).await {
                error!(error = %e, "configuration override not applied");
            }
        }
        session.close().await;
        info!(
            options = statements.len(),
            "configuration overrides applied to the running server"
        );
        Ok(())
    }

    fn require_mysql(&self, method: &str) -> Result<&MysqlSettings, DatabaseError> {
        self.settings.mysql.as_ref().ok_or_else(|| {
            DatabaseError::Config(format!(
                "{method} needs a MySQL or MariaDB datastore (datastore_manager)"
            ))
        })
    }

    /// The root password `prepare` kept; its absence means `prepare` never ran here.
    pub(super) fn saved_root_password(&self, layout: &Layout) -> Result<Secret, DatabaseError> {
        layout.saved_password(ROOT_CNF)?.ok_or_else(|| {
            DatabaseError::Config(format!(
                "no root password in {}: prepare has not run on this instance",
                layout.secrets_dir().join(ROOT_CNF).display()
            ))
        })
    }

    /// Waits, at most `state_change_wait_time`, until `root` logs in through the socket
    /// and the real server answers; fails early when the container stops or is restarted.
    pub(super) async fn wait_mysql_ready(
        &self,
        layout: &Layout,
        root_password: &Secret,
    ) -> Result<(), DatabaseError> {
        let name = &self.settings.container_name;
        let wait = self.settings.state_change_wait_time;
        let socket = layout.socket();
        let started = Instant::now();
        let mut restarts: Option<u64> = None;
        loop {
            let info = self
                .runtime
                .inspect(name)
                .await?
                .ok_or_else(|| RuntimeError::ContainerNotFound(name.clone()))?;
            // A server that exits is restarted by the restart policy: that is a crash (a
            // configuration it refuses, a data directory it cannot use), not a slow start.
            let first_count = *restarts.get_or_insert(info.restart_count);
            if matches!(info.status, ContainerStatus::Exited | ContainerStatus::Dead)
                || info.restart_count > first_count
            {
                return Err(DatabaseError::Stopped {
                    container: name.clone(),
                    state: format!(
                        "{} after {} restart(s) by the restart policy; see the container's log",
                        info.describe_state(),
                        info.restart_count - first_count
                    ),
                });
            }
            let last_error = if info.status == ContainerStatus::Running {
                match client::ping(&socket, root_password).await {
                    Ok(()) => {
                        info!(socket = %socket.display(), took_ms = started.elapsed().as_millis() as u64, "the database answers SQL");
                        return Ok(());
                    }
                    Err(e) => e.to_string(),
                }
            } else {
                format!("container is {}", info.describe_state())
            };
            if started.elapsed() >= wait {
                return Err(DatabaseError::NotReady {
                    container: name.clone(),
                    target: format!("SQL through {}", socket.display()),
                    waited: started.elapsed(),
                    last_error,
                });
            }
            tokio::time::sleep(READY_POLL_INTERVAL).await;
        }
    }

    /// Trove's MySQL status: `healthy` when root logs in through the socket, else the
    /// container's state, where a running container that does not answer is `running`
    /// (starting), not `healthy`.
    pub(super) async fn mysql_status(&self, layout: &Layout) -> ServiceStatus {
        if let Ok(password) = self.saved_root_password(layout)
            && client::ping(&layout.socket(), &password).await.is_ok()
        {
            return ServiceStatus::Healthy;
        }
        match self.runtime.inspect(&self.settings.container_name).await {
            Ok(info) => match status_of(info.as_ref()) {
                ServiceStatus::Healthy => ServiceStatus::Running,
                other => other,
            },
            Err(e) => {
                warn!(error = %e, "cannot inspect the database container for the heartbeat");
                ServiceStatus::Unknown
            }
        }
    }
}
