//! Files a function may use: the host directories a hub offers
//! (`[resources.NAME]` in its config file), a function's private volume and
//! the mounts of its manifest, the checks they pass at deploy and on a
//! move, and where the hub lays them out on disk.
//!
//! Layout: a function's volume is `DATA/functions/NAME/volume` (owner-only,
//! 0700, created at launch); a mount is the resource's own host directory,
//! opened as a preopen, never copied. The guest sees the volume first
//! (fd 3) and the mounts after it in manifest order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytesize::ByteSize;
use ferry_proto::v1::{FunctionSpec, Messaging, Mount, Resource, Volume};
use serde::Deserialize;

use crate::runtime::PreopenSpec;

/// Quota of a volume deployed without one.
pub const DEFAULT_VOLUME_QUOTA: ByteSize = ByteSize::mib(256);
/// The largest quota a volume may ask for.
pub const MAX_VOLUME_QUOTA: ByteSize = ByteSize::tib(1);
/// Most mounts one function may have.
pub const MAX_MOUNTS: usize = 32;

/// How much a function may do in a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Ro,
    Rw,
}

impl Access {
    pub fn parse(text: &str) -> Result<Access, String> {
        match text {
            "ro" => Ok(Access::Ro),
            "rw" => Ok(Access::Rw),
            other => Err(format!("{other:?} is not an access (ro or rw)")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Ro => "ro",
            Access::Rw => "rw",
        }
    }
}

/// One `[resources.NAME]` table of the agent's config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceDecl {
    pub path: PathBuf,
    /// The most access any function may get.
    pub access: Access,
}

/// The resources a hub offers, by name.
pub type Resources = BTreeMap<String, ResourceDecl>;

