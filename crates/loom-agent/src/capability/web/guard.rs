//! The SSRF guard: which URLs and which addresses `web_fetch` may reach.
//!
//! Three checks, at the three places an address can come from:
//! - [`Policy::check_url`] before a request is sent and on every redirect hop: the scheme (http and
//!   https only), the host lists, and a host that is an IP literal (reqwest connects to a literal
//!   without asking the resolver, so a literal must be checked here);
//! - [`GuardedResolver`], reqwest's resolver for the fetch client: it resolves a name, drops every
//!   address that is not allowed and hands reqwest only the rest, so the address reqwest connects
//!   to is an address that was checked (no window between the check and the connection for a DNS
//!   answer to change: there is one answer, and it is the one used);
//! - the connected peer address of the response, checked again as a last line.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Why an address is not reachable by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16.
    Private,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// A cloud metadata service: 169.254.169.254, fd00:ec2::254.
    Metadata,
    /// 100.64/10.
    SharedCgnat,
    /// fc00::/7 (and the deprecated site-local fec0::/10).
    UniqueLocal,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// 224/4, ff00::/8, 255.255.255.255.
    Multicast,
    /// Reserved, documentation and benchmarking ranges (240/4, 192.0.0/24, 192.0.2/24,
    /// 198.18/15, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 100::/64).
    Reserved,
}

impl Blocked {
    /// The kind of address, for the model: "a loopback address".
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Blocked::Loopback => "a loopback address",
            Blocked::Private => "a private network address",
            Blocked::LinkLocal => "a link-local address",
            Blocked::Metadata => "a cloud metadata service address",
            Blocked::SharedCgnat => "a shared (carrier-grade NAT) address",
            Blocked::UniqueLocal => "a unique-local (private) IPv6 address",
            Blocked::Unspecified => "an unspecified address",
            Blocked::Multicast => "a multicast or broadcast address",
            Blocked::Reserved => "a reserved address",
        }
    }
}

fn v4_in(addr: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    (u32::from(addr) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn v6_in(addr: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    (u128::from(addr) & mask) == (u128::from(net) & mask)
}

/// Classifies an IPv4 address; `None` for a public one.
fn classify_v4(addr: Ipv4Addr) -> Option<Blocked> {
    const TABLE: &[([u8; 4], u32, Blocked)] = &[
        ([169, 254, 169, 254], 32, Blocked::Metadata),
        ([0, 0, 0, 0], 8, Blocked::Unspecified),
        ([10, 0, 0, 0], 8, Blocked::Private),
        ([100, 64, 0, 0], 10, Blocked::SharedCgnat),
        ([127, 0, 0, 0], 8, Blocked::Loopback),
        ([169, 254, 0, 0], 16, Blocked::LinkLocal),
        ([172, 16, 0, 0], 12, Blocked::Private),
        ([192, 0, 0, 0], 24, Blocked::Reserved),
        ([192, 0, 2, 0], 24, Blocked::Reserved),
        ([192, 168, 0, 0], 16, Blocked::Private),
        ([198, 18, 0, 0], 15, Blocked::Reserved),
        ([198, 51, 100, 0], 24, Blocked::Reserved),
        ([203, 0, 113, 0], 24, Blocked::Reserved),
        ([224, 0, 0, 0], 4, Blocked::Multicast),
        ([255, 255, 255, 255], 32, Blocked::Multicast),
        ([240, 0, 0, 0], 4, Blocked::Reserved),
    ];
    TABLE.iter().find(|(net, prefix, _)| v4_in(addr, *net, *prefix)).map(|(_, _, kind)| *kind)
}

/// Classifies an IPv6 address; `None` for a public one. Addresses that carry an IPv4 address
/// (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`) are judged by the IPv4 address they carry.
fn classify_v6(addr: Ipv6Addr) -> Option<Blocked> {
    if addr.is_unspecified() {
        return Some(Blocked::Unspecified);
    }
    if addr.is_loopback() {
        return Some(Blocked::Loopback);
    }
    if addr == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        return Some(Blocked::Metadata);
    }
    let seg = addr.segments();
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
    if seg[..5] == [0, 0, 0, 0, 0] && (seg[5] == 0xffff || seg[5] == 0) {
        return classify_v4(embedded_v4(seg[6], seg[7]));
    }
    // NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48).
    if v6_in(addr, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96)
        || v6_in(addr, Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48)
    {
        return classify_v4(embedded_v4(seg[6], seg[7]));
    }
    // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
    if seg[0] == 0x2002 {
        return classify_v4(embedded_v4(seg[1], seg[2]));
    }
    const TABLE: &[(Ipv6Addr, u32, Blocked)] = &[
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, Blocked::LinkLocal),
        (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, Blocked::UniqueLocal),
        (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, Blocked::UniqueLocal),
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, Blocked::Multicast),
        (Ipv6Addr::new(0x2001, 0x0db8, 0, 0, 0, 0, 0, 0), 32, Blocked::Reserved),
        (Ipv6Addr::new(0x0100, 0, 0, 0, 0, 0, 0, 0), 64, Blocked::Reserved),
    ];
    TABLE.iter().find(|(net, prefix, _)| v6_in(addr, *net, *prefix)).map(|(_, _, kind)| *kind)
}

