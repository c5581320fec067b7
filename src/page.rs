//! The status page at `/`: one self-contained HTML document (inline CSS, inline SVG charts, a
//! few lines of inline JS that refresh it) that reads well on a phone — what is watched,
//! what was found and why, and how fast the pipeline runs.

use std::fmt::Write as _;

use crate::serve::Status;
use crate::store::{HostSummary, LevelCounts, VerdictRecord};

/// What the page shows beyond [`Status`]: rows from the database and the frames/s ring.
#[derive(Clone, Debug, Default)]
pub struct PageData {
    /// (Unix seconds, frames/s), oldest first.
    pub rate: Vec<(f64, f64)>,
    /// Latest WARNING-and-above verdicts, newest first.
    pub verdicts: Vec<VerdictRecord>,
    /// Riskiest hosts of the last day, worst first.
    pub hosts: Vec<HostSummary>,
    /// Host-windows per level per bucket (bucket start, counts), oldest first.
    pub series: Vec<(f64, LevelCounts)>,
    pub bucket_s: f64,
}

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// A round bucket width near `want` seconds: 1, 2, 5, 10, 15, 30 s, 1, 2, 5, 10, 15, 30 min,
/// 1, 2, 3, 6, 12 h.
pub fn nice_bucket(want: f64) -> f64 {
    const STEPS: [f64; 17] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        10800.0, 21600.0, 43200.0,
    ];
    STEPS
        .iter()
        .copied()
        .find(|&s| s >= want)
        .unwrap_or(43200.0)
}

/// Renders the whole page.
pub fn render(st: &Status, d: &PageData) -> String {
    let mut o = String::with_capacity(48 * 1024);
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <title>PhantomNet · {}</title><style>{STYLE}</style></head><body>",
        esc(&st.appliance)
    );
    o.push_str("<main id=main>");
    header(&mut o, st);
    counts(&mut o, st);
    charts(&mut o, st, d);
    latest(&mut o, d);
    hosts(&mut o, d);
    detection(&mut o, st);
    latency(&mut o, st);
    footer(&mut o, st);
    o.push_str("</main>");
    let _ = writeln!(o, "<script>{SCRIPT}</script></body></html>");
    o
}

fn header(o: &mut String, st: &Status) {
    let state = match (st.mode, st.capture_done) {
        ("replay", true) => "capture replayed",
        ("replay", false) => "replaying",
        _ => "watching live",
    };
    let _ = write!(
        o,
        "<header><h1>PhantomNet <small>{}</small></h1>\
         <p class=watch>{} <b id=source>{}</b></p>\
         <p id=stale class=stale hidden>Connection lost — showing the last data received.</p>\
         <div class=tiles>",
        esc(&st.appliance),
        state,
        esc(&st.source)
    );
    tile(o, "uptime", "up", &duration(st.uptime_s));
    tile(o, "frames", "frames", &count(st.frames));
    tile(
        o,
        "rate",
        "frames/s",
        &count(st.frames_per_s.round() as u64),
    );
    tile(o, "drops", "kernel drops", &count(st.kernel_drops));
    tile(o, "alerts", "alerts", &count(st.alerts));
    tile(o, "hosts-active", "hosts tracked", &count(st.hosts.active));
    o.push_str("</div></header>");
}

fn tile(o: &mut String, id: &str, label: &str, value: &str) {
    let _ = write!(
        o,
        "<div class=tile><span class=v id={id}>{}</span><span class=l>{label}</span></div>",
        esc(value)
    );
}

fn counts(o: &mut String, st: &Status) {
    o.push_str("<section id=counts><h2>Verdicts</h2><table class=counts><thead><tr><th></th>");
    for l in ["SAFE", "WARNING", "HIGH", "CRITICAL"] {
        let _ = write!(o, "<th><span class=\"lv {l}\">{l}</span></th>");
    }
    o.push_str("</tr></thead><tbody>");
    let mut row = |name: &str, id: &str, c: Option<&LevelCounts>| {
        let _ = write!(o, "<tr id={id}><th>{name}</th>");
        match c {
            Some(c) => {
                for n in [c.safe, c.warning, c.high, c.critical] {
                    let _ = write!(o, "<td>{}</td>", count(n));
                }
            }
            None => o.push_str("<td colspan=4>no database</td>"),
        }
        o.push_str("</tr>");
    };
    row("last hour", "counts-hour", st.verdicts_last_hour.as_ref());
    row("last day", "counts-day", st.verdicts_last_day.as_ref());
    row("since start", "counts-total", Some(&st.verdicts));
    o.push_str(
        "</tbody></table><p class=note>Host-windows judged (one host, one second, looking at \
         its last 10 s); hour and day in packet time.</p></section>",
    );
}

