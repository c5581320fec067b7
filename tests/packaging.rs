//! Packaging checks that need no cross build: the shipped configs load, the systemd unit
//! verifies, the OpenWrt init script parses, and `run` started as root drops to the
//! configured user. (The cross builds and qemu runs are in packaging/build-release.sh and
//! .ci/run: minutes, not seconds.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use phantomnet::config::Config;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pn-pkg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn make_config(flavour: &str, out: &Path) -> Config {
    let st = Command::new(repo().join("packaging/make-config.sh"))
        .args([flavour, out.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success(), "make-config.sh {flavour} failed");
    Config::load(out).unwrap()
}

#[test]
fn shipped_configs_load_and_point_at_installed_paths() {
    let d = tmp("cfg");
    let deb = make_config("debian", &d.join("debian.toml"));
    assert_eq!(
        deb.output.db,
        PathBuf::from("/var/lib/phantomnet/phantomnet.db")
    );
    assert_eq!(
        deb.detection.rules,
        vec![
            PathBuf::from("/usr/share/phantomnet/rules/phantomnet.rules"),
            PathBuf::from("/usr/share/phantomnet/rules/phantomnet-threats.rules"),
        ]
    );
    assert_eq!(
        deb.detection.model,
        PathBuf::from("/usr/share/phantomnet/models/default.json")
    );
    assert_eq!(deb.capture.interface, "eth0");
    assert_eq!(deb.service.user, "phantomnet");

    let ow = make_config("openwrt", &d.join("openwrt.toml"));
    assert!(ow.output.db.starts_with("/tmp"), "{:?}", ow.output.db);
    assert_eq!(ow.capture.interface, "br-lan");
    // /tmp is RAM on a router: the retention bound must keep the file small.
    assert!(ow.retention.max_bytes > 0 && ow.retention.max_bytes <= 8 << 20);
    assert!(ow.retention.max_rows <= 50_000);
    assert!(ow.tables.flows < deb.tables.flows && ow.tables.hosts < deb.tables.hosts);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn shipped_config_passes_check_with_staged_share_dir() {
    // The packaged config names /usr/share/phantomnet; stage that tree and let `check`
    // load the real rules and model through it.
    let d = tmp("check");
    let share = d.join("usr/share/phantomnet");
    std::fs::create_dir_all(share.join("rules")).unwrap();
    std::fs::create_dir_all(share.join("models")).unwrap();
    for f in ["phantomnet.rules", "phantomnet-threats.rules"] {
        std::fs::copy(repo().join("rules").join(f), share.join("rules").join(f)).unwrap();
    }
    std::fs::copy(
        repo().join("models/default.json"),
        share.join("models/default.json"),
    )
    .unwrap();
    for flavour in ["debian", "openwrt"] {
        let p = d.join(format!("{flavour}.toml"));
        make_config(flavour, &p);
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("/usr/share/phantomnet", share.to_str().unwrap());
        std::fs::write(&p, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_phantomnet"))
            .args(["--log", "warn", "check", "-c", p.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{flavour}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn openwrt_init_script_parses() {
    let out = Command::new("sh")
        .arg("-n")
        .arg(repo().join("packaging/openwrt/phantomnet/files/phantomnet.init"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze not installed");
        return;
    }
    // verify wants ExecStart to exist: point it at the test build.
    let d = tmp("unit");
    let unit = std::fs::read_to_string(repo().join("packaging/systemd/phantomnet.service"))
        .unwrap()
        .replace("/usr/bin/phantomnet", env!("CARGO_BIN_EXE_phantomnet"));
    assert!(unit.contains("AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN"));
    assert!(unit.contains("User=phantomnet"));
    assert!(unit.contains("StateDirectory=phantomnet"));
    let p = d.join("phantomnet.service");
    std::fs::write(&p, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&p)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("phantomnet.service"),
        "{err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

fn status_uid(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("Uid:"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
}

#[test]
fn run_as_root_drops_to_the_service_user_after_opening_the_socket() {
    if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    {
        eprintln!("skipped: needs root (opens a packet socket on lo, then drops privileges)");
        return;
    }
    let d = tmp("drop");
    // The dropped user must be able to write the database.
    Command::new("chmod")
        .args(["0777", d.to_str().unwrap()])
        .status()
        .unwrap();
    let cfg = d.join("c.toml");
    std::fs::write(
        &cfg,
        "[detection]\nrules = []\nmodel = \"\"\n[http]\nenabled = false\n\
         [service]\nuser = \"65534\"\ngroup = \"65534\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_phantomnet"))
        .args(["run", "-i", "lo", "--duration", "3", "-c"])
        .arg(&cfg)
        .arg("--db")
        .arg(d.join("x.db"))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = None;
    while Instant::now() < deadline {
        if let Some(uid) = status_uid(child.id()) {
            if uid == "65534 65534 65534 65534" {
                seen = Some(uid);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = child.wait().unwrap();
    assert_eq!(
        seen.as_deref(),
        Some("65534 65534 65534 65534"),
        "real, effective, saved and fs uid should all be 65534"
    );
    assert!(st.success(), "run exited with {st}");
    assert!(
        d.join("x.db").exists(),
        "the dropped process wrote no database"
    );
    std::fs::remove_dir_all(&d).unwrap();
}
