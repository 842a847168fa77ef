//! iptables-nft rules read from nf_tables netlink messages, written back as `iptables-save` text.
//!
//! Why: on a kube-proxy node with ~100 k rules in the nf_tables backend, `iptables-save` takes 10–20 s
//! (its own caches) and `nft list` as long (the kernel's whole-table dump restarts from the first rule
//! for every 32 KB it sends). The collector instead dumps each chain on its own and this module turns
//! the expressions iptables-nft writes back into the rule text `iptables-save` would print, so the one
//! iptables parser reads both.
//!
//! Exactness over coverage: a rule is rendered only when every expression in it is understood (the
//! common matches and targets of kube-proxy, Docker, CNI plugins and hand-written firewalls). Anything
//! else makes the rule [`Unrendered`], and the collector then asks `iptables-save` for that table, so
//! nothing is lost or guessed. Pure: bytes in, text out; never panics on damaged input.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// nf_tables messages (`linux/netfilter/nf_tables.h`, `enum nf_tables_msg_types`).
pub const NFT_MSG_NEWTABLE: u16 = 0;
pub const NFT_MSG_GETTABLE: u16 = 1;
pub const NFT_MSG_NEWCHAIN: u16 = 3;
pub const NFT_MSG_GETCHAIN: u16 = 4;
pub const NFT_MSG_NEWRULE: u16 = 6;
pub const NFT_MSG_GETRULE: u16 = 7;
pub const NFT_MSG_NEWGEN: u16 = 15;
pub const NFT_MSG_GETGEN: u16 = 16;

/// Attributes of a table, a rule and the generation message.
pub const NFTA_TABLE_NAME: u16 = 1;
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_GEN_ID: u16 = 1;

pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;

/// The tables iptables-nft creates (the names the iptables tools know).
pub const XTABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];

/// A chain as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub family: u8,
    pub table: String,
    pub name: String,
    /// Hook number for a base chain (0 prerouting … 4 postrouting), `None` for a user chain.
    pub hook: Option<u32>,
    /// Base chain policy: `ACCEPT` or `DROP`.
    pub policy: Option<&'static str>,
    pub packets: u64,
    pub bytes: u64,
}

/// One rule: where it is and its expressions, undecoded beyond name and attributes. Borrows the
/// received buffer: a rule is rendered as soon as it arrives, never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMsg<'a> {
    pub family: u8,
    pub table: &'a [u8],
    pub chain: &'a [u8],
    pub handle: u64,
    pub exprs: Vec<RawExpr<'a>>,
    pub userdata: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawExpr<'a> {
    pub name: &'a [u8],
    /// NFTA_EXPR_DATA: the expression's own attributes.
    pub data: &'a [u8],
}

/// What one buffer of netlink messages held.
#[derive(Debug, Default)]
pub struct Chunk<'a> {
    pub chains: Vec<Chain>,
    pub rules: Vec<RuleMsg<'a>>,
    /// NLMSG_DONE seen (or an error, which also ends the dump).
    pub done: bool,
    /// errno the kernel answered with (positive).
    pub error: Option<i32>,
    /// Messages too short or cut.
    pub damaged: u64,
}

/// A dump request: every chain of `family`.
pub fn chain_dump_request(seq: u32, family: u8) -> Vec<u8> {
    Request::dump(Subsystem::Nftables, NFT_MSG_GETCHAIN, seq, family).finish()
}

/// Dump request for the rules of `table`/`chain` only: the kernel finds the chain by hash and walks
/// its rules alone, where a whole-table dump rescans every earlier rule for each buffer it fills.
pub fn rule_dump_request(seq: u32, family: u8, table: &str, chain: &str) -> Vec<u8> {
    Request::dump(Subsystem::Nftables, NFT_MSG_GETRULE, seq, family)
        .attr_str(NFTA_RULE_TABLE, table)
        .attr_str(NFTA_RULE_CHAIN, chain)
        .finish()
}

pub(crate) use super::netlink::attrs;
use super::netlink::value::cstr as zstr;
use super::netlink::value::{self, be32, be64};
use super::netlink::{messages, DumpEnd, Request, Subsystem};
use netsleuth_core::wire::field;
use netsleuth_core::wire::ip::{ipv4, ipv6};
use netsleuth_core::wire::transport::tcp;
use netsleuth_core::wire::IpProtocol;

/// Transport header offsets a `payload` load of base 2 (NFT_PAYLOAD_TRANSPORT_HEADER) compares: the
/// ports (TCP and UDP agree) and TCP's flags byte.
const TH_SPORT: u32 = tcp::field::SRC_PORT.start as u32;
const TH_DPORT: u32 = tcp::field::DST_PORT.start as u32;
const TH_FLAGS: u32 = tcp::field::FLAGS as u32;

fn cstr(v: &[u8]) -> String {
    String::from_utf8_lossy(zstr(v)).into_owned()
}

/// Parses one received buffer of netlink messages.
pub fn parse_chunk(buf: &[u8]) -> Chunk<'_> {
    let mut c = Chunk::default();
    let mut end = DumpEnd::default();
    let mut msgs = messages(buf);
    for m in &mut msgs {
        if end.see(&m) {
            continue;
        }
        let Some(body) = m.nfnetlink() else { continue };
        match m.ty {
            t if t == Subsystem::Nftables.message(NFT_MSG_NEWCHAIN) => {
                match parse_chain(body.family, body.attrs) {
                    Some(ch) => c.chains.push(ch),
                    None => c.damaged += 1,
                }
            }
            t if t == Subsystem::Nftables.message(NFT_MSG_NEWRULE) => {
                match parse_rule(body.family, body.attrs) {
                    Some(r) => c.rules.push(r),
                    None => c.damaged += 1,
                }
            }
            _ => {}
        }
    }
    if msgs.damaged {
        c.damaged += 1;
    }
    (c.done, c.error) = (end.done, end.error);
    c
}