/// Why an address may not be reached by default; `None` for a public address.
pub(crate) fn classify(ip: IpAddr) -> Option<Blocked> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// A host pattern of an allow- or deny-list: an exact host (`example.com`, `10.0.0.5`, `::1`) or
/// every subdomain of a suffix (`*.example.com` matches `a.example.com` and `a.b.example.com`,
/// not `example.com` itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// This host only.
    Exact(String),
    /// Subdomains of this suffix (stored with its leading dot).
    Suffix(String),
}

/// Lower case, no trailing dot, no IPv6 brackets: the form hosts are compared in.
pub(crate) fn normalize_host(host: &str) -> String {
    let host = host.trim().trim_end_matches('.');
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.to_ascii_lowercase()
}

impl HostPattern {
    /// Parses `host` or `*.suffix`.
    pub(crate) fn parse(pattern: &str) -> Self {
        let pattern = normalize_host(pattern);
        match pattern.strip_prefix("*.") {
            Some(suffix) => HostPattern::Suffix(format!(".{suffix}")),
            None => HostPattern::Exact(pattern),
        }
    }

    /// Whether the (normalized) host matches.
    pub(crate) fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

/// Why a URL or an address was refused. Its text is what the model reads: it names the URL the
/// model gave and the kind of address, never an address a name resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not http or https.
    Scheme(String),
    /// No host in the URL.
    NoHost,
    /// The host is on the deny-list.
    Denied(String),
    /// An allow-list is set and the host is not on it.
    NotAllowed(String),
    /// The host is an IP literal of a blocked kind.
    Literal(String, Blocked),
    /// Every address the name resolves to is of a blocked kind.
    Resolved(String, Blocked),
    /// The connection went to an address of a blocked kind (a proxy, a resolver override).
    Peer(Blocked),
    /// Too many redirects.
    TooManyRedirects(usize),
}

const PRIVATE_NOTE: &str = "web_fetch does not reach private, loopback, link-local or metadata addresses";

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Scheme(s) => {
                write!(f, "the URL scheme `{s}` is not allowed; only http and https URLs can be fetched")
            }
            Refusal::NoHost => write!(f, "the URL has no host"),
            Refusal::Denied(h) => write!(f, "the host `{h}` is on the deny-list"),
            Refusal::NotAllowed(h) => write!(f, "the host `{h}` is not on the allow-list"),
            Refusal::Literal(h, kind) => write!(f, "`{h}` is {}; {PRIVATE_NOTE}", kind.describe()),
            Refusal::Resolved(h, kind) => write!(f, "`{h}` resolves to {}; {PRIVATE_NOTE}", kind.describe()),
            Refusal::Peer(kind) => write!(f, "the connection went to {}; {PRIVATE_NOTE}", kind.describe()),
            Refusal::TooManyRedirects(n) => write!(f, "more than {n} redirects"),
        }
    }
}

