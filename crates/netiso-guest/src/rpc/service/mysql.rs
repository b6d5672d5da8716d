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
use tracing::{info, warn};

use super::{DatabaseError, GuestService, PrepareRequest, READY_POLL_INTERVAL, status_of};
use crate::mysql::files::{ADMIN_CNF, ROOT_CNF};
use crate::mysql::models::{schemas_from_trove, users_from_trove};
use crate::mysql::{
    Layout, MysqlSettings, Provisioning, client, files::overrides_from_trove, generate_password,
};
use crate::volume;

impl GuestService {
    pub(super) async fn prepare_mysql(
        &self,
        mysql: &MysqlSettings,
        request: PrepareRequest,
    ) -> Result<(), DatabaseError> {
        let input = |e: String| DatabaseError::Input(e);
        let plan = Provisioning {
            databases: schemas_from_trove(request.databases.as_ref(), &mysql.manager)
                .map_err(|e| input(e.to_string()))?,
            users: users_from_trove(request.users.as_ref(), &mysql.manager)
                .map_err(|e| input(e.to_string()))?,
            remote_root: request.root_password.clone(),
        };
        let overrides = overrides_from_trove(request.overrides.as_ref()).map_err(input)?;
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
            let outcome =
                volume::prepare(device, &layout.mount_point, &self.settings.volume).await?;
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
    /// and the real server answers; fails early when the container stops.
    pub(super) async fn wait_mysql_ready(
        &self,
        layout: &Layout,
        root_password: &Secret,
    ) -> Result<(), DatabaseError> {
        let name = &self.settings.container_name;
        let wait = self.settings.state_change_wait_time;
        let socket = layout.socket();
        let started = Instant::now();
        loop {
            let info = self
                .runtime
                .inspect(name)
                .await?
                .ok_or_else(|| RuntimeError::ContainerNotFound(name.clone()))?;
            if matches!(info.status, ContainerStatus::Exited | ContainerStatus::Dead) {
                return Err(DatabaseError::Stopped {
                    container: name.clone(),
                    state: info.describe_state(),
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
