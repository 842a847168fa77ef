//! Prints the iptables-nft tables of this network namespace as `iptables-save` text, read over
//! netlink (what `collect` does instead of running iptables-save), with the time it took.
//!   ip netns exec NAME cargo run --release -p netsleuth-node --example xtables_dump [ip6]
fn main() {
    let family = if std::env::args().any(|a| a == "ip6") {
        10
    } else {
        2
    };
    let t = std::time::Instant::now();
    let d = netsleuth_node::collect::nl_tables::xtables(family).expect("netlink dump");
    let el = t.elapsed();
    for (_, r) in &d.tables {
        print!("{}", r.text);
        for u in &r.unrendered {
            eprintln!("unrendered: {} handle {}: {}", u.chain, u.handle, u.reason);
        }
    }
    eprintln!(
        "{} table(s), {} rules rendered, {} not, damaged {}, unstable {} in {:.3} s",
        d.tables.len(),
        d.tables.iter().map(|(_, r)| r.rules).sum::<usize>(),
        d.tables
            .iter()
            .map(|(_, r)| r.unrendered.len())
            .sum::<usize>(),
        d.damaged,
        d.unstable,
        el.as_secs_f64()
    );
}