impl std::error::Error for Refusal {}

/// What `web_fetch` may reach: the host lists and whether private addresses are allowed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Policy {
    pub(crate) allow: Vec<HostPattern>,
    pub(crate) deny: Vec<HostPattern>,
    pub(crate) allow_private: bool,
    /// Hosts the developer pinned to an address (a test hook); the peer check skips them.
    pub(crate) pinned: Vec<String>,
}

impl Policy {
    /// Checks a URL before it is requested, and each redirect target: scheme, host lists, and an
    /// IP-literal host. Names are checked by the resolver when they are resolved.
    pub(crate) fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(Refusal::Scheme(scheme.to_string()));
        }
        let host = url.host().ok_or(Refusal::NoHost)?;
        let name = match &host {
            Host::Domain(d) => normalize_host(d),
            Host::Ipv4(v4) => v4.to_string(),
            Host::Ipv6(v6) => v6.to_string(),
        };
        if self.deny.iter().any(|p| p.matches(&name)) {
            return Err(Refusal::Denied(name));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|p| p.matches(&name)) {
            return Err(Refusal::NotAllowed(name));
        }
        if !self.allow_private {
            let literal = match host {
                Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
                Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
                Host::Domain(_) => None,
            };
            if let Some(kind) = literal.and_then(classify) {
                return Err(Refusal::Literal(url.host_str().unwrap_or_default().to_string(), kind));
            }
        }
        Ok(())
    }

    /// Checks the address a response came from (after the resolver's check, a last line against a
    /// proxy or an override that bypassed it).
    pub(crate) fn check_peer(&self, url: &Url, peer: Option<SocketAddr>) -> Result<(), Refusal> {
        if self.allow_private {
            return Ok(());
        }
        let host = url.host_str().map(normalize_host).unwrap_or_default();
        if self.pinned.contains(&host) {
            return Ok(());
        }
        match peer.map(|p| p.ip()).and_then(classify) {
            Some(kind) => Err(Refusal::Peer(kind)),
            None => Ok(()),
        }
    }
}

/// reqwest's resolver for the fetch client: the system resolver (getaddrinfo, on a blocking
/// thread), then every address of a blocked kind dropped. A name with no address left fails with
/// a [`Refusal`], which the fetch turns into the model's error.
#[derive(Clone, Debug)]
pub(crate) struct GuardedResolver {
    pub(crate) allow_private: bool,
}