/// Host directories no resource may be, or be inside of.
const SYSTEM_DIRS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Checks every resource at start: a valid name, an absolute host path of
/// an existing directory, not under `/proc`, `/sys` or `/dev`, and neither
/// inside the hub's data directory nor holding it. Returns
/// `(key, reason)` for the first that fails.
pub fn validate_resources(resources: &Resources, data_dir: &Path) -> Result<(), (String, String)> {
    let data_dir = data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_owned());
    for (name, decl) in resources {
        let key = format!("resources.{name}");
        crate::error::validate_function_name(name).map_err(|error| (key.clone(), error.to_string()))?;
        if !decl.path.is_absolute() {
            return Err((key, format!("path {} is not absolute", decl.path.display())));
        }
        let path = decl
            .path
            .canonicalize()
            .map_err(|error| (key.clone(), format!("path {}: {error}", decl.path.display())))?;
        if !path.is_dir() {
            return Err((key, format!("path {} is not a directory", decl.path.display())));
        }
        if let Some(system) = SYSTEM_DIRS.iter().find(|system| path.starts_with(system)) {
            return Err((key, format!("path {} is under {system}", decl.path.display())));
        }
        if path.starts_with(&data_dir) || data_dir.starts_with(&path) {
            return Err((
                key,
                format!(
                    "path {} overlaps the hub's data directory {}",
                    decl.path.display(),
                    data_dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The resources as `ferry info` and peers see them.
pub fn describe(resources: &Resources) -> Vec<Resource> {
    resources
        .iter()
        .map(|(name, decl)| Resource {
            name: name.clone(),
            path: decl.path.display().to_string(),
            access: decl.access.as_str().to_owned(),
        })
        .collect()
}

/// Checks a guest path: absolute, normalised (no `.`, `..`, `//` or
/// trailing `/`), valid UTF-8 by construction.
pub fn check_guest_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    if path.len() > 1024 {
        return Err("is longer than 1024 bytes".to_owned());
    }
    let normal = path == "/"
        || path[1..]
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..");
    if !normal || path.contains('\0') {
        return Err(format!(
            "{path:?} is not a normalised path (no ., .., // or trailing /)"
        ));
    }
    Ok(())
}

/// Whether one guest path is the other or lies beneath it.
fn overlaps(a: &str, b: &str) -> bool {
    let beneath = |inner: &str, outer: &str| {
        inner == outer || outer == "/" || inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/'))
    };
    beneath(a, b) || beneath(b, a)
}

/// Checks a function's volume, mounts and messaging against the resources
/// of the hub it is to run on. The error names the field:
/// `mount[1].access: ...`.
pub fn check_files(
    volume: Option<&Volume>,
    mounts: &[Mount],
    messaging: Option<&Messaging>,
    resources: &Resources,
    hub: &str,
) -> Result<(), String> {
    let mut guest_paths: Vec<(String, &str)> = Vec::new();
    if let Some(volume) = volume {
        check_guest_path(&volume.path).map_err(|reason| format!("volume.path: {reason}"))?;
        if volume.quota_bytes > MAX_VOLUME_QUOTA.as_u64() {
            return Err(format!(
                "volume.quota: {} is more than {MAX_VOLUME_QUOTA}",
                ByteSize::b(volume.quota_bytes)
            ));
        }
        guest_paths.push(("volume.path".to_owned(), &volume.path));
    }
    if mounts.len() > MAX_MOUNTS {
        return Err(format!("mount: {} mounts, at most {MAX_MOUNTS}", mounts.len()));
    }
    for (index, mount) in mounts.iter().enumerate() {
        let field = |name: &str| format!("mount[{index}].{name}");
        let access = Access::parse(&mount.access).map_err(|reason| format!("{}: {reason}", field("access")))?;
        let Some(decl) = resources.get(&mount.resource) else {
            let offered: Vec<_> = resources.keys().map(String::as_str).collect();
            let offered = if offered.is_empty() {
                "none".to_owned()
            } else {
                offered.join(", ")
            };
            return Err(format!(
                "{}: hub {hub} offers no resource {:?} (it offers: {offered})",
                field("resource"),
                mount.resource
            ));
        };
        if access > decl.access {
            return Err(format!(
                "{}: {} asks for rw, hub {hub} grants resource {:?} only ro",
                field("access"),
                access.as_str(),
                mount.resource
            ));
        }
        check_guest_path(&mount.path).map_err(|reason| format!("{}: {reason}", field("path")))?;
        guest_paths.push((field("path"), &mount.path));
    }
    for (index, (field, path)) in guest_paths.iter().enumerate() {
        if let Some((other, other_path)) = guest_paths[..index].iter().find(|(_, other)| overlaps(path, other)) {
            return Err(format!("{field}: {path} overlaps {other} ({other_path})"));
        }
    }
    if let Some(messaging) = messaging {
        for (list, names) in [("send-to", &messaging.send_to), ("invoked-by", &messaging.invoked_by)] {
            for (index, name) in names.iter().enumerate() {
                crate::error::validate_function_name(name)
                    .map_err(|error| format!("messaging.{list}[{index}]: {error}"))?;
            }
        }
    }
    Ok(())
}

/// Whether `resources` lets `spec` run: every mount's resource exists with
/// enough access. The reason names the first that does not.
pub fn placement_refusal(spec: &FunctionSpec, resources: &[Resource]) -> Option<String> {
    refused_mount(spec, resources).map(|refused| refused.reason("it offers no", "it grants"))
}

/// [`placement_refusal`] of every hub in `hubs` (their resources), said of
/// all of them: `None` if any could take `spec`, or there is no hub. The
/// reason is the first hub's.
pub fn refusal_everywhere(spec: &FunctionSpec, hubs: &[&[Resource]]) -> Option<String> {
    let refusals: Option<Vec<RefusedMount>> = hubs.iter().map(|resources| refused_mount(spec, resources)).collect();
    let first = refusals?.into_iter().next()?;
    Some(first.reason("no peer offers", "every peer grants"))
}

/// A mount a hub cannot serve: its resource, and (granted, wanted) when
/// the hub offers it with too little access.
struct RefusedMount {
    resource: String,
    access: Option<(Access, Access)>,
}

impl RefusedMount {
    /// Why, with the subject's words for a missing resource and for one
    /// granted with too little access.
    fn reason(&self, offers_no: &str, grants: &str) -> String {
        match self.access {
            None => format!("{offers_no} resource {:?}, which the function mounts", self.resource),
            Some((granted, wanted)) => format!(
                "{grants} resource {:?} only {}, the function mounts it {}",
                self.resource,
                granted.as_str(),
                wanted.as_str()
            ),
        }
    }
}

fn refused_mount(spec: &FunctionSpec, resources: &[Resource]) -> Option<RefusedMount> {
    spec.mounts.iter().find_map(|mount| {
        let resource = mount.resource.clone();
        let Some(offered) = resources.iter().find(|offered| offered.name == mount.resource) else {
            return Some(RefusedMount { resource, access: None });
        };
        let wanted = Access::parse(&mount.access).unwrap_or(Access::Rw);
        let granted = Access::parse(&offered.access).unwrap_or(Access::Ro);
        (wanted > granted).then_some(RefusedMount {
            resource,
            access: Some((granted, wanted)),
        })
    })
}

/// Whether the function has files of its own or mounted: such functions
/// are not captured yet (their files would not travel with them).
pub fn has_files(spec: &FunctionSpec) -> bool {
    spec.volume.is_some() || !spec.mounts.is_empty()
}

/// Where the hub keeps everything of the function `name` on disk.
pub fn function_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("functions").join(name)
}

/// Where the hub keeps the files of the function `name`.
pub fn volume_dir(data_dir: &Path, name: &str) -> PathBuf {
    function_dir(data_dir, name).join("volume")
}

/// Creates the function's volume directory (owner-only) if it is missing.
pub fn lay_out_volume(data_dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = volume_dir(data_dir, name);
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
    Ok(dir)
}

/// The preopens of `spec` on this hub: its volume, then its mounts.
/// Mounts whose resource is gone are left out (the deploy check refuses
/// them; a hub restarted without a resource fails the function's start
/// with the reason instead).
pub fn preopens(spec: &FunctionSpec, resources: &Resources, data_dir: &Path) -> Result<Vec<PreopenSpec>, String> {
    let mut preopens = Vec::new();
    if let Some(volume) = &spec.volume {
        let host_path = lay_out_volume(data_dir, &spec.name)
            .map_err(|error| format!("cannot create the volume directory: {error}"))?;
        let quota = match volume.quota_bytes {
            0 => DEFAULT_VOLUME_QUOTA.as_u64(),
            bytes => bytes,
        };
        preopens.push(PreopenSpec {
            guest_path: volume.path.clone(),
            host_path,
            writable: true,
            quota_bytes: Some(quota),
            volume: true,
        });
    }
    for mount in &spec.mounts {
        let decl = resources
            .get(&mount.resource)
            .ok_or_else(|| format!("this hub no longer offers resource {:?}", mount.resource))?;
        let access = Access::parse(&mount.access)?;
        preopens.push(PreopenSpec {
            guest_path: mount.path.clone(),
            host_path: decl.path.clone(),
            writable: access == Access::Rw && decl.access == Access::Rw,
            quota_bytes: None,
            volume: false,
        });
    }
    Ok(preopens)
}

/// Whether `from` may message (send to or invoke) `to` under their rules.
/// `Err` names the rule that denies it.
pub fn messaging_allowed(
    from: &str,
    from_rules: Option<&Messaging>,
    to: &str,
    to_rules: Option<&Messaging>,
) -> Result<(), String> {
    if let Some(rules) = from_rules
        && rules.restrict_send
        && !rules.send_to.iter().any(|name| name == to)
    {
        return Err(format!(
            "function {from:?} may send only to {:?} (messaging.send-to)",
            rules.send_to
        ));
    }
    if let Some(rules) = to_rules
        && rules.restrict_invoked_by
        && !rules.invoked_by.iter().any(|name| name == from)
    {
        return Err(format!(
            "function {to:?} may be invoked only by {:?} (messaging.invoked-by)",
            rules.invoked_by
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(dir: &Path) -> Resources {
        let mut resources = Resources::new();
        resources.insert(
            "samples".to_owned(),
            ResourceDecl {
                path: dir.to_owned(),
                access: Access::Ro,
            },
        );
        resources.insert(
            "scratch".to_owned(),
            ResourceDecl {
                path: dir.to_owned(),
                access: Access::Rw,
            },
        );
        resources
    }

    fn mount(resource: &str, path: &str, access: &str) -> Mount {
        Mount {
            resource: resource.to_owned(),
            path: path.to_owned(),
            access: access.to_owned(),
        }
    }

    fn volume(path: &str) -> Volume {
        Volume {
            path: path.to_owned(),
            quota_bytes: 0,
        }
    }

    #[test]
    fn guest_paths_must_be_absolute_and_normalised() {
        for good in ["/", "/data", "/a/b_c.d"] {
            check_guest_path(good).unwrap();
        }
        for bad in ["data", "", "/data/", "/a//b", "/a/../b", "/a/./b", "/.."] {
            assert!(check_guest_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let resources = resources(dir.path());
        let check = |volume: Option<Volume>, mounts: &[Mount]| {
            check_files(volume.as_ref(), mounts, None, &resources, "h").unwrap_err()
        };
        assert!(check(Some(volume("data")), &[]).starts_with("volume.path: "));
        let huge = Volume {
            path: "/data".to_owned(),
            quota_bytes: u64::MAX,
        };
        assert!(check(Some(huge), &[]).starts_with("volume.quota: "));
        let error = check(None, &[mount("nope", "/x", "ro")]);
        assert!(
            error.starts_with("mount[0].resource: ") && error.contains("samples, scratch"),
            "{error}"
        );
        let error = check(None, &[mount("scratch", "/x", "ro"), mount("samples", "/y", "rw")]);
        assert!(
            error.starts_with("mount[1].access: ") && error.contains("only ro"),
            "{error}"
        );
        assert!(check(None, &[mount("samples", "/x", "rwx")]).starts_with("mount[0].access: "));
        assert!(check(None, &[mount("samples", "x", "ro")]).starts_with("mount[0].path: "));
        let error = check(Some(volume("/data")), &[mount("samples", "/data/in", "ro")]);
        assert!(
            error.starts_with("mount[0].path: ") && error.contains("volume.path"),
            "{error}"
        );
        let messaging = Messaging {
            restrict_send: true,
            send_to: vec!["ok".to_owned(), "bad name!".to_owned()],
            ..Default::default()
        };
        let error = check_files(None, &[], Some(&messaging), &resources, "h").unwrap_err();
        assert!(error.starts_with("messaging.send-to[1]: "), "{error}");
        check_files(
            Some(&volume("/data")),
            &[mount("samples", "/samples", "ro"), mount("scratch", "/database", "rw")],
            Some(&messaging_ok()),
            &resources,
            "h",
        )
        .unwrap();
    }

    fn messaging_ok() -> Messaging {
        Messaging {
            restrict_send: true,
            send_to: vec!["aggregator".to_owned()],
            restrict_invoked_by: true,
            invoked_by: vec!["gateway".to_owned()],
        }
    }

    #[test]
    fn resources_under_system_directories_or_the_data_directory_are_refused() {
        let data = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let decl = |path: &Path| {
            let mut resources = Resources::new();
            resources.insert(
                "r".to_owned(),
                ResourceDecl {
                    path: path.to_owned(),
                    access: Access::Ro,
                },
            );
            resources
        };
        validate_resources(&decl(outside.path()), data.path()).unwrap();
        for bad in [
            Path::new("/proc/self"),
            Path::new("/sys"),
            Path::new("/dev"),
            data.path(),
        ] {
            let (key, reason) = validate_resources(&decl(bad), data.path()).unwrap_err();
            assert_eq!(key, "resources.r", "{reason}");
        }
        std::fs::create_dir(data.path().join("inner")).unwrap();
        assert!(validate_resources(&decl(&data.path().join("inner")), data.path()).is_err());
        assert!(validate_resources(&decl(Path::new("relative")), data.path()).is_err());
        assert!(validate_resources(&decl(&outside.path().join("missing")), data.path()).is_err());
    }

    #[test]
    fn a_hub_without_the_resource_or_with_less_access_is_no_place_for_the_function() {
        let spec = FunctionSpec {
            mounts: vec![mount("samples", "/s", "rw")],
            ..Default::default()
        };
        let offered = |access: &str| {
            vec![Resource {
                name: "samples".to_owned(),
                path: "/srv".to_owned(),
                access: access.to_owned(),
            }]
        };
        assert!(
            placement_refusal(&spec, &[])
                .unwrap()
                .contains("no resource \"samples\"")
        );
        assert!(placement_refusal(&spec, &offered("ro")).unwrap().contains("only ro"));
        assert_eq!(placement_refusal(&spec, &offered("rw")), None);
        // Said of several hubs: only when every one refuses, in their words.
        let (ro, rw) = (offered("ro"), offered("rw"));
        assert_eq!(
            refusal_everywhere(&spec, &[&[], &ro]).as_deref(),
            Some("no peer offers resource \"samples\", which the function mounts")
        );
        assert_eq!(
            refusal_everywhere(&spec, &[&ro]).as_deref(),
            Some("every peer grants resource \"samples\" only ro, the function mounts it rw")
        );
        assert_eq!(refusal_everywhere(&spec, &[&ro, &rw]), None);
        assert_eq!(refusal_everywhere(&spec, &[]), None);
    }

    #[test]
    fn messaging_lists_deny_what_they_do_not_name_and_absent_lists_allow_everything() {
        let rules = messaging_ok();
        messaging_allowed("a", None, "b", None).unwrap();
        messaging_allowed("x", Some(&rules), "aggregator", None).unwrap();
        assert!(
            messaging_allowed("x", Some(&rules), "other", None)
                .unwrap_err()
                .contains("send-to")
        );
        messaging_allowed("gateway", None, "x", Some(&rules)).unwrap();
        assert!(
            messaging_allowed("cli", None, "x", Some(&rules))
                .unwrap_err()
                .contains("invoked-by")
        );
        let empty = Messaging {
            restrict_send: true,
            ..Default::default()
        };
        assert!(messaging_allowed("x", Some(&empty), "y", None).is_err());
    }
}
