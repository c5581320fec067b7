//! Threat-intel lists end to end: the shipped format examples load without a bad line and
//! hit where they should, a hit in a replayed capture becomes an alert naming the list, and
//! 100,000 generated entries load fast with allocation-free lookups.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Instant;

use phantomnet::intel::IntelSet;

use crate::util::frames::{self, MAC_A, MAC_B};
use crate::util::{repo, run_ok, write_pcap, TempDir};

fn example_lists() -> Vec<(String, PathBuf)> {
    let dir = repo().join("rules/intel");
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    v.sort();
    v
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn shipped_example_lists_load_cleanly_and_hit_only_documentation_ranges() {
    let lists = example_lists();
    assert_eq!(lists.len(), 4, "{lists:?}");
    let (set, rep) = IntelSet::load(&lists).unwrap();
    for l in &rep.lists {
        assert!(l.entries > 0, "{} is empty", l.origin);
        assert_eq!(l.bad_lines, 0, "{}: {:?}", l.origin, l.warnings);
    }
    let name = |a: &str| set.lookup(ip(a)).map(|h| set.list_name(h.list).to_string());
    assert_eq!(name("192.0.2.1").as_deref(), Some("example-blocklist"));
    assert_eq!(name("203.0.113.15").as_deref(), Some("example-blocklist"));
    assert_eq!(
        name("2001:db8:bad::1").as_deref(),
        Some("example-blocklist")
    );
    assert_eq!(name("192.0.2.100").as_deref(), Some("example-drop"));
    assert_eq!(name("203.0.113.40").as_deref(), Some("example-iprep"));
    assert_eq!(name("192.0.2.130").as_deref(), Some("example-firehol"));
    // iprep: the scored entry wins over unscored ones where they overlap.
    let h = set.lookup(ip("198.51.100.7")).unwrap();
    assert_eq!(
        (set.list_name(h.list), h.category, h.score),
        ("example-iprep", "1", Some(90))
    );
    let h = set.lookup(ip("192.0.2.5")).unwrap();
    assert_eq!(h.note, "SBL000001");
    // Every entry is a documentation range: no real address may hit.
    for a in [
        "8.8.8.8",
        "1.1.1.1",
        "192.168.1.1",
        "10.0.0.1",
        "2606:4700::1111",
        "::1",
    ] {
        assert_eq!(name(a), None, "{a}");
    }
}

#[test]
fn intel_hit_in_a_replay_is_an_alert_naming_the_list() {
    let t = TempDir::new("intel-replay");
    let pcap = t.path("in.pcap");
    let listed = [203, 0, 113, 12];
    let clean = [93, 184, 216, 34];
    let frames = vec![
        (
            1_700_000_000_000_000,
            frames::eth_ipv4_tcp(
                MAC_A,
                MAC_B,
                [192, 168, 1, 10],
                listed,
                40000,
                443,
                0x02,
                1,
                0,
                b"",
            ),
        ),
        (
            1_700_000_000_100_000,
            frames::eth_ipv4_tcp(
                MAC_A,
                MAC_B,
                [192, 168, 1, 10],
                clean,
                40001,
                443,
                0x02,
                1,
                0,
                b"",
            ),
        ),
    ];
    write_pcap(&pcap, &frames);
    let eve = t.path("eve.json");
    let list = repo().join("rules/intel/example-blocklist.txt");
    run_ok(&[
        "replay",
        pcap.to_str().unwrap(),
        "--no-model",
        "--rules",
        repo().join("rules/phantomnet.rules").to_str().unwrap(),
        "--intel",
        list.to_str().unwrap(),
        "--db",
        t.path("db.sqlite").to_str().unwrap(),
        "--eve",
        eve.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&eve).unwrap();
    let alerts: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event_type"] == "alert")
        .collect();
    assert_eq!(alerts.len(), 1, "{text}");
    let a = &alerts[0];
    assert_eq!(a["dest_ip"], "203.0.113.12");
    assert_ne!(a["alert"]["gid"], 1, "intel alerts use a gid of their own");
    let sig = a["alert"]["signature"].as_str().unwrap();
    assert!(sig.contains("example-blocklist"), "{sig}");
}

/// Deterministic xorshift.
fn rng(mut s: u64) -> impl FnMut() -> u64 {
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// 100,000 entries in the four formats, the shape of a large merged feed.
fn generated_feed(n: usize) -> (String, Vec<Ipv4Addr>) {
    let mut next = rng(0x2545_f491_4f6c_dd1d);
    let mut text = String::with_capacity(n * 24);
    let mut singles = Vec::new();
    text.push_str("; generated feed\n# mixed formats\n");
    for i in 0..n {
        let a = Ipv4Addr::from((next() as u32) | 0x0100_0000);
        match i % 5 {
            0 => {
                text.push_str(&format!("{a}\n"));
                singles.push(a);
            }
            1 => text.push_str(&format!("{a}/24 ; SBL{i}\n")),
            2 => text.push_str(&format!("{a},{},{}\n", i % 7, i % 128)),
            3 => text.push_str(&format!("{}/{}\n", a, 16 + (i % 17))),
            _ => {
                let v6 = Ipv6Addr::from(((next() as u128) << 64) | 0x2000 << 112);
                text.push_str(&format!("{v6}/64\n"));
            }
        }
    }
    (text, singles)
}

#[test]
fn hundred_thousand_entries_load_fast_and_lookups_are_cheap() {
    let t = TempDir::new("intel-100k");
    let (text, singles) = generated_feed(100_000);
    let path = t.path("feed.txt");
    std::fs::write(&path, &text).unwrap();
    let start = Instant::now();
    let (set, rep) = IntelSet::load(&[("feed".into(), path)]).unwrap();
    let load = start.elapsed();
    assert_eq!(rep.entries(), 100_000);
    assert_eq!(rep.bad_lines(), 0);
    for a in singles.iter().take(1000) {
        assert!(set.lookup(IpAddr::V4(*a)).is_some(), "{a}");
    }
    // Lookup cost over a mix of listed and random addresses.
    let mut next = rng(7);
    let probes: Vec<IpAddr> = (0..100_000)
        .map(|i| {
            if i % 4 == 0 {
                IpAddr::V4(singles[i % singles.len()])
            } else {
                IpAddr::V4(Ipv4Addr::from(next() as u32))
            }
        })
        .collect();
    let start = Instant::now();
    let mut hits = 0usize;
    for _ in 0..5 {
        for p in &probes {
            hits += usize::from(set.lookup(*p).is_some());
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / (5.0 * probes.len() as f64);
    let (v4, v6) = set.range_counts();
    println!(
        "intel: 100,000 entries ({v4} IPv4 + {v6} IPv6 ranges after merging) loaded in {:.1} ms; lookup {ns:.0} ns ({hits} hits)",
        load.as_secs_f64() * 1e3
    );
    assert!(hits >= 5 * probes.len() / 4);
    // The brief's bound is one second for a release build; debug builds get headroom.
    let bound = if cfg!(debug_assertions) { 5.0 } else { 1.0 };
    assert!(load.as_secs_f64() < bound, "load took {load:?}");
}
