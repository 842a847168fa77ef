//! The names of the nf_tables tables, from one netlink dump (NFT_MSG_GETTABLE).
//!
//! Why not `nft list tables`: nft fills its whole cache first, which on a kube-proxy node with 100 k
//! iptables-nft rules takes seconds; the table dump is a few hundred bytes.

use super::nl_socket::{netfilter_request, netfilter_socket, recv_until, send};
use crate::parse::netlink::{attrs, messages, value, DumpEnd, Request, Subsystem};
use crate::parse::nft_netlink::{
    self as nn, Chain, RuleMsg, NFTA_GEN_ID, NFTA_TABLE_NAME, NFT_MSG_GETGEN, NFT_MSG_GETTABLE,
    NFT_MSG_NEWGEN, NFT_MSG_NEWTABLE,
};
use std::os::fd::AsRawFd;

/// Every family, in a dump request.
const NFPROTO_UNSPEC: u8 = 0;

fn family_name(f: u8) -> String {
    match f {
        1 => "inet".into(),
        2 => "ip".into(),
        3 => "arp".into(),
        5 => "netdev".into(),
        7 => "bridge".into(),
        10 => "ip6".into(),
        other => format!("family-{other}"),
    }
}

/// The dump request: nlmsghdr + nfgenmsg (family unspecified: every family).
pub fn request(seq: u32) -> Vec<u8> {
    Request::dump(Subsystem::Nftables, NFT_MSG_GETTABLE, seq, NFPROTO_UNSPEC).finish()
}

/// What one received buffer says: tables found, whether the dump is complete, or the kernel's error.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    pub tables: Vec<(String, String)>,
    pub done: bool,
    pub error: Option<i32>,
}

/// Parses one buffer of netlink messages. Pure; never panics on short or damaged input.
pub fn parse_chunk(buf: &[u8]) -> Chunk {
    let mut c = Chunk::default();
    let mut end = DumpEnd::default();
    for m in messages(buf) {
        if end.see(&m) {
            continue;
        }
        if m.ty != Subsystem::Nftables.message(NFT_MSG_NEWTABLE) {
            continue;
        }
        if let Some(body) = m.nfnetlink() {
            let family = family_name(body.family);
            for (ty, v) in attrs(body.attrs) {
                if ty == NFTA_TABLE_NAME {
                    c.tables.push((
                        family.clone(),
                        String::from_utf8_lossy(value::cstr(v)).into_owned(),
                    ));
                }
            }
        }
    }
    (c.done, c.error) = (end.done, end.error);
    c
}

/// Dumps the table names of the calling thread's network namespace.
pub fn list_tables() -> std::io::Result<Vec<(String, String)>> {
    let fd = netfilter_request(&request(1), 5, None)?;
    let mut tables = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut err = None;
    recv_until(&fd, &mut buf, |b| {
        let c = parse_chunk(b);
        tables.extend(c.tables);
        err = c.error;
        Ok(c.done)
    })?;
    match err {
        Some(e) => Err(std::io::Error::from_raw_os_error(e)),
        None => Ok(tables),
    }
}

/// The request for the ruleset generation (not a dump: one NEWGEN message answers it).
fn generation_request(seq: u32) -> Vec<u8> {
    Request::get(Subsystem::Nftables, NFT_MSG_GETGEN, seq, NFPROTO_UNSPEC).finish()
}

/// The ruleset generation: it changes with every committed change, so equal numbers before and after
/// a multi-request read mean the read saw one ruleset.
pub fn generation() -> std::io::Result<u32> {
    let fd = netfilter_request(&generation_request(1), 5, None)?;
    let mut buf = vec![0u8; 8192];
    let mut gen = None;
    let mut err = None;
    recv_until(&fd, &mut buf, |b| {
        for m in messages(b) {
            match m.nfnetlink() {
                Some(body) if m.ty == Subsystem::Nftables.message(NFT_MSG_NEWGEN) => {
                    gen = attrs(body.attrs)
                        .find(|(t, _)| *t == NFTA_GEN_ID)
                        .and_then(|(_, v)| value::be32(v));
                }
                _ => {
                    if let Some(e) = m.errno().filter(|e| *e != 0) {
                        err = Some(e);
                    }
                }
            }
        }
        Ok(gen.is_some() || err.is_some())
    })?;
    match (gen, err) {
        (Some(g), _) => Ok(g),
        (None, Some(e)) => Err(std::io::Error::from_raw_os_error(e)),
        (None, None) => Err(std::io::Error::other(
            "no generation in the kernel's answer",
        )),
    }
}

