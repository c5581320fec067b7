//! Whole-pipeline benchmark: a capture through the engine with the default config, rules
//! and model, SQLite writes to a temporary file, reporting frames/s, ns per frame per stage,
//! heap allocations per frame after warm-up, and peak RSS.
//!
//! cargo bench --bench pipeline -- [PCAP] [--flows N] [--hosts N] [--rules N|default|none]
//!     [--no-model] [--warmup FRAMES] [--inline-writes] [--inline-judge]
//! PCAP defaults to $PHANTOMNET_BENCH_PCAP, else /tmp/bench.pcap (build it with
//! ../shared/bench/make-bench-pcap.sh). `--rules N` loads N generated content rules on top of
//! the default ones (the cost-versus-rules curve); `--rules none` loads none.
//! `--inline-writes` writes the database on the loop (`[output] writer_thread = false`),
//! `--inline-judge` keeps hosts and judges them on the loop (`[detection] judge_thread = false`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/util/count_alloc.rs"]
mod count_alloc;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use count_alloc::{counted, counted_quiet};
use phantomnet::capture::{self, Next};
use phantomnet::config::Config;
use phantomnet::runtime::{self, Outputs};
use phantomnet::stats::Stage;

struct Args {
    pcap: PathBuf,
    flows: Option<usize>,
    hosts: Option<usize>,
    rules: RulesChoice,
    no_model: bool,
    warmup: u64,
    inline_writes: bool,
    inline_judge: bool,
}

enum RulesChoice {
    Default,
    None,
    /// The default rules plus this many generated ones.
    Extra(usize),
}

fn parse_args() -> Args {
    let mut a = Args {
        pcap: std::env::var_os("PHANTOMNET_BENCH_PCAP")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/bench.pcap")),
        flows: None,
        hosts: None,
        rules: RulesChoice::Default,
        no_model: false,
        warmup: 100_000,
        inline_writes: false,
        inline_judge: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--flows" => a.flows = Some(val("--flows").parse().expect("--flows N")),
            "--hosts" => a.hosts = Some(val("--hosts").parse().expect("--hosts N")),
            "--warmup" => a.warmup = val("--warmup").parse().expect("--warmup N"),
            "--no-model" => a.no_model = true,
            "--inline-writes" => a.inline_writes = true,
            "--inline-judge" => a.inline_judge = true,
            "--rules" => {
                a.rules = match val("--rules").as_str() {
                    "default" => RulesChoice::Default,
                    "none" | "0" => RulesChoice::None,
                    n => RulesChoice::Extra(n.parse().expect("--rules N|default|none")),
                }
            }
            s if s.starts_with("--") => panic!("unknown option {s}"),
            s => a.pcap = PathBuf::from(s),
        }
    }
    a
}

/// `n` distinct content rules over common ports and protocols, as a large rule set would
/// have: each one a different 8-byte pattern, some with a pcre, a few with thresholds.
fn generated_rules(n: usize) -> String {
    let ports = ["80", "443", "53", "22", "25", "any", "$HTTP_PORTS", "8080"];
    let mut s = String::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let pat: String = (0..8)
            .map(|k| char::from(b'a' + ((x >> (k * 5)) % 26) as u8))
            .collect();
        let proto = if i % 5 == 0 { "udp" } else { "tcp" };
        let port = ports[i % ports.len()];
        let extra = match i % 10 {
            0 => format!(" pcre:\"/{pat}[0-9]+/i\";"),
            1 => " threshold:type limit, track by_src, count 1, seconds 60;".to_string(),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "alert {proto} any any -> any {port} (msg:\"bench generated {i}\"; content:\"{pat}\"; nocase;{extra} sid:{}; rev:1;)",
            9_000_000 + i
        );
    }
    s
}

fn proc_status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of this process (from /proc/self/stat, clock ticks of 10 ms).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

const FLUSH_EVERY: Duration = Duration::from_millis(250);

