//! IPv4 CIDR arithmetic: the simulated subnets and scale_out's preflight both use it.

use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a CIDR (a.b.c.d/n)"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("`{text}`: bad address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("`{text}`: bad prefix"))?;
        let network = Ipv4Addr::from(u32::from(addr) & mask(prefix));
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    pub fn contains_str(&self, ip: &str) -> bool {
        ip.parse().is_ok_and(|ip| self.contains(ip))
    }

    /// The usable range: after the network address, before the broadcast address.
    pub fn hosts(&self) -> (Ipv4Addr, Ipv4Addr) {
        let first = u32::from(self.network) + 1;
        let last = u32::from(self.network) | !mask(self.prefix);
        (
            Ipv4Addr::from(first),
            Ipv4Addr::from(last.saturating_sub(1)),
        )
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_membership_and_host_range() {
        let c = Cidr::parse("10.6.0.0/24").unwrap();
        assert!(
            c.contains_str("10.6.0.21") && !c.contains_str("10.6.1.21") && !c.contains_str("bogus")
        );
        assert_eq!(
            c.hosts(),
            ("10.6.0.1".parse().unwrap(), "10.6.0.254".parse().unwrap())
        );
        assert!(Cidr::parse("10.6.0.0").is_err() && Cidr::parse("10.6.0.0/33").is_err());
    }
}
