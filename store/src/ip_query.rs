//! IP ranges and CIDR blocks on the IP keyword fields (`source.ip`, `related.ip`).
//!
//! Those fields hold each address as one text term, so a range query compared text
//! (`[192.0.2.0 TO 192.0.2.9]` matched `192.0.2.10` .. `192.0.2.89`) and a CIDR block
//! (`source.ip:192.0.2.0/24`) matched nothing. Both become one regular expression over the
//! terms instead: the range is split into CIDR blocks, and each block into fixed octets, one
//! octet range and free octets. The term dictionary is intersected with it, so the cost is the
//! size of the dictionary, not of the range. IPv4 only: IPv6 text has too many spellings for
//! a text pattern, so an IPv6 range or block is refused with a clear error.

use std::net::Ipv4Addr;

use tantivy::query_grammar::{UserInputAst, UserInputBound, UserInputLeaf};

use crate::catch_all::try_map_leaves;

/// Fields holding IP addresses as keyword terms.
pub(crate) const IP_FIELDS: &[&str] = &["source.ip", "related.ip"];

/// Rewrite ranges and CIDR literals on [`IP_FIELDS`] into regex leaves; `Err` says why a bound
/// or block is not IPv4.
pub(crate) fn rewrite_ip_ranges(ast: UserInputAst) -> Result<UserInputAst, String> {
    try_map_leaves(ast, &rewrite_leaf)
}

fn is_ip_field(field: &Option<String>) -> bool {
    field.as_deref().is_some_and(|f| IP_FIELDS.contains(&f))
}

fn rewrite_leaf(leaf: UserInputLeaf) -> Result<UserInputLeaf, String> {
    match leaf {
        // Stored addresses are in one written form (`2001:db8::66`, `198.51.100.9` for
        // `::ffff:198.51.100.9`): a term in another form of the same address finds them too.
        UserInputLeaf::Literal(mut lit)
            if is_ip_field(&lit.field_name) && !lit.phrase.contains(['/', '*', '?']) =>
        {
            if let Ok(ip) = lit.phrase.trim().parse::<std::net::IpAddr>() {
                lit.phrase = ip.to_canonical().to_string();
            }
            Ok(UserInputLeaf::Literal(lit))
        }
        UserInputLeaf::Literal(lit) if is_ip_field(&lit.field_name) && lit.phrase.contains('/') => {
            let (first, last) = cidr_bounds(lit.phrase.trim())?;
            Ok(regex_leaf(lit.field_name, first, last))
        }
        UserInputLeaf::Range {
            field,
            lower,
            upper,
        } if is_ip_field(&field) => {
            let first = match lower {
                UserInputBound::Unbounded => Some(0),
                UserInputBound::Inclusive(a) => Some(ipv4(&a)?),
                UserInputBound::Exclusive(a) => ipv4(&a)?.checked_add(1),
            };
            let last = match upper {
                UserInputBound::Unbounded => Some(u32::MAX),
                UserInputBound::Inclusive(b) => Some(ipv4(&b)?),
                UserInputBound::Exclusive(b) => ipv4(&b)?.checked_sub(1),
            };
            Ok(match (first, last) {
                (Some(first), Some(last)) if first <= last => regex_leaf(field, first, last),
                // An empty range: a pattern no address matches.
                _ => UserInputLeaf::Regex {
                    field,
                    pattern: "[^0-9a-f:.]".into(),
                },
            })
        }
        other => Ok(other),
    }
}

fn ipv4(text: &str) -> Result<u32, String> {
    text.trim().parse::<Ipv4Addr>().map(u32::from).map_err(|_| {
        format!("`{text}` is not an IPv4 address (IP ranges and CIDR blocks take IPv4 addresses)")
    })
}

