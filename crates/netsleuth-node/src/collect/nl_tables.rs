//! The names of the nf_tables tables, from one netlink dump (NFT_MSG_GETTABLE).
//!
//! Why not `nft list tables`: nft fills its whole cache first, which on a kube-proxy node with 100 k
//! iptables-nft rules takes seconds; the table dump is a few hundred bytes.

use std::os::fd::AsRawFd;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWTABLE: u16 = 0;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NFTA_TABLE_NAME: u16 = 1;

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
    let mut m = Vec::with_capacity(20);
    m.extend_from_slice(&20u32.to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE).to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m
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
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
        if len < 16 || off + len > buf.len() {
            break;
        }
        let body = &buf[off + 16..off + len];
        match ty {
            NLMSG_DONE => c.done = true,
            NLMSG_ERROR => {
                let e = body
                    .get(..4)
                    .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                    .unwrap_or(-1);
                if e != 0 {
                    c.error = Some(-e);
                }
                c.done = true;
            }
            t if t == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE && body.len() >= 4 => {
                let family = family_name(body[0]);
                let mut a = 4;
                while a + 4 <= body.len() {
                    let alen = u16::from_ne_bytes([body[a], body[a + 1]]) as usize;
                    let aty = u16::from_ne_bytes([body[a + 2], body[a + 3]]) & 0x3fff;
                    if alen < 4 || a + alen > body.len() {
                        break;
                    }
                    if aty == NFTA_TABLE_NAME {
                        let v = &body[a + 4..a + alen];
                        let v = v.split(|b| *b == 0).next().unwrap_or(v);
                        c.tables
                            .push((family.clone(), String::from_utf8_lossy(v).into_owned()));
                    }
                    a += (alen + 3) & !3;
                }
            }
            _ => {}
        }
        off += (len + 3) & !3;
    }
    c
}

/// Dumps the table names of the calling thread's network namespace.
pub fn list_tables() -> std::io::Result<Vec<(String, String)>> {
    let fd = super::nl_conntrack::netfilter_request(&request(1), 5, None)?;
    let mut tables = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let c = parse_chunk(&buf[..n as usize]);
        tables.extend(c.tables);
        if let Some(e) = c.error {
            return Err(std::io::Error::from_raw_os_error(e));
        }
        if c.done || n == 0 {
            return Ok(tables);
        }
    }
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
}
