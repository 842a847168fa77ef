//! Decoding one ctnetlink event (a DNATed TCP entry as the kernel sends it: both tuples, status,
//! timeout, TCP protoinfo, id, mark, use count): the hand-written decoder `watch` uses
//! (`live::conntrack::decode_events` over `collect::nl_conntrack::entry`) against
//! `netlink-packet-netfilter` 0.4's typed message. The measurement behind ARCHITECTURE.md's choice.
//!
//!   cargo bench -p netsleuth-node --bench ctnetlink_decode
//!
//! Prints ns per event, the median of 9 runs of 1 M events each.

use netlink_packet_core::NetlinkMessage;
use netlink_packet_netfilter::NetfilterMessage;
use netsleuth_node::live::conntrack::decode_events;
use netsleuth_node::parse::netlink::put_attr;
use std::hint::black_box;
use std::time::Instant;

fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    put_attr(&mut a, ty, v);
    a
}

fn tuple(ty: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let ip = [attr(1, &src), attr(2, &dst)].concat();
    let proto = [
        attr(1, &[6]),
        attr(2, &sport.to_be_bytes()),
        attr(3, &dport.to_be_bytes()),
    ]
    .concat();
    attr(
        ty | 0x8000,
        &[attr(1 | 0x8000, &ip), attr(2 | 0x8000, &proto)].concat(),
    )
}

/// An IPCTNL_MSG_CT_NEW event (NLM_F_CREATE) of a DNATed ESTABLISHED TCP entry.
fn event() -> Vec<u8> {
    let mut body = vec![2, 0, 0, 0];
    body.extend(tuple(1, [10, 244, 1, 5], [10, 96, 0, 10], 40000, 80));
    body.extend(tuple(2, [10, 244, 2, 7], [10, 244, 1, 5], 8080, 40000));
    body.extend(attr(3, &0x18eu32.to_be_bytes()));
    body.extend(attr(7, &431999u32.to_be_bytes()));
    let tcp = [
        attr(1, &[3]),
        attr(2, &[7]),
        attr(3, &[7]),
        attr(4, &[0x23, 0]),
        attr(5, &[0x23, 0]),
    ]
    .concat();
    body.extend(attr(4 | 0x8000, &attr(1 | 0x8000, &tcp)));
    body.extend(attr(12, &3677207632u32.to_be_bytes()));
    body.extend(attr(8, &0u32.to_be_bytes()));
    body.extend(attr(6, &1u32.to_be_bytes()));
    let mut m = Vec::new();
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&0x100u16.to_ne_bytes());
    m.extend_from_slice(&0x600u16.to_ne_bytes());
    m.extend_from_slice(&[0; 8]);
    m.extend(body);
    m
}

fn median_ns(mut f: impl FnMut() -> u64) -> f64 {
    const N: u64 = 1_000_000;
    let mut runs: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            let mut sink = 0u64;
            for _ in 0..N {
                sink = sink.wrapping_add(f());
            }
            black_box(sink);
            t.elapsed().as_nanos() as f64 / N as f64
        })
        .collect();
    runs.sort_by(|a, b| a.total_cmp(b));
    runs[4]
}

fn main() {
    let msg = event();
    // Both read the same message the same way: a sanity check before timing.
    let mut id = None;
    decode_events(&msg, |_, e, _| id = e.id);
    assert_eq!(id, Some(3677207632));
    let typed =
        NetlinkMessage::<NetfilterMessage>::deserialize(&msg).expect("the crate decodes it");
    // The crate hands the entry id back undecoded (`Other(DefaultNla { kind: 12, .. })`).
    assert!(format!("{typed:?}").contains("kind: 12"), "{typed:?}");
    let hand = median_ns(|| {
        let mut n = 0;
        decode_events(black_box(&msg), |_, e, _| {
            n += u64::from(e.orig.dport.unwrap_or(0))
        });
        n
    });
    let krate = median_ns(|| {
        let m = NetlinkMessage::<NetfilterMessage>::deserialize(black_box(&msg)).expect("decodes");
        black_box(&m);
        1
    });
    println!(
        "ctnetlink event ({} bytes): hand-written decode {hand:.0} ns/event; netlink-packet-netfilter 0.4 {krate:.0} ns/event ({:.1}x)",
        msg.len(),
        krate / hand
    );
}
