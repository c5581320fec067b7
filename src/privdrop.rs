//! Privilege drop for `run` started as root: once the capture socket is open, nothing else
//! needs root, so the process switches to the configured `[service]` user and group before
//! it opens the database, parses traffic or answers HTTP.

use log::{info, warn};
use nix::unistd::{self, Gid, Group, Uid, User};

use crate::config::ServiceConfig;

/// Why the switch to the configured user could not be made (the process then stops).
#[derive(Debug, thiserror::Error)]
pub enum PrivDropError {
    #[error("{origin}: key `service.user`: no user `{name}` on this system (expected a name in /etc/passwd or a numeric uid)")]
    UnknownUser { origin: String, name: String },
    #[error("{origin}: key `service.group`: no group `{name}` on this system (expected a name in /etc/group or a numeric gid)")]
    UnknownGroup { origin: String, name: String },
    #[error("{origin}: key `service.user`: `{name}` is uid 0 (expected an unprivileged user)")]
    RootUser { origin: String, name: String },
    #[error("looking up {what}: {errno}")]
    Lookup { what: String, errno: nix::Error },
    #[error("cannot switch to {what}: {errno}")]
    Switch {
        what: &'static str,
        errno: nix::Error,
    },
    #[error("still able to regain root after switching to uid {uid}; refusing to run")]
    Regained { uid: u32 },
}

impl From<PrivDropError> for crate::runtime::RunError {
    fn from(e: PrivDropError) -> Self {
        crate::runtime::RunError::Other(e.to_string())
    }
}

/// The user and group a root process switches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: u32,
    pub group: String,
    pub gid: u32,
}

/// What `drop_privileges` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not started as root: nothing to drop (systemd starts us as our own user).
    NotRoot,
    /// Root, and no `service.user` configured: still root.
    StayedRoot,
    /// Switched to this identity; root cannot be regained.
    Dropped(Identity),
}

/// Resolves `service.user` / `service.group` (names or numeric ids) to an identity.
/// `origin` names the config in errors.
pub fn resolve(svc: &ServiceConfig, origin: &str) -> Result<Option<Identity>, PrivDropError> {
    if svc.user.is_empty() {
        return Ok(None);
    }
    let user = lookup_user(&svc.user, origin)?;
    if user.uid.is_root() {
        return Err(PrivDropError::RootUser {
            origin: origin.to_string(),
            name: svc.user.clone(),
        });
    }
    let (group, gid) = if svc.group.is_empty() {
        let name = Group::from_gid(user.gid)
            .ok()
            .flatten()
            .map_or_else(|| user.gid.to_string(), |g| g.name);
        (name, user.gid)
    } else {
        let g = lookup_group(&svc.group, origin)?;
        (g.0, g.1)
    };
    Ok(Some(Identity {
        user: user.name,
        uid: user.uid.as_raw(),
        group,
        gid: gid.as_raw(),
    }))
}

/// Called right after the capture socket is open. As root with `service.user` set, it
/// switches to that user and group (supplementary groups cleared) and checks that root
/// cannot be regained; as root without it, it warns; otherwise it does nothing.
pub fn drop_privileges(svc: &ServiceConfig, origin: &str) -> Result<Outcome, PrivDropError> {
    if !unistd::geteuid().is_root() {
        if !svc.user.is_empty() {
            info!(
                "not started as root: service.user `{}` not needed (running as uid {})",
                svc.user,
                unistd::geteuid()
            );
        }
        return Ok(Outcome::NotRoot);
    }
    let Some(id) = resolve(svc, origin)? else {
        warn!("running as root: set service.user in {origin} to drop root after the capture socket is open");
        return Ok(Outcome::StayedRoot);
    };
    let gid = Gid::from_raw(id.gid);
    let uid = Uid::from_raw(id.uid);
    unistd::setgroups(&[gid]).map_err(|errno| PrivDropError::Switch {
        what: "supplementary groups",
        errno,
    })?;
    unistd::setgid(gid).map_err(|errno| PrivDropError::Switch {
        what: "group",
        errno,
    })?;
    unistd::setuid(uid).map_err(|errno| PrivDropError::Switch {
        what: "user",
        errno,
    })?;
    if unistd::setuid(Uid::from_raw(0)).is_ok() || unistd::geteuid().is_root() {
        return Err(PrivDropError::Regained { uid: id.uid });
    }
    info!(
        "dropped root: now user {} ({}), group {} ({})",
        id.user, id.uid, id.group, id.gid
    );
    Ok(Outcome::Dropped(id))
}

