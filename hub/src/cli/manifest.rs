//! `ferry deploy -f fn.toml`: the deployment manifest, and the flags that
//! say the same on the command line. A flag given overrides the manifest's
//! field; the hub checks the result again (resources, access, paths) and
//! names the field it refuses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytesize::ByteSize;
use ferry_proto::v1::{DeployRequest, Limits, Messaging, Mount, Placement, Volume};
use serde::Deserialize;

use super::DeployArgs;
use super::client::ClientError;

/// `fn.toml`. Every key is optional except `name` and `module` (which a
/// flag may give instead); unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    pub name: Option<String>,
    /// The module, relative to the manifest's directory.
    pub module: Option<PathBuf>,
    pub args: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub memory_limit: Option<ByteSize>,
    pub cpus: Option<f64>,
    pub priority: Option<i32>,
    pub pin: Option<bool>,
    pub volume: Option<VolumeManifest>,
    pub mount: Option<Vec<MountManifest>>,
    pub messaging: Option<MessagingManifest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VolumeManifest {
    pub path: String,
    pub quota: Option<ByteSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MountManifest {
    pub resource: String,
    pub path: String,
    /// `ro` (the default) or `rw`.
    pub access: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MessagingManifest {
    pub send_to: Option<Vec<String>>,
    pub invoked_by: Option<Vec<String>>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClientError::ReadFile {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|error| ClientError::Manifest {
            path: path.display().to_string(),
            reason: error.to_string().trim_end().to_owned(),
        })
    }
}

/// `--volume /data[:256MiB]`.
pub fn parse_volume(text: &str) -> Result<Volume, String> {
    let (path, quota) = match text.split_once(':') {
        Some((path, quota)) => {
            let quota: ByteSize = quota
                .parse()
                .map_err(|_| format!("{quota:?} is not a size (like 256MiB)"))?;
            (path, quota.as_u64())
        }
        None => (text, 0),
    };
    Ok(Volume {
        path: path.to_owned(),
        quota_bytes: quota,
    })
}

/// `--mount RESOURCE:PATH[:ro|rw]`.
pub fn parse_mount(text: &str) -> Result<Mount, String> {
    let mut parts = text.splitn(3, ':');
    let (Some(resource), Some(path)) = (parts.next(), parts.next()) else {
        return Err(format!("{text:?} is not RESOURCE:PATH[:ro|rw]"));
    };
    Ok(Mount {
        resource: resource.to_owned(),
        path: path.to_owned(),
        access: parts.next().unwrap_or("ro").to_owned(),
    })
}

/// The deploy request of the flags over the manifest (if any).
pub fn deploy_request(args: DeployArgs) -> Result<DeployRequest, ClientError> {
    let (manifest, base) = match &args.manifest {
        Some(path) => (
            Manifest::load(path)?,
            path.parent().map(Path::to_owned).unwrap_or_default(),
        ),
        None => (Manifest::default(), PathBuf::new()),
    };
    let module_path = match (args.file, manifest.module) {
        (Some(file), _) => file,
        (None, Some(module)) => base.join(module),
        (None, None) => {
            return Err(ClientError::Usage(
                "no module: give FILE or `-f MANIFEST` with `module = \"...\"`".to_owned(),
            ));
        }
    };
    let name = args.name.or(manifest.name).ok_or_else(|| {
        ClientError::Usage("no function name: give --name or `name = \"...\"` in the manifest".to_owned())
    })?;
    let module = std::fs::read(&module_path).map_err(|source| ClientError::ReadFile {
        path: module_path.display().to_string(),
        source,
    })?;
    let mut env: std::collections::HashMap<String, String> = manifest.env.unwrap_or_default().into_iter().collect();
    env.extend(super::commands::parse_env(&args.env)?);
    let volume = match args.volume {
        Some(volume) => Some(volume),
        None => manifest.volume.map(|volume| Volume {
            path: volume.path,
            quota_bytes: volume.quota.map_or(0, |quota| quota.as_u64()),
        }),
    };
    let mounts = if args.mounts.is_empty() {
        manifest
            .mount
            .unwrap_or_default()
            .into_iter()
            .map(|mount| Mount {
                resource: mount.resource,
                path: mount.path,
                access: mount.access.unwrap_or_else(|| "ro".to_owned()),
            })
            .collect()
    } else {
        args.mounts
    };
    let manifest_messaging = manifest.messaging;
    let (send_to, invoked_by) = match manifest_messaging {
        Some(messaging) => (messaging.send_to, messaging.invoked_by),
        None => (None, None),
    };
    let send_to = if args.send_to.is_empty() {
        send_to
    } else {
        Some(args.send_to)
    };
    let invoked_by = if args.invoked_by.is_empty() {
        invoked_by
    } else {
        Some(args.invoked_by)
    };
    let messaging = (send_to.is_some() || invoked_by.is_some()).then(|| Messaging {
        restrict_send: send_to.is_some(),
        send_to: send_to.unwrap_or_default(),
        restrict_invoked_by: invoked_by.is_some(),
        invoked_by: invoked_by.unwrap_or_default(),
    });
    Ok(DeployRequest {
        name,
        module,
        args: if args.args.is_empty() {
            manifest.args.unwrap_or_default()
        } else {
            args.args
        },
        env,
        limits: Some(Limits {
            memory_limit_bytes: args
                .memory_limit
                .or(manifest.memory_limit)
                .map_or(0, |limit| limit.as_u64()),
            cpus: args.cpus.or(manifest.cpus).unwrap_or(0.0),
        }),
        replace: args.replace,
        placement: Some(Placement {
            priority: args.priority.or(manifest.priority).unwrap_or(0),
            pinned: args.pin || manifest.pin.unwrap_or(false),
        }),
        volume,
        mounts,
        messaging,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, String> {
        toml::from_str(text).map_err(|error: toml::de::Error| error.to_string())
    }

    #[test]
    fn the_documented_manifest_parses() {
        let manifest = parse(
            r#"
            name = "db"
            module = "sqlite_file.wasm"
            args = ["/data", "300000"]
            env = { MODE = "batch" }
            memory-limit = "128MiB"
            [volume]
            path = "/data"
            quota = "256MiB"
            [[mount]]
            resource = "samples"
            path = "/samples"
            access = "ro"
            [messaging]
            send-to = ["aggregator"]
            invoked-by = ["gateway"]
            "#,
        )
        .unwrap();
        assert_eq!(manifest.name.as_deref(), Some("db"));
        assert_eq!(manifest.memory_limit, Some(ByteSize::mib(128)));
        assert_eq!(manifest.env.unwrap()["MODE"], "batch");
        assert_eq!(manifest.volume.unwrap().quota, Some(ByteSize::mib(256)));
        assert_eq!(manifest.mount.unwrap()[0].resource, "samples");
        assert_eq!(manifest.messaging.unwrap().invoked_by.unwrap(), ["gateway"]);
    }

    #[test]
    fn unknown_or_mistyped_keys_are_refused_with_the_key() {
        let error = parse("name = \"db\"\nvolumes = 1\n").unwrap_err();
        assert!(error.contains("volumes"), "{error}");
        let error = parse("[volume]\npath = \"/data\"\nquota = \"lots\"\n").unwrap_err();
        assert!(error.contains("quota"), "{error}");
        let error = parse("[[mount]]\nresource = \"s\"\npath = \"/s\"\nmode = \"ro\"\n").unwrap_err();
        assert!(error.contains("mode"), "{error}");
        let error = parse("[messaging]\nsend_to = [\"a\"]\n").unwrap_err();
        assert!(error.contains("send_to"), "{error}");
    }

    #[test]
    fn volume_and_mount_flags_parse() {
        assert_eq!(parse_volume("/data").unwrap().quota_bytes, 0);
        assert_eq!(parse_volume("/data:1MiB").unwrap().quota_bytes, 1 << 20);
        assert!(parse_volume("/data:lots").is_err());
        let mount = parse_mount("samples:/samples").unwrap();
        assert_eq!(
            (mount.resource.as_str(), mount.path.as_str(), mount.access.as_str()),
            ("samples", "/samples", "ro")
        );
        assert_eq!(parse_mount("s:/s:rw").unwrap().access, "rw");
        assert!(parse_mount("samples").is_err());
    }
}
