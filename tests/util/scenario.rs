//! Deterministic traffic scenarios built from `frames`: a small home LAN doing ordinary
//! things, and the attacks PhantomNet exists to catch. Used by the pipeline tests, the
//! zero-allocation test and the bundled demo capture (examples/make_demo_pcap.rs).
#![allow(dead_code)]

use super::frames::*;

/// Timestamped frames, in time order once `sort` is called.
#[derive(Default)]
pub struct Capture {
    pub frames: Vec<(i64, Vec<u8>)>,
}

/// Small deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub const SEC: i64 = 1_000_000;
/// 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600 * SEC;

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;
pub const RST: u8 = 0x04;
pub const FIN: u8 = 0x01;

pub fn mac(last: u8) -> Mac {
    [0x02, 0x42, 0xac, 0x10, 0x00, last]
}

impl Capture {
    pub fn push(&mut self, ts: i64, f: Vec<u8>) {
        self.frames.push((ts, f));
    }

    pub fn sort(&mut self) {
        self.frames.sort_by_key(|(ts, _)| *ts);
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// A complete TCP conversation: handshake, request, response, FIN close. Returns the
    /// time after the last packet.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_session(
        &mut self,
        t: i64,
        (cm, c, cp): (Mac, [u8; 4], u16),
        (sm, s, sp): (Mac, [u8; 4], u16),
        request: &[u8],
        response: &[u8],
    ) -> i64 {
        let (mut cs, mut ss) = (1000u32, 5000u32);
        let step = 2_000;
        let mut t = t;
        self.push(
            t,
            eth_ipv4_tcp_mss(cm, sm, c, s, cp, sp, SYN, cs, 0, 1460, &[]),
        );
        t += step;
        self.push(
            t,
            eth_ipv4_tcp_mss(sm, cm, s, c, sp, cp, SYN | ACK, ss, cs + 1, 1460, &[]),
        );
        cs += 1;
        ss += 1;
        t += step;
        self.push(t, eth_ipv4_tcp(cm, sm, c, s, cp, sp, ACK, cs, ss, &[]));
        t += step;
        if !request.is_empty() {
            self.push(
                t,
                eth_ipv4_tcp(cm, sm, c, s, cp, sp, PSH | ACK, cs, ss, request),
            );
            cs += request.len() as u32;
            t += step;
        }
        if !response.is_empty() {
            for chunk in response.chunks(1400) {
                self.push(
                    t,
                    eth_ipv4_tcp(sm, cm, s, c, sp, cp, PSH | ACK, ss, cs, chunk),
                );
                ss += chunk.len() as u32;
                t += step;
            }
        }
        self.push(
            t,
            eth_ipv4_tcp(cm, sm, c, s, cp, sp, FIN | ACK, cs, ss, &[]),
        );
        t += step;
        self.push(
            t,
            eth_ipv4_tcp(sm, cm, s, c, sp, cp, FIN | ACK, ss, cs + 1, &[]),
        );
        t += step;
        self.push(
            t,
            eth_ipv4_tcp(cm, sm, c, s, cp, sp, ACK, cs + 1, ss + 1, &[]),
        );
        t + step
    }

    /// A DNS query and its (minimal) answer.
    pub fn dns(
        &mut self,
        t: i64,
        (cm, c): (Mac, [u8; 4]),
        (sm, s): (Mac, [u8; 4]),
        id: u16,
        name: &str,
    ) {
        let q = dns_query(id, name, 1);
        let sport = 30000 + id % 20000;
        self.push(t, eth_ipv4_udp(cm, sm, c, s, sport, 53, &q));
        let mut a = q.clone();
        if a.len() > 3 {
            a[2] |= 0x80; // QR = response
        }
        a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 93, 184, 216, 34]);
        if a.len() > 7 {
            a[7] = 1; // ANCOUNT
        }
        self.push(t + 8_000, eth_ipv4_udp(sm, cm, s, c, 53, sport, &a));
    }
}