fn parse_chain(family: u8, body: &[u8]) -> Option<Chain> {
    let mut ch = Chain {
        family,
        table: String::new(),
        name: String::new(),
        hook: None,
        policy: None,
        packets: 0,
        bytes: 0,
    };
    for (ty, v) in attrs(body) {
        match ty {
            1 => ch.table = cstr(v),
            3 => ch.name = cstr(v),
            4 => {
                for (hty, hv) in attrs(v) {
                    if hty == 1 {
                        ch.hook = be32(hv);
                    }
                }
            }
            5 => {
                ch.policy = match be32(v) {
                    Some(0) => Some("DROP"),
                    Some(1) => Some("ACCEPT"),
                    _ => None,
                }
            }
            8 => {
                for (cty, cv) in attrs(v) {
                    match cty {
                        1 => ch.bytes = be64(cv).unwrap_or(0),
                        2 => ch.packets = be64(cv).unwrap_or(0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (!ch.name.is_empty()).then_some(ch)
}

fn parse_rule(family: u8, body: &[u8]) -> Option<RuleMsg<'_>> {
    let mut r = RuleMsg {
        family,
        table: &[],
        chain: &[],
        handle: 0,
        exprs: Vec::with_capacity(8),
        userdata: &[],
    };
    for (ty, v) in attrs(body) {
        match ty {
            1 => r.table = zstr(v),
            2 => r.chain = zstr(v),
            3 => r.handle = be64(v).unwrap_or(0),
            4 => {
                for (ety, ev) in attrs(v) {
                    if ety != 1 {
                        continue;
                    }
                    let mut e = RawExpr {
                        name: &[],
                        data: &[],
                    };
                    for (aty, av) in attrs(ev) {
                        match aty {
                            1 => e.name = zstr(av),
                            2 => e.data = av,
                            _ => {}
                        }
                    }
                    r.exprs.push(e);
                }
            }
            7 => r.userdata = v,
            _ => {}
        }
    }
    (!r.chain.is_empty()).then_some(r)
}

/// Why a rule could not be written back exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrendered {
    pub chain: String,
    pub handle: u64,
    pub reason: String,
}

/// A table written as `iptables-save` text, and the rules that could not be.
#[derive(Debug, Default)]
pub struct RenderedTable {
    pub text: String,
    pub rules: usize,
    pub unrendered: Vec<Unrendered>,
}

const HOOKS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// Writes one table the way `iptables-save` does: `*table`, base chains in hook order with policy and
/// counters, user chains by name, then each chain's rules in that same order, then `COMMIT`. Rules are
/// pushed as they arrive, chain after chain in [`TableRenderer::chain_order`].
pub struct TableRenderer {
    family: u8,
    order: Vec<String>,
    out: RenderedTable,
}

impl TableRenderer {
    pub fn new(family: u8, table: &str, chains: &[Chain]) -> TableRenderer {
        let mut base: Vec<&Chain> = chains.iter().filter(|c| c.hook.is_some()).collect();
        base.sort_by_key(|c| c.hook);
        let mut user: Vec<&Chain> = chains.iter().filter(|c| c.hook.is_none()).collect();
        user.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        let mut out = RenderedTable::default();
        let _ = writeln!(out.text, "*{table}");
        for c in base.iter().chain(user.iter()) {
            let policy = c.policy.unwrap_or("-");
            let _ = writeln!(
                out.text,
                ":{} {} [{}:{}]",
                c.name, policy, c.packets, c.bytes
            );
        }
        TableRenderer {
            family,
            order: base
                .iter()
                .chain(user.iter())
                .map(|c| c.name.clone())
                .collect(),
            out,
        }
    }

    /// The chains in the order their rules must be pushed.
    pub fn chain_order(&self) -> &[String] {
        &self.order
    }

    pub fn push(&mut self, r: &RuleMsg<'_>) {
        self.out.push_rule(self.family, r);
    }

    /// Appends text rendered elsewhere (another thread's share of the chains, in order).
    pub fn append(&mut self, other: RenderedTable) {
        self.out.text.push_str(&other.text);
        self.out.rules += other.rules;
        self.out.unrendered.extend(other.unrendered);
    }

    pub fn finish(mut self) -> RenderedTable {
        self.out.text.push_str("COMMIT\n");
        self.out
    }
}

impl RenderedTable {
    /// Renders one rule onto the end of the text, or records why it cannot be.
    pub fn push_rule(&mut self, family: u8, r: &RuleMsg<'_>) {
        let start = self.text.len();
        match render_rule_into(family, r, &mut self.text) {
            Ok(()) => {
                self.text.push('\n');
                self.rules += 1;
            }
            Err(reason) => {
                self.text.truncate(start);
                self.unrendered.push(Unrendered {
                    chain: String::from_utf8_lossy(r.chain).into_owned(),
                    handle: r.handle,
                    reason,
                });
            }
        }
    }
}

/// Is this a base chain name iptables knows (so the table has iptables-nft's layout)?
pub fn is_xtables_base_chain(name: &str) -> bool {
    HOOKS.contains(&name)
}

/// What a register holds after a load.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reg {
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    Meta(u32),
    Ct(u32),
    /// A value masked by `bitwise`: the load it came from and the mask.
    Masked {
        from: Loaded,
        mask: [u8; 16],
        len: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Loaded {
    Payload { base: u32, offset: u32, len: u32 },
    Meta(u32),
    Ct(u32),
}

impl Reg {
    fn loaded(&self) -> Loaded {
        match *self {
            Reg::Payload { base, offset, len } => Loaded::Payload { base, offset, len },
            Reg::Meta(k) => Loaded::Meta(k),
            Reg::Ct(k) => Loaded::Ct(k),
            Reg::Masked { from, .. } => from,
        }
    }
}

/// The parts of an iptables rule, in the order iptables-save prints them.
#[derive(Default)]
struct Parts {
    src: Option<(Vec<u8>, Vec<u8>, bool)>,
    dst: Option<(Vec<u8>, Vec<u8>, bool)>,
    iniface: Option<(String, bool)>,
    outiface: Option<(String, bool)>,
    proto: Option<(u8, bool)>,
    /// `-m name options`, in the order met.
    matches: Vec<(String, String)>,
    /// Index into `matches` of the tcp/udp match synthesised from native port expressions.
    l4_match: Option<usize>,
    l4_ports: L4Ports,
    target: Option<String>,
}

#[derive(Default, Clone, Copy)]
struct L4Ports {
    sport: Option<(u16, u16, bool)>,
    dport: Option<(u16, u16, bool)>,
    flags: Option<(u8, u8, bool)>,
}

fn nla_data_value(v: &[u8]) -> Option<Vec<u8>> {
    attrs(v).find(|(t, _)| *t == 1).map(|(_, d)| d.to_vec())
}

/// Renders one rule as `-A CHAIN …`; `Err(reason)` when an expression is not understood exactly.
pub fn render_rule(family: u8, r: &RuleMsg<'_>) -> Result<String, String> {
    let mut s = String::new();
    render_rule_into(family, r, &mut s).map(|()| s)
}

fn render_rule_into(family: u8, r: &RuleMsg<'_>, line: &mut String) -> Result<(), String> {
    let mut p = Parts::default();
    let mut regs: [Option<Reg>; 32] = [None; 32];
    let reg_ix = |r: u32| -> Result<usize, String> {
        // NFT_REG_1..4 (16 bytes each) and NFT_REG32_00..15 (8..23) both map to a slot.
        let i = r as usize;
        if i < 32 {
            Ok(i)
        } else {
            Err(format!("register {r}"))
        }
    };
    let mut exprs = r.exprs.iter().peekable();
    while let Some(e) = exprs.next() {
        let mut a: [(u16, &[u8]); 8] = [(0, &[]); 8];
        for (i, x) in attrs(e.data).take(8).enumerate() {
            a[i] = x;
        }
        let get = |t: u16| a.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v);
        let get32 = |t: u16| get(t).and_then(be32);
        match e.name {
            b"counter" => {}
            b"payload" => {
                let (Some(dreg), Some(base), Some(offset), Some(len)) =
                    (get32(1), get32(2), get32(3), get32(4))
                else {
                    return Err("payload write".into());
                };
                regs[reg_ix(dreg)?] = Some(Reg::Payload { base, offset, len });
            }
            b"meta" => {
                let (Some(dreg), Some(key)) = (get32(1), get32(2)) else {
                    return Err("meta set".into());
                };
                regs[reg_ix(dreg)?] = Some(Reg::Meta(key));
            }
            b"ct" => {
                let (Some(dreg), Some(key)) = (get32(1), get32(2)) else {
                    return Err("ct set".into());
                };
                if get(3).is_some() {
                    return Err("ct with direction".into());
                }
                regs[reg_ix(dreg)?] = Some(Reg::Ct(key));
            }
            b"bitwise" => {
                let (Some(sreg), Some(dreg), Some(len)) = (get32(1), get32(2), get32(3)) else {
                    return Err("bitwise".into());
                };
                if get32(6).unwrap_or(0) != 0 {
                    return Err("bitwise shift".into());
                }
                let mask = get(4).and_then(nla_data_value).unwrap_or_default();
                let xor = get(5).and_then(nla_data_value).unwrap_or_default();
                if xor.iter().any(|b| *b != 0) || mask.len() > 16 {
                    return Err("bitwise xor".into());
                }
                let from = regs[reg_ix(sreg)?].ok_or("bitwise of nothing")?;
                let mut m = [0u8; 16];
                m[..mask.len()].copy_from_slice(&mask);
                regs[reg_ix(dreg)?] = Some(Reg::Masked {
                    from: from.loaded(),
                    mask: m,
                    len: (len as usize).min(16),
                });
            }
            b"cmp" => {
                let (Some(sreg), Some(op)) = (get32(1), get32(2)) else {
                    return Err("cmp".into());
                };
                let data = get(3).and_then(nla_data_value).ok_or("cmp data")?;
                let reg = regs[reg_ix(sreg)?].ok_or("cmp of nothing")?;
                // A range is two compares on the same load: `>= lo` then `<= hi`.
                if op == 5 {
                    if let Some(next) = exprs.peek() {
                        if next.name == b"cmp" {
                            let na: Vec<(u16, &[u8])> = attrs(next.data).collect();
                            let nget = |t: u16| na.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v);
                            if nget(1).and_then(be32) == Some(sreg)
                                && nget(2).and_then(be32) == Some(3)
                            {
                                let hi = nget(3).and_then(nla_data_value).ok_or("cmp data")?;
                                exprs.next();
                                cmp_range(&mut p, reg, &data, &hi, false)?;
                                continue;
                            }
                        }
                    }
                    return Err("cmp >= alone".into());
                }
                cmp(family, &mut p, reg, op, &data)?;
            }
            b"range" => {
                let (Some(sreg), Some(op)) = (get32(1), get32(2)) else {
                    return Err("range".into());
                };
                let lo = get(3).and_then(nla_data_value).ok_or("range data")?;
                let hi = get(4).and_then(nla_data_value).ok_or("range data")?;
                let reg = regs[reg_ix(sreg)?].ok_or("range of nothing")?;
                cmp_range(&mut p, reg, &lo, &hi, op == 1)?;
            }
            b"immediate" => {
                let dreg = get32(1).ok_or("immediate")?;
                if dreg != 0 {
                    return Err("immediate to a data register".into());
                }
                let data = get(2).ok_or("immediate data")?;
                let verdict = attrs(data)
                    .find(|(t, _)| *t == 2)
                    .map(|(_, v)| v)
                    .ok_or("immediate value")?;
                let mut code = None;
                let mut chain = None;
                for (t, v) in attrs(verdict) {
                    match t {
                        1 => code = be32(v).map(|c| c as i32),
                        2 => chain = Some(cstr(v)),
                        _ => {}
                    }
                }
                p.target = Some(match (code, chain) {
                    (Some(1), _) => " -j ACCEPT".into(),
                    (Some(0), _) => " -j DROP".into(),
                    (Some(-5), _) => " -j RETURN".into(),
                    (Some(-3), Some(c)) => format!(" -j {c}"),
                    (Some(-4), Some(c)) => format!(" -g {c}"),
                    (c, _) => return Err(format!("verdict {c:?}")),
                });
            }
            b"match" => {
                let name = get(1).map(cstr).ok_or("match name")?;
                let rev = get32(2).unwrap_or(0);
                let info = get(3).unwrap_or(&[]);
                let opts = match_options(&name, rev, info)?;
                if matches!(name.as_str(), "tcp" | "udp") {
                    p.l4_match = None;
                }
                p.matches.push((name, opts));
            }
            b"target" => {
                let name = get(1).map(cstr).ok_or("target name")?;
                let rev = get32(2).unwrap_or(0);
                let info = get(3).unwrap_or(&[]);
                let opts = target_options(family, &name, rev, info)?;
                p.target = Some(format!(" -j {name}{opts}"));
            }
            other => return Err(format!("expression {}", String::from_utf8_lossy(other))),
        }
    }
    if !r.userdata.is_empty() {
        // iptables-nft ≥ 1.8.? keeps `-m comment` in the rule's user data (TLV type 0: comment).
        let mut u = r.userdata;
        while u.len() >= 2 {
            let (t, l) = (u[0], u[1] as usize);
            let Some(v) = u.get(2..2 + l) else { break };
            if t == 0 {
                let mut s = String::new();
                save_string(&mut s, &cstr(v));
                p.matches.push(("comment".into(), format!(" --comment{s}")));
            }
            u = &u[2 + l..];
        }
    }
    if let Some(i) = p.l4_match {
        p.matches[i].1 = l4_options(&p.l4_ports);
    }
    line.push_str("-A ");
    line.push_str(&String::from_utf8_lossy(r.chain));
    let addr = |line: &mut String, letter: char, a: &Option<(Vec<u8>, Vec<u8>, bool)>| {
        if let Some((addr, mask, inv)) = a {
            let _ = write!(
                line,
                "{} -{letter} {}",
                if *inv { " !" } else { "" },
                addr_mask(family, addr, mask)
            );
        }
    };
    addr(line, 's', &p.src);
    addr(line, 'd', &p.dst);
    if let Some((i, inv)) = &p.iniface {
        let _ = write!(line, "{} -i {i}", if *inv { " !" } else { "" });
    }
    if let Some((o, inv)) = &p.outiface {
        let _ = write!(line, "{} -o {o}", if *inv { " !" } else { "" });
    }
    if let Some((proto, inv)) = p.proto {
        let _ = write!(
            line,
            "{} -p {}",
            if inv { " !" } else { "" },
            proto_name(family, proto)
        );
    }
    for (name, opts) in &p.matches {
        let _ = write!(line, " -m {name}{opts}");
    }
    if let Some(t) = &p.target {
        line.push_str(t);
    }
    Ok(())
}

fn addr_len(family: u8) -> usize {
    if family == NFPROTO_IPV6 {
        16
    } else {
        4
    }
}

/// The address a compare gives, with its mask (prefix by load length or by `bitwise`).
fn addr_mask(family: u8, addr: &[u8], mask: &[u8]) -> String {
    let n = addr_len(family);
    let mut a = vec![0u8; n];
    let mut m = vec![0u8; n];
    for i in 0..n {
        a[i] = *addr.get(i).unwrap_or(&0);
        m[i] = *mask.get(i).unwrap_or(&0);
    }
    let ones: u32 = m.iter().map(|b| b.count_ones()).sum();
    let contiguous = {
        let bits: Vec<bool> = m
            .iter()
            .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1 == 1))
            .collect();
        bits.windows(2).all(|w| w[0] || !w[1])
    };
    let text = |b: &[u8]| -> String {
        if n == 4 {
            Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()
        } else {
            let mut x = [0u8; 16];
            x.copy_from_slice(b);
            Ipv6Addr::from(x).to_string()
        }
    };
    if contiguous {
        format!("{}/{ones}", text(&a))
    } else {
        format!("{}/{}", text(&a), text(&m))
    }
}

fn cmp(family: u8, p: &mut Parts, reg: Reg, op: u32, data: &[u8]) -> Result<(), String> {
    let inv = match op {
        0 => false,
        1 => true,
        _ => return Err(format!("cmp op {op}")),
    };
    let (from, mask) = match reg {
        Reg::Masked { from, mask, len } => (from, Some((mask, len))),
        r => (r.loaded(), None),
    };
    let (nh_src, nh_dst) = if family == NFPROTO_IPV6 {
        (ipv6::field::SRC_ADDR.start, ipv6::field::DST_ADDR.start)
    } else {
        (ipv4::field::SRC_ADDR.start, ipv4::field::DST_ADDR.start)
    };
    let (nh_src, nh_dst) = (nh_src as u32, nh_dst as u32);
    match from {
        Loaded::Payload {
            base: 1,
            offset,
            len,
        } if (offset == nh_src || offset == nh_dst) && len as usize <= addr_len(family) => {
            let m: Vec<u8> = match mask {
                Some((m, l)) => m[..l.min(len as usize)].to_vec(),
                None => vec![0xff; len as usize],
            };
            let v = (data.to_vec(), m, inv);
            if offset == nh_src {
                p.src = Some(v);
            } else {
                p.dst = Some(v);
            }
        }
        Loaded::Meta(16) if mask.is_none() && data.len() == 1 => p.proto = Some((data[0], inv)),
        Loaded::Meta(k @ (6 | 7)) if mask.is_none() => {
            // An exact name is compared with its NUL; a `name+` wildcard without it.
            let name = match data.iter().position(|b| *b == 0) {
                Some(i) => String::from_utf8_lossy(&data[..i]).into_owned(),
                None => format!("{}+", String::from_utf8_lossy(data)),
            };
            if k == 6 {
                p.iniface = Some((name, inv));
            } else {
                p.outiface = Some((name, inv));
            }
        }
        Loaded::Meta(3) => {
            // -m mark [!] --mark value[/mask] (meta mark is host-endian).
            let v = value::ne32(data).ok_or("mark value")?;
            let m = match mask {
                Some((m, _)) => u32::from_ne_bytes(field::get(&m, 0..4)),
                None => u32::MAX,
            };
            let mut o = String::new();
            if inv {
                o.push_str(" !");
            }
            o.push_str(" --mark");
            print_mark(&mut o, v, m);
            p.matches.push(("mark".into(), o));
        }
        Loaded::Ct(0) => {
            // -m conntrack --ctstate: `ct state & S != 0` (inverted: `== 0`).
            let Some((m, _)) = mask else {
                return Err("ct state without mask".into());
            };
            if data.iter().any(|b| *b != 0) {
                return Err("ct state compared to a value".into());
            }
            let bits = u32::from_ne_bytes(field::get(&m, 0..4));
            let mut o = String::new();
            if !inv {
                o.push_str(" !");
            }
            o.push_str(" --ctstate");
            let mut sep = " ";
            for (bit, name) in [
                (1u32, "INVALID"),
                (8, "NEW"),
                (4, "RELATED"),
                (2, "ESTABLISHED"),
                (64, "UNTRACKED"),
            ] {
                if bits & bit != 0 {
                    let _ = write!(o, "{sep}{name}");
                    sep = ",";
                }
            }
            p.matches.push(("conntrack".into(), o));
        }
        Loaded::Payload {
            base: 2,
            offset,
            len,
        } => {
            let proto = p.proto.filter(|(_, inv)| !inv).map(|(pr, _)| pr);
            match (offset, len, mask) {
                (TH_SPORT | TH_DPORT, 2, None) => {
                    let port = value::be16(data).ok_or("port")?;
                    l4_port(p, proto, offset, (port, port, inv))?;
                }
                (TH_FLAGS, 1, Some((m, _))) if proto == Some(IpProtocol::Tcp.into()) => {
                    let v = *data.first().ok_or("tcp flags")?;
                    l4_slot(p, proto)?;
                    p.l4_ports.flags = Some((m[0], v, inv));
                }
                _ => return Err(format!("transport header load @{offset} len {len}")),
            }
        }
        other => return Err(format!("compare on {other:?}")),
    }
    Ok(())
}

fn cmp_range(p: &mut Parts, reg: Reg, lo: &[u8], hi: &[u8], inv: bool) -> Result<(), String> {
    match reg {
        Reg::Payload {
            base: 2,
            offset: offset @ (TH_SPORT | TH_DPORT),
            len: 2,
        } => {
            let proto = p.proto.filter(|(_, inv)| !inv).map(|(pr, _)| pr);
            let lo = value::be16(lo).ok_or("port")?;
            let hi = value::be16(hi).ok_or("port")?;
            l4_port(p, proto, offset, (lo, hi, inv))
        }
        other => Err(format!("range on {other:?}")),
    }
}

/// Makes sure the rule has its synthesised tcp/udp match (iptables-nft shows native port compares as
/// `-m tcp`/`-m udp` at the place of the first one).
fn l4_slot(p: &mut Parts, proto: Option<u8>) -> Result<(), String> {
    if p.l4_match.is_none() {
        let name = match proto.map(IpProtocol::from) {
            Some(IpProtocol::Tcp) => "tcp",
            Some(IpProtocol::Udp) => "udp",
            _ => return Err("port compare without -p tcp/udp".into()),
        };
        p.matches.push((name.into(), String::new()));
        p.l4_match = Some(p.matches.len() - 1);
    }
    Ok(())
}

fn l4_port(
    p: &mut Parts,
    proto: Option<u8>,
    offset: u32,
    v: (u16, u16, bool),
) -> Result<(), String> {
    l4_slot(p, proto)?;
    if offset == TH_SPORT {
        p.l4_ports.sport = Some(v);
    } else {
        p.l4_ports.dport = Some(v);
    }
    Ok(())
}

fn l4_options(l: &L4Ports) -> String {
    let mut o = String::new();
    for (name, v) in [("sport", l.sport), ("dport", l.dport)] {
        if let Some((lo, hi, inv)) = v {
            if inv {
                o.push_str(" !");
            }
            if lo == hi {
                let _ = write!(o, " --{name} {lo}");
            } else {
                let _ = write!(o, " --{name} {lo}:{hi}");
            }
        }
    }
    if let Some((mask, cmp, inv)) = l.flags {
        if inv {
            o.push_str(" !");
        }
        o.push_str(" --tcp-flags ");
        tcp_flags(&mut o, mask);
        o.push(' ');
        tcp_flags(&mut o, cmp);
    }
    o
}

fn tcp_flags(o: &mut String, mut flags: u8) {
    use netsleuth_core::wire::tcp_flags::{ACK, FIN, PSH, RST, SYN, URG};
    const NAMES: [(&str, u8); 6] = [
        ("FIN", FIN),
        ("SYN", SYN),
        ("RST", RST),
        ("PSH", PSH),
        ("ACK", ACK),
        ("URG", URG),
    ];
    let mut first = true;
    for (name, bit) in NAMES {
        if flags & bit != 0 {
            if !first {
                o.push(',');
            }
            o.push_str(name);
            first = false;
            flags &= !bit;
        }
    }
    if first {
        o.push_str("NONE");
    }
}

fn print_mark(o: &mut String, mark: u32, mask: u32) {
    if mask != u32::MAX {
        let _ = write!(o, " 0x{mark:x}/0x{mask:x}");
    } else {
        let _ = write!(o, " 0x{mark:x}");
    }
}

/// The protocol as `iptables-save` names it (its `/etc/protocols`-like table), else the number.
fn proto_name(family: u8, p: u8) -> String {
    match IpProtocol::from(p) {
        IpProtocol::Tcp => "tcp".into(),
        IpProtocol::Udp => "udp".into(),
        IpProtocol::Icmp => "icmp".into(),
        IpProtocol::Icmpv6 if family == NFPROTO_IPV6 => "ipv6-icmp".into(),
        IpProtocol::Icmpv6 => "icmpv6".into(),
        IpProtocol::Sctp => "sctp".into(),
        IpProtocol::UdpLite => "udplite".into(),
        IpProtocol::Esp => "esp".into(),
        IpProtocol::Ah => "ah".into(),
        _ => p.to_string(),
    }
}

/// `xtables_save_string`: bare when only `[A-Za-z0-9_-]`, else double-quoted with `"`, `\`, `'` escaped.
fn save_string(o: &mut String, s: &str) {
    let bare = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    o.push(' ');
    if bare {
        o.push_str(s);
        return;
    }
    o.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            o.push('\\');
        }
        o.push(c);
    }
    o.push('"');
}

