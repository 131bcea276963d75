//! The web capability: `web_fetch` (HTTP GET with an SSRF guard) and `web_search` (behind a
//! [`SearchBackend`]).
//!
//! Built with [`web()`](super::web) and configured with builder methods:
//!
//! ```
//! use std::time::Duration;
//! use loom_agent::capability::{self, web::SearXng};
//!
//! let web = capability::web()
//!     .allow_host("docs.rs")
//!     .allow_host("*.rust-lang.org")
//!     .deny_host("private.rust-lang.org")
//!     .max_bytes(512 * 1024)
//!     .timeout(Duration::from_secs(15))
//!     .search(SearXng::new("http://127.0.0.1:8888").unwrap());
//! # let _ = web;
//! ```
//!
//! # What `web_fetch` may reach
//!
//! Only `http` and `https` URLs. A host on the deny-list is refused; when an allow-list is set,
//! a host not on it is refused (a pattern is an exact host, or `*.suffix` for every subdomain of
//! `suffix`, not `suffix` itself). Then, unless [`Web::allow_private`] is on, no request reaches a
//! loopback, private (10/8, 172.16/12, 192.168/16), link-local (169.254/16, fe80::/10), shared
//! (100.64/10), unique-local (fc00::/7), unspecified, multicast or reserved address, nor a cloud
//! metadata service (169.254.169.254, fd00:ec2::254), in IPv4 or IPv6 form (an IPv6 address
//! carrying an IPv4 one, such as `::ffff:127.0.0.1`, is judged by the IPv4 address). The check
//! runs after DNS resolution, inside the resolver reqwest connects with, so the address checked
//! is the address connected to; IP-literal URLs are checked before sending (reqwest connects to a
//! literal without resolving it), every redirect hop is checked again (at most 5 hops by default),
//! and the peer address of the response is checked once more. Proxies from the environment
//! (`HTTP_PROXY`, …) are not used: through a proxy the guard would check the proxy's address, not
//! the target's.
//!
//! A host on the allow-list does **not** bypass the private-address check: allowing
//! `intranet.example` says which names the model may ask for, and its DNS answer could still
//! point at the metadata service. Fetching from private networks needs
//! [`Web::allow_private`], a decision about the network the agent runs in, not about one name.
//!
//! # What comes back
//!
//! HTML is rendered as readable text by `html2text` (headings with `#`, emphasis with `*`, links
//! as numbered references listed at the end; scripts and styles dropped); `text/*`, JSON, XML
//! and JavaScript come back as they are (read as UTF-8); images, PDFs, archives and other binary
//! types are refused before their body is read. The body is streamed and reading stops at the size
//! cap (2 MiB by default), with a note saying the page was cut; the time cap (30 s by default)
//! covers the whole fetch, and a body still arriving when it expires is returned as far as it
//! arrived, with a note. Error statuses are tool errors carrying the status and the start of the
//! page.
//!
//! # Search
//!
//! `web_search` exists only when a backend is set ([`Web::search`]): [`SearXng`] or [`Brave`], or
//! any [`SearchBackend`]. Its requests go to the backend the developer configured, not to a URL
//! the model chose, so they are not subject to the SSRF guard (a SearXNG instance on 127.0.0.1
//! works without `allow_private`).

mod fetch;
mod guard;
mod html;
mod search;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use search::{BRAVE_API_URL, Brave, SearXng, SearchBackend, SearchError, SearchResult};

use super::Capability;
use crate::tool::Tool;
use guard::{HostPattern, Policy};

/// The default cap on a fetched body.
pub const DEFAULT_MAX_BYTES: usize = 2 * 1024 * 1024;
/// The default time cap on a fetch.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default cap on redirect hops.
pub const DEFAULT_MAX_REDIRECTS: usize = 5;

/// Web access for an agent: `web_fetch`, and `web_search` when a search backend is set. Built by
/// [`capability::web()`](super::web); see the [module documentation](self) for what may be
/// fetched.
#[derive(Clone)]
pub struct Web {
    allow: Vec<HostPattern>,
    deny: Vec<HostPattern>,
    allow_private: bool,
    max_bytes: usize,
    timeout: Duration,
    max_redirects: usize,
    search: Option<Arc<dyn SearchBackend>>,
    pinned: Vec<(String, SocketAddr)>,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .field("allow_private", &self.allow_private)
            .field("max_bytes", &self.max_bytes)
            .field("timeout", &self.timeout)
            .field("max_redirects", &self.max_redirects)
            .field("search", &self.search.as_ref().map(|s| s.name().to_string()))
            .finish_non_exhaustive()
    }
}

