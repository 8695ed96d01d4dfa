//! `_NT_SYMBOL_PATH`, as WinDbg accepts it.
//!
//! Elements are separated by `;`:
//! * a plain directory: searched for `dir/<pdb>`, `dir/symbols/pdb/<pdb>`,
//!   `dir/pdb/<pdb>` and the store layout `dir/<pdb>/<KEY>/<pdb>`;
//! * `srv*URL`: download from URL into the default downstream store;
//! * `srv*CACHE*URL`: download into CACHE (more `*CACHE` entries chain
//!   further downstream stores; each is searched first);
//! * `srv*` alone: the default store and Microsoft's server;
//! * `symsrv*symsrv.dll*CACHE*URL`: the long form of `srv*` (the DLL name
//!   is ignored);
//! * `cache*DIR` (or `cache*`): files found by later elements are copied
//!   into DIR, and DIR is searched first for them.
//!
//! An upstream that is not `http://` or `https://` is a file share or
//! directory store, read in place.

use std::path::PathBuf;

/// Microsoft's public symbol server.
pub const MICROSOFT_SYMBOL_SERVER: &str = "https://msdl.microsoft.com/download/symbols";

/// One `;`-separated element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymbolPathElement {
    /// A plain directory.
    Directory(PathBuf),
    /// `srv*...`: downstream stores (searched first, filled on download)
    /// and the upstream server or share.
    Server {
        /// The stores searched first and filled on download (the first).
        downstream: Vec<PathBuf>,
        /// The server or share asked last.
        upstream: Upstream,
    },
    /// `cache*DIR`: a cache for the elements after it.
    Cache(PathBuf),
}

/// Where a `srv*` element gets files it does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// An HTTP(S) symbol server (no trailing slash).
    Http(String),
    /// A directory store, read in place.
    Store(PathBuf),
}

/// A parsed symbol path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolPath {
    /// The elements, searched in order.
    pub elements: Vec<SymbolPathElement>,
}

impl SymbolPath {
    /// Parse `_NT_SYMBOL_PATH` syntax. `default_store` fills `srv*URL`,
    /// `srv*` and `cache*` where WinDbg would use its default downstream
    /// store. Never fails: an element that cannot be understood is kept
    /// as a directory, which WinDbg would also do.
    pub fn parse(text: &str, default_store: &std::path::Path) -> Self {
        let mut elements = Vec::new();
        for raw in text.split(';') {
            let e = raw.trim();
            if e.is_empty() {
                continue;
            }
            let lower = e.to_ascii_lowercase();
            if lower.starts_with("srv*") || lower == "srv" {
                let rest: Vec<&str> = e.split_once('*').map_or("", |x| x.1).split('*').collect();
                elements.push(server(&rest, default_store));
            } else if lower.starts_with("symsrv*") {
                // symsrv*symsrv.dll*CACHE*URL: drop the DLL name.
                let parts: Vec<&str> = e.split('*').skip(2).collect();
                elements.push(server(&parts, default_store));
            } else if lower.starts_with("cache*") {
                let dir = e["cache*".len()..].trim();
                elements.push(SymbolPathElement::Cache(if dir.is_empty() {
                    default_store.to_path_buf()
                } else {
                    PathBuf::from(dir)
                }));
            } else {
                elements.push(SymbolPathElement::Directory(PathBuf::from(e)));
            }
        }
        Self { elements }
    }

    /// `srv*<default_store>*https://msdl.microsoft.com/download/symbols`.
    pub fn default_with_store(default_store: &std::path::Path) -> Self {
        Self {
            elements: vec![SymbolPathElement::Server {
                downstream: vec![default_store.to_path_buf()],
                upstream: Upstream::Http(MICROSOFT_SYMBOL_SERVER.into()),
            }],
        }
    }

    /// The HTTP servers the path would contact, in order.
    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.elements.iter().filter_map(|e| match e {
            SymbolPathElement::Server {
                upstream: Upstream::Http(u),
                ..
            } => Some(u.as_str()),
            _ => None,
        })
    }
}

fn server(parts: &[&str], default_store: &std::path::Path) -> SymbolPathElement {
    let parts: Vec<&str> = parts.iter().map(|p| p.trim()).collect();
    let nonempty: Vec<&str> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    let (downstream, upstream): (Vec<PathBuf>, Upstream) = match nonempty.split_last() {
        None => (
            vec![default_store.to_path_buf()],
            Upstream::Http(MICROSOFT_SYMBOL_SERVER.into()),
        ),
        Some((last, caches)) => {
            let up = upstream(last);
            // `srv*URL` and `srv**URL` use the default downstream store;
            // `srv*DIR` is a store read in place with no cache.
            let mut down: Vec<PathBuf> = caches.iter().map(PathBuf::from).collect();
            if down.is_empty() && matches!(up, Upstream::Http(_)) {
                down.push(default_store.to_path_buf());
            }
            (down, up)
        }
    };
    SymbolPathElement::Server {
        downstream,
        upstream,
    }
}

fn upstream(s: &str) -> Upstream {
    let lower = s.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        Upstream::Http(s.trim_end_matches('/').to_string())
    } else {
        Upstream::Store(PathBuf::from(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn p(s: &str) -> Vec<SymbolPathElement> {
        SymbolPath::parse(s, Path::new("/default")).elements
    }
    fn http(u: &str) -> Upstream {
        Upstream::Http(u.into())
    }
    fn srv(down: &[&str], up: Upstream) -> SymbolPathElement {
        SymbolPathElement::Server {
            downstream: down.iter().map(PathBuf::from).collect(),
            upstream: up,
        }
    }

    #[test]
    fn windbg_forms() {
        assert_eq!(
            p(r"srv*C:\symbols*https://msdl.microsoft.com/download/symbols/"),
            vec![srv(&[r"C:\symbols"], http(MICROSOFT_SYMBOL_SERVER))]
        );
        assert_eq!(
            p("SRV*https://sym.example/x"),
            vec![srv(&["/default"], http("https://sym.example/x"))]
        );
        assert_eq!(
            p("srv*"),
            vec![srv(&["/default"], http(MICROSOFT_SYMBOL_SERVER))]
        );
        assert_eq!(
            p("srv*/a*/b*http://s"),
            vec![srv(&["/a", "/b"], http("http://s"))]
        );
        assert_eq!(
            p(r"symsrv*symsrv.dll*C:\sym*http://s"),
            vec![srv(&[r"C:\sym"], http("http://s"))]
        );
        assert_eq!(
            p(r"srv*\\share\symbols"),
            vec![srv(&[], Upstream::Store(PathBuf::from(r"\\share\symbols")))]
        );
        assert_eq!(
            p(" /plain ; cache*/c ; cache* ;;srv*/s*http://h "),
            vec![
                SymbolPathElement::Directory("/plain".into()),
                SymbolPathElement::Cache("/c".into()),
                SymbolPathElement::Cache("/default".into()),
                srv(&["/s"], http("http://h")),
            ]
        );
        assert!(p("").is_empty());
        assert!(p(" ; ;").is_empty());
    }

    #[test]
    fn lists_servers_in_order() {
        let sp = SymbolPath::parse("srv*/a*http://one;/d;srv*http://two", Path::new("/x"));
        assert_eq!(
            sp.servers().collect::<Vec<_>>(),
            ["http://one", "http://two"]
        );
    }
}
