//! Where Baton's own HTTP requests may go: webhook rotators and event deliveries.
//!
//! Whoever may register a webhook chooses the URL, and Baton then connects from inside the
//! network it runs in. So by default Baton connects only to public addresses: never to
//! loopback, private (RFC 1918, unique-local), link-local (the cloud metadata range), shared
//! (carrier-grade NAT), unspecified, broadcast or multicast ones. An operator who runs its
//! receivers on such addresses says so with `--allow-private-webhooks`.
//!
//! A name is resolved, every address it resolves to is checked, and the connection goes to the
//! checked addresses only ([`CheckedResolver`] is the client's resolver), so a name cannot
//! resolve one way at the check and another at the connection. An address written in the URL
//! is checked as it is, at registration and before every request.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Whether `ip` is an address on the public internet, as far as its range tells.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                // 100.64.0.0/10: shared address space (carrier-grade NAT).
                || (a == 100 && (64..128).contains(&b))
                // 0.0.0.0/8: "this network".
                || a == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local, fe80::/10 link-local.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Refuses an address Baton may not connect to, naming why.
pub fn check_address(ip: IpAddr, allow_private: bool) -> Result<(), String> {
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        Err(format!(
            "{ip} is a loopback, private, link-local or otherwise non-public address; the \
             server connects to such addresses only with --allow-private-webhooks"
        ))
    }
}

/// The host and port of an absolute http(s) URL.
fn host_and_port(url: &str) -> Result<(String, u16), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| "it is not an absolute http(s) URL".to_owned())?;
    let host = uri
        .host()
        .ok_or_else(|| "it is not an absolute http(s) URL".to_owned())?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("http") => 80,
        _ => 443,
    });
    Ok((host, port))
}

/// Before a request: an address in the URL must be allowed (a name is checked when the
/// client resolves it).
pub fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    let (host, _) = host_and_port(url)?;
    match host.parse::<IpAddr>() {
        Ok(ip) => check_address(ip, allow_private),
        Err(_) => Ok(()),
    }
}

/// At registration: the URL's address, or every address its name resolves to now, must be
/// allowed. A name that does not resolve is refused.
pub async fn check_url_resolves(url: &str, allow_private: bool) -> Result<(), String> {
    check_url(url, allow_private)?;
    let (host, port) = host_and_port(url)?;
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("the name {host} does not resolve: {e}"))?
        .collect();
    if addresses.is_empty() {
        return Err(format!("the name {host} resolves to no address"));
    }
    for address in addresses {
        check_address(address.ip(), allow_private)
            .map_err(|e| format!("{host} resolves to {e}"))?;
    }
    Ok(())
}

/// The HTTP client's resolver: it answers only with addresses that [`check_address`] allows,
/// and fails the connection if a name resolves to any other.
#[derive(Debug, Clone, Copy)]
pub struct CheckedResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for address in &addresses {
                check_address(address.ip(), allow_private)
                    .map_err(|e| format!("{host} resolves to {e}"))?;
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// A client for webhooks: no redirects (credentials and signatures go only to the registered
/// URL), checked addresses, and a time limit.
pub fn client(timeout: Option<Duration>, allow_private: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .dns_resolver(Arc::new(CheckedResolver { allow_private }));
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_allowed_by_default() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(!is_public(ip), "{private}");
            assert!(check_address(ip, false).is_err(), "{private}");
            assert!(check_address(ip, true).is_ok(), "{private} with the flag");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn urls_are_checked_by_their_address_and_names_by_what_they_resolve_to() {
        assert!(check_url("https://169.254.169.254/latest", false).is_err());
        assert!(check_url("http://[::1]:8080/", false).is_err());
        assert!(check_url("https://93.184.216.34/hook", false).is_ok());
        // A name is left to the resolver.
        assert!(check_url("https://hooks.example/x", false).is_ok());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let refused = runtime
            .block_on(check_url_resolves("http://localhost:9/", false))
            .unwrap_err();
        assert!(refused.contains("localhost resolves to"), "{refused}");
        assert!(
            runtime
                .block_on(check_url_resolves("http://localhost:9/", true))
                .is_ok()
        );
    }
}