pub const GATEWAY: [u8; 4] = [192, 168, 1, 1];
pub const LAPTOP: [u8; 4] = [192, 168, 1, 20];
pub const PHONE: [u8; 4] = [192, 168, 1, 21];
pub const TV: [u8; 4] = [192, 168, 1, 22];
pub const NAS: [u8; 4] = [192, 168, 1, 30];
pub const WEB: [u8; 4] = [93, 184, 216, 34];
pub const CDN: [u8; 4] = [151, 101, 1, 140];

const SITES: [&str; 8] = [
    "www.example.com",
    "news.example.org",
    "cdn.example.net",
    "mail.example.com",
    "weather.example.org",
    "shop.example.com",
    "video.example.net",
    "api.example.com",
];

/// `secs` seconds of an ordinary home LAN from `t0`: DNS lookups and web sessions from a
/// laptop, a phone and a TV, NAS traffic, and ARP.
pub fn benign_lan(c: &mut Capture, rng: &mut Rng, t0: i64, secs: i64) {
    let gw = mac(1);
    let clients = [(mac(20), LAPTOP), (mac(21), PHONE), (mac(22), TV)];
    let mut id = 1u16;
    for s in 0..secs {
        let t = t0 + s * SEC;
        for (i, &(cm, cip)) in clients.iter().enumerate() {
            if rng.below(3) != 0 {
                continue;
            }
            let jitter = rng.below(700_000) as i64 + i as i64 * 1_000;
            let site = SITES[rng.below(SITES.len() as u64) as usize];
            c.dns(t + jitter, (cm, cip), (gw, GATEWAY), id, site);
            id = id.wrapping_add(1);
            let port = 40000 + (rng.below(20000) as u16);
            let server = if rng.below(2) == 0 { WEB } else { CDN };
            let body = vec![b'x'; 300 + rng.below(3000) as usize];
            c.tcp_session(
                t + jitter + 20_000,
                (cm, cip, port),
                (gw, server, 443),
                &http_get(site, "/index.html"),
                &body,
            );
        }
        if s % 5 == 0 {
            let port = 50000 + s as u16;
            c.tcp_session(
                t + 900_000,
                (mac(20), LAPTOP, port),
                (mac(30), NAS, 445),
                b"smb-read",
                &[7u8; 2000],
            );
        }
        if s % 7 == 3 {
            c.push(t + 500_000, arp_request(mac(21), PHONE, GATEWAY));
            c.push(t + 501_000, arp_reply(gw, GATEWAY, mac(21), PHONE));
        }
    }
}

pub const SCANNER: [u8; 4] = [192, 168, 1, 66];

/// A SYN scan of `ports` ports on `target` from SCANNER, closed ports answering RST.
pub fn port_scan(c: &mut Capture, t0: i64, target: ([u8; 4], Mac), ports: u16) {
    let sm = mac(66);
    for p in 0..ports {
        let t = t0 + i64::from(p) * 4_000;
        let dport = 1 + p;
        c.push(
            t,
            eth_ipv4_tcp_mss(
                sm,
                target.1,
                SCANNER,
                target.0,
                61000,
                dport,
                SYN,
                77,
                0,
                1024,
                &[],
            ),
        );
        if dport == 22 || dport == 80 {
            c.push(
                t + 300,
                eth_ipv4_tcp(
                    target.1,
                    sm,
                    target.0,
                    SCANNER,
                    dport,
                    61000,
                    SYN | ACK,
                    9,
                    78,
                    &[],
                ),
            );
            c.push(
                t + 600,
                eth_ipv4_tcp(
                    sm,
                    target.1,
                    SCANNER,
                    target.0,
                    61000,
                    dport,
                    RST,
                    78,
                    0,
                    &[],
                ),
            );
        } else {
            c.push(
                t + 300,
                eth_ipv4_tcp(
                    target.1,
                    sm,
                    target.0,
                    SCANNER,
                    dport,
                    61000,
                    RST | ACK,
                    0,
                    78,
                    &[],
                ),
            );
        }
    }
}