fn charts(o: &mut String, st: &Status, d: &PageData) {
    o.push_str("<section id=charts><h2>Over time</h2>");
    verdict_chart(o, d);
    rate_chart(o, st, d);
    o.push_str("</section>");
}

const W: f64 = 600.0;
const H: f64 = 120.0;

fn verdict_chart(o: &mut String, d: &PageData) {
    let flagged = |c: &LevelCounts| c.warning + c.high + c.critical;
    let max = d.series.iter().map(|(_, c)| flagged(c)).max().unwrap_or(0);
    let total: u64 = d.series.iter().map(|(_, c)| c.safe + flagged(c)).sum();
    let _ = write!(
        o,
        "<figure><figcaption>Flagged host-windows per {} (of {} judged)</figcaption>",
        duration(d.bucket_s),
        count(total)
    );
    let _ = write!(
        o,
        "<svg id=chart-verdicts viewBox=\"0 0 {W} {H}\" role=img aria-label=\"flagged verdicts over time\">"
    );
    let first = d.series.first().map_or(0.0, |(t, _)| *t);
    let last = d.series.last().map_or(0.0, |(t, _)| *t);
    let n = (((last - first) / d.bucket_s.max(1.0)).round() as usize + 1).max(1);
    let bw = W / n as f64;
    if max == 0 {
        let _ = write!(
            o,
            "<text x=\"{}\" y=\"{}\" text-anchor=middle class=empty>nothing flagged</text>",
            W / 2.0,
            H / 2.0
        );
    }
    for (t, c) in &d.series {
        let x = ((t - first) / d.bucket_s.max(1.0)).round() * bw;
        let mut y = H;
        for (lv, k) in [
            ("WARNING", c.warning),
            ("HIGH", c.high),
            ("CRITICAL", c.critical),
        ] {
            if k == 0 || max == 0 {
                continue;
            }
            let h = (k as f64 / max as f64 * (H - 24.0)).max(1.5);
            y -= h;
            let _ = write!(
                o,
                "<rect class={lv} x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{} {lv}: {k}</title></rect>",
                (bw - 1.0).max(0.5),
                time(*t)
            );
        }
    }
    if max > 0 {
        let _ = write!(o, "<text x=\"2\" y=\"20\" class=axis>{}</text>", count(max));
    }
    o.push_str("</svg>");
    if first > 0.0 {
        let _ = write!(
            o,
            "<div class=range><span>{}</span><span>{}</span></div>",
            time(first),
            time(last + d.bucket_s)
        );
    }
    o.push_str("</figure>");
}

fn rate_chart(o: &mut String, st: &Status, d: &PageData) {
    let max = d.rate.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let _ = write!(
        o,
        "<figure><figcaption>Frames/s (now {}, average {})</figcaption>\
         <svg id=chart-rate viewBox=\"0 0 {W} {H}\" role=img aria-label=\"frames per second\">",
        count(st.frames_per_s.round() as u64),
        count(st.frames_per_s_avg.round() as u64)
    );
    if d.rate.len() < 2 {
        let _ = write!(
            o,
            "<text x=\"{}\" y=\"{}\" text-anchor=middle class=empty>collecting…</text>",
            W / 2.0,
            H / 2.0
        );
    } else {
        let t0 = d.rate[0].0;
        let span = (d.rate[d.rate.len() - 1].0 - t0).max(1e-9);
        let scale = if max > 0.0 { (H - 24.0) / max } else { 0.0 };
        o.push_str("<polyline class=rate points=\"");
        for (t, r) in &d.rate {
            let _ = write!(o, "{:.1},{:.1} ", (t - t0) / span * W, H - r * scale);
        }
        o.push_str("\"/>");
        let _ = write!(
            o,
            "<text x=\"2\" y=\"20\" class=axis>{}/s</text>",
            count(max.round() as u64)
        );
    }
    o.push_str("</svg></figure>");
}

