//! A real HTTP server on 127.0.0.1 for the symbol-server tests: serves
//! fixed answers per path and records every request it got; and what it
//! serves, the committed builds' PDBs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What the server answers for one path (not every test file uses every
/// answer).
#[allow(dead_code)]
#[derive(Clone)]
pub enum Answer {
    /// 200 with this body.
    File(Vec<u8>),
    /// A status with an empty body.
    Status(u16),
    /// 302 to another path on this server.
    Redirect(String),
}

pub struct Server {
    pub url: String,
    server: Arc<tiny_http::Server>,
    pub requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serve `answers`; any other path gets 404.
    pub fn start(answers: HashMap<String, Answer>) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1"));
        let port = server.server_addr().to_ip().expect("an IP listener").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (server.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            while let Ok(req) = s.recv() {
                let path = req.url().to_string();
                r.lock().unwrap().push(path.clone());
                let _ = match answers.get(&path) {
                    Some(Answer::File(b)) => req.respond(tiny_http::Response::from_data(b.clone())),
                    Some(Answer::Status(c)) => req.respond(tiny_http::Response::empty(*c)),
                    Some(Answer::Redirect(to)) => {
                        req.respond(tiny_http::Response::empty(302).with_header(
                            tiny_http::Header::from_bytes(&b"Location"[..], to.as_bytes()).unwrap(),
                        ))
                    }
                    None => req.respond(tiny_http::Response::empty(404)),
                };
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            server,
            requests,
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Fetch options for these servers: no proxy from the environment, so a
/// machine's HTTP_PROXY cannot send a request for 127.0.0.1 elsewhere.
#[allow(dead_code)]
pub fn fetch_options() -> pooldump_core::symbols::FetchOptions<'static> {
    pooldump_core::symbols::FetchOptions {
        proxy_from_env: false,
        ..Default::default()
    }
}

/// What the servers serve: the committed builds' PDBs (not every test
/// file uses these).
#[allow(dead_code)]
pub mod committed {
    /// A committed build's directory under `testdata/nt`.
    fn nt(build: &str) -> std::path::PathBuf {
        crate::support::repo_root().join("testdata/nt").join(build)
    }

    /// A committed build's `layout.json`.
    pub fn manifest(build: &str) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(nt(build).join("layout.json")).unwrap())
            .unwrap()
    }

    /// A committed build's `ntkrnlmp.pdb`.
    pub fn pdb_bytes(build: &str) -> Vec<u8> {
        std::fs::read(nt(build).join("ntkrnlmp.pdb")).unwrap()
    }

    /// The request for a committed build's PDB, from its manifest.
    pub fn request(build: &str) -> pooldump_core::symbols::PdbRequest {
        let m = manifest(build);
        let (guid, age) = m["isf"].as_str().unwrap().split_once('-').unwrap();
        pooldump_core::symbols::PdbRequest {
            name: pooldump_core::symbols::PdbName::new("ntkrnlmp.pdb").unwrap(),
            guid: pooldump_core::symbols::isf::parse_guid(guid).unwrap(),
            age: age.parse().unwrap(),
        }
    }
}
