//! Reloading the configuration (SIGHUP, or an edit of the config file):
//! everything derived from it is rebuilt from the same flags, or nothing
//! changes.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use anyhow::Result;

use super::coordinator::Coordinator;
use super::files::FILE_SETTLE;
use crate::error;
use crate::exec::spec::ExecSpec;
use crate::pipeline::Pipeline;
use crate::serve::Server;

impl Coordinator {
    /// When a changed config file has been quiet long enough to read.
    pub(super) fn config_settled_at(&self) -> Option<Instant> {
        self.config_changed
            .map(|(first, last)| (last + FILE_SETTLE.min).min(first + FILE_SETTLE.max))
    }

    pub(super) fn reload(&mut self) {
        let loaded = self
            .flags
            .load()
            .and_then(|config| {
                Pipeline::load(config).map_err(|errors| {
                    for e in &errors {
                        error::print(e);
                    }
                    anyhow::anyhow!("{} error(s) in the new configuration", errors.len())
                })
            })
            .and_then(|pipeline| {
                let exec = self
                    .settings
                    .exec
                    .as_ref()
                    .map(|e| ExecSpec::resolve(&e.args, pipeline.config.exec.as_ref()))
                    .transpose()?;
                self.listen_on(pipeline.config.listen)?;
                Ok((pipeline, exec))
            });
        match loaded {
            Ok((pipeline, exec)) => {
                if let (Some(spec), Some(running)) = (exec, self.settings.exec.as_mut()) {
                    if spec != running.spec {
                        running.spec = spec.clone();
                        self.new_exec = Some(spec);
                    }
                }
                tracing::info!(
                    "configuration reloaded: {} template(s)",
                    pipeline.units.len()
                );
                self.pipeline = pipeline;
                self.watches.stop_all();
                self.reset_templates();
                self.update_watches(SystemTime::now());
            }
            Err(e) => tracing::error!(
                "cannot reload the configuration; keeping the running one: {}",
                error::Logged(&e)
            ),
        }
    }

    /// Serves the endpoints on `listen` from now on, if that is not where
    /// they are. The new address is bound before the old one is closed, so
    /// on failure nothing has changed.
    fn listen_on(&mut self, listen: Option<SocketAddr>) -> Result<()> {
        if self.server.as_ref().map(Server::configured) == listen {
            return Ok(());
        }
        let new = listen
            .map(|addr| Server::start(addr, self.status.clone()))
            .transpose()?;
        if let Some(old) = std::mem::replace(&mut self.server, new) {
            tracing::info!("no longer serving on {}", old.bound());
            // Not awaited: a slow client must not hold up the loop. The
            // socket is closed already; its last requests finish alone.
            drop(old.stop());
        }
        Ok(())
    }
}