/// The x_tables info structs iptables-nft keeps in its `match` and `target` expressions (host byte
/// order unless a field says network order), by the kernel's `linux/netfilter/xt_*.h` layouts.
mod xt {
    /// `struct xt_statistic_info`.
    pub mod statistic {
        use netsleuth_core::wire::field::Field;
        pub const MODE: Field = 0..2;
        pub const FLAGS: Field = 2..4;
        /// Random mode: probability × 2³¹.
        pub const PROBABILITY: Field = 4..8;
        /// Nth mode.
        pub const EVERY: Field = 4..8;
        pub const PACKET: Field = 8..12;
        pub const MODE_RANDOM: u16 = 0;
        pub const MODE_NTH: u16 = 1;
        pub const INVERT: u16 = 1;
    }
    /// `struct xt_tcp` and `struct xt_udp` (which ends after its flags byte).
    pub mod tcp_udp {
        use netsleuth_core::wire::field::Field;
        pub const SPORT_MIN: Field = 0..2;
        pub const SPORT_MAX: Field = 2..4;
        pub const DPORT_MIN: Field = 4..6;
        pub const DPORT_MAX: Field = 6..8;
        pub const TCP_OPTION: usize = 8;
        pub const TCP_FLG_MASK: usize = 9;
        pub const TCP_FLG_CMP: usize = 10;
        pub const TCP_INVFLAGS: usize = 11;
        pub const UDP_INVFLAGS: usize = 8;
        pub const INV_SRCPT: u8 = 1;
        pub const INV_DSTPT: u8 = 2;
        pub const INV_FLAGS: u8 = 4;
        pub const INV_OPTION: u8 = 8;
    }
    /// `struct xt_addrtype_info_v1`.
    pub mod addrtype {
        use netsleuth_core::wire::field::Field;
        pub const SOURCE: Field = 0..2;
        pub const DEST: Field = 2..4;
        pub const FLAGS: Field = 4..8;
        pub const INVERT_SOURCE: u32 = 1;
        pub const INVERT_DEST: u32 = 2;
        pub const LIMIT_IFACE_IN: u32 = 4;
        pub const LIMIT_IFACE_OUT: u32 = 8;
    }
    /// `struct xt_mark_mtinfo1` (match) and `struct xt_mark_tginfo2` (target).
    pub mod mark {
        use netsleuth_core::wire::field::Field;
        pub const MARK: Field = 0..4;
        pub const MASK: Field = 4..8;
        pub const INVERT: usize = 8;
    }
    /// `struct xt_conntrack_mtinfo3`: the state part after the addresses, ports and expiry.
    pub mod conntrack {
        use netsleuth_core::wire::field::Field;
        pub const MATCH_FLAGS: Field = 146..148;
        pub const INVERT_FLAGS: Field = 148..150;
        pub const STATE_MASK: Field = 150..152;
    }
    /// `struct xt_nfacct_match_info`.
    pub mod nfacct {
        use netsleuth_core::wire::field::Field;
        pub const NAME: Field = 0..32;
    }
    /// `struct nf_nat_ipv4_multi_range_compat` with its one range (NAT targets rev 0); ports in
    /// network order.
    pub mod nat_v0 {
        use netsleuth_core::wire::field::Field;
        pub const RANGESIZE: Field = 0..4;
        pub const FLAGS: Field = 4..8;
        pub const MIN_IP: Field = 8..12;
        pub const MAX_IP: Field = 12..16;
        pub const MIN_PORT: Field = 16..18;
        pub const MAX_PORT: Field = 18..20;
    }
    /// `struct nf_nat_range` (rev 1) and `struct nf_nat_range2` (rev 2, with the base port);
    /// addresses are `union nf_inet_addr` (16 bytes, an IPv4 address in the first 4); ports in
    /// network order.
    pub mod nat_range {
        use netsleuth_core::wire::field::Field;
        pub const FLAGS: Field = 0..4;
        pub const MIN_ADDR: Field = 4..20;
        pub const MAX_ADDR: Field = 20..36;
        pub const MIN_PORT: Field = 36..38;
        pub const MAX_PORT: Field = 38..40;
        pub const BASE_PORT: Field = 40..42;
    }
    /// `struct ipt_reject_info` / `struct ip6t_reject_info`.
    pub mod reject {
        use netsleuth_core::wire::field::Field;
        pub const WITH: Field = 0..4;
    }
}

