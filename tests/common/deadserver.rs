//! A dead NFS server for tests and benches: an address whose ports 111 (portmap, NFSv3) and
//! 2049 (NFSv4) accept connections and never answer, as a hung server does.
//!
//! rpcbind listens on 0.0.0.0:111, so no second listener on port 111 can bind in this network
//! namespace (not even on 127.0.0.2). The listener therefore lives in a network namespace of its
//! own, reached over a veth pair (`ip netns`, `ip link`; needs root and iproute2). The listening
//! socket is made by a thread that entered that namespace; sockets stay in the namespace they
//! were made in. Benches include this file alone with `#[path]`.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;

pub struct DeadServer {
    ns: String,
    /// The dead server's address (give it as a StorageClass `server`).
    pub addr: String,
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed: {st}");
}

impl DeadServer {
    pub fn start() -> DeadServer {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() * 7 + SEQ.fetch_add(1, Ordering::Relaxed)) % 60_000;
        let ns = format!("fvdead{n}");
        let (host_if, ns_if) = (format!("fvd{n}a"), format!("fvd{n}b"));
        let net = format!("10.{}.{}", 200 + n / 10_000, (n / 40) % 250);
        let quad = (n % 40) * 4; // a /30 per instance
        let (host_ip, dead_ip) = (format!("{net}.{}", quad + 1), format!("{net}.{}", quad + 2));
        // A namespace of that name left by a killed run would make `add` fail.
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &ns,
        ]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{dead_ip}/30"),
            "dev",
            &ns_if,
        ]);
        ip(&["-n", &ns, "link", "set", &ns_if, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        for port in [111, 2049] {
            Self::listen(&ns, &format!("{dead_ip}:{port}"));
        }
        DeadServer { ns, addr: dead_ip }
    }

    fn listen(ns: &str, bind: &str) {
        let (tx, rx) = mpsc::channel();
        let (path, bind) = (format!("/run/netns/{ns}"), bind.to_string());
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("open netns");
            // SAFETY: setns on a namespace descriptor we hold; affects this thread only.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let l = TcpListener::bind(&bind).expect("bind dead listener");
            tx.send(()).unwrap();
            // Accept and hold every connection, answering nothing.
            let mut held: Vec<TcpStream> = Vec::new();
            for s in l.incoming().flatten() {
                held.push(s);
            }
        });
        rx.recv().expect("dead listener started");
    }
}

impl Drop for DeadServer {
    fn drop(&mut self) {
        // Deleting the namespace removes the veth pair with it; the listener thread's socket
        // goes when the process exits.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}