fn latest(o: &mut String, d: &PageData) {
    o.push_str("<section id=verdicts-latest><h2>Latest warnings and worse</h2>");
    if d.verdicts.is_empty() {
        o.push_str("<p class=empty>Nothing above SAFE so far.</p>");
    }
    for v in &d.verdicts {
        let _ = write!(
            o,
            "<article class=verdict><div class=vh><span class=\"lv {lv}\">{lv}</span> \
             <b class=host>{}</b> <span class=risk>risk {}</span> \
             <span class=conf>{} sure</span><time>{}</time></div><ul>",
            esc(&v.host),
            v.risk,
            confidence(v.confidence),
            time(v.ts),
            lv = level_class(&v.verdict)
        );
        let reasons = v.reasons.as_array().map(Vec::as_slice).unwrap_or_default();
        for r in reasons {
            let text = r
                .get("text")
                .and_then(|t| t.as_str())
                .or_else(|| r.get("kind").and_then(|k| k.as_str()))
                .unwrap_or("(no description)");
            let _ = write!(o, "<li class=reason>{}</li>", esc(text));
        }
        o.push_str("</ul></article>");
    }
    o.push_str("</section>");
}

fn hosts(o: &mut String, d: &PageData) {
    o.push_str("<section id=hosts><h2>Riskiest hosts (last day)</h2>");
    if d.hosts.is_empty() {
        o.push_str("<p class=empty>No host flagged.</p></section>");
        return;
    }
    o.push_str(
        "<table class=hosts><thead><tr><th>host</th><th>worst</th><th>max risk</th>\
         <th>W / H / C</th><th>last seen</th></tr></thead><tbody>",
    );
    for h in &d.hosts {
        let _ = write!(
            o,
            "<tr class=host><td>{}</td><td><span class=\"lv {lv}\">{lv}</span></td><td>{}</td>\
             <td>{} / {} / {}</td><td>{}</td></tr>",
            esc(&h.host),
            h.max_risk,
            h.warning,
            h.high,
            h.critical,
            time(h.last_ts),
            lv = level_class(&h.max_verdict)
        );
    }
    o.push_str("</tbody></table></section>");
}

fn detection(o: &mut String, st: &Status) {
    o.push_str("<section id=detection><h2>Detection</h2><dl>");
    let _ = write!(
        o,
        "<dt>Signatures</dt><dd id=rules>{} loaded</dd>\
         <dt>Threat intel</dt><dd id=intel>{} address ranges</dd>",
        count(st.rules_loaded as u64),
        count(st.intel_entries as u64)
    );
    o.push_str("<dt>Model</dt><dd id=model>");
    match &st.model {
        None => o.push_str("none (no anomaly detection)"),
        Some(m) => {
            let g = |k: &str| m.get(k).cloned().unwrap_or_default();
            let on: Vec<String> = g("trained_on")
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let on = if on.len() > 4 {
                format!("{} and {} more", on[..4].join(", "), on.len() - 4)
            } else {
                on.join(", ")
            };
            let _ = write!(
                o,
                "Isolation Forest, {} trees (ψ = {}), schema <code>{}</code>; trained {} on {} \
                 samples from {}",
                g("trees"),
                g("max_samples"),
                esc(g("schema").as_str().unwrap_or("?")),
                g("trained_unix")
                    .as_f64()
                    .map_or_else(|| "?".to_string(), time),
                count(g("samples").as_u64().unwrap_or(0)),
                esc(&on)
            );
        }
    }
    o.push_str("</dd><dt>Learning</dt><dd id=learning>");
    match &st.learning.progress {
        Some(p) if p.state == "learning" => {
            let _ = write!(
                o,
                "learning this network: <progress max=1 value=\"{:.3}\"></progress> {:.0}% \
                 ({} of {}), {} feature samples stored",
                p.progress.clamp(0.0, 1.0),
                p.progress.clamp(0.0, 1.0) * 100.0,
                duration(p.elapsed),
                duration(p.duration as f64),
                st.learning.samples_stored.map_or_else(|| "?".into(), count)
            );
        }
        Some(p) => {
            let _ = write!(
                o,
                "{}: {}{}",
                esc(&p.state),
                esc(&p.message),
                if p.model.is_empty() {
                    String::new()
                } else {
                    format!(" (model {})", esc(&p.model))
                }
            );
        }
        None if st.learning.enabled => {
            let _ = write!(
                o,
                "on — {} feature samples stored",
                st.learning.samples_stored.map_or_else(|| "?".into(), count)
            );
        }
        None => o.push_str("off"),
    }
    let _ = write!(
        o,
        "</dd><dt>Tables</dt><dd>flows {} of {} ({} evicted) · hosts {} of {} ({} evicted)</dd>\
         <dt>Decode errors</dt><dd>{}</dd><dt>Database</dt><dd>{}{}</dd></dl></section>",
        count(st.flows.active),
        count(st.flows.capacity),
        count(st.flows.evicted),
        count(st.hosts.active),
        count(st.hosts.capacity),
        count(st.hosts.evicted),
        count(st.decode_errors_total),
        esc(st.store.path.as_deref().unwrap_or("none")),
        if st.store.write_failures > 0 {
            format!(
                " — <b class=bad>{} failed writes, {} rows waiting</b>",
                st.store.write_failures, st.store.backlog_rows
            )
        } else {
            String::new()
        }
    );
}

