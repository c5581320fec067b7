//! Fuzzes the pcap/pcapng reader: the input is written to a scratch file (the reader works on
//! files) and read to its end or its first error; every frame is decoded. Errors must name
//! the file; frames must stay within the reader's record limit.
#![no_main]

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use phantomnet::capture::pcap::{PcapReader, MAX_RECORD};
use phantomnet::capture::{FrameSource, Next};
use phantomnet::decode::decode;

fn scratch() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("phantomnet-fuzz-pcap-{}.bin", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    {
        let mut f = std::fs::File::create(path).expect("scratch file");
        f.write_all(data).expect("scratch write");
    }
    let mut r = match PcapReader::open(path) {
        Ok(r) => r,
        Err(e) => {
            assert!(e.to_string().contains("phantomnet-fuzz-pcap"), "{e}");
            return;
        }
    };
    let mut frames = 0u64;
    loop {
        match r.next_frame() {
            Ok(Next::Frame(f)) => {
                assert!(f.data.len() <= MAX_RECORD);
                let _ = decode(f.link, f.data, f.wire_len);
                frames += 1;
            }
            Ok(Next::Idle(_)) => panic!("a file source never idles"),
            Ok(Next::End) => break,
            Err(e) => {
                assert!(e.to_string().contains("phantomnet-fuzz-pcap"), "{e}");
                break;
            }
        }
        // Every frame costs at least a record header, so this bounds runaway loops.
        assert!(frames <= data.len() as u64);
    }
});