/// Every chain of `family`, from one dump.
pub fn chains(family: u8) -> std::io::Result<Vec<Chain>> {
    let fd = netfilter_request(&nn::chain_dump_request(1, family), 5, None)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut err = None;
    recv_until(&fd, &mut buf, |b| {
        let c = nn::parse_chunk(b);
        out.extend(c.chains);
        err = c.error;
        Ok(c.done)
    })?;
    match err {
        Some(e) => Err(std::io::Error::from_raw_os_error(e)),
        None => Ok(out),
    }
}

/// Dumps the rules of each chain of `family`/`table` in turn (see [`nn::rule_dump_request`]) and hands
/// every rule to `on_rule` as it arrives, in the chains' order and each chain's kernel order. Nothing is
/// kept: memory stays at one receive buffer. Returns the damaged messages met.
///
/// One dump at a time per socket: the kernel answers a second dump request with EBUSY until the first
/// one's NLMSG_DONE has been read (it is queued only when the data before it is received).
pub fn rules(
    family: u8,
    table: &str,
    chains: &[String],
    mut on_rule: impl FnMut(&RuleMsg<'_>),
) -> std::io::Result<u64> {
    let fd = netfilter_socket(5, None)?;
    let mut damaged = 0;
    let mut buf = vec![0u8; 1 << 15];
    for (i, chain) in chains.iter().enumerate() {
        send(
            &fd,
            &nn::rule_dump_request(i as u32 + 1, family, table, chain),
        )?;
        let mut err = None;
        recv_until(&fd, &mut buf, |b| {
            let c = nn::parse_chunk(b);
            damaged += c.damaged;
            for r in &c.rules {
                on_rule(r);
            }
            err = c.error;
            Ok(c.done)
        })?;
        match err {
            // The chain went away between the chain list and its dump: nothing to show.
            None | Some(libc::ENOENT) => {}
            Some(e) => return Err(std::io::Error::from_raw_os_error(e)),
        }
    }
    Ok(damaged)
}

/// From this many chains on, a table's rules are dumped by two threads.
const PARALLEL_CHAINS: usize = 2_000;

/// The iptables-nft tables of `family` written as `iptables-save` text, read over netlink.
#[derive(Debug, Default)]
pub struct XtablesDump {
    /// (table, rendered) for each iptables-layout table, in the kernel's table order.
    pub tables: Vec<(String, nn::RenderedTable)>,
    pub damaged: u64,
    /// Generation changed while reading, on every attempt: the text may mix two rulesets.
    pub unstable: bool,
}

/// Reads the iptables-nft tables of `family` (`filter`, `nat`, …: tables whose base chains carry
/// iptables' names). A rule that does not render is listed in its table's `unrendered`; the caller
/// then asks iptables-save for that table.
pub fn xtables(family: u8) -> std::io::Result<XtablesDump> {
    let mut last = XtablesDump::default();
    for _attempt in 0..3 {
        let gen0 = generation().ok();
        let all = chains(family)?;
        let mut out = XtablesDump::default();
        // The chain dump follows the kernel's table list (oldest first); iptables-save prints the
        // newest table first.
        let mut order: Vec<String> = Vec::new();
        for c in &all {
            if nn::XTABLES.contains(&c.table.as_str()) && !order.contains(&c.table) {
                order.push(c.table.clone());
            }
        }
        order.reverse();
        for t in order {
            let cs: Vec<Chain> = all.iter().filter(|c| c.table == t).cloned().collect();
            // Only tables with iptables' base chain names are iptables-nft's.
            if !cs
                .iter()
                .filter(|c| c.hook.is_some())
                .all(|c| nn::is_xtables_base_chain(&c.name))
            {
                continue;
            }
            let mut r = nn::TableRenderer::new(family, &t, &cs);
            let names = r.chain_order().to_vec();
            // Most of the time is the kernel writing rules out; with many chains, two threads (both in
            // this namespace) each dump a contiguous half, so the text stays in order.
            if names.len() >= PARALLEL_CHAINS {
                let (first, second) = names.split_at(names.len() / 2);
                let ns = std::fs::File::open("/proc/thread-self/ns/net")?;
                let (half, damaged) = std::thread::scope(|sc| {
                    let h = sc.spawn(|| -> std::io::Result<(nn::RenderedTable, u64)> {
                        // SAFETY: setns on a valid fd; affects only this thread.
                        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        let mut part = nn::RenderedTable::default();
                        let d = rules(family, &t, second, |rule| part.push_rule(family, rule))?;
                        Ok((part, d))
                    });
                    let d1 = rules(family, &t, first, |rule| r.push(rule));
                    let second = h
                        .join()
                        .map_err(|_| std::io::Error::other("rule dump thread panicked"))?;
                    let (part, d2) = second?;
                    Ok::<_, std::io::Error>((part, d1? + d2))
                })?;
                r.append(half);
                out.damaged += damaged;
            } else {
                out.damaged += rules(family, &t, &names, |rule| r.push(rule))?;
            }
            out.tables.push((t, r.finish()));
        }
        let gen1 = generation().ok();
        if gen0.is_some() && gen0 == gen1 {
            return Ok(out);
        }
        out.unstable = true;
        last = out;
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u16, body: &[u8]) -> Vec<u8> {
        let len = 16 + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn parses_table_names_and_done() {
        let mut body = vec![2, 0, 0, 0];
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&1u16.to_ne_bytes());
        body.extend_from_slice(b"nat\0");
        let mut buf = msg(10 << 8, &body);
        buf.extend(msg(3, &[0; 4]));
        let c = parse_chunk(&buf);
        assert_eq!(c.tables, vec![("ip".to_string(), "nat".to_string())]);
        assert!(c.done);
        for cut in 0..buf.len() {
            let _ = parse_chunk(&buf[..cut]);
        }
    }

    /// The exact bytes the kernel is sent (x86 and every little-endian host; netlink headers are in
    /// host order): what the hand-written encoders sent before the shared builder.
    #[test]
    #[cfg(target_endian = "little")]
    fn requests_are_byte_exact() {
        assert_eq!(
            request(3),
            [
                20, 0, 0, 0, // length
                1, 10, // NFT_MSG_GETTABLE of NFNL_SUBSYS_NFTABLES
                1, 3, // NLM_F_REQUEST | NLM_F_DUMP
                3, 0, 0, 0, // seq
                0, 0, 0, 0, // pid
                0, 0, 0, 0, // nfgenmsg: every family, version 0, res_id 0
            ]
        );
        assert_eq!(
            generation_request(1),
            [20, 0, 0, 0, 16, 10, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            nn::chain_dump_request(2, 10),
            [20, 0, 0, 0, 4, 10, 1, 3, 2, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0]
        );
        let mut rule = vec![48, 0, 0, 0, 7, 10, 1, 3, 5, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0];
        rule.extend_from_slice(&[8, 0, 1, 0, b'n', b'a', b't', 0]); // NFTA_RULE_TABLE "nat"
        rule.extend_from_slice(&[18, 0, 2, 0]); // NFTA_RULE_CHAIN, 13 bytes + NUL, padded to 20
        rule.extend_from_slice(b"KUBE-SERVICES\0\0\0");
        assert_eq!(nn::rule_dump_request(5, 2, "nat", "KUBE-SERVICES"), rule);
    }
}