/// The options `iptables-save` prints after `-m NAME` for the compat (x_tables) matches it knows.
fn match_options(name: &str, rev: u32, info: &[u8]) -> Result<String, String> {
    let mut o = String::new();
    let short = |_: field::Short| format!("match {name} rev {rev}: info too short");
    match (name, rev) {
        ("comment", 0) => {
            o.push_str(" --comment");
            save_string(&mut o, &cstr(info));
        }
        ("statistic", 0) => {
            use xt::statistic::*;
            let mode = field::ne16(info, MODE).map_err(short)?;
            let flags = field::ne16(info, FLAGS).map_err(short)?;
            let inv = if flags & INVERT != 0 { " !" } else { "" };
            match mode {
                MODE_RANDOM => {
                    let p = field::ne32(info, PROBABILITY).map_err(short)?;
                    let _ = write!(
                        o,
                        " --mode random{inv} --probability {:.11}",
                        p as f64 / 2147483648.0
                    );
                }
                MODE_NTH => {
                    let every = field::ne32(info, EVERY).map_err(short)?;
                    let packet = field::ne32(info, PACKET).map_err(short)?;
                    let _ = write!(
                        o,
                        " --mode nth{inv} --every {} --packet {packet}",
                        every.wrapping_add(1)
                    );
                }
                m => return Err(format!("statistic mode {m}")),
            }
        }
        ("tcp", 0) | ("udp", 0) => {
            use xt::tcp_udp::*;
            let sp = (
                field::ne16(info, SPORT_MIN).map_err(short)?,
                field::ne16(info, SPORT_MAX).map_err(short)?,
            );
            let dp = (
                field::ne16(info, DPORT_MIN).map_err(short)?,
                field::ne16(info, DPORT_MAX).map_err(short)?,
            );
            let (option, flg_mask, flg_cmp, inv) = if name == "tcp" {
                (
                    field::u8(info, TCP_OPTION).map_err(short)?,
                    field::u8(info, TCP_FLG_MASK).map_err(short)?,
                    field::u8(info, TCP_FLG_CMP).map_err(short)?,
                    field::u8(info, TCP_INVFLAGS).map_err(short)?,
                )
            } else {
                (0, 0, 0, field::u8(info, UDP_INVFLAGS).map_err(short)?)
            };
            let mut l = L4Ports::default();
            if sp != (0, 0xffff) {
                l.sport = Some((sp.0, sp.1, inv & INV_SRCPT != 0));
            }
            if dp != (0, 0xffff) {
                l.dport = Some((dp.0, dp.1, inv & INV_DSTPT != 0));
            }
            o = l4_options(&L4Ports { flags: None, ..l });
            if option != 0 || inv & INV_OPTION != 0 {
                if inv & INV_OPTION != 0 {
                    o.push_str(" !");
                }
                let _ = write!(o, " --tcp-option {option}");
            }
            if flg_mask != 0 || inv & INV_FLAGS != 0 {
                if inv & INV_FLAGS != 0 {
                    o.push_str(" !");
                }
                o.push_str(" --tcp-flags ");
                tcp_flags(&mut o, flg_mask);
                o.push(' ');
                tcp_flags(&mut o, flg_cmp);
            }
        }
        ("addrtype", 1) => {
            const RTN: [&str; 12] = [
                "UNSPEC",
                "UNICAST",
                "LOCAL",
                "BROADCAST",
                "ANYCAST",
                "MULTICAST",
                "BLACKHOLE",
                "UNREACHABLE",
                "PROHIBIT",
                "THROW",
                "NAT",
                "XRESOLVE",
            ];
            use xt::addrtype::*;
            let src = field::ne16(info, SOURCE).map_err(short)?;
            let dst = field::ne16(info, DEST).map_err(short)?;
            let flags = field::ne32(info, FLAGS).map_err(short)?;
            let types = |o: &mut String, m: u16| {
                let mut sep = "";
                for (i, n) in RTN.iter().enumerate() {
                    if m & (1 << i) != 0 {
                        let _ = write!(o, "{sep}{n}");
                        sep = ",";
                    }
                }
            };
            if src != 0 {
                if flags & INVERT_SOURCE != 0 {
                    o.push_str(" !");
                }
                o.push_str(" --src-type ");
                types(&mut o, src);
            }
            if dst != 0 {
                if flags & INVERT_DEST != 0 {
                    o.push_str(" !");
                }
                o.push_str(" --dst-type ");
                types(&mut o, dst);
            }
            if flags & LIMIT_IFACE_IN != 0 {
                o.push_str(" --limit-iface-in");
            }
            if flags & LIMIT_IFACE_OUT != 0 {
                o.push_str(" --limit-iface-out");
            }
        }
        ("mark", 1) => {
            let mark = field::ne32(info, xt::mark::MARK).map_err(short)?;
            let mask = field::ne32(info, xt::mark::MASK).map_err(short)?;
            if field::u8(info, xt::mark::INVERT).map_err(short)? != 0 {
                o.push_str(" !");
            }
            o.push_str(" --mark");
            print_mark(&mut o, mark, mask);
        }
        ("conntrack", 3) => {
            // Only the state part (`--ctstate`), the one firewalls and kube-proxy use.
            use xt::conntrack::*;
            let match_flags = field::ne16(info, MATCH_FLAGS).map_err(short)?;
            let invert = field::ne16(info, INVERT_FLAGS).map_err(short)?;
            let state = field::ne16(info, STATE_MASK).map_err(short)?;
            if match_flags & !0x2001 != 0 {
                return Err(format!("conntrack match flags {match_flags:#x}"));
            }
            if match_flags & 1 != 0 {
                if invert & 1 != 0 {
                    o.push_str(" !");
                }
                o.push_str(if match_flags & 0x2000 != 0 {
                    " --state"
                } else {
                    " --ctstate"
                });
                let mut sep = " ";
                for (bit, n) in [
                    (1u16, "INVALID"),
                    (8, "NEW"),
                    (4, "RELATED"),
                    (2, "ESTABLISHED"),
                    (256, "UNTRACKED"),
                    (64, "SNAT"),
                    (128, "DNAT"),
                ] {
                    if state & bit != 0 {
                        let _ = write!(o, "{sep}{n}");
                        sep = ",";
                    }
                }
            }
        }
        ("nfacct", _) => {
            o.push_str(" --nfacct-name");
            let name = field::slice(info, xt::nfacct::NAME).map_err(short)?;
            save_string(&mut o, &cstr(name));
        }
        _ => return Err(format!("match {name} rev {rev}")),
    }
    Ok(o)
}

