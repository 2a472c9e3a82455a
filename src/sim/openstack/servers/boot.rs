//! Servers in simulated time: BUILD becomes ACTIVE after `Cloud::boot_seconds`, or ERROR
//! with a fault when the scheduler found no room or a fault was injected; and what servers
//! use of the hypervisors and of the project's compute quota.

use std::time::{Duration, Instant};

use super::super::Cloud;
use super::{ServerFault, ServerStatus};

impl Cloud {
    /// Real time for `sim_seconds` of simulated time.
    pub fn sim_delay(&self, sim_seconds: f64) -> Duration {
        let scale = if self.time_scale > 0.0 {
            self.time_scale
        } else {
            1.0
        };
        Duration::from_secs_f64((sim_seconds / scale).max(0.0))
    }

    /// Applies what is due: BUILD servers whose boot delay has passed become ACTIVE (or ERROR
    /// with their build fault), and scheduled breaks happen. Cheap; call it before reading.
    pub fn advance(&mut self) {
        let now = Instant::now();
        let wall = |at: Instant| {
            let ago =
                chrono::Duration::from_std(now.saturating_duration_since(at)).unwrap_or_default();
            (chrono::Utc::now() - ago).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        for s in &mut self.servers {
            if s.status == ServerStatus::Build && s.ready_at <= now {
                let at = wall(s.ready_at);
                s.updated = at.clone();
                match s.build_fault.take() {
                    None => {
                        s.status = ServerStatus::Active;
                        s.launched_at = Some(at);
                    }
                    Some((code, message)) => {
                        s.status = ServerStatus::Error;
                        s.fault = Some(ServerFault {
                            code,
                            details: format!("nova.exception: {message}"),
                            message,
                            created: at,
                        });
                    }
                }
            }
            if let Some((due, _)) = &s.break_at
                && *due <= now
                && s.status != ServerStatus::Build
            {
                let (due, message) = s.break_at.take().expect("checked above");
                let at = wall(due);
                s.status = ServerStatus::Error;
                s.updated = at.clone();
                s.fault = Some(ServerFault {
                    code: 500,
                    details: String::new(),
                    message,
                    created: at,
                });
            }
        }
    }

    /// Puts a server into ERROR now with a 500 fault, as a failed hypervisor would. Its ports,
    /// volumes and host stay, as in Nova. `false` if there is no such server.
    pub fn break_server(&mut self, id: &str, message: &str) -> bool {
        self.break_server_after(id, 0.0, message)
    }

    /// Like `break_server`, `sim_seconds` of simulated time from now (and not before the server
    /// has left BUILD).
    pub fn break_server_after(&mut self, id: &str, sim_seconds: f64, message: &str) -> bool {
        let due = Instant::now() + self.sim_delay(sim_seconds);
        let Some(s) = self.servers.iter_mut().find(|s| s.id == id) else {
            return false;
        };
        s.break_at = Some((due, message.to_string()));
        self.advance();
        true
    }

    /// vCPUs, RAM (MiB) and servers placed on a hypervisor.
    pub fn hypervisor_usage(&self, host: &str) -> (i64, i64, i64) {
        self.servers
            .iter()
            .filter(|s| s.host == host)
            .filter_map(|s| self.flavors.iter().find(|f| f.id == s.flavor_id))
            .fold((0, 0, 0), |(c, r, n), f| {
                (c + f.vcpus, r + f.ram_mib, n + 1)
            })
    }

    /// The flavors' disk (GiB) of the servers placed on a hypervisor.
    pub fn hypervisor_disk(&self, host: &str) -> i64 {
        self.servers
            .iter()
            .filter(|s| s.host == host)
            .filter_map(|s| self.flavors.iter().find(|f| f.id == s.flavor_id))
            .map(|f| f.disk_gib)
            .sum()
    }

    /// Instances, cores and RAM (MiB) a project's servers count against its Nova quota (every
    /// server, ERROR ones too, as Nova counts them).
    pub fn compute_usage(&self, project: &str) -> (i64, i64, i64) {
        self.servers
            .iter()
            .filter(|s| s.project_id == project)
            .filter_map(|s| self.flavors.iter().find(|f| f.id == s.flavor_id))
            .fold((0, 0, 0), |(n, c, r), f| {
                (n + 1, c + f.vcpus, r + f.ram_mib)
            })
    }
}