fn latency(o: &mut String, st: &Status) {
    o.push_str(
        "<section id=latency><h2>Latency per stage</h2><table class=lat><thead><tr>\
         <th>stage</th><th>samples</th><th>p50</th><th>p90</th><th>p99</th><th>mean</th>\
         </tr></thead><tbody>",
    );
    for l in &st.latency {
        let _ = write!(
            o,
            "<tr data-stage={}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            l.stage,
            l.stage.replace('_', " "),
            count(l.samples),
            micros(l.p50_us, l.samples),
            micros(l.p90_us, l.samples),
            micros(l.p99_us, l.samples),
            micros(l.mean_us, l.samples)
        );
    }
    o.push_str(
        "</tbody></table><p class=note>Percentiles are bucket upper bounds (powers of two). \
         Per-frame stages time one frame in 64; http is the loop's time answering requests \
         per tick.</p></section>",
    );
}

fn footer(o: &mut String, st: &Status) {
    let _ = write!(
        o,
        "<footer>PhantomNet {} · generated {} · <a href=/api/status>status</a> · \
         <a href=/api/verdicts>verdicts</a> · <a href=/api/alerts>alerts</a> · \
         <a href=/api/hosts>hosts</a> · <a href=/metrics>metrics</a> · \
         <a href=/api/db>database</a></footer>",
        st.version,
        time(st.generated_at)
    );
}

fn level_class(s: &str) -> &'static str {
    match s {
        "WARNING" => "WARNING",
        "HIGH" => "HIGH",
        "CRITICAL" => "CRITICAL",
        _ => "SAFE",
    }
}

fn confidence(c: f64) -> String {
    format!("{:.0}%", (c * 100.0).clamp(0.0, 100.0))
}

fn micros(us: f64, samples: u64) -> String {
    if samples == 0 {
        "–".into()
    } else if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

/// HTML-escapes text for element content and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// 1234567 → "1 234 567" (thin spaces group thousands).
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3 * 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

/// 93784 → "1 d 2 h", 61 → "1 min 1 s".
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 && m > 0 {
        format!("{h} h {m} min")
    } else if h > 0 {
        format!("{h} h")
    } else if m > 0 {
        if s > 0 {
            format!("{m} min {s} s")
        } else {
            format!("{m} min")
        }
    } else {
        format!("{s} s")
    }
}

/// Unix seconds → "2026-01-01 00:00:05 UTC".
pub fn time(unix: f64) -> String {
    if !unix.is_finite() {
        return "?".into();
    }
    let secs = unix.floor() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Howard Hinnant's days-from-1970 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_counts_and_durations_read_well() {
        assert_eq!(time(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_767_225_605.9), "2026-01-01 00:00:05 UTC");
        assert_eq!(time(951_782_400.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_234_567), "1\u{2009}234\u{2009}567");
        assert_eq!(duration(61.0), "1 min 1 s");
        assert_eq!(duration(93_784.0), "1 d 2 h");
        assert_eq!(duration(5.0), "5 s");
        assert_eq!(duration(3600.0), "1 h");
        assert_eq!(duration(3720.0), "1 h 2 min");
        assert_eq!(nice_bucket(0.3), 1.0);
        assert_eq!(nice_bucket(59.0), 60.0);
        assert_eq!(nice_bucket(1e9), 43200.0);
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