/// nf_nat_range2 read from the compat layouts of each revision.
struct NatRange {
    flags: u32,
    min_addr: Vec<u8>,
    max_addr: Vec<u8>,
    min_port: u16,
    max_port: u16,
    base_port: u16,
}

fn nat_range(family: u8, rev: u32, info: &[u8]) -> Option<NatRange> {
    match rev {
        // nf_nat_ipv4_multi_range_compat: rangesize, flags, min_ip, max_ip, min, max
        0 => {
            use xt::nat_v0::*;
            Some(NatRange {
                flags: field::ne32(info, FLAGS).ok()?,
                min_addr: field::slice(info, MIN_IP).ok()?.to_vec(),
                max_addr: field::slice(info, MAX_IP).ok()?.to_vec(),
                min_port: field::be16(info, MIN_PORT).ok()?,
                max_port: field::be16(info, MAX_PORT).ok()?,
                base_port: 0,
            })
        }
        // nf_nat_range (rev 1) and nf_nat_range2 (rev 2): flags, min_addr[16], max_addr[16], min, max[, base]
        1 | 2 => {
            use xt::nat_range::*;
            let n = addr_len(family);
            let addr = |f: field::Field| field::slice(info, f.start..f.start + n).ok();
            Some(NatRange {
                flags: field::ne32(info, FLAGS).ok()?,
                min_addr: addr(MIN_ADDR)?.to_vec(),
                max_addr: addr(MAX_ADDR)?.to_vec(),
                min_port: field::be16(info, MIN_PORT).ok()?,
                max_port: field::be16(info, MAX_PORT).ok()?,
                base_port: if rev == 2 {
                    field::be16(info, BASE_PORT).ok()?
                } else {
                    0
                },
            })
        }
        _ => None,
    }
}

