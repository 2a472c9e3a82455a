//! `block_device_mapping_v2`: the block devices a create asks for, checked, and the volumes
//! made or attached for them.

use serde_json::Value;

use super::super::{Cloud, Token, Volume, VolumeAttachment, now_rfc3339, volume};
use super::create::schema_error;
use super::{ApiError, AttachedVolume, bad_request};

/// A block device asked for in `block_device_mapping_v2`, checked.
pub(super) struct Bdm {
    pub(super) source: BdmSource,
    pub(super) boot_index: Option<i64>,
    pub(super) delete_on_termination: bool,
}

pub(super) enum BdmSource {
    /// A new volume Cinder creates (from an image, or blank).
    NewVolume {
        image_id: Option<String>,
        size_gib: i64,
        volume_type: Option<String>,
    },
    /// An existing volume of the project.
    Volume(String),
    /// The image booted on local disk (same as `imageRef`).
    LocalImage(String),
}

/// Reads an integer Nova accepts as a number or a numeric string (`"volume_size": "1"`).
pub(super) fn int_field(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

pub(super) const GIB: i64 = 1024 * 1024 * 1024;

impl Cloud {
    /// `block_device_mapping_v2`, checked against Glance and Cinder as Nova's API does.
    pub(super) fn requested_bdms(
        &self,
        req: &Value,
        project: &str,
        microversion: (u32, u32),
    ) -> Result<Vec<Bdm>, ApiError> {
        let Some(entries) = req["block_device_mapping_v2"].as_array() else {
            return Ok(Vec::new());
        };
        let invalid = |why: &str| bad_request(&format!("Block Device Mapping is Invalid: {why}"));
        let mut out = Vec::new();
        for e in entries {
            let source_type = e["source_type"].as_str().unwrap_or("blank");
            let dest = e["destination_type"].as_str().unwrap_or("volume");
            let uuid = e["uuid"].as_str().unwrap_or_default().to_string();
            let size = int_field(&e["volume_size"]);
            let volume_type = e["volume_type"].as_str().map(str::to_string);
            if volume_type.is_some() && microversion < (2, 67) {
                return Err(schema_error(
                    req,
                    "Additional properties are not allowed ('volume_type' was unexpected)",
                ));
            }
            if let Some(t) = &volume_type
                && volume::volume_type_name(self, Some(t)).is_err()
            {
                return Err(bad_request(&format!("Volume type {t} could not be found.")));
            }
            let source = match (source_type, dest) {
                ("image", "local") => {
                    if !self.images.iter().any(|i| i.id == uuid) {
                        return Err(bad_request(&format!("Image {uuid} could not be found.")));
                    }
                    BdmSource::LocalImage(uuid)
                }
                ("image", "volume") => {
                    let Some(image) = self.images.iter().find(|i| i.id == uuid) else {
                        return Err(bad_request(&format!("Image {uuid} could not be found.")));
                    };
                    let min = image.min_disk_gib.max(1);
                    let size_gib = size.unwrap_or(min);
                    if size_gib < image.min_disk_gib {
                        return Err(bad_request(&format!(
                            "Volume is smaller than the minimum size specified in image metadata. \
                             Volume size is {} bytes, minimum size is {} bytes.",
                            size_gib * GIB,
                            image.min_disk_gib * GIB
                        )));
                    }
                    BdmSource::NewVolume {
                        image_id: Some(uuid),
                        size_gib,
                        volume_type,
                    }
                }
                ("blank", "volume") => match size.filter(|s| *s > 0) {
                    Some(size_gib) => BdmSource::NewVolume {
                        image_id: None,
                        size_gib,
                        volume_type,
                    },
                    None => return Err(invalid("Blank volumes need a volume_size.")),
                },
                ("volume", "volume") => {
                    let Some(v) = self
                        .volumes
                        .iter()
                        .find(|v| v.id == uuid && v.project_id == project)
                    else {
                        return Err(bad_request(&format!("Volume {uuid} could not be found.")));
                    };
                    if !v.attachments.is_empty() {
                        return Err(bad_request(&format!(
                            "Invalid volume: Volume {uuid} status must be available or downloading"
                        )));
                    }
                    BdmSource::Volume(uuid)
                }
                (s, d) => {
                    return Err(invalid(&format!(
                        "source_type {s} with destination_type {d} is not simulated."
                    )));
                }
            };
            out.push(Bdm {
                source,
                boot_index: e["boot_index"].as_i64().or_else(|| {
                    e["boot_index"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .filter(|i: &i64| *i >= 0)
                }),
                delete_on_termination: e["delete_on_termination"].as_bool().unwrap_or(false),
            });
        }
        Ok(out)
    }

    /// Creates the volumes the mapping asks Cinder for and attaches them and the existing ones;
    /// the boot device is `/dev/vda`, the rest follow in request order.
    pub(super) fn attach_volumes(
        &mut self,
        bdms: &[Bdm],
        server_id: &str,
        caller: &Token,
        host: &str,
        az: &str,
    ) -> Vec<AttachedVolume> {
        let mut ordered: Vec<&Bdm> = bdms
            .iter()
            .filter(|b| !matches!(b.source, BdmSource::LocalImage(_)))
            .collect();
        ordered.sort_by_key(|b| b.boot_index.filter(|i| *i >= 0).unwrap_or(i64::MAX));
        // Booted from an image, the local disk is `/dev/vda` and volumes start at `vdb`.
        let local_boot = ordered.first().is_none_or(|b| b.boot_index != Some(0));
        let now = now_rfc3339();
        let mut out = Vec::new();
        for (i, b) in ordered.into_iter().enumerate() {
            let letter = (b'a' + ((i + usize::from(local_boot)) % 26) as u8) as char;
            let device = format!("/dev/vd{letter}");
            let attachment = VolumeAttachment {
                id: self.new_id(),
                server_id: server_id.to_string(),
                host_name: host.to_string(),
                device: device.clone(),
                attached_at: now.clone(),
            };
            let volume_id = match &b.source {
                BdmSource::Volume(id) => {
                    if let Some(v) = self.volumes.iter_mut().find(|v| &v.id == id) {
                        v.attachments.push(attachment);
                    }
                    id.clone()
                }
                BdmSource::NewVolume {
                    image_id,
                    size_gib,
                    volume_type,
                } => {
                    let type_name =
                        volume::volume_type_name(self, volume_type.as_deref()).unwrap_or_default();
                    let v = Volume {
                        id: self.new_id(),
                        name: if image_id.is_none() {
                            format!("{server_id}-blank-vol")
                        } else {
                            String::new()
                        },
                        project_id: caller.project_id.clone(),
                        user_id: caller.user_id.clone(),
                        size_gib: *size_gib,
                        volume_type: type_name,
                        availability_zone: az.to_string(),
                        image_id: image_id.clone(),
                        description: None,
                        attachments: vec![attachment],
                        created: now.clone(),
                    };
                    let id = v.id.clone();
                    self.volumes.push(v);
                    id
                }
                BdmSource::LocalImage(_) => unreachable!("filtered above"),
            };
            out.push(AttachedVolume {
                id: volume_id,
                delete_on_termination: b.delete_on_termination,
                device,
            });
        }
        out
    }
}
