//! SIGHUP reload end to end: `phantomnet run -i lo` (needs root or CAP_NET_RAW; skipped
//! otherwise) swaps in edited rules without losing flow state, and keeps the old rules,
//! intel and model when a new file is bad, saying why in its log.

use std::io::Read;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{read_eve, TempDir};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

fn log_of(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// Polls `cond` every 50 ms for up to 10 s.
fn wait_for(what: &str, log: &Path, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}; log:\n{}", log_of(log));
}

/// Alerts in the EVE file per sid.
fn count_sid(eve: &Path, sid: u64) -> usize {
    read_eve(eve)
        .iter()
        .filter(|v| v["event_type"] == "alert" && v["alert"]["signature_id"] == sid)
        .count()
}

#[test]
fn sighup_reloads_rules_keeps_flows_and_refuses_bad_files() {
    if !is_root() {
        eprintln!("skipped: live reload test needs root (capture on lo)");
        return;
    }
    let t = TempDir::new("reload");
    let rules = t.path("local.rules");
    let intel = t.path("intel.txt");
    let model = t.path("model.json");
    let eve = t.path("eve.json");
    let log = t.path("log.txt");
    // Two UDP sockets talk both ways: after the first exchange the flow is established, a
    // state only the kept flow table knows.
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (pa, pb) = (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    );
    std::fs::write(
        &rules,
        format!("alert udp any any -> any {pb} (msg:\"one\"; content:\"PNRELOAD-ONE\"; sid:1;)\n"),
    )
    .unwrap();
    std::fs::write(&intel, "192.0.2.0/24\n").unwrap();
    std::fs::copy(crate::util::repo().join("models/default.json"), &model).unwrap();
    let cfg = t.path("pn.toml");
    std::fs::write(
        &cfg,
        format!(
            "[output]\ndb = \"{}\"\neve = \"{}\"\n[http]\nenabled = false\n[detection]\nrules = [\"{}\"]\nintel = [\"{}\"]\nmodel = \"{}\"\n",
            t.path("db.sqlite").display(),
            eve.display(),
            rules.display(),
            intel.display(),
            model.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_phantomnet"))
        .args(["run", "-i", "lo", "-c", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let d = Daemon(child);
    wait_for("capture to start", &log, || {
        log_of(&log).contains("watching lo")
    });
    let send = |from: &UdpSocket, to: u16, msg: &[u8]| {
        from.send_to(msg, ("127.0.0.1", to)).unwrap();
    };
    // Rule 1 fires; the flow becomes established by b's answer.
    send(&a, pb, b"PNRELOAD-ONE");
    send(&b, pa, b"hello back");
    wait_for("sid 1", &log, || count_sid(&eve, 1) > 0);

    // New rules: sid 2 needs an established flow, so it can only fire on the next packet
    // if the flow table survived the reload.
    std::fs::write(
        &rules,
        format!(
            "alert udp any any -> any {pb} (msg:\"two\"; flow:established,to_server; content:\"PNRELOAD-TWO\"; sid:2;)\n"
        ),
    )
    .unwrap();
    signal(&d.0, "-HUP");
    wait_for("the reload", &log, || {
        log_of(&log).matches("rules: 1 loaded").count() >= 2
    });
    let ones = count_sid(&eve, 1);
    send(&a, pb, b"PNRELOAD-ONE PNRELOAD-TWO");
    wait_for("sid 2 on the kept, established flow", &log, || {
        count_sid(&eve, 2) > 0
    });
    assert_eq!(
        count_sid(&eve, 1),
        ones,
        "the old rule still fires after reload"
    );

    // Bad files: unreadable rules, unreadable intel, a corrupt model. All three keep the
    // old ones, and the log says why.
    std::fs::remove_file(&rules).unwrap();
    std::fs::remove_file(&intel).unwrap();
    std::fs::write(&model, "{ not a model").unwrap();
    signal(&d.0, "-HUP");
    wait_for("the refused reload", &log, || {
        let l = log_of(&log);
        l.contains("keeping the old rules")
            && l.contains("keeping the old intel lists")
            && l.contains("keeping the old model")
    });
    let l = log_of(&log);
    assert!(
        l.contains(rules.to_str().unwrap()),
        "the log names the rules file:\n{l}"
    );
    let twos = count_sid(&eve, 2);
    send(&a, pb, b"PNRELOAD-TWO again");
    wait_for("sid 2 from the kept rules", &log, || {
        count_sid(&eve, 2) > twos
    });

    // A rules file that parses to nothing (garbage, truncated) keeps the old set too.
    std::fs::write(
        &rules,
        "alert udp any any -> any any (content:\"unterminated\n",
    )
    .unwrap();
    signal(&d.0, "-HUP");
    wait_for("the empty rule set refused", &log, || {
        log_of(&log).contains("keeping the old rules: no rule loaded")
    });
    let twos = count_sid(&eve, 2);
    send(&a, pb, b"PNRELOAD-TWO once more");
    wait_for("sid 2 still", &log, || count_sid(&eve, 2) > twos);
    signal(&d.0, "-TERM");
}