/// Resolves `host` and keeps the addresses the guard allows.
pub(crate) async fn resolve_allowed(
    host: &str,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
    if allow_private {
        return Ok(addrs);
    }
    let mut first_blocked = None;
    let kept: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match classify(a.ip()) {
            Some(kind) => {
                first_blocked.get_or_insert(kind);
                false
            }
            None => true,
        })
        .collect();
    match (kept.is_empty(), first_blocked) {
        (true, Some(kind)) => Err(Box::new(Refusal::Resolved(normalize_host(host), kind))),
        _ => Ok(kept),
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs = resolve_allowed(name.as_str(), allow_private).await?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocked_ranges_are_classified() {
        let cases = [
            ("127.0.0.1", Some(Blocked::Loopback)),
            ("127.255.1.2", Some(Blocked::Loopback)),
            ("10.1.2.3", Some(Blocked::Private)),
            ("172.16.0.1", Some(Blocked::Private)),
            ("172.31.255.255", Some(Blocked::Private)),
            ("172.32.0.1", None),
            ("192.168.1.1", Some(Blocked::Private)),
            ("169.254.169.254", Some(Blocked::Metadata)),
            ("169.254.1.1", Some(Blocked::LinkLocal)),
            ("100.64.0.1", Some(Blocked::SharedCgnat)),
            ("100.127.255.255", Some(Blocked::SharedCgnat)),
            ("100.128.0.1", None),
            ("0.0.0.0", Some(Blocked::Unspecified)),
            ("224.0.0.1", Some(Blocked::Multicast)),
            ("255.255.255.255", Some(Blocked::Multicast)),
            ("240.0.0.1", Some(Blocked::Reserved)),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            ("::1", Some(Blocked::Loopback)),
            ("::", Some(Blocked::Unspecified)),
            ("fe80::1", Some(Blocked::LinkLocal)),
            ("fd00:ec2::254", Some(Blocked::Metadata)),
            ("fd12:3456::1", Some(Blocked::UniqueLocal)),
            ("fc00::1", Some(Blocked::UniqueLocal)),
            ("ff02::1", Some(Blocked::Multicast)),
            ("::ffff:127.0.0.1", Some(Blocked::Loopback)),
            ("::ffff:169.254.169.254", Some(Blocked::Metadata)),
            ("::ffff:10.0.0.1", Some(Blocked::Private)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Blocked::Loopback)),
            ("64:ff9b::7f00:1", Some(Blocked::Loopback)),
            ("2002:7f00:1::", Some(Blocked::Loopback)),
            ("2002:0808:0808::", None),
            ("2001:db8::1", Some(Blocked::Reserved)),
            ("2606:4700:4700::1111", None),
        ];
        for (addr, want) in cases {
            assert_eq!(classify(ip(addr)), want, "{addr}");
        }
    }

    #[test]
    fn host_patterns_match_exact_hosts_and_subdomains() {
        let exact = HostPattern::parse("Example.COM.");
        assert!(exact.matches("example.com"));
        assert!(!exact.matches("a.example.com"));
        let suffix = HostPattern::parse("*.example.com");
        assert!(suffix.matches("a.example.com"));
        assert!(suffix.matches("a.b.example.com"));
        assert!(!suffix.matches("example.com"));
        assert!(!suffix.matches("badexample.com"));
        assert!(HostPattern::parse("[::1]").matches("::1"));
    }

    #[test]
    fn urls_are_checked_for_scheme_lists_and_literals() {
        let policy = Policy { deny: vec![HostPattern::parse("*.evil.test")], ..Policy::default() };
        let check = |u: &str| policy.check_url(&Url::parse(u).unwrap());
        assert!(check("https://example.com/").is_ok());
        assert_eq!(check("file:///etc/passwd"), Err(Refusal::Scheme("file".into())));
        assert_eq!(check("ftp://example.com/"), Err(Refusal::Scheme("ftp".into())));
        assert_eq!(check("http://a.evil.test/"), Err(Refusal::Denied("a.evil.test".into())));
        assert!(matches!(check("http://127.0.0.1:8080/"), Err(Refusal::Literal(_, Blocked::Loopback))));
        assert!(matches!(check("http://[::ffff:127.0.0.1]/"), Err(Refusal::Literal(_, Blocked::Loopback))));
        // Decimal and hex forms of 127.0.0.1 are IPv4 literals to the URL parser.
        assert!(matches!(check("http://2130706433/"), Err(Refusal::Literal(_, Blocked::Loopback))));
        assert!(matches!(check("http://0x7f.1/"), Err(Refusal::Literal(_, Blocked::Loopback))));
        let allow = Policy { allow: vec![HostPattern::parse("docs.rs")], ..Policy::default() };
        assert!(allow.check_url(&Url::parse("https://docs.rs/x").unwrap()).is_ok());
        assert_eq!(
            allow.check_url(&Url::parse("https://crates.io/").unwrap()),
            Err(Refusal::NotAllowed("crates.io".into()))
        );
        let private = Policy { allow_private: true, ..Policy::default() };
        assert!(private.check_url(&Url::parse("http://127.0.0.1:9/").unwrap()).is_ok());
    }

    #[tokio::test]
    async fn the_resolver_drops_blocked_addresses() {
        let err = resolve_allowed("localhost", false).await.unwrap_err();
        assert_eq!(err.to_string(), format!("`localhost` resolves to a loopback address; {PRIVATE_NOTE}"));
        let ok = resolve_allowed("localhost", true).await.unwrap();
        assert!(ok.iter().all(|a| a.ip().is_loopback()), "{ok:?}");
    }
}