fn lookup_user(name: &str, origin: &str) -> Result<User, PrivDropError> {
    let found = match name.parse::<u32>() {
        Ok(n) => User::from_uid(Uid::from_raw(n)),
        Err(_) => User::from_name(name),
    }
    .map_err(|errno| PrivDropError::Lookup {
        what: format!("user `{name}`"),
        errno,
    })?;
    match (found, name.parse::<u32>()) {
        (Some(u), _) => Ok(u),
        // A numeric uid need not have a passwd entry (e.g. a minimal container).
        (None, Ok(n)) => Ok(User {
            name: n.to_string(),
            passwd: Default::default(),
            uid: Uid::from_raw(n),
            gid: Gid::from_raw(n),
            gecos: Default::default(),
            dir: Default::default(),
            shell: Default::default(),
        }),
        (None, Err(_)) => Err(PrivDropError::UnknownUser {
            origin: origin.to_string(),
            name: name.to_string(),
        }),
    }
}

fn lookup_group(name: &str, origin: &str) -> Result<(String, Gid), PrivDropError> {
    if let Ok(n) = name.parse::<u32>() {
        let gid = Gid::from_raw(n);
        let label = Group::from_gid(gid)
            .ok()
            .flatten()
            .map_or_else(|| n.to_string(), |g| g.name);
        return Ok((label, gid));
    }
    match Group::from_name(name) {
        Ok(Some(g)) => Ok((g.name, g.gid)),
        Ok(None) => Err(PrivDropError::UnknownGroup {
            origin: origin.to_string(),
            name: name.to_string(),
        }),
        Err(errno) => Err(PrivDropError::Lookup {
            what: format!("group `{name}`"),
            errno,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(user: &str, group: &str) -> ServiceConfig {
        ServiceConfig {
            user: user.into(),
            group: group.into(),
        }
    }

    #[test]
    fn no_user_means_no_identity() {
        assert_eq!(resolve(&svc("", ""), "c.toml").unwrap(), None);
    }

    #[test]
    fn numeric_ids_need_no_passwd_entry() {
        let id = resolve(&svc("54321", "54322"), "c.toml").unwrap().unwrap();
        assert_eq!((id.uid, id.gid), (54321, 54322));
        assert_eq!(id.user, "54321");
        // Without a group, a numeric uid without an entry gets the same number as gid.
        let id = resolve(&svc("54321", ""), "c.toml").unwrap().unwrap();
        assert_eq!(id.gid, 54321);
    }

    #[test]
    fn names_resolve_through_passwd_and_group() {
        // `nobody` exists on Debian, Alpine and OpenWrt alike.
        let id = resolve(&svc("nobody", ""), "c.toml").unwrap().unwrap();
        assert_eq!(id.user, "nobody");
        assert_ne!(id.uid, 0);
        let root_group = resolve(&svc("nobody", "0"), "c.toml").unwrap().unwrap();
        assert_eq!(root_group.gid, 0);
    }

    #[test]
    fn unknown_names_name_the_key_and_the_file() {
        let e = resolve(&svc("no-such-user-pn", ""), "/etc/pn.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/pn.toml"), "{e}");
        assert!(e.contains("service.user"), "{e}");
        assert!(e.contains("no-such-user-pn"), "{e}");
        let e = resolve(&svc("nobody", "no-such-group-pn"), "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("service.group"), "{e}");
        assert!(e.contains("no-such-group-pn"), "{e}");
    }

    #[test]
    fn group_without_user_is_a_config_error() {
        let e = crate::config::Config::parse("[service]\ngroup = \"nogroup\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("service.group"), "{e}");
        let c = crate::config::Config::parse("[service]\nuser = \"nobody\"\n", "c.toml").unwrap();
        assert_eq!(c.service.user, "nobody");
    }

    #[test]
    fn root_is_not_a_target() {
        for u in ["root", "0"] {
            let e = resolve(&svc(u, ""), "c.toml").unwrap_err().to_string();
            assert!(e.contains("uid 0"), "{u}: {e}");
        }
    }
}