/// `n` SSH password attempts (a connection each) from `attacker` to `server`.
pub fn ssh_bruteforce(
    c: &mut Capture,
    t0: i64,
    attacker: ([u8; 4], Mac),
    server: ([u8; 4], Mac),
    n: u16,
) {
    for i in 0..n {
        let t = t0 + i64::from(i) * 150_000;
        c.tcp_session(
            t,
            (attacker.1, attacker.0, 42000 + i),
            (server.1, server.0, 22),
            b"SSH-2.0-libssh_0.9\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n",
        );
    }
}

/// A DNS tunnel: long high-entropy names under one domain, `per_sec` queries per second.
pub fn dns_tunnel(c: &mut Capture, rng: &mut Rng, t0: i64, secs: i64, per_sec: i64) {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut id = 9000u16;
    for s in 0..secs {
        for q in 0..per_sec {
            let mut label = String::new();
            for _ in 0..2 {
                for _ in 0..60 {
                    label.push(alphabet[rng.below(alphabet.len() as u64) as usize] as char);
                }
                label.push('.');
            }
            label.push_str("t.tunnel-example.net");
            let t = t0 + s * SEC + q * (SEC / per_sec.max(1));
            c.dns(t, (mac(21), PHONE), (mac(1), GATEWAY), id, &label);
            id = id.wrapping_add(1);
        }
    }
}

/// An HTTP request carrying a SQL injection, from an outside address to the NAS web UI.
pub fn sql_injection(c: &mut Capture, t0: i64) {
    let req = b"GET /login.php?user=admin%27%20OR%201%3D1--&pass=x HTTP/1.1\r\nHost: nas\r\nUser-Agent: sqlmap/1.7\r\n\r\n";
    let req2 = b"GET /items.php?id=1 UNION SELECT username,password FROM users-- HTTP/1.1\r\nHost: nas\r\n\r\n";
    c.tcp_session(
        t0,
        (mac(1), [203, 0, 113, 9], 51000),
        (mac(30), NAS, 80),
        req,
        b"HTTP/1.1 200 OK\r\n\r\n",
    );
    c.tcp_session(
        t0 + 300_000,
        (mac(1), [203, 0, 113, 9], 51001),
        (mac(30), NAS, 80),
        req2,
        b"HTTP/1.1 200 OK\r\n\r\n",
    );
}

/// An attacker's MAC claims the gateway's address (ARP poisoning).
pub fn arp_spoof(c: &mut Capture, t0: i64) {
    let attacker = mac(66);
    for i in 0..5 {
        c.push(
            t0 + i * 500_000,
            arp_reply(attacker, GATEWAY, mac(20), LAPTOP),
        );
    }
}

/// A spoofed-source SYN flood of `n` packets at `per_sec` against `victim`:`port`.
pub fn syn_flood(
    c: &mut Capture,
    rng: &mut Rng,
    t0: i64,
    n: u64,
    per_sec: u64,
    victim: [u8; 4],
    port: u16,
) {
    for i in 0..n {
        let src = [
            (rng.below(223) + 1) as u8,
            rng.below(256) as u8,
            rng.below(256) as u8,
            (rng.below(254) + 1) as u8,
        ];
        let t = t0 + (i * 1_000_000 / per_sec.max(1)) as i64;
        let sport = 1024 + rng.below(60000) as u16;
        c.push(
            t,
            eth_ipv4_tcp(
                mac(1),
                mac(30),
                src,
                victim,
                sport,
                port,
                SYN,
                rng.next() as u32,
                0,
                &[],
            ),
        );
    }
}

/// The bundled demo: a minute of home LAN with a port scan, SSH brute force, a DNS tunnel,
/// a SQL injection and ARP spoofing woven in.
pub fn demo() -> Capture {
    let mut c = Capture::default();
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    benign_lan(&mut c, &mut rng, T0, 60);
    port_scan(&mut c, T0 + 12 * SEC, (NAS, mac(30)), 400);
    ssh_bruteforce(
        &mut c,
        T0 + 25 * SEC,
        (SCANNER, mac(66)),
        (NAS, mac(30)),
        40,
    );
    dns_tunnel(&mut c, &mut rng, T0 + 35 * SEC, 10, 5);
    sql_injection(&mut c, T0 + 48 * SEC);
    arp_spoof(&mut c, T0 + 52 * SEC);
    c.sort();
    c
}
