//! What is done to a server after it exists: delete, and the power and reboot actions.

use axum::http::StatusCode;
use serde_json::Value;

use super::super::{Cloud, Token, now_rfc3339};
use super::{ApiError, ServerStatus, bad_request, instance_not_found};

impl Cloud {
    /// The server `id` as the caller may see it: its project's, or any for an admin (Nova's
    /// `os_compute_api:servers:show`/`delete` default to admin or project member); another
    /// project's server is `itemNotFound` to a member, as Nova answers.
    pub(super) fn server_index(&self, caller: &Token, id: &str) -> Option<usize> {
        let admin = caller.roles.iter().any(|r| r == "admin");
        self.servers
            .iter()
            .position(|s| s.id == id && (admin || s.project_id == caller.project_id))
    }

    /// `DELETE /servers/{id}`: the server is gone at once. Ports Nova created are deleted, the
    /// caller's own ports unbound; volumes with `delete_on_termination` are deleted, the others
    /// detached (available again).
    pub fn delete_server(&mut self, caller: &Token, id: &str) -> Result<(), ApiError> {
        self.advance();
        let Some(i) = self.server_index(caller, id) else {
            return Err(instance_not_found(id));
        };
        let s = self.servers.remove(i);
        self.ports.retain(|p| !s.own_ports.contains(&p.id));
        for f in self.floating_ips.iter_mut() {
            if f.port_id.as_ref().is_some_and(|p| s.own_ports.contains(p)) {
                f.port_id = None;
                f.fixed_ip = None;
            }
        }
        for p in self.ports.iter_mut().filter(|p| p.device_id == s.id) {
            p.device_id.clear();
            p.device_owner.clear();
            p.binding_host.clear();
        }
        for v in &mut self.volumes {
            v.attachments.retain(|a| a.server_id != s.id);
        }
        let doomed: Vec<&str> = s
            .volumes
            .iter()
            .filter(|v| v.delete_on_termination)
            .map(|v| v.id.as_str())
            .collect();
        self.volumes.retain(|v| !doomed.contains(&v.id.as_str()));
        Ok(())
    }

    /// `POST /servers/{id}/action` for `os-stop`, `os-start` and `reboot`, with Nova's state
    /// checks. Takes effect at once.
    pub fn server_action(
        &mut self,
        caller: &Token,
        id: &str,
        action: &Value,
    ) -> Result<(), ApiError> {
        self.advance();
        let Some(i) = self.server_index(caller, id) else {
            return Err(instance_not_found(id));
        };
        let Some((name, args)) = action.as_object().and_then(|o| o.iter().next()) else {
            return Err(bad_request("Malformed request body"));
        };
        use ServerStatus::*;
        let (method, allowed, to): (&str, &[ServerStatus], ServerStatus) = match name.as_str() {
            "os-stop" => ("stop", &[Active, Error], Shutoff),
            "os-start" => ("start", &[Shutoff], Active),
            "reboot" if args["type"].as_str() == Some("HARD") => {
                ("reboot", &[Active, Shutoff, Error], Active)
            }
            "reboot" => ("reboot", &[Active], Active),
            other => return Err(bad_request(&format!("There is no such action: {other}"))),
        };
        let s = &mut self.servers[i];
        if !allowed.contains(&s.status) {
            return Err(ApiError::nova(
                StatusCode::CONFLICT,
                &format!(
                    "Cannot '{method}' instance {id} while it is in vm_state {}",
                    s.status.vm_state()
                ),
            ));
        }
        if s.host.is_empty() {
            return Err(ApiError::nova(
                StatusCode::CONFLICT,
                &format!("Instance {id} is not ready"),
            ));
        }
        s.status = to;
        if to == Active {
            s.fault = None;
        }
        s.updated = now_rfc3339();
        Ok(())
    }
}
