//! The HTTP side: tiny_http accepts on its own threads; the loop polls `try_recv()` on ticks
//! and answers from state it owns (engine counters, the SQLite store). Read-only.

use std::io::Cursor;
use std::time::Instant;

use log::{info, warn};
use serde_json::json;
use tiny_http::{Header, Method, Request, Response};

use crate::decode::DecodeError;
use crate::engine::Engine;
use crate::events::Level;
use crate::runtime::{Outputs, RunError, RunInfo};

/// Most requests answered per poll, so a flood of requests cannot stall the loop.
const MAX_PER_POLL: usize = 16;
/// Largest `limit` an API call may ask for.
pub const MAX_LIMIT: u32 = 1000;

pub struct Server {
    http: tiny_http::Server,
    token: String,
    pub addr: String,
    pub requests: u64,
    pub rejected: u64,
}

/// A response body and its type.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, v: &serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
        }
    }

    fn error(status: u16, msg: &str) -> Reply {
        Reply::json(status, &json!({ "error": msg }))
    }
}

impl Server {
    pub fn bind(addr: &str, token: &str) -> Result<Server, RunError> {
        let http = tiny_http::Server::http(addr)
            .map_err(|e| RunError::Other(format!("cannot serve HTTP on {addr}: {e}")))?;
        let bound = http
            .server_addr()
            .to_ip()
            .map(|a| a.to_string())
            .unwrap_or_else(|| addr.to_string());
        let loopback = http
            .server_addr()
            .to_ip()
            .is_some_and(|a| a.ip().is_loopback());
        if !loopback && token.is_empty() {
            warn!("HTTP bound to {bound} beyond loopback without a token: anyone on the network can read the results (set http.token)");
        }
        info!("status page on http://{bound}/");
        Ok(Server {
            http,
            token: token.to_string(),
            addr: bound,
            requests: 0,
            rejected: 0,
        })
    }

    /// Answers the requests waiting now (at most `MAX_PER_POLL`).
    pub fn poll(&mut self, engine: &Engine, outputs: &Outputs, info: &RunInfo) {
        for _ in 0..MAX_PER_POLL {
            match self.http.try_recv() {
                Ok(Some(req)) => self.answer(req, engine, outputs, info),
                Ok(None) => break,
                Err(e) => {
                    warn!("HTTP: {e}");
                    break;
                }
            }
        }
    }

    fn authorized(&self, req: &Request) -> bool {
        if self.token.is_empty() {
            return true;
        }
        let want = format!("Bearer {}", self.token);
        req.headers()
            .iter()
            .find(|h| h.field.equiv("Authorization"))
            .is_some_and(|h| constant_time_eq(h.value.as_str().as_bytes(), want.as_bytes()))
    }

    fn answer(&mut self, req: Request, engine: &Engine, outputs: &Outputs, info: &RunInfo) {
        self.requests += 1;
        let url = req.url().to_string();
        let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
        let reply = if *req.method() != Method::Get && *req.method() != Method::Head {
            Reply::error(405, "only GET is supported")
        } else if path != "/healthz" && !self.authorized(&req) {
            self.rejected += 1;
            Reply::error(401, "missing or wrong bearer token")
        } else {
            route(path, query, engine, outputs, info)
        };
        let mut resp = Response::new(
            reply.status.into(),
            vec![],
            Cursor::new(reply.body.clone()),
            Some(reply.body.len()),
            None,
        );
        if let Ok(h) = Header::from_bytes("Content-Type", reply.content_type) {
            resp.add_header(h);
        }
        if let Ok(h) = Header::from_bytes("Cache-Control", "no-store") {
            resp.add_header(h);
        }
        if let Err(e) = req.respond(resp) {
            log::debug!("HTTP: client went away: {e}");
        }
    }
}

/// Compares secrets without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// Parsed and validated query parameters.
#[derive(Debug, PartialEq)]
pub struct Query {
    pub min: Level,
    pub since: f64,
    pub limit: u32,
    pub sid: Option<u32>,
}

/// Parses `min`, `since`, `limit` and `sid`; an unknown or bad parameter is an error naming it.
pub fn parse_query(q: &str, allowed: &[&str]) -> Result<Query, String> {
    let mut out = Query {
        min: Level::Warning,
        since: 0.0,
        limit: 100,
        sid: None,
    };
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&k) {
            return Err(format!(
                "unknown parameter `{k}` (expected one of: {})",
                allowed.join(", ")
            ));
        }
        match k {
            "min" => out.min = v.parse().map_err(|e| format!("parameter `min`: {e}"))?,
            "since" => {
                out.since = v
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| {
                        format!("parameter `since`: `{v}` is not a Unix time in seconds")
                    })?
            }
            "limit" => {
                let n: u32 = v
                    .parse()
                    .map_err(|_| format!("parameter `limit`: `{v}` is not a whole number"))?;
                if n == 0 {
                    return Err("parameter `limit`: must be at least 1".into());
                }
                out.limit = n.min(MAX_LIMIT);
            }
            "sid" => {
                out.sid = Some(
                    v.parse()
                        .map_err(|_| format!("parameter `sid`: `{v}` is not a signature id"))?,
                )
            }
            _ => {}
        }
    }
    Ok(out)
}