/// First and last address of `a.b.c.d/n`.
fn cidr_bounds(block: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{block}` is not an IPv4 CIDR block like 192.0.2.0/24");
    let (addr, len) = block.split_once('/').ok_or_else(bad)?;
    let len: u32 = len.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    let addr = ipv4(addr)?;
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Ok((addr & mask, (addr & mask) | !mask))
}

fn regex_leaf(field: Option<String>, first: u32, last: u32) -> UserInputLeaf {
    UserInputLeaf::Regex {
        field,
        pattern: range_pattern(first, last),
    }
}

/// A pattern matching exactly the dotted-decimal texts of the addresses `first..=last`.
pub(crate) fn range_pattern(first: u32, last: u32) -> String {
    cidr_blocks(first, last)
        .into_iter()
        .map(|(base, len)| block_pattern(base, len))
        .collect::<Vec<_>>()
        .join("|")
}

/// The fewest CIDR blocks `(base, prefix length)` covering `first..=last` exactly.
fn cidr_blocks(first: u32, last: u32) -> Vec<(u32, u32)> {
    let mut blocks = Vec::new();
    let mut start = u64::from(first);
    let end = u64::from(last);
    while start <= end {
        // The largest block aligned at `start` that stays within the range.
        let mut size: u64 = if start == 0 {
            1 << 32
        } else {
            1 << start.trailing_zeros()
        };
        while start + size - 1 > end {
            size >>= 1;
        }
        blocks.push((start as u32, 32 - size.trailing_zeros()));
        start += size;
    }
    blocks
}

const ANY_OCTET: &str = "[0-9]{1,3}";

fn block_pattern(base: u32, len: u32) -> String {
    let octets = Ipv4Addr::from(base).octets();
    let fixed = (len / 8) as usize;
    let mut parts: Vec<String> = octets[..fixed].iter().map(u8::to_string).collect();
    if fixed < 4 {
        let free_bits = 8 - len % 8;
        if free_bits == 8 {
            parts.push(ANY_OCTET.into());
        } else {
            let lo = u32::from(octets[fixed]);
            let hi = lo + (1 << free_bits) - 1;
            let numbers: Vec<String> = (lo..=hi).map(|n| n.to_string()).collect();
            parts.push(format!("({})", numbers.join("|")));
        }
        parts.extend(std::iter::repeat_n(ANY_OCTET.to_string(), 3 - fixed));
    }
    format!("({})", parts.join("\\."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(pattern: &str, ip: u32) -> bool {
        regex::Regex::new(&format!("^(?:{pattern})$"))
            .unwrap()
            .is_match(&Ipv4Addr::from(ip).to_string())
    }

    #[test]
    fn blocks_and_patterns() {
        assert_eq!(
            cidr_bounds("192.0.2.77/24").unwrap(),
            (0xC000_0200, 0xC000_02FF)
        );
        assert_eq!(
            cidr_bounds("10.1.2.3/32").unwrap(),
            (0x0A01_0203, 0x0A01_0203)
        );
        assert_eq!(cidr_bounds("0.0.0.0/0").unwrap(), (0, u32::MAX));
        for bad in ["192.0.2.0/33", "192.0.2.0/", "2001:db8::/32", "192.0.2/24"] {
            assert!(cidr_bounds(bad).is_err(), "{bad}");
        }
        let p = range_pattern(0xC000_0200, 0xC000_02FF);
        assert_eq!(p, "(192\\.0\\.2\\.[0-9]{1,3})");
        let p = range_pattern(
            u32::from(Ipv4Addr::new(192, 0, 2, 0)),
            u32::from(Ipv4Addr::new(192, 0, 2, 9)),
        );
        assert!(matches(&p, u32::from(Ipv4Addr::new(192, 0, 2, 9))));
        assert!(!matches(&p, u32::from(Ipv4Addr::new(192, 0, 2, 10))));
        assert!(!matches(&p, u32::from(Ipv4Addr::new(192, 0, 2, 90))));
        assert_eq!(cidr_blocks(0, u32::MAX), vec![(0, 0)]);
    }

    #[test]
    fn awkward_ranges_compile_for_the_term_dictionary() {
        let ip = |s: &str| u32::from(s.parse::<Ipv4Addr>().unwrap());
        for (a, b) in [
            ("0.0.0.1", "255.255.255.254"),
            ("1.2.3.4", "200.100.50.25"),
            ("10.0.0.1", "10.0.255.254"),
            ("0.0.0.0", "255.255.255.255"),
        ] {
            let pattern = range_pattern(ip(a), ip(b));
            let field = tantivy::schema::Field::from_field_id(0);
            tantivy::query::RegexQuery::from_pattern(&pattern, field)
                .unwrap_or_else(|e| panic!("{a}..{b}: {e} ({} bytes)", pattern.len()));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The pattern of a range matches an address exactly when the address is in it.
        #[test]
        fn range_patterns_match_exactly_the_range(a: u32, b: u32, probe: u32, near in -300i64..300) {
            let (first, last) = (a.min(b), a.max(b));
            // Narrow ranges too, and probes at and around the edges.
            let last = if near > 0 { first.saturating_add(near as u32).min(last) } else { last };
            let pattern = range_pattern(first, last);
            for ip in [probe, first, last, first.wrapping_sub(1), last.wrapping_add(1),
                       first.wrapping_add(near.unsigned_abs() as u32)] {
                prop_assert_eq!(matches(&pattern, ip), (first..=last).contains(&ip), "{} in {}..={}", Ipv4Addr::from(ip), Ipv4Addr::from(first), Ipv4Addr::from(last));
            }
        }
    }
}