const NAT_MAP_IPS: u32 = 1;
const NAT_PROTO_SPECIFIED: u32 = 2;
const NAT_PROTO_RANDOM: u32 = 4;
const NAT_PERSISTENT: u32 = 8;
const NAT_PROTO_RANDOM_FULLY: u32 = 16;
const NAT_PROTO_OFFSET: u32 = 32;

fn addr_text(family: u8, a: &[u8]) -> String {
    if family == NFPROTO_IPV6 {
        let mut x = [0u8; 16];
        x.copy_from_slice(&a[..16]);
        Ipv6Addr::from(x).to_string()
    } else {
        Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()
    }
}

/// The options `iptables-save` prints after `-j NAME` for the compat targets it knows.
fn target_options(family: u8, name: &str, rev: u32, info: &[u8]) -> Result<String, String> {
    let mut o = String::new();
    let short = || format!("target {name} rev {rev}: info too short");
    match (name, rev) {
        ("MARK", 2) => {
            let mark = field::ne32(info, xt::mark::MARK).map_err(|_| short())?;
            let mask = field::ne32(info, xt::mark::MASK).map_err(|_| short())?;
            let _ = write!(o, " --set-xmark 0x{mark:x}/0x{mask:x}");
        }
        ("MASQUERADE", 0) if family == NFPROTO_IPV4 => {
            let r = nat_range(family, 0, info).ok_or_else(short)?;
            masq_options(&mut o, &r);
        }
        // ip6tables' MASQUERADE rev 0 carries an nf_nat_range (the IPv4 one the old compat layout).
        ("MASQUERADE", 0) if family == NFPROTO_IPV6 => {
            let r = nat_range(family, 1, info).ok_or_else(short)?;
            masq_options(&mut o, &r);
        }
        ("DNAT" | "SNAT", 0..=2) => {
            if rev == 0
                && (family != NFPROTO_IPV4 || field::ne32(info, xt::nat_v0::RANGESIZE) != Ok(1))
            {
                return Err(format!("{name} rev 0 with several ranges"));
            }
            let r = nat_range(family, rev, info).ok_or_else(short)?;
            let opt = if name == "DNAT" {
                "--to-destination"
            } else {
                "--to-source"
            };
            if r.flags & (NAT_MAP_IPS | NAT_PROTO_SPECIFIED) != 0 {
                let _ = write!(o, " {opt} ");
                let brackets = family == NFPROTO_IPV6 && r.flags & NAT_PROTO_SPECIFIED != 0;
                if r.flags & NAT_MAP_IPS != 0 {
                    if brackets {
                        o.push('[');
                    }
                    o.push_str(&addr_text(family, &r.min_addr));
                    if r.max_addr != r.min_addr {
                        let _ = write!(o, "-{}", addr_text(family, &r.max_addr));
                    }
                    if brackets {
                        o.push(']');
                    }
                }
                if r.flags & NAT_PROTO_SPECIFIED != 0 {
                    let _ = write!(o, ":{}", r.min_port);
                    if r.max_port != r.min_port {
                        let _ = write!(o, "-{}", r.max_port);
                    }
                    if r.flags & NAT_PROTO_OFFSET != 0 {
                        let _ = write!(o, "/{}", r.base_port);
                    }
                }
            }
            if r.flags & NAT_PROTO_RANDOM != 0 {
                o.push_str(" --random");
            }
            if r.flags & NAT_PERSISTENT != 0 {
                o.push_str(" --persistent");
            }
            if r.flags & NAT_PROTO_RANDOM_FULLY != 0 {
                o.push_str(" --random-fully");
            }
        }
        ("REJECT", 0) => {
            let with = field::ne32(info, xt::reject::WITH).map_err(|_| short())?;
            let names: &[&str] = if family == NFPROTO_IPV6 {
                &[
                    "icmp6-no-route",
                    "icmp6-adm-prohibited",
                    "icmp6-not-neighbour",
                    "icmp6-addr-unreachable",
                    "icmp6-port-unreachable",
                    "",
                    "tcp-reset",
                    "icmp6-policy-fail",
                    "icmp6-reject-route",
                ]
            } else {
                &[
                    "icmp-net-unreachable",
                    "icmp-host-unreachable",
                    "icmp-proto-unreachable",
                    "icmp-port-unreachable",
                    "",
                    "icmp-net-prohibited",
                    "icmp-host-prohibited",
                    "tcp-reset",
                    "icmp-admin-prohibited",
                ]
            };
            match names.get(with as usize) {
                Some(n) if !n.is_empty() => {
                    let _ = write!(o, " --reject-with {n}");
                }
                _ => return Err(format!("REJECT with {with}")),
            }
        }
        ("ACCEPT" | "DROP" | "RETURN", _) if info.iter().all(|b| *b == 0) => {}
        _ => return Err(format!("target {name} rev {rev}")),
    }
    Ok(o)
}