/// Web access with the defaults: any public host, no private addresses, 2 MiB and 30 s per fetch,
/// 5 redirects, no search.
pub fn web() -> Web {
    Web {
        allow: Vec::new(),
        deny: Vec::new(),
        allow_private: false,
        max_bytes: DEFAULT_MAX_BYTES,
        timeout: DEFAULT_TIMEOUT,
        max_redirects: DEFAULT_MAX_REDIRECTS,
        search: None,
        pinned: Vec::new(),
    }
}

impl Web {
    /// Adds a host to the allow-list (`example.com`, or `*.example.com` for its subdomains). With
    /// an allow-list, only its hosts are fetched. It does not lift the private-address check.
    pub fn allow_host(mut self, host: impl AsRef<str>) -> Self {
        self.allow.push(HostPattern::parse(host.as_ref()));
        self
    }

    /// Adds a host to the deny-list (`example.com` or `*.example.com`); it wins over the
    /// allow-list.
    pub fn deny_host(mut self, host: impl AsRef<str>) -> Self {
        self.deny.push(HostPattern::parse(host.as_ref()));
        self
    }

    /// Lets `web_fetch` reach loopback, private, link-local and metadata addresses: for tests
    /// against a local server and for agents meant to read an intranet.
    pub fn allow_private(mut self) -> Self {
        self.allow_private = true;
        self
    }

    /// The most bytes of a body one fetch reads (2 MiB by default); a call may ask for less.
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n.max(1);
        self
    }

    /// The time cap on one fetch, connection to last byte (30 s by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The most redirects one fetch follows (5 by default).
    pub fn max_redirects(mut self, n: usize) -> Self {
        self.max_redirects = n;
        self
    }

    /// Adds `web_search`, answered by `backend`.
    pub fn search(mut self, backend: impl SearchBackend) -> Self {
        self.search = Some(Arc::new(backend));
        self
    }

    /// Adds `web_search`, answered by a shared backend.
    pub fn search_shared(mut self, backend: Arc<dyn SearchBackend>) -> Self {
        self.search = Some(backend);
        self
    }

    /// Test hook: resolves `host` to `addr` without the private-address check (as curl's
    /// `--resolve`), so a test can make a public-looking name reach a server on 127.0.0.1 and
    /// check what happens on the next hop. Only that name is exempt; every other name, literal
    /// and redirect is checked as usual. The developer chooses the address, never the model.
    #[doc(hidden)]
    pub fn pin_host_unchecked(mut self, host: &str, addr: SocketAddr) -> Self {
        self.pinned.push((guard::normalize_host(host), addr));
        self
    }

    fn policy(&self) -> Policy {
        Policy {
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            allow_private: self.allow_private,
            pinned: self.pinned.iter().map(|(h, _)| h.clone()).collect(),
        }
    }
}

impl Capability for Web {
    fn name(&self) -> &str {
        "web"
    }

    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        let fetch = fetch::WebFetch::new(fetch::FetchConfig {
            policy: Arc::new(self.policy()),
            max_bytes: self.max_bytes,
            timeout: self.timeout,
            max_redirects: self.max_redirects,
            pinned: self.pinned.clone(),
        });
        let mut tools: Vec<Arc<dyn Tool>> = vec![Arc::new(fetch)];
        if let Some(backend) = &self.search {
            tools.push(Arc::new(fetch::WebSearch::new(backend.clone(), self.timeout)));
        }
        tools
    }

    fn instructions(&self) -> Option<String> {
        let mut text =
            String::from("You can read web pages with web_fetch (http and https URLs; HTML comes back as text).");
        if !self.allow.is_empty() {
            text.push_str(" Only these hosts can be fetched: ");
            let hosts: Vec<String> = self
                .allow
                .iter()
                .map(|p| match p {
                    HostPattern::Exact(h) => h.clone(),
                    HostPattern::Suffix(s) => format!("*{s}"),
                })
                .collect();
            text.push_str(&hosts.join(", "));
            text.push('.');
        }
        if self.search.is_some() {
            text.push_str(" You can search the web with web_search.");
        }
        Some(text)
    }
}

/// Renders HTML as readable text: headings, lists, emphasis and links (as numbered references)
/// kept, scripts and styles dropped. A page nested deeper than [`html::MAX_DEPTH`] levels is
/// rendered from the tokenizer alone (see [`html`]), since building its tree would take time
/// quadratic in its depth.
pub(crate) fn html_to_text(html: &str) -> String {
    if html::nesting_depth(html) > html::MAX_DEPTH {
        return html::flat_text(html);
    }
    match html2text::config::plain().link_footnotes(true).no_table_borders().string_from_read(html.as_bytes(), 120) {
        Ok(text) => text,
        // html2text fails only on a width too narrow for the page's nesting; the flat text is
        // better than nothing.
        Err(_) => html::flat_text(html),
    }
}