fn route(path: &str, query: &str, engine: &Engine, outputs: &Outputs, info: &RunInfo) -> Reply {
    match path {
        "/healthz" => Reply {
            status: 200,
            content_type: "text/plain",
            body: b"ok\n".to_vec(),
        },
        "/api/status" => Reply::json(200, &status_json(engine, outputs, info)),
        "/api/verdicts" => match parse_query(query, &["min", "since", "limit"]) {
            Err(e) => Reply::error(400, &e),
            Ok(q) => match &outputs.store {
                None => Reply::error(503, "no database configured"),
                Some(s) => match s.recent_verdicts(q.min, q.since, q.limit) {
                    Ok(v) => Reply::json(200, &json!(v)),
                    Err(e) => Reply::error(500, &e.to_string()),
                },
            },
        },
        "/api/alerts" => match parse_query(query, &["since", "limit", "sid"]) {
            Err(e) => Reply::error(400, &e),
            Ok(q) => match &outputs.store {
                None => Reply::error(503, "no database configured"),
                Some(s) => match s.recent_alerts(q.since, q.sid, q.limit) {
                    Ok(v) => Reply::json(200, &json!(v)),
                    Err(e) => Reply::error(500, &e.to_string()),
                },
            },
        },
        "/api/hosts" => match parse_query(query, &["since", "limit"]) {
            Err(e) => Reply::error(400, &e),
            Ok(q) => match &outputs.store {
                None => Reply::error(503, "no database configured"),
                Some(s) => match s.hosts(q.since, q.limit) {
                    Ok(v) => Reply::json(200, &json!(v)),
                    Err(e) => Reply::error(500, &e.to_string()),
                },
            },
        },
        "/" => Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: status_page(engine, info).into_bytes(),
        },
        _ => Reply::error(404, &format!("no such endpoint: {path}")),
    }
}

/// `/api/status`: counters the loop owns.
pub fn status_json(engine: &Engine, outputs: &Outputs, info: &RunInfo) -> serde_json::Value {
    let s = &engine.stats;
    let uptime = info.started.elapsed().as_secs_f64();
    let mut errors = serde_json::Map::new();
    for e in DecodeError::ALL {
        errors.insert(e.name().into(), json!(s.decode_errors[e.index()]));
    }
    let model = engine.model.as_ref().map(crate::runtime::model_json);
    json!({
        "appliance": info.appliance,
        "version": env!("CARGO_PKG_VERSION"),
        "mode": info.mode,
        "source": info.source,
        "capture_done": info.capture_done,
        "uptime_s": (uptime * 10.0).round() / 10.0,
        "frames": s.frames,
        "bytes": s.bytes,
        "frames_per_s": if uptime > 0.0 { (s.frames as f64 / uptime).round() } else { 0.0 },
        "kernel_drops": info.kernel_drops,
        "decode_errors": errors,
        "decode_errors_total": s.decode_errors_total(),
        "packet_time": { "first": s.first_ts as f64 / 1e6, "last": s.last_ts as f64 / 1e6 },
        "flows": {
            "active": engine.flows.len(),
            "capacity": engine.flows.table.capacity(),
            "created": engine.flows.created,
            "evicted": engine.flows.evicted,
            "expired": engine.flows.expired,
        },
        "hosts": {
            "active": engine.hosts.len(),
            "capacity": engine.hosts.table.capacity(),
            "evicted": engine.hosts.evicted,
            "expired": engine.hosts.expired,
        },
        "alerts": s.alerts,
        "verdicts": {
            "SAFE": s.verdicts[0], "WARNING": s.verdicts[1], "HIGH": s.verdicts[2], "CRITICAL": s.verdicts[3],
        },
        "host_windows": s.windows,
        "rules_loaded": info.rules_loaded,
        "intel_entries": info.intel_entries,
        "model": model,
        "store": {
            "backlog_rows": outputs.backlog(),
            "dropped_rows": outputs.dropped(),
            "write_failures": outputs.store_failures,
            "last_error": outputs.last_store_error,
        },
        "outbox_drops": s.outbox_drops,
        "generated_at": crate::runtime::unix_now(),
    })
}

fn status_page(engine: &Engine, info: &RunInfo) -> String {
    let s = &engine.stats;
    let _ = Instant::now();
    format!(
        "<!doctype html><html><head><meta charset=utf-8><meta name=viewport content='width=device-width'>\
         <title>PhantomNet</title></head><body><h1>PhantomNet</h1>\
         <p>Watching <b>{}</b> ({}). Frames: {}. Alerts: {}.</p>\
         <p>Verdicts: WARNING {} · HIGH {} · CRITICAL {}</p>\
         <p>JSON: <a href=/api/status>/api/status</a></p></body></html>",
        html_escape(&info.source),
        info.mode,
        s.frames,
        s.alerts,
        s.verdicts[1],
        s.verdicts[2],
        s.verdicts[3]
    )
}

pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_validated_and_named() {
        let q = parse_query("min=HIGH&since=12.5&limit=5000", &["min", "since", "limit"]).unwrap();
        assert_eq!(
            q,
            Query {
                min: Level::High,
                since: 12.5,
                limit: MAX_LIMIT,
                sid: None
            }
        );
        let e = parse_query("min=LOUD", &["min"]).unwrap_err();
        assert!(e.contains("`min`"), "{e}");
        let e = parse_query("limit=-3", &["limit"]).unwrap_err();
        assert!(e.contains("`limit`"), "{e}");
        let e = parse_query("since=nan", &["since"]).unwrap_err();
        assert!(e.contains("`since`"), "{e}");
        let e = parse_query("colour=red", &["min", "limit"]).unwrap_err();
        assert!(e.contains("`colour`"), "{e}");
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