fn masq_options(o: &mut String, r: &NatRange) {
    if r.flags & NAT_PROTO_SPECIFIED != 0 {
        let _ = write!(o, " --to-ports {}", r.min_port);
        if r.max_port != r.min_port {
            let _ = write!(o, "-{}", r.max_port);
        }
    }
    if r.flags & NAT_PROTO_RANDOM != 0 {
        o.push_str(" --random");
    }
    if r.flags & NAT_PROTO_RANDOM_FULLY != 0 {
        o.push_str(" --random-fully");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_buffers_never_panic() {
        let req = rule_dump_request(1, NFPROTO_IPV4, "nat", "KUBE-SERVICES");
        for cut in 0..req.len() {
            let _ = parse_chunk(&req[..cut]);
        }
        let mut junk = vec![0xffu8; 64];
        junk[0] = 64;
        let _ = parse_chunk(&junk);
    }

    #[test]
    fn save_string_quotes_like_xtables() {
        let mut s = String::new();
        save_string(&mut s, "x");
        save_string(&mut s, "ns0/svc0:http");
        save_string(&mut s, r#"a "b" c"#);
        assert_eq!(s, r#" x "ns0/svc0:http" "a \"b\" c""#);
    }

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        crate::parse::netlink::put_attr(&mut a, ty, v);
        a
    }

    fn expr(name: &str, data: &[Vec<u8>]) -> Vec<u8> {
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        attr(1, &[attr(1, &n), attr(2, &data.concat())].concat())
    }

    fn be(v: u32) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }

    /// The expressions iptables-nft 1.8.9 writes for a kube-proxy Service rule, as a NEWRULE message.
    fn kube_rule() -> Vec<u8> {
        let mut comment = b"ns/svc:http cluster IP".to_vec();
        comment.resize(256, 0);
        let exprs = [
            expr("meta", &[attr(2, &be(16)), attr(1, &be(1))]),
            expr(
                "cmp",
                &[attr(1, &be(1)), attr(2, &be(0)), attr(3, &attr(1, &[6]))],
            ),
            expr(
                "payload",
                &[
                    attr(1, &be(1)),
                    attr(2, &be(1)),
                    attr(3, &be(16)),
                    attr(4, &be(4)),
                ],
            ),
            expr(
                "cmp",
                &[
                    attr(1, &be(1)),
                    attr(2, &be(0)),
                    attr(3, &attr(1, &[10, 96, 0, 1])),
                ],
            ),
            expr(
                "match",
                &[attr(1, b"comment\0"), attr(2, &be(0)), attr(3, &comment)],
            ),
            expr(
                "payload",
                &[
                    attr(1, &be(1)),
                    attr(2, &be(2)),
                    attr(3, &be(2)),
                    attr(4, &be(2)),
                ],
            ),
            expr(
                "cmp",
                &[
                    attr(1, &be(1)),
                    attr(2, &be(0)),
                    attr(3, &attr(1, &80u16.to_be_bytes())),
                ],
            ),
            expr("counter", &[]),
            expr(
                "immediate",
                &[
                    attr(1, &be(0)),
                    attr(
                        2,
                        &attr(
                            2,
                            &[attr(1, &be((-3i32) as u32)), attr(2, b"KUBE-SVC-X\0")].concat(),
                        ),
                    ),
                ],
            ),
        ]
        .concat();
        let body = [
            vec![2, 0, 0, 0],
            attr(1, b"nat\0"),
            attr(2, b"KUBE-SERVICES\0"),
            attr(3, &7u64.to_be_bytes()),
            attr(4, &exprs),
        ]
        .concat();
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&Subsystem::Nftables.message(NFT_MSG_NEWRULE).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn kube_proxy_rule_renders_as_iptables_save_prints_it() {
        let msg = kube_rule();
        let c = parse_chunk(&msg);
        assert_eq!(c.rules.len(), 1);
        assert_eq!(
            render_rule(NFPROTO_IPV4, &c.rules[0]).unwrap(),
            r#"-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "ns/svc:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-X"#
        );
        // Every cut of the message parses without panicking and never renders a wrong rule.
        for cut in 0..msg.len() {
            let c = parse_chunk(&msg[..cut]);
            assert!(c.rules.is_empty());
        }
    }

    #[test]
    fn unknown_expressions_are_named_not_guessed() {
        let mut msg = kube_rule();
        let at = msg.windows(7).position(|w| w == b"counter").unwrap();
        msg[at..at + 7].copy_from_slice(b"quota\0\0");
        let c = parse_chunk(&msg);
        let err = render_rule(NFPROTO_IPV4, &c.rules[0]).unwrap_err();
        assert_eq!(err, "expression quota");
    }

    #[test]
    fn masks_print_as_prefix_or_dotted() {
        assert_eq!(addr_mask(2, &[10, 244], &[255, 255]), "10.244.0.0/16");
        assert_eq!(
            addr_mask(2, &[10, 0, 0, 0], &[255, 0, 255, 0]),
            "10.0.0.0/255.0.255.0"
        );
    }
}