fn main() {
    let args = parse_args();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut cfg = Config::load(&repo.join("config/phantomnet.toml")).expect("default config");
    if let Some(f) = args.flows {
        cfg.tables.flows = f;
    }
    if let Some(h) = args.hosts {
        cfg.tables.hosts = h;
    }
    if args.no_model {
        cfg.detection.model = PathBuf::new();
    }
    if args.inline_writes {
        cfg.output.writer_thread = false;
    }
    if args.inline_judge {
        cfg.detection.judge_thread = false;
    }
    let tmp = std::env::temp_dir().join(format!("phantomnet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    match args.rules {
        RulesChoice::Default => {}
        RulesChoice::None => cfg.detection.rules.clear(),
        RulesChoice::Extra(n) => {
            let p = tmp.join("generated.rules");
            std::fs::write(&p, generated_rules(n)).expect("write generated rules");
            cfg.detection.rules.push(p);
        }
    }
    cfg.validate().expect("valid config");
    if !args.pcap.exists() {
        eprintln!(
            "{}: no such capture; build it with ../shared/bench/make-bench-pcap.sh {} or give one",
            args.pcap.display(),
            args.pcap.display()
        );
        std::process::exit(2);
    }
    let t_load = Instant::now();
    let det = runtime::load_detectors(&cfg).expect("rules, intel and model");
    let n_rules = det.rules.as_ref().map_or(0, |r| r.len());
    let load_secs = t_load.elapsed().as_secs_f64();
    let mut engine = runtime::build_engine(&cfg, det, false);
    if cfg.detection.judge_thread {
        engine.start_judge_thread().expect("judge thread");
    }
    let db = tmp.join("bench.db");
    let mut out = Outputs::open(&cfg, Some(Path::new(&db)), None).expect("temp database");
    let mut src = capture::open_file(&args.pcap).expect("open capture");

    let rss_start = proc_status_kb("VmRSS:");
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    let mut last_flush = Instant::now();
    let mut n: u64 = 0;
    let mut frame_allocs: u64 = 0;
    let mut measured: u64 = 0;
    let mut flush_allocs: u64 = 0;
    let mut flushes: u64 = 0;
    let mut read_ns: u64 = 0;
    let mut read_timed: u64 = 0;
    loop {
        let timed = n % 64 == 0;
        let tr = timed.then(Instant::now);
        let next = src.next_frame().expect("capture read");
        if let Some(t) = tr {
            read_ns += t.elapsed().as_nanos() as u64;
            read_timed += 1;
        }
        match next {
            Next::Frame(f) => {
                if n >= args.warmup {
                    let ((), a) =
                        counted(|| engine.process_frame(f.ts, f.link, f.data, f.wire_len));
                    frame_allocs += a;
                    measured += 1;
                } else {
                    engine.process_frame(f.ts, f.link, f.data, f.wire_len);
                }
                n += 1;
            }
            Next::Idle(now) => engine.tick(now),
            Next::End => break,
        }
        // The run loop's flush policy (runtime::Pipeline::run_source).
        if engine.outbox.pressing()
            || engine.judged_pressing()
            || (n % 1024 == 0 && last_flush.elapsed() >= FLUSH_EVERY)
        {
            let ((), a) = counted_quiet(|| {
                engine.sync_judged(false);
                out.flush(&mut engine)
            });
            if n >= args.warmup {
                flush_allocs += a;
            }
            flushes += 1;
            last_flush = Instant::now();
        }
    }
    engine.finish_second();
    engine.sync_judged(true);
    // As runtime::Pipeline::finish: drain in steps the outbox holds, flushing between.
    while !engine.drain_flows() {
        out.flush(&mut engine);
    }
    out.flush(&mut engine);
    out.sync();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let peak_kb = proc_status_kb("VmHWM:");

    let s = &engine.stats;
    let frames = s.frames.max(1) as f64;
    println!("capture          {}", args.pcap.display());
    println!(
        "config           flows {}, hosts {}, rules {}, model {}",
        cfg.tables.flows,
        cfg.tables.hosts,
        n_rules,
        if engine.model().is_some() {
            "default"
        } else {
            "none"
        }
    );
    println!("load             {:.3} s (rules, intel, model)", load_secs);
    println!("frames           {}", s.frames);
    println!("wall             {:.3} s", wall);
    println!("cpu (user+sys)   {:.2} s", cpu);
    println!(
        "frames/s         {:.0} (wall), {:.0} (cpu)",
        frames / wall,
        frames / cpu.max(0.01)
    );
    println!("ns/frame         {:.0} (wall)", wall * 1e9 / frames);
    println!(
        "alerts           {}; verdicts: {} warning, {} high, {} critical; {} windows",
        s.alerts, s.verdicts[1], s.verdicts[2], s.verdicts[3], s.windows
    );
    println!(
        "tables           {} flows now, {} hosts now, {} hosts evicted; {} addresses held \
         (seen once), {} dropped before a second sighting",
        engine.flows.table.len(),
        engine.host_counts().active,
        engine.host_counts().evicted,
        engine.host_counts().held,
        engine.host_counts().held_dropped
    );
    println!(
        "flows            {} created, {} expired, {} evicted; {} outbox drops",
        engine.flows.created, engine.flows.expired, engine.flows.evicted, s.outbox_drops
    );
    println!("stage            ns/frame (decode/state/detect: mean of 1 in 64 frames; others: total / frames)");
    let lat = |st: Stage| &s.latency[st as usize];
    println!(
        "  read           {:>8.0}",
        read_ns as f64 / read_timed.max(1) as f64
    );
    for st in [Stage::Decode, Stage::State, Stage::Detect] {
        println!("  {:<14} {:>8.0}", st.name(), lat(st).mean_ns());
    }
    for st in [Stage::Score, Stage::Correlate, Stage::Store] {
        println!(
            "  {:<14} {:>8.1}",
            st.name(),
            lat(st).sum_ns as f64 / frames
        );
    }
    match &out.writer {
        Some(w) => {
            let (ck, backstop) = w.checkpoints();
            println!(
                "  (writer thread {:>6.1}: {} batches written while the loop went on; the loop waited {:.1} of store for it;\n   WAL checkpoints: {} on the checkpoint thread, {} by the writer)",
                w.busy.as_nanos() as f64 / frames,
                w.writes,
                w.waited.as_nanos() as f64 / frames,
                ck,
                backstop
            )
        }
        None => println!("  (database written on the loop: part of store)"),
    }
    if engine.judge_threaded() {
        let (spent, helped) = engine.judge_help();
        println!(
            "  (host state, score and correlate on the judge thread; the loop spent {:.1} on its work,\n   applying {} batches itself when the thread was behind)",
            spent.as_nanos() as f64 / frames,
            helped
        );
    } else {
        println!("  (hosts judged on the loop: part of state, score and correlate)");
    }
    println!(
        "allocations      {} in {} frames after a {}-frame warm-up: {:.6} per frame",
        frame_allocs,
        measured,
        args.warmup,
        frame_allocs as f64 / measured.max(1) as f64
    );
    println!(
        "                 {} in {} output flushes (per-tick SQLite work)",
        flush_allocs, flushes
    );
    println!(
        "peak RSS         {:.1} MB (RSS at start of replay {:.1} MB)",
        peak_kb as f64 / 1024.0,
        rss_start as f64 / 1024.0
    );
    drop(out);
    let _ = std::fs::remove_dir_all(&tmp);
}
